"""Validation reports: JSON (schema-versioned), JUnit XML (one testcase per gate and profile), Markdown.

Each function takes validation results as ``ValidationResult`` records or their dicts (``to_dict()``,
as stored in manifests and cached stage folders).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeopt.artifacts import write_bytes, write_json
from edgeopt.validation import GateStatus, ValidationResult, as_result

REPORT_SCHEMA = "edgeopt.validation-report/1"

Results = Sequence[ValidationResult | dict[str, Any]]


def write_json_report(path: str | Path, results: Results) -> Path:
    """One validation dict per model; a dict given is written as is (it may carry ``path``/``seconds``)."""
    models = [r if isinstance(r, dict) else {**r.to_dict(), "seconds": r.seconds} for r in results]
    passed = all(as_result(r).passed for r in results)
    return write_json(path, {"schema": REPORT_SCHEMA, "models": models, "passed": passed})


def junit_xml(results: Results) -> str:
    """One testsuite per model, one testcase per gate and profile; a crash is an error testcase."""
    suites = ET.Element("testsuites", name="edgeopt validate")
    for r in map(as_result, results):
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=r.model,
            tests=str(len(r.gates)),
            failures=str(len(r.failed_gates)),
            errors=str(len(r.crashed)),
            skipped=str(len(r.not_evaluated)),
        )
        for g in r.gates:
            case = ET.SubElement(suite, "testcase", classname=f"{r.model}.{g.profile}", name=g.gate)
            if g.status is GateStatus.failed:
                ET.SubElement(case, "failure", message=g.detail).text = g.detail
            elif g.status is GateStatus.not_evaluated:
                ET.SubElement(case, "skipped", message=g.detail)
            ET.SubElement(case, "system-out").text = g.detail
        for c in r.crashed:
            case = ET.SubElement(suite, "testcase", classname=r.model, name="runtime")
            ET.SubElement(case, "error", message=c).text = c
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(path: str | Path, results: Results) -> Path:
    return write_bytes(path, junit_xml(results).encode())


_MARK = {
    GateStatus.passed: "✅ passed",
    GateStatus.failed: "❌ failed",
    GateStatus.not_evaluated: "➖ not evaluated",
}


def markdown(results: Results) -> str:
    """A summary per model (size, accuracy, host latency, crashes) and its table of gates."""
    lines = ["# edgeopt validation", ""]
    for r in map(as_result, results):
        m, s = r.measurements, r.measurements.structure
        verdict = "passed" if r.passed else ("runtime crashed" if r.crashed else "failed")
        lines += [f"## {r.model}: {verdict}", ""]
        acc = f"{m.accuracy:.4f}" if m.accuracy is not None else "n/a"
        lines.append(
            f"- {s['bytes']:,} bytes ({s['gzip_bytes']:,} gzipped), {s['params']:,} parameters, "
            f"{s['macs']:,} MACs, ops: {', '.join(f'{k} x{v}' for k, v in s['op_counts'].items())}"
        )
        lines.append(f"- top-1 accuracy {acc} on {m.samples:,} test examples ({m.runtime or 'LiteRT'})")
        if m.agreement is not None and m.keras_accuracy is not None:
            lines.append(f"- Keras reference {m.keras_accuracy:.4f}, top-1 agreement {m.agreement:.4f}")
        for th, lat in m.latency.items():
            lines.append(
                f"- host latency, {th} thread(s): p50 {lat.p50_ms:.4g} ms, p90 {lat.p90_ms:.4g} ms, "
                f"p99 {lat.p99_ms:.4g} ms ({lat.runs} runs; {lat.method})"
            )
        for c in r.crashed:
            lines.append(f"- **crash**: {c}")
        lines += ["", "| profile | gate | result | detail |", "|---|---|---|---|"]
        for g in r.gates:
            lines.append(f"| {g.profile} | {g.gate} | {_MARK[g.status]} | {g.detail.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def write_markdown(path: str | Path, results: Results) -> Path:
    return write_bytes(path, markdown(results).encode())
