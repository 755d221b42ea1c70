"""Reproducible across processes: the same pipeline file and seed, exported by two separate `edgeopt`
processes (their own working and build folders, teacher trained in each, different hash seeds, run at
the same time), give byte-identical .tflite files, C sources and model hashes.

In-process reruns (``--force`` in test_export.py) share one interpreter's state; this test does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "tests" / "data" / "digits.yaml"


def _start(work: Path, hash_seed: str) -> subprocess.Popen:
    """`edgeopt export` of the digits pipeline with every path relative to ``work``, so that the two
    configs, and the manifests embedded in the shipped models, are the same text."""
    work.mkdir()
    raw = yaml.safe_load(PIPELINE.read_text())
    assert not Path(raw["teacher"]["path"]).is_absolute()  # trained inside ``work`` by each process
    (work / "pipeline.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "edgeopt", "export", "pipeline.yaml", "--out", "dist", "--build", "build", "-q"]
    log = (work / "log.txt").open("wb")
    return subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _files(d: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob(pattern)) if p.is_file()}


def test_two_processes_export_identical_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    procs = [_start(a, "1"), _start(b, "2")]
    try:
        codes = [p.wait(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for work, code in zip((a, b), codes, strict=True):
        assert code == 0, (work / "log.txt").read_text(errors="replace")

    # every .tflite of the build (the baseline, the float16 and the int8 conversions) ...
    built = [_files(w / "build", "[0-9][0-9]_*/*.tflite") for w in (a, b)]
    assert len(built[0]) == 3, sorted(built[0])
    assert built[0] == built[1], [k for k in built[0] if built[0][k] != built[1].get(k)]
    # ... and every file of the bundle but the reports, which hold host timings
    shipped = [_files(w / "dist", "*") for w in (a, b)]
    for f in ("manifest.json", "report.html", "model_card.md"):
        shipped[0].pop(f), shipped[1].pop(f)
    assert {"android/assets/digits_small.tflite", "mcu/digits_small_model.c", "mcu/digits_small_model.h"} <= set(
        shipped[0]
    )
    assert shipped[0] == shipped[1], [k for k in shipped[0] if shipped[0][k] != shipped[1].get(k)]

    ma, mb = (json.loads((w / "dist" / "manifest.json").read_text()) for w in (a, b))
    assert ma["source_model"]["content_sha256"] == mb["source_model"]["content_sha256"]  # the teachers too
    assert [m["sha256"] for m in ma["models"]] == [m["sha256"] for m in mb["models"]]
    # every stage's figures (accuracies, training history, sparsity, validation), timings left out
    stages = [[(s["name"], _untimed(s["metrics"])) for s in m["stages"]] for m in (ma, mb)]
    assert [n for n, _ in stages[0]][:3] == ["teacher", "baseline", "distill"]
    for (name, x), (_, y) in zip(*stages, strict=True):
        assert x == y, name


def _untimed(obj: object) -> object:
    """``obj`` without what measures this host's speed (seconds, latency, anything in ms)."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in ("seconds", "latency") and not k.endswith("_ms")}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj
