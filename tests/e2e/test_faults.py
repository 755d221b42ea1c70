"""Runtime faults with real child processes: a runtime worker or Vela that hangs or dies by a signal,
and a real Ctrl-C (SIGINT) sent to an `edgeopt export` process.

Nothing here mocks the isolation layer: the faults are injected into the children edgeopt starts
itself, by the ``sitecustomize`` of ``tests/faultinject`` on their ``PYTHONPATH`` (see that module).
Every test checks from the fault log that its fault really fired, in a process other than this one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgeopt.cli import app
from tests.faultinject import alive, fault_env, fired

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def inject(tmp_path, monkeypatch):
    """``inject("task:action,...")`` makes the children this process starts fail that way; returns the
    folder of the fault log."""
    log = tmp_path / "faults"
    log.mkdir()

    def setup(spec: str) -> Path:
        for k, v in fault_env(spec, log).items():
            if os.environ.get(k) != v:
                monkeypatch.setenv(k, v)
        return log

    return setup


def _invoke(*args) -> object:
    r = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r


def _faults(log: Path, target: str, action: str, count: int = 1) -> list[dict]:
    """The faults that fired: ``count`` times ``action`` in ``target``, each in a child of its own."""
    records = fired(log)
    assert [(f["target"], f["action"]) for f in records] == [(target, action)] * count, records
    assert os.getpid() not in {f["pid"] for f in records} and len({f["pid"] for f in records}) == count
    return records


# ---- edgeopt validate: a worker or Vela hangs or crashes ------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_model_path, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("faults")
    tfl = d / "tiny_int8.tflite"
    r = runner.invoke(app, ["convert", str(tiny_model_path), "--out", str(tfl), "--data", "digits", "-q"])
    assert r.exit_code == 0, r.output
    mcu = d / "mcu.yaml"
    mcu.write_text("name: my-mcu\nruntime: tflm\nbudgets: {arena_bytes: 100000, model_bytes: 100000}\n")
    return {"tflite": tfl, "mcu": mcu}


def test_fault_injection_leaves_other_processes_alone(inject, tmp_path):
    """The injection only touches the children it names: an unnamed task and other Pythons run."""
    log = inject("vela:segv,tflm_eval:segv")
    r = subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "ok\n"
    assert fired(log) == []


def test_hung_runtime_is_killed_at_the_timeout_and_exit_3(model, inject, tmp_path):
    timeout = 10  # every other child must answer within it, on a loaded 2-core machine too
    log = inject("tflm_eval:hang")
    j = tmp_path / "v.json"
    t0 = time.monotonic()
    r = _invoke(
        "validate", model["tflite"], "--data", "digits", "--profile", model["mcu"], "--timeout", timeout,
        "--no-latency", "--no-cross-check", "--json", j,
    )  # fmt: skip
    seconds = time.monotonic() - t0
    assert r.exit_code == 3, r.output
    assert "tflm hung" in r.output and f"no answer within {timeout} s" in r.output
    (hung,) = _faults(log, "tflm_eval", "hang")
    assert not alive(hung["pid"])  # killed (the hang ignores SIGTERM, so by SIGKILL) and reaped
    assert timeout <= seconds < timeout + 120  # waited for the timeout, not for the child's own end
    m = json.loads(j.read_text())["models"][0]
    assert m["crashed"] == [f"tflm hung: no answer within {timeout} s, killed"]
    assert m["tflm"] is None
    g = next(g for g in m["gates"] if g["profile"] == "my-mcu" and g["gate"] == "tflm_runs")
    assert g["status"] == "failed" and "hung" in g["detail"]
    assert m["accuracy"] > 0.85  # LiteRT's evaluation, in its own child, went on


@pytest.mark.parametrize(
    ("action", "named"),
    [("segv", "killed by SIGSEGV"), ("kill", "killed by SIGKILL"), ("exit", "exit code 70")],
)
def test_crash_in_the_latency_run_is_exit_3_with_the_cause(action, named, model, inject, tmp_path):
    log = inject(f"litert_bench:{action}")
    j = tmp_path / "v.json"
    r = _invoke("validate", model["tflite"], "--data", "digits", "--no-cross-check", "--json", j)
    assert r.exit_code == 3, r.output
    assert f"litert crashed: {named}" in r.output
    _faults(log, "litert_bench", action)
    m = json.loads(j.read_text())["models"][0]
    assert len(m["crashed"]) == 1 and m["crashed"][0].startswith(f"litert crashed: {named}")
    assert m["latency"] == {}  # no figure from a run that did not finish
    assert m["accuracy"] > 0.85 and m["passed"] is False


@pytest.mark.parametrize(("action", "signame"), [("segv", "SIGSEGV"), ("abort", "SIGABRT")])
def test_crash_in_vela_is_exit_3(action, signame, model, inject, tmp_path):
    log = inject(f"vela:{action}")
    j = tmp_path / "v.json"
    r = _invoke(
        "validate", model["tflite"], "--data", "digits", "--profile", "ethos-u55-128", "--no-latency",
        "--no-cross-check", "--json", j,
    )  # fmt: skip
    assert r.exit_code == 3, r.output
    assert f"vela crashed: killed by {signame}" in r.output
    _faults(log, "vela", action)
    m = json.loads(j.read_text())["models"][0]
    assert m["crashed"] == [f"vela crashed: killed by {signame}"]
    assert m["vela"] == {}
    assert m["accuracy"] > 0.85


def test_same_validation_without_a_fault_passes(model, tmp_path):
    """The control for the tests above: without the injected faults the same commands exit 0."""
    r = _invoke(
        "validate", model["tflite"], "--data", "digits", "--profile", model["mcu"], "--profile", "ethos-u55-128",
        "--timeout", 60, "--no-cross-check", "--json", tmp_path / "v.json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "v.json").read_text())["models"][0]
    assert m["crashed"] == [] and m["latency"]["1"]["runs"] >= 50 and m["tflm"]["arena_bytes"] <= 100000
    assert set(m["vela"]) == {"ethos-u55-128"}


# ---- edgeopt export: a runtime crash, and a real Ctrl-C ------------------------------------------------

PIPELINE = {
    "name": "tiny",
    "seed": 3,
    "data": {"name": "digits", "max_train": 600},
    "teacher": {"path": None, "train": {"zoo": "tiny_cnn", "epochs": 3, "learning_rate": 0.003}},
    "steps": [
        {"stage": "prune", "final_sparsity": 0.5, "epochs": 2},
        {"stage": "cluster", "clusters": 8, "epochs": 2},
        {"stage": "convert", "quantization": "int8"},
        {"stage": "validate", "min_accuracy": 0.3, "profiles": ["my-board"], "latency": False},
    ],
    "profiles": [{"name": "my-board", "runtime": "tflm", "budgets": {"arena_bytes": 65536, "model_bytes": 65536}}],
}


def _pipeline(folder: Path, **validate: object) -> Path:
    raw = json.loads(json.dumps(PIPELINE))
    raw["teacher"]["path"] = str(folder / "teacher.keras")
    raw["steps"][-1].update(validate)
    p = folder / "tiny.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _temp_folders(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A good export (teacher trained, stages cached in build/, bundle in dist/tiny)."""
    d = tmp_path_factory.mktemp("export")
    r = runner.invoke(
        app, ["export", str(_pipeline(d)), "--out", str(d / "dist/tiny"), "--build", str(d / "build"), "-q"]
    )
    assert r.exit_code == 0, r.output
    return d


