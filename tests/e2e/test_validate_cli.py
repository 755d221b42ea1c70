"""`edgeopt validate` for release pipelines: exit codes, crash isolation, corrupt files, reports."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from edgeopt.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tiny_model_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("validate")
    model = d / "tiny_int8.tflite"
    r = runner.invoke(app, ["convert", str(tiny_model_path), "--out", str(model), "--data", "digits", "-q"])
    assert r.exit_code == 0, r.output
    mcu = d / "mcu.yaml"
    mcu.write_text("name: my-mcu\nruntime: tflm\nbudgets: {arena_bytes: 100000, model_bytes: 100000}\n")
    tight = d / "tight.yaml"
    tight.write_text("name: tight\nruntime: tflm\nbudgets: {arena_bytes: 64}\n")
    return {"model": model, "keras": tiny_model_path, "mcu": mcu, "tight": tight, "dir": d}


def invoke(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r


def test_all_gates_pass_exit_0_and_reports(files, tmp_path):
    j, x, md = tmp_path / "v.json", tmp_path / "v.xml", tmp_path / "v.md"
    r = invoke(
        "validate",
        files["model"],
        "--data",
        "digits",
        "--keras",
        files["keras"],
        "--profile",
        files["mcu"],
        "--profile",
        "ethos-u55-128",
        "--json",
        j,
        "--junit",
        x,
        "--markdown",
        md,
    )
    assert r.exit_code == 0, r.output
    report = json.loads(j.read_text())
    assert report["schema"] == "edgeopt.validation-report/1" and report["passed"] is True
    m = report["models"][0]
    assert m["schema"] == "edgeopt.validation/1"
    profiles = {g["profile"] for g in m["gates"]}
    assert profiles == {"my-mcu", "ethos-u55-128"}
    cases = ET.parse(x).getroot().findall(".//testcase")
    assert len(cases) == len(m["gates"]) and all(c.find("failure") is None for c in cases)
    assert "ethos-u55-128" in md.read_text() and "passed" in md.read_text()


def test_failed_budget_exit_1_and_junit_failure(files, tmp_path):
    x = tmp_path / "v.xml"
    r = invoke(
        "validate", files["model"], "--data", "digits", "--profile", files["tight"], "--junit", x, "--no-latency", "-q"
    )
    assert r.exit_code == 1 and "tight/arena_bytes" in r.output
    failures = [c for c in ET.parse(x).getroot().iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failures] == ["arena_bytes"]


@pytest.mark.parametrize("task", ["litert_eval", "tflm_eval"])
def test_runtime_crash_is_exit_3_and_other_checks_go_on(task, files, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_WORKER_CRASH", task)  # the child kills itself with SIGSEGV
    j = tmp_path / "v.json"
    r = invoke("validate", files["model"], "--data", "digits", "--profile", files["mcu"], "--json", j)
    assert r.exit_code == 3, r.output
    assert "SIGSEGV" in r.output
    m = json.loads(j.read_text())["models"][0]
    runtime = "litert" if task == "litert_eval" else "tflm"
    assert any(f"{runtime} crashed: killed by SIGSEGV" in c for c in m["crashed"])
    assert m["latency"]["1"]["runs"] >= 50  # the latency check still ran
    if task == "tflm_eval":
        assert m["accuracy"] > 0.85  # and so did LiteRT
        g = next(g for g in m["gates"] if g["gate"] == "tflm_runs")
        assert g["status"] == "failed" and "SIGSEGV" in g["detail"]


def _corrupt(tmp_path, real: bytes) -> dict[str, bytes]:
    return {
        "empty": b"",
        "truncated": real[: len(real) // 3],
        "random": bytes(range(256)) * 4,
        "html": b"<!DOCTYPE html><html><body>404</body></html>",
        "lfs": b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 4521\n",
        "wrong_identifier": real[:4] + b"TFL2" + real[8:],
    }


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "html", "lfs", "wrong_identifier"])
def test_corrupt_model_is_exit_2_one_line(kind, files, tmp_path):
    bad = tmp_path / f"{kind}.tflite"
    bad.write_bytes(_corrupt(tmp_path, files["model"].read_bytes())[kind])
    r = invoke("validate", bad, "--data", "digits", "--profile", "cortex-m7-512k")
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output


def test_unknown_profile_is_exit_2(files):
    r = invoke("validate", files["model"], "--data", "digits", "--profile", "pixel99")
    assert r.exit_code == 2 and "unknown device profile" in r.output
