"""litert-quantizer (ai-edge-quantizer continued) recipes through convert: the weight dtypes inside the
.tflite, accuracy close to the float model, and (for int4) a model TFLite Micro runs."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt import stages
from edgeopt.config import ConvertConfig, ValidateConfig
from edgeopt.errors import BadInput
from edgeopt.pipeline.spec import load_pipeline
from edgeopt.profiles import load_profile
from edgeopt.stages import aeq


@pytest.fixture(scope="module")
def float_accuracy(tiny_model, digits) -> float:
    f32 = stages.convert(tiny_model, ConvertConfig(quantization="float32")).tflite
    return stages.validate(f32, digits, ValidateConfig(cross_check=False, latency=False)).measurements.accuracy


@pytest.fixture(scope="module")
def int4(tiny_model, digits):
    return stages.convert(tiny_model, ConvertConfig(quantization="int4"), data=digits)


def _kernels(r) -> dict[str, tuple[str, int]]:
    """layer -> (dtype, number of scales) of the weight tensors of tiny_cnn (conv1, fc1, logits)."""
    out = {}
    for name, k in r.metrics["kernels"].items():
        layer = next(part for part in ("conv1", "fc1", "logits") if f"/{part}/" in name)
        out[layer] = (k["dtype"], k["per_channel_scales"])
    return out


def test_int4_weights_and_int8_activations(int4, tiny_model, digits, float_accuracy):
    # conv per output channel (8 filters), dense per tensor: what TFLite Micro's kernels accept
    assert _kernels(int4) == {"conv1": ("int4", 8), "fc1": ("int4", 1), "logits": ("int4", 1)}
    assert all(k["distinct_values"] <= 16 for k in int4.metrics["kernels"].values())
    # two values a byte: the 4,096-weight fc1 kernel is stored in 2,048 bytes
    fc1 = next(k for n, k in int4.metrics["kernels"].items() if "/fc1/" in n)
    assert fc1["shape"] == [32, 128] and fc1["stored_bytes"] == 2048
    assert int4.metrics["inputs"][0]["dtype"] == "int8" and int4.metrics["outputs"][0]["dtype"] == "int8"
    assert int4.metrics["float_ops"] == [] and int4.metrics["calibration_samples"] == 200
    int8 = stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits)
    assert int4.metrics["bytes"] < int8.metrics["bytes"] - 2000  # 4.5k weights at half a byte
    v = stages.validate(int4.tflite, digits, ValidateConfig(cross_check=False, latency=False), keras_model=tiny_model)
    assert v.measurements.accuracy >= float_accuracy - 0.03, (v.measurements.accuracy, float_accuracy)


def test_int4_runs_in_tflite_micro(int4, tiny_model, digits):
    v = stages.validate(
        int4.tflite,
        digits,
        ValidateConfig(cross_check=False, latency=False, max_samples=200),
        keras_model=tiny_model,
        profiles=[load_profile("cortex-m7-512k")],
    )
    tflm = v.to_dict()["tflm"]
    assert v.crashed == [] and tflm is not None, v.failures
    assert tflm["agree"] >= 0.99 and tflm["arena_bytes"] < 64 * 1024


def test_weight_int8_and_static_int8(tiny_model, digits, float_accuracy):
    wo = stages.convert(tiny_model, ConvertConfig(quantization="weight-int8"))  # no calibration needed
    assert {k["dtype"] for k in wo.metrics["kernels"].values()} == {"int8"}
    assert wo.metrics["inputs"][0]["dtype"] == "float32" and wo.metrics["op_counts"]["DEQUANTIZE"] == 3
    st = stages.convert(tiny_model, ConvertConfig(quantization="int8-aeq"), data=digits)
    assert set(_kernels(st).values()) == {("int8", 8), ("int8", 32), ("int8", 10)}
    assert st.metrics["inputs"][0]["dtype"] == "int8" and st.metrics["float_ops"] == []
    for r in (wo, st):
        acc = stages.validate(r.tflite, digits, ValidateConfig(cross_check=False, latency=False)).measurements.accuracy
        assert abs(acc - float_accuracy) <= 0.02, (r.metrics["quantization"], acc, float_accuracy)


def test_recipe_and_errors(tiny_model, digits):
    rec = aeq.recipe(aeq.Quantization.int4)
    assert [(e["operation"], e["op_config"]["weight_tensor_config"]["num_bits"]) for e in rec] == [
        ("*", 8),
        ("CONV_2D", 4),
        ("FULLY_CONNECTED", 4),
    ]
    with pytest.raises(BadInput, match="int4 quantization needs calibration data"):
        stages.convert(tiny_model, ConvertConfig(quantization="int4"))
    int8 = stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits).tflite
    with pytest.raises(BadInput, match="needs a float32 .tflite"):
        aeq.quantize(int8, aeq.Quantization.int4, data=digits)
    with pytest.raises(ValueError, match="io_type float32 does not go with int4"):
        ConvertConfig(quantization="int4", io_type="float32")


def test_unpack_int4_low_nibble_first():
    # 0x21 -> 1, 2; 0xF8 -> -8, -1; an odd count drops the last high nibble
    assert np.array_equal(aeq.unpack_int4(bytes([0x21, 0xF8, 0x07]), 5), np.array([1, 2, -8, -1, 7], np.int8))


def test_flash_first_pipeline_file_loads():
    cfg = load_pipeline("pipelines/flash_first.yaml")
    convert = [s for s in cfg.steps if s.stage == "convert"]
    assert convert and all(s.quantization.value in ("int8", "int4") for s in convert)
    validate = next(s for s in cfg.steps if s.stage == "validate")
    assert "cortex-m7-512k" in validate.profiles
