"""int4, ternary and binary kernels trained in the loop: at most 16 / 3 / 2 integers per output channel,
stored as INT4 (half the int8 bytes), per channel in CONV_2D and per tensor in FULLY_CONNECTED, and run by
TFLite Micro as by LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt import stages
from edgeopt.config import ConvertConfig, QATConfig, ValidateConfig
from edgeopt.profiles import load_profile
from edgeopt.stages import aeq

LEVELS = {"int4": 16, "ternary": 3, "binary": 2}


@pytest.fixture(scope="module")
def int8_bytes(tiny_model, digits) -> int:
    return len(stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits).tflite)


@pytest.mark.parametrize("mode", ["int4", "ternary", "binary"])
def test_low_bit_kernels_in_the_tflite_and_tflite_micro(mode, tiny_model, digits, int8_bytes):
    q = stages.qat(tiny_model, digits, QATConfig(weights=mode, epochs=4, learning_rate=1e-3), seed=0)
    assert q.metrics["low_bit_layers"] == {
        "conv1": f"{mode} per channel",
        "fc1": f"{mode} per tensor",
        "logits": f"{mode} per tensor",
    }
    c = stages.convert(q.model, ConvertConfig(quantization="int8"), data=digits)
    kernels = aeq.weight_stats(c.tflite)
    assert len(kernels) == 3
    for name, k in kernels.items():
        assert k["dtype"] == "int4", (name, k)
        assert k["max_distinct_per_channel"] <= LEVELS[mode], (name, k)
        assert k["per_channel_scales"] == (8 if "conv1" in name else 1), (name, k)
        assert k["stored_bytes"] == -(-int(np.prod(k["shape"])) // 2)  # two weights a byte
    if mode != "int4":  # the training really ended on that many levels
        assert max(k["max_distinct_per_channel"] for k in kernels.values()) == LEVELS[mode]
    assert len(c.tflite) < int8_bytes - 2000  # 4.5k weights at half a byte: a binarized model is smaller in flash
    v = stages.validate(
        c.tflite,
        digits,
        # TFLite Micro and XNNPACK requantize differently: as for the int8 pipelines, 2 steps on the logits
        ValidateConfig(cross_check=False, latency=False, max_samples=200, max_step_diff=2),
        keras_model=q.model,
        profiles=[load_profile("cortex-m7-512k")],
    )
    tflm = v.to_dict()["tflm"]
    assert v.crashed == [] and tflm is not None and tflm["arena_bytes"], v.failures
    assert tflm["agree"] is True and tflm["vs_litert"]["top1_agreement"] >= 0.98, tflm["vs_litert"]
    assert v.measurements.accuracy > {"int4": 0.85, "ternary": 0.75, "binary": 0.6}[mode]
    assert abs(v.measurements.accuracy - q.metrics["accuracy"]) < 0.03  # the .tflite computes what QAT trained


def test_smallest_layers_keep_int8(tiny_model, digits):
    # conv1 (72 weights) and logits (320) hold 8.7% of the 4,488 kernel weights
    q = stages.qat(tiny_model, digits, QATConfig(weights="binary", int8_share=0.1, epochs=1, learning_rate=1e-3))
    assert q.metrics["low_bit_layers"] == {"fc1": "binary per tensor"}
    c = stages.convert(q.model, ConvertConfig(quantization="int8"), data=digits)
    dtypes = {next(n for n in ("conv1", "fc1", "logits") if f"_{n}/" in k or f"/{n}/" in k): s["dtype"]
              for k, s in aeq.weight_stats(c.tflite).items()}  # fmt: skip
    assert dtypes == {"conv1": "int8", "fc1": "int4", "logits": "int8"}


def test_low_bit_refuses_to_preserve_clusters():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="cannot preserve"):
        QATConfig(weights="binary", preserve="cluster")
