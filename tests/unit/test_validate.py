import numpy as np
import pytest

from edgeopt import stages
from edgeopt.config import ConvertConfig, ValidateConfig
from edgeopt.errors import BadInput
from edgeopt.runtimes.litert import dequantize, quantize


@pytest.fixture(scope="module")
def f32(tiny_model):
    return stages.convert(tiny_model, ConvertConfig(quantization="float32")).tflite


def test_float32_matches_keras(f32, tiny_model, digits):
    r = stages.validate(f32, digits, keras_model=tiny_model)
    m = r.metrics
    assert m["samples"] == len(digits.x_test)
    assert m["agreement"] == 1.0 and m["accuracy"] == pytest.approx(m["keras_accuracy"])
    assert m["max_abs_output_diff"] < 1e-4 and m["outputs_finite"] and m["passed"]
    assert m["accuracy"] > 0.85


def test_min_accuracy_gate(f32, digits):
    ok = stages.validate(f32, digits, ValidateConfig(min_accuracy=0.5)).metrics
    assert ok["passed"] and ok["gates"][0]["status"] == "passed"
    bad = stages.validate(f32, digits, ValidateConfig(min_accuracy=0.999)).metrics
    assert not bad["passed"] and bad["gates"][0]["status"] == "failed"


def test_accuracy_drop_gate(f32, digits):
    m = stages.validate(f32, digits, ValidateConfig(max_accuracy_drop=1.0), baseline_accuracy=1.0).metrics
    assert not m["passed"] and m["gates"][0]["status"] == "failed" and "points" in m["gates"][0]["detail"]
    m = stages.validate(f32, digits, ValidateConfig(max_accuracy_drop=1.0)).metrics
    assert m["gates"][0]["status"] == "not evaluated"


def test_max_samples(f32, digits):
    assert stages.validate(f32, digits, ValidateConfig(max_samples=50, batch_size=16)).metrics["samples"] == 50


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