@pytest.fixture
def workdir(exported, tmp_path) -> Path:
    for name in ("teacher.keras", "build", "dist"):
        (shutil.copytree if (exported / name).is_dir() else shutil.copy)(exported / name, tmp_path / name)
    return tmp_path


def test_export_with_a_runtime_crash_is_exit_3_and_a_failed_bundle(workdir, inject, monkeypatch):
    good = _tree(workdir / "dist/tiny")
    log = inject("tflm_eval:segv")
    # A validate setting the cached run did not use, so validation runs again (in real children).
    p = _pipeline(workdir, max_samples=300)
    r = _invoke("export", p, "--out", workdir / "dist/tiny", "--build", workdir / "build", "-q")
    assert r.exit_code == 3, r.output
    assert "tflm crashed: killed by SIGSEGV" in r.output and "tiny.failed" in r.output
    # Two TFLite Micro runs crashed: validation's, then the bundle's own arena measurement (validation
    # had no arena to give it).
    crashed = _faults(log, "tflm_eval", "segv", count=2)
    failed = workdir / "dist/tiny.failed"
    m = json.loads((failed / "manifest.json").read_text())
    assert m["status"] == "failed" and m["validation"]["passed"] is False
    assert m["validation"]["crashed"] == ["model_int8.tflite: tflm crashed: killed by SIGSEGV"], m["validation"]
    mcu = next(x for x in m["models"] if x["role"] == "mcu")
    assert mcu["arena"]["bytes"] is None and "tflm crashed: killed by SIGSEGV" in mcu["arena"]["method"]
    header = (failed / "mcu/tiny_model.h").read_text()
    assert "#define TINY_ARENA_BYTES" not in header and "SIGSEGV" in header
    assert (failed / "android/assets/tiny.tflite").is_file() and "<failure" in (failed / "junit.xml").read_text()
    assert _tree(workdir / "dist/tiny") == good  # the last good bundle is untouched
    assert sorted(x.name for x in (workdir / "dist").iterdir()) == ["tiny", "tiny.failed"]

    # A crashed validation is never reused from the cache: without the fault the same export runs
    # validation again, passes, and clears the stale failed bundle.
    monkeypatch.delenv("EDGEOPT_FAULT")
    r = _invoke("export", p, "--out", workdir / "dist/tiny", "--build", workdir / "build", "-q")
    assert r.exit_code == 0, r.output
    m = json.loads((workdir / "dist/tiny/manifest.json").read_text())
    assert m["status"] == "passed" and {s["name"]: s["reused"] for s in m["stages"]}["validate"] is False
    assert not failed.exists() and len(fired(log)) == len(crashed)


