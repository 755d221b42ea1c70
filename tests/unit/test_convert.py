import numpy as np
import pytest

from edgeopt import stages
from edgeopt._keras import keras, tf
from edgeopt.config import ConvertConfig
from edgeopt.errors import BadInput
from edgeopt.stages import ConversionError
from edgeopt.tflite import constant_tensors


def _weights(content: bytes) -> list[dict]:
    return [t for t in constant_tensors(content) if len(t["shape"]) >= 2]  # kernels, not biases or shapes


def test_float32(tiny_model):
    r = stages.convert(tiny_model, ConvertConfig(quantization="float32"))
    assert r.tflite[4:8] == b"TFL3"
    assert {t["dtype"] for t in _weights(r.tflite)} == {"float32"}
    assert r.metrics["inputs"][0]["dtype"] == "float32" and r.metrics["bytes"] == len(r.tflite)
    assert r.metrics["op_counts"]["FULLY_CONNECTED"] == 2 and r.metrics["gzip_bytes"] < r.metrics["bytes"]


def test_dynamic_and_float16_weights(tiny_model):
    dyn = stages.convert(tiny_model, ConvertConfig(quantization="dynamic"))
    assert "int8" in {t["dtype"] for t in _weights(dyn.tflite)}
    f16 = stages.convert(tiny_model, ConvertConfig(quantization="float16"))
    assert {t["dtype"] for t in _weights(f16.tflite)} == {"float16"}
    f32 = stages.convert(tiny_model, ConvertConfig(quantization="float32"))
    assert f16.metrics["bytes"] < 0.7 * f32.metrics["bytes"]


def test_int8_is_full_integer(tiny_model, digits):
    r = stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits)
    assert {t["dtype"] for t in _weights(r.tflite)} == {"int8"}
    inp, out = r.metrics["inputs"][0], r.metrics["outputs"][0]
    assert inp["dtype"] == out["dtype"] == "int8"
    # The input range is the calibration data's (widened to hold 0) over the 256 int8 steps.
    rep = digits.representative(200)
    lo, hi = min(float(rep.min()), 0.0), max(float(rep.max()), 0.0)
    assert (lo, hi) == (0.0, 1.0)  # digits pixels are 0..16 scaled by 1/16
    assert inp["scale"] == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert inp["zero_point"] == round(-128 - lo / inp["scale"])
    # Softmax outputs lie in [0, 1]: TFLite fixes their int8 scale at 1/256 and the zero point at -128.
    assert (out["scale"], out["zero_point"]) == (pytest.approx(1 / 256, rel=1e-6), -128)
    assert r.metrics["float_ops"] == [] and r.metrics["calibration_samples"] == 200
    # the int8 model answers like the Keras model
    v = stages.validate(r.tflite, digits, keras_model=tiny_model)
    assert abs(v.measurements.accuracy - v.measurements.keras_accuracy) <= 0.03
    assert v.measurements.agreement >= 0.95


def test_int8_uint8_and_float_io(tiny_model, digits):
    u8 = stages.convert(tiny_model, ConvertConfig(quantization="int8", io_type="uint8"), data=digits)
    assert u8.metrics["inputs"][0]["dtype"] == "uint8"
    f = stages.convert(tiny_model, ConvertConfig(quantization="int8", io_type="float32"), data=digits)
    assert f.metrics["inputs"][0]["dtype"] == "float32" and "QUANTIZE" in f.metrics["op_counts"]


def test_int16x8(tiny_model, digits):
    r = stages.convert(tiny_model, ConvertConfig(quantization="int16x8"), data=digits)
    assert r.metrics["inputs"][0]["dtype"] == "int16"
    assert "int8" in {t["dtype"] for t in _weights(r.tflite)}


def test_int8_needs_data(tiny_model):
    with pytest.raises(BadInput, match="needs calibration data"):
        stages.convert(tiny_model, ConvertConfig(quantization="int8"))


def test_same_seed_same_bytes(tiny_model, digits):
    a = stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits, seed=5)
    b = stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits, seed=5)
    assert a.tflite == b.tflite


def _model_with(fn):
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Lambda(fn)(x)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))


def test_no_silent_float_fallback(digits):
    m = _model_with(tf.math.sin)  # SIN has no int8 kernel: the converter would keep it float
    with pytest.raises(ConversionError, match="SIN in float.*--allow-float-fallback"):
        stages.convert(m, ConvertConfig(quantization="int8"), data=digits)
    r = stages.convert(m, ConvertConfig(quantization="int8", allow_float_fallback=True), data=digits)
    assert r.metrics["float_fallback_ops"] == ["SIN"]


def test_unconvertible_op_is_named(digits):
    with pytest.raises(ConversionError, match=r"tf\.Erf"):
        stages.convert(_model_with(tf.math.erf), ConvertConfig(quantization="int8"), data=digits)


def test_caller_model_unchanged(tiny_model, digits):
    before = [w.copy() for w in tiny_model.get_weights()]
    stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits)
    assert all(np.array_equal(a, b) for a, b in zip(before, tiny_model.get_weights(), strict=True))
