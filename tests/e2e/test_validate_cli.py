"""`edgeopt validate` for release pipelines: exit codes, crash isolation, corrupt files, reports."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeopt.cli import app
from edgeopt.stages._common import predict
from edgeopt.validation import GateStatus, ValidationResult
from tests.faultinject import fault_env, fired

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
    assert m["schema"] == "edgeopt.validation/1" and m["path"] == str(files["model"])
    v = ValidationResult.from_dict(m)
    assert v.passed and v.model == "tiny_int8.tflite" and v.failed_gates == [] and v.crashed == []
    assert {g.profile for g in v.gates} == {"my-mcu", "ethos-u55-128"}
    arena = v.gate("my-mcu", "arena_bytes")
    assert arena.status is GateStatus.passed and arena.measured == v.measurements.tflm.arena_bytes
    assert arena.detail == f"{arena.measured:,} bytes of tensor arena (budget <= 100,000 bytes)"
    cases = ET.parse(x).getroot().findall(".//testcase")
    assert len(cases) == len(v.gates) and all(c.find("failure") is None for c in cases)
    assert "ethos-u55-128" in md.read_text() and "## tiny_int8.tflite: passed" in md.read_text()


def test_failed_budget_exit_1_and_junit_failure(files, tmp_path):
    x = tmp_path / "v.xml"
    r = invoke(
        "validate", files["model"], "--data", "digits", "--profile", files["tight"], "--junit", x, "--no-latency", "-q"
    )
    assert r.exit_code == 1 and "tight/arena_bytes" in r.output
    failures = [c for c in ET.parse(x).getroot().iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failures] == ["arena_bytes"]
    assert failures[0].find("failure").get("message").endswith("bytes of tensor arena (budget <= 64 bytes)")


@pytest.mark.parametrize("task", ["litert_eval", "tflm_eval"])
def test_runtime_crash_is_exit_3_and_other_checks_go_on(task, files, tmp_path, monkeypatch, tiny_model, digits):
    log = tmp_path / "faults"
    log.mkdir()
    for k, v in fault_env(f"{task}:segv", log).items():  # the worker of that task gets a real SIGSEGV
        if os.environ.get(k) != v:
            monkeypatch.setenv(k, v)
    j = tmp_path / "v.json"
    r = invoke("validate", files["model"], "--data", "digits", "--profile", files["mcu"], "--json", j)
    assert r.exit_code == 3, r.output
    assert [(f["target"], f["action"]) for f in fired(log)] == [(task, "segv")]  # once, in that child only
    assert "SIGSEGV" in r.output
    v = ValidationResult.from_dict(json.loads(j.read_text())["models"][0])
    runtime = "litert" if task == "litert_eval" else "tflm"
    assert not v.passed and [c.split(":")[0] for c in v.crashed] == [f"{runtime} crashed"]
    assert "killed by SIGSEGV" in v.crashed[0]
    assert v.measurements.latency["1"].runs >= 50  # the latency check still ran
    if task == "tflm_eval":  # and so did LiteRT: int8 within 3 points of the Keras model
        keras_acc = float(np.mean(np.argmax(predict(tiny_model, digits.x_test), -1) == digits.y_test))
        assert abs(v.measurements.accuracy - keras_acc) <= 0.03
        g = v.gate("my-mcu", "tflm_runs")
        assert g.status is GateStatus.failed and "SIGSEGV" in g.detail
        assert v.gate("my-mcu", "arena_bytes").status is GateStatus.not_evaluated
    else:  # no LiteRT outputs: nothing to judge accuracy or finiteness on
        assert v.measurements.accuracy is None and v.gate("my-mcu", "outputs_finite").status is GateStatus.not_evaluated


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