def _as_from_a_terminal() -> None:
    """The child's SIGINT as a shell in a terminal leaves it: default. A test run started in the background by a
    non-interactive shell has SIGINT ignored, which every child inherits (a Python started so never raises
    KeyboardInterrupt: the export ran to its end and exited 0 in such runs)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(what, proc: subprocess.Popen, limit: float) -> object:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        found = what()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the export ended (exit {proc.returncode}) before the moment to interrupt it")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"nothing appeared within {limit:.0f} s")


def test_sigint_during_a_stage_exits_130_and_keeps_the_previous_bundle(workdir):
    """A real Ctrl-C: SIGINT to an `edgeopt export` process busy in a stage (a fresh build folder, so every
    stage runs); the previous bundle stays as it was and nothing half-written is left behind."""
    good = _tree(workdir / "dist/tiny")
    build = workdir / "build2"
    out = workdir / "out.txt"
    cmd = [sys.executable, "-m", "edgeopt", "export", str(_pipeline(workdir)), "--out", str(workdir / "dist/tiny")]
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [*cmd, "--build", str(build), "-q"], cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_as_from_a_terminal,
        )  # fmt: skip
        try:
            _wait_for(lambda: sorted(build.glob("[0-9][0-9]_*")), proc, limit=300)
            proc.send_signal(signal.SIGINT)  # the next stage (training) has just begun
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = out.read_text(errors="replace")
    assert code == 130, text
    assert "interrupted" in text.lower() and "Traceback" not in text
    stages = sorted(p.name for p in build.glob("[0-9][0-9]_*"))
    assert stages and "04_validate" not in stages, stages  # interrupted after a stage, before the last one
    assert not (build / "manifest.json").exists()
    assert _tree(workdir / "dist/tiny") == good
    assert sorted(x.name for x in (workdir / "dist").iterdir()) == ["tiny"]  # no temp folder, no .failed
    assert _temp_folders(build) == []  # no half-written stage folder or cache entry


def test_sigint_with_no_previous_bundle_leaves_no_bundle(exported, tmp_path):
    """Interrupted before the first bundle was ever written: nothing under the target's name."""
    shutil.copy(exported / "teacher.keras", tmp_path / "teacher.keras")
    build = tmp_path / "build"
    cmd = [sys.executable, "-m", "edgeopt", "export", str(_pipeline(tmp_path)), "--out", str(tmp_path / "dist/tiny")]
    proc = subprocess.Popen(
        [*cmd, "--build", str(build), "-q"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL, preexec_fn=_as_from_a_terminal,
    )  # fmt: skip
    try:
        _wait_for(lambda: sorted(build.glob("[0-9][0-9]_*")), proc, limit=300)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (tmp_path / "dist/tiny").exists() and not (tmp_path / "dist/tiny.failed").exists()
    assert not (tmp_path / "dist").exists() or list((tmp_path / "dist").iterdir()) == []
    assert _temp_folders(build) == []


# ---- host state ---------------------------------------------------------------------------------------


def test_tests_never_read_the_host_calibration(isolated_calibration):
    """conftest points the calibration at a file of this test's own: edgeopt reads that one, not ~/.cache."""
    from edgeopt import calibrate
    from edgeopt.errors import BadInput

    assert calibrate.default_path() == isolated_calibration
    assert Path.home() not in isolated_calibration.parents
    assert calibrate.load() is None
    isolated_calibration.write_text(json.dumps({"schema": "stale/0"}))
    with pytest.raises(BadInput, match="stale/0"):
        calibrate.load()
    # and so does every child process, which inherits the environment
    code = "from edgeopt import calibrate; print(calibrate.default_path())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.stdout.strip() == str(isolated_calibration), r.stderr
