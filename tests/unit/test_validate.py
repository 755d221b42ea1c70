import numpy as np
import pytest

from edgeopt import stages
from edgeopt.config import ConvertConfig, ValidateConfig
from edgeopt.errors import BadInput, GateFailed
from edgeopt.runtimes.litert import dequantize, quantize
from edgeopt.stages._common import predict
from edgeopt.validation import GateStatus, ValidationResult


@pytest.fixture(scope="module")
def f32(tiny_model):
    return stages.convert(tiny_model, ConvertConfig(quantization="float32")).tflite


@pytest.fixture(scope="module")
def keras_accuracy(tiny_model, digits) -> float:
    """Top-1 of the Keras model on the test split, computed here rather than taken from validate."""
    return float(np.mean(np.argmax(predict(tiny_model, digits.x_test), -1) == digits.y_test))


@pytest.fixture(scope="module")
def f32_result(f32, digits) -> ValidationResult:
    return stages.validate(f32, digits, name="f32.tflite")


def test_float32_matches_keras(f32, tiny_model, digits, keras_accuracy):
    r = stages.validate(f32, digits, keras_model=tiny_model)
    m = r.measurements
    assert isinstance(r, ValidationResult) and r.passed and r.gates == [] and r.crashed == []
    assert m.samples == len(digits.x_test) == 360
    assert m.agreement == 1.0 and m.accuracy == keras_accuracy == m.keras_accuracy
    assert m.max_abs_output_diff < 1e-4 and m.outputs_finite and m.predicted_classes == 10
    c = m.kernel_cross_check
    assert c.samples == 200 and c.unit == "abs" and c.agree and c.max_diff < 1e-5
    lat = m.latency["1"]
    assert lat.runs >= 50 and lat.p50_ms <= lat.p90_ms <= lat.p99_ms and len(lat.times_ms) == lat.runs


def test_int8_accuracy_within_3_points_of_keras(tiny_model, digits, keras_accuracy):
    content = stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits).tflite
    m = stages.validate(content, digits, keras_model=tiny_model).measurements
    assert abs(m.accuracy - keras_accuracy) <= 0.03 and m.keras_accuracy == keras_accuracy
    assert m.accuracy_drop_vs_keras == round(keras_accuracy - m.accuracy, 12)  # no float noise in the JSON
    assert m.agreement >= 0.95


def test_min_accuracy_gate(f32, digits, f32_result):
    acc = f32_result.measurements.accuracy
    ok = stages.validate(f32, digits, ValidateConfig(min_accuracy=acc, latency=False, cross_check=False))
    g = ok.gate("-", "min_accuracy")
    assert ok.passed and g.status is GateStatus.passed and g.measured == acc
    bad = stages.validate(f32, digits, ValidateConfig(min_accuracy=acc + 0.01, latency=False, cross_check=False))
    g = bad.gate("-", "min_accuracy")
    assert not bad.passed and g.status is GateStatus.failed
    assert g.detail == f"top-1 accuracy {acc:.4f} on 360 test examples (budget >= {acc + 0.01:.4f})"
    with pytest.raises(GateFailed, match=r"model: 1 gate\(s\) failed: -/min_accuracy") as e:
        bad.raise_for_status()
    assert e.value.exit_code == 1


def test_accuracy_drop_gate(f32, digits, f32_result):
    acc = f32_result.measurements.accuracy
    fast = {"latency": False, "cross_check": False}
    r = stages.validate(f32, digits, ValidateConfig(max_accuracy_drop=1.0, **fast), baseline_accuracy=1.0)
    g = r.gate("-", "max_accuracy_drop")
    drop = round((1.0 - acc) * 100, 9)
    assert not r.passed and g.status is GateStatus.failed and g.measured == drop and g.unit == "points"
    want = f"{drop:.2f} points below the teacher (float32 baseline) (1.0000 -> {acc:.4f}) (budget <= 1.00 points)"
    assert g.detail == want
    same = stages.validate(f32, digits, ValidateConfig(max_accuracy_drop=0.0, **fast), baseline_accuracy=acc)
    g = same.gate("-", "max_accuracy_drop")
    assert g.status is GateStatus.passed and g.measured == 0.0 and g.detail.startswith("0.00 points below")
    r = stages.validate(f32, digits, ValidateConfig(max_accuracy_drop=1.0, **fast))
    assert r.gate("-", "max_accuracy_drop").status is GateStatus.not_evaluated and r.passed
    with pytest.raises(GateFailed, match="-/max_accuracy_drop not evaluated: no baseline accuracy"):
        r.raise_for_status(strict=True)


def test_max_samples(f32, digits):
    r = stages.validate(f32, digits, ValidateConfig(max_samples=50, batch_size=16, latency=False))
    assert r.measurements.samples == 50 and r.measurements.kernel_cross_check.samples == 50


def test_result_dict_round_trip(f32_result):
    d = f32_result.to_dict()
    assert d["schema"] == "edgeopt.validation/1" and d["model"] == "f32.tflite" and d["passed"] is True
    assert ValidationResult.from_dict(d).to_dict() == d


@pytest.mark.parametrize("content", [b"", b"<html>nope</html>", b"\0" * 64])
def test_not_a_model(content, digits):
    with pytest.raises(BadInput):
        stages.validate(content, digits)


def test_quantize_roundtrip():
    detail = {"dtype": np.int8, "quantization": (1 / 255, -128), "name": "x"}
    x = np.array([0.0, 0.5, 1.0, 2.0], dtype=np.float32)
    q = quantize(x, detail)
    assert q.dtype == np.int8 and q[0] == -128 and q[-1] == 127  # clipped, not wrapped
    np.testing.assert_allclose(dequantize(q, detail)[:3], x[:3], atol=1 / 255)
