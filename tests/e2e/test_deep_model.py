"""A deep model of depthwise/BatchNorm blocks passes the runtime cross-checks with the default gates (their
bound grows with the depth), and a runtime with one broken kernel fails them, naming the op where it parts
from the other runtime (the kernel is broken for real in the runtime's child process, by
``tests/faultinject``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeopt.export import export
from edgeopt.pipeline.spec import PipelineConfig
from edgeopt.tflite import inspect
from tests.faultinject import fault_env, fired

PROFILE = "cortex-m7-512k"  # TFLite Micro (its agreement gate) and the kernel cross-check; no phone calibration


@pytest.fixture(scope="module")
def deep(digits, tmp_path_factory) -> Path:
    """``mobilenet_style`` (14 convolutions, 6 of them depthwise, BatchNorm, ReLU6, 3 residual Adds) trained
    for a few seconds on digits."""
    from edgeopt import zoo
    from edgeopt._keras import keras, set_seed
    from edgeopt.artifacts import save_model

    set_seed(0)
    m = zoo.build("mobilenet_style", digits.input_shape, digits.num_classes)
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(digits.x_train, digits.y_train, batch_size=64, epochs=40, verbose=0)  # BatchNorm statistics settle late
    acc = m.evaluate(digits.x_test, digits.y_test, verbose=0)[1]
    assert acc > 0.8, acc
    return save_model(m, tmp_path_factory.mktemp("deep") / "deep.keras")


@pytest.fixture(scope="module")
def exported(deep, tmp_path_factory):
    """The default pipeline file's conversion and validation (its default gates) of the deep model, exported."""
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "pipelines/fashion_mnist.yaml").read_text())
    validate = next(s for s in raw["steps"] if s["stage"] == "validate")
    cfg = PipelineConfig.model_validate(
        {
            "name": "deep",
            "seed": 0,
            "data": "digits",
            "teacher": {"path": str(deep)},
            "steps": [{"stage": "convert", "quantization": "int8"}, {**validate, "profiles": [PROFILE]}],
        }
    )
    out = tmp_path_factory.mktemp("deep_export")
    return export(cfg, out / "dist", build_dir=out / "build", strict=True)


def test_the_deep_model_passes_the_default_gates(exported):
    assert exported.passed, exported.manifest.validation.failed_gates
    gates = {g["gate"]: g for g in exported.manifest.model("mcu").validation[PROFILE]}
    for name in ("kernel_cross_check", "tflm_agreement"):
        g = gates[name]
        assert g["status"] == "passed" and g["budget"] >= 8, g  # 2 sqrt(depth): 16+ requantizing ops
        assert "2 sqrt(depth" in g["detail"]


def corrupted(int8: Path, tmp_path: Path, spec: str) -> tuple[subprocess.CompletedProcess, dict, list]:
    log = tmp_path / "faults"
    log.mkdir()
    out = tmp_path / "v.json"
    args = [sys.executable, "-m", "edgeopt", "validate", str(int8), "--data", "digits", "--profile", PROFILE]
    r = subprocess.run(
        [*args, "--no-latency", "--json", str(out)],
        env=fault_env(spec, log),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return r, json.loads(out.read_text())["models"][0] if out.exists() else {}, fired(log)


def third_depthwise(content: bytes) -> int:
    ops = inspect(content)["ops"]
    return [i for i, op in enumerate(ops) if op == "DEPTHWISE_CONV_2D"][2]


def test_a_broken_reference_kernel_fails_the_cross_check_and_is_named(exported, tmp_path):
    path = Path(exported.manifest.build_dir) / exported.manifest.model("mcu").build_artifact
    k = third_depthwise(path.read_bytes())
    spec = f"litert_eval@reference:corrupt={k},litert_tensors@reference:corrupt={k}"
    r, report, faults = corrupted(path, tmp_path, spec)
    assert r.returncode == 1, r.stderr
    assert {f["target"] for f in faults} == {"litert_eval@reference", "litert_tensors@reference"}
    gates = {(g["profile"], g["gate"]): g for g in report["gates"]}
    bad = gates[(PROFILE, "kernel_cross_check")]
    assert bad["status"] == "failed" and bad["measured"] > bad["budget"]
    assert f"first divergence at op {k} DEPTHWISE_CONV_2D" in bad["detail"], bad["detail"]
    assert report["kernel_cross_check"]["first_divergence"]["op_index"] == k
    assert gates[(PROFILE, "tflm_agreement")]["status"] == "passed"  # TFLite Micro still agrees with XNNPACK


def test_a_broken_tflm_kernel_fails_the_agreement_and_is_named(exported, tmp_path):
    path = Path(exported.manifest.build_dir) / exported.manifest.model("mcu").build_artifact
    k = third_depthwise(path.read_bytes())
    r, report, _ = corrupted(path, tmp_path, f"tflm_eval:corrupt={k},tflm_tensors:corrupt={k}")
    assert r.returncode == 1, r.stderr
    gates = {(g["profile"], g["gate"]): g for g in report["gates"]}
    bad = gates[(PROFILE, "tflm_agreement")]
    assert bad["status"] == "failed" and f"first divergence at op {k} DEPTHWISE_CONV_2D" in bad["detail"]
    assert gates[(PROFILE, "kernel_cross_check")]["status"] == "passed"
