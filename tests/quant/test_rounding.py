"""The int8 grid the methods simulate is the converter's; AdaRound's integers reach the .tflite and lower
each layer's output error; bias correction cancels the mean output shift it measured."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt import stages
from edgeopt import tflite as tfl
from edgeopt.config import ConvertConfig
from edgeopt.quant import grid
from edgeopt.quant.adaround import adaround
from edgeopt.quant.bias import bias_correct, on_grid, output_shift
from edgeopt.quant.graph import linear_layers


def _tflite_kernels(content: bytes) -> dict[str, np.ndarray]:
    """int8 kernels of tiny_cnn's layers in the .tflite, in Keras layout."""
    out = {}
    for t in tfl.constant_tensors(content):
        if t["dtype"] != "int8" or len(t["shape"]) < 2:
            continue
        name = next(n for n in ("conv1", "fc1", "logits") if f"/{n}/" in t["name"])
        v = t["values"].reshape(t["shape"])
        out[name] = v.transpose(1, 2, 3, 0) if v.ndim == 4 else v.T  # (out, kh, kw, in) / (units, in)
    return out


@pytest.fixture(scope="module")
def calib(digits):
    return digits.representative(200)


def test_grid_is_the_converters(tiny_model, digits):
    c = stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits).tflite
    got = _tflite_kernels(c)
    for layer in linear_layers(tiny_model):
        q, _ = grid.quantize(layer.get_weights()[0])
        assert np.array_equal(got[layer.name], q), layer.name


def test_adaround_changes_rounding_and_lowers_layer_error(tiny_model, digits, calib):
    model, m = adaround(tiny_model, calib, iterations=300, seed=0)
    for name, lm in m["layers"].items():
        assert lm["rounded_differently"] > 0.01, (name, lm)  # not nearest rounding
        assert lm["mse_adaround"] < lm["mse_nearest"], (name, lm)  # closer to the float layer's output
    # the converter stores exactly AdaRound's integers: same scales, no re-rounding
    c = stages.convert(tiny_model, ConvertConfig(quantization="int8", adaround=True, adaround_iterations=300),
                       data=digits).tflite  # fmt: skip
    got = _tflite_kernels(c)
    for layer in linear_layers(model):
        k_ada = layer.get_weights()[0]
        q_ada, s = grid.quantize(k_ada)
        assert np.allclose(k_ada, q_ada * s, atol=1e-6 * np.abs(k_ada).max())  # on the grid already
        assert np.array_equal(got[layer.name], q_ada), layer.name
        q_near, _ = grid.quantize(tiny_model.get_layer(layer.name).get_weights()[0])
        assert not np.array_equal(q_ada, q_near)


def test_bias_correction_cancels_the_shift_it_measured(unequal_model, digits, calib):
    corrected, m = bias_correct(unequal_model, calib)
    for name, lm in m["layers"].items():
        assert lm["mean_abs_shift_after"] < 0.01 * lm["mean_abs_shift_before"], (name, lm)
    # measured again, independently: float model vs the corrected model with its kernels on the int8 grid
    sim = on_grid(corrected)
    for name in ("conv1", "fc1", "logits"):
        before = np.abs(output_shift(unequal_model, on_grid(unequal_model), name, calib)).mean()
        after = np.abs(output_shift(unequal_model, sim, name, calib)).mean()
        assert after < 0.05 * before, (name, before, after)
    # the shift is what int8 weights do on average: on held-out images it is smaller too
    held = digits.x_test[:300]
    assert (
        np.abs(output_shift(unequal_model, sim, "logits", held)).mean()
        < np.abs(output_shift(unequal_model, on_grid(unequal_model), "logits", held)).mean()
    )
