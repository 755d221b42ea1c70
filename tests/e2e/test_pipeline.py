"""A small pipeline file end to end (digits), its manifest, and same seed -> same bytes."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgeopt.cli import app
from edgeopt.config import load_pipeline
from edgeopt.pipeline import run

ROOT = Path(__file__).resolve().parents[2]


def _pipeline(tmp_path: Path, **overrides) -> Path:
    raw = yaml.safe_load((ROOT / "tests" / "data" / "digits.yaml").read_text())
    raw["teacher"]["path"] = str(tmp_path / "teacher.keras")
    raw.update(overrides)
    p = tmp_path / "digits.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run1")
    r = CliRunner().invoke(app, ["run", str(_pipeline(tmp)), "--out", str(tmp / "build")])
    assert r.exit_code == 0, r.output
    return tmp, json.loads((tmp / "build" / "manifest.json").read_text())


def test_manifest(first_run):
    tmp, m = first_run
    assert m["seed"] == 7 and m["pipeline"] == "digits_small"
    assert set(m["versions"]) >= {
        "edgeopt",
        "tensorflow",
        "tf-keras",
        "tensorflow-model-optimization",
        "ai-edge-litert",
    }
    assert all(v != "unknown" for v in m["versions"].values())
    assert m["baseline"]["quantization"] == "float32" and m["baseline"]["accuracy"] > 0.85
    names = [s["name"] for s in m["stages"]]
    assert names == ["teacher", "baseline", "distill", "prune", "cluster", "convert", "qat", "convert", "validate"]
    for s in m["stages"]:
        assert {"name", "output", "sha256", "seconds", "metrics"} <= set(s)
    assert m["stages"][0]["metrics"]["trained"] is True  # the teacher was missing, so it was trained
    arts = {a["quantization"]: a for a in m["artifacts"]}
    assert set(arts) == {"int8", "float16"}
    for a in arts.values():
        f = tmp / "build" / a["path"]
        assert f.is_file() and f.stat().st_size == a["bytes"] and a["accuracy"] is not None
        assert a["gzip_bytes"] < a["bytes"] and len(a["sha256"]) == 64
    assert arts["int8"]["inputs"][0]["dtype"] == "int8"
    assert (tmp / "build" / "05_qat" / "saved_model" / "saved_model.pb").is_file()
    kernels = next(s for s in m["stages"] if s["output"].endswith("model_int8.tflite"))["metrics"]["kernels"]
    dense = [v for k, v in kernels.items() if "Conv2D" not in k]
    assert dense and all(v["distinct_values"] <= 8 for v in dense)  # the 8 clusters survive int8
    assert (tmp / "build" / "02_prune" / "model.keras").is_file()
    assert (tmp / "build" / "07_validate" / "metrics.json").is_file()
    int8 = arts["int8"]
    assert {g["profile"] for g in int8["gates"]} == {"-", "cortex-m7-512k", "my-board"}
    arena = next(g for g in int8["gates"] if g["profile"] == "my-board" and g["gate"] == "arena_bytes")
    assert arena["status"] == "passed" and 0 < arena["measured"] <= 65536
    assert int8["latency"]["1"]["p50_ms"] > 0 and int8["speedup_vs_baseline_p50_1thread"] > 0
    assert (tmp / "build" / "07_validate" / "junit.xml").is_file()
    assert "cortex-m7-512k" in (tmp / "build" / "07_validate" / "report.md").read_text()
    assert m["passed"] is True


def test_same_seed_same_tflite_bytes(first_run, tmp_path):
    """A second run from scratch (teacher trained again) gives byte-identical .tflite files."""
    _, m1 = first_run
    r = CliRunner().invoke(app, ["run", str(_pipeline(tmp_path)), "--out", str(tmp_path / "build"), "-q"])
    assert r.exit_code == 0, r.output
    m2 = json.loads((tmp_path / "build" / "manifest.json").read_text())
    assert [a["sha256"] for a in m2["artifacts"]] == [a["sha256"] for a in m1["artifacts"]]
    assert m2["baseline"]["sha256"] == m1["baseline"]["sha256"]


def test_failed_gate_writes_manifest_and_exits_1(first_run, tmp_path):
    tmp, _ = first_run
    shutil.copy(tmp / "teacher.keras", tmp_path / "teacher.keras")
    raw = yaml.safe_load(_pipeline(tmp_path).read_text())
    raw["steps"] = [{"stage": "convert", "quantization": "float32"}, {"stage": "validate", "min_accuracy": 0.9999}]
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["run", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 1 and "min_accuracy" in r.output
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["passed"] is False and m["failed_gates"]


def test_library_run_returns_report(first_run, tmp_path):
    tmp, _ = first_run
    shutil.copy(tmp / "teacher.keras", tmp_path / "teacher.keras")
    cfg = load_pipeline(_pipeline(tmp_path, steps=[{"stage": "convert", "quantization": "dynamic"}]))
    report = run(cfg, tmp_path / "out")
    assert report.passed and report.manifest["artifacts"][0]["quantization"] == "dynamic"
    assert report.manifest["stages"][0]["metrics"]["trained"] is False


@pytest.mark.slow
def test_default_pipeline_end_to_end(tmp_path):
    """The real thing: pipelines/fashion_mnist.yaml (teacher trained if missing). `make test-slow`."""
    r = CliRunner().invoke(app, ["run", str(ROOT / "pipelines" / "fashion_mnist.yaml"), "--out", str(tmp_path), "-q"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["baseline"]["accuracy"] >= 0.91 and m["passed"]
    art = m["artifacts"][0]
    # the compression issue's targets: 40x smaller gzipped, within 1 point, 3x faster (LiteRT, 1 thread)
    assert art["quantization"] == "int8" and art["gzip_ratio_vs_baseline"] >= 40
    assert art["accuracy_drop_vs_baseline"] <= 0.01 and art["speedup_vs_baseline_p50_1thread"] >= 3


def test_lambda_teacher_needs_unsafe_in_the_pipeline_file(tmp_path):
    """A pipeline file says `teacher: {unsafe: true}` where the CLI stages take --unsafe."""
    from edgeopt._keras import keras

    inp = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(keras.layers.Flatten()(inp))
    keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x)).save(tmp_path / "lambda.keras")
    raw = {
        "name": "lam",
        "data": "digits",
        "teacher": {"path": str(tmp_path / "lambda.keras")},
        "steps": [{"stage": "convert", "quantization": "float32"}],
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 2 and "Lambda" in r.output and "unsafe" in r.output, r.output
    raw["teacher"]["unsafe"] = True
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["artifacts"][0]["quantization"] == "float32"
