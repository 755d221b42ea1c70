"""Validation reports: JSON (schema-versioned), JUnit XML (one testcase per gate and profile), Markdown."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from edgeopt.artifacts import write_bytes, write_json

REPORT_SCHEMA = "edgeopt.validation-report/1"


def write_json_report(path: str | Path, results: list[dict[str, Any]]) -> Path:
    """``results``: one validation metrics dict per model."""
    return write_json(path, {"schema": REPORT_SCHEMA, "models": results, "passed": all(r["passed"] for r in results)})


def junit_xml(results: list[dict[str, Any]]) -> str:
    suites = ET.Element("testsuites", name="edgeopt validate")
    for r in results:
        gates = r["gates"]
        failed = sum(g["status"] == "failed" for g in gates)
        skipped = sum(g["status"] == "not evaluated" for g in gates)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=r["model"],
            tests=str(len(gates)),
            failures=str(failed),
            errors=str(len(r["crashed"])),
            skipped=str(skipped),
        )
        for g in gates:
            case = ET.SubElement(suite, "testcase", classname=f"{r['model']}.{g['profile']}", name=g["gate"])
            if g["status"] == "failed":
                ET.SubElement(case, "failure", message=g["detail"]).text = g["detail"]
            elif g["status"] == "not evaluated":
                ET.SubElement(case, "skipped", message=g["detail"])
            ET.SubElement(case, "system-out").text = g["detail"]
        for c in r["crashed"]:
            case = ET.SubElement(suite, "testcase", classname=r["model"], name="runtime")
            ET.SubElement(case, "error", message=c).text = c
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(path: str | Path, results: list[dict[str, Any]]) -> Path:
    return write_bytes(path, junit_xml(results).encode())


_MARK = {"passed": "✅ passed", "failed": "❌ failed", "not evaluated": "➖ not evaluated"}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["# edgeopt validation", ""]
    for r in results:
        s = r["structure"]
        verdict = "passed" if r["passed"] else ("runtime crashed" if r["crashed"] else "failed")
        lines += [f"## {r['model']}: {verdict}", ""]
        acc = f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "n/a"
        lines.append(
            f"- {s['bytes']:,} bytes ({s['gzip_bytes']:,} gzipped), {s['params']:,} parameters, "
            f"{s['macs']:,} MACs, ops: {', '.join(f'{k} x{v}' for k, v in s['op_counts'].items())}"
        )
        lines.append(f"- top-1 accuracy {acc} on {r['samples']:,} test examples ({r.get('runtime', 'LiteRT')})")
        if r.get("agreement") is not None:
            lines.append(f"- Keras reference {r['keras_accuracy']:.4f}, top-1 agreement {r['agreement']:.4f}")
        for th, lat in r.get("latency", {}).items():
            lines.append(
                f"- host latency, {th} thread(s): p50 {lat['p50_ms']:.4g} ms, p90 {lat['p90_ms']:.4g} ms, "
                f"p99 {lat['p99_ms']:.4g} ms ({lat['runs']} runs; {lat['method']})"
            )
        for c in r["crashed"]:
            lines.append(f"- **crash**: {c}")
        lines += ["", "| profile | gate | result | detail |", "|---|---|---|---|"]
        for g in r["gates"]:
            lines.append(f"| {g['profile']} | {g['gate']} | {_MARK[g['status']]} | {g['detail'].replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def write_markdown(path: str | Path, results: list[dict[str, Any]]) -> Path:
    return write_bytes(path, markdown(results).encode())
