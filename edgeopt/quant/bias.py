"""Bias correction (Nagel et al. 2019, section 4.2), empirical form: the rounding of the weights to the
int8 grid shifts the mean of a layer's outputs (``E[(W_q - W) x]`` is rarely zero), and the shift adds
up layer after layer. For each layer in order, the mean pre-activation output of the float model and of
a copy whose kernels so far are on the converter's grid (biases already corrected) are measured on the
calibration inputs, and the difference per output channel is added to the layer's bias. The converter
then quantizes the same kernels to the same integers, with the corrected biases.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeopt._keras import keras
from edgeopt.quant import grid
from edgeopt.quant.fold import fold_batchnorm
from edgeopt.quant.graph import (
    channel_mean,
    clone_with,
    kind,
    layer_inputs,
    linear_layers,
    linear_twin,
    require_graph,
)

log = logging.getLogger(__name__)


def with_biases(model: Any) -> Any:
    """A copy of ``model`` in which every Conv2D, DepthwiseConv2D and Dense layer has a bias (zeros where
    it had none), so a correction has somewhere to go."""
    missing = {layer.name for layer in linear_layers(model) if not layer.use_bias}
    copy = clone_with(model, {name: {"use_bias": True} for name in missing})
    old = {layer.name: layer for layer in model.layers}
    for layer in copy.layers:
        w = old[layer.name].get_weights()
        if layer.name in missing:
            n = w[0].shape[2] * w[0].shape[3] if kind(layer) == "DepthwiseConv2D" else w[0].shape[-1]
            w = [w[0], np.zeros(n, np.float32), *w[1:]]
        if w:
            layer.set_weights(w)
    return copy


def on_grid(model: Any) -> Any:
    """A copy of ``model`` whose kernels are replaced by the values the converter's int8 integers stand for."""

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in linear_layers(copy):
        w = layer.get_weights()
        w[0] = grid.fake_quantize(w[0], depthwise=grid.is_depthwise(layer))
        layer.set_weights(w)
    return copy


def output_shift(float_model: Any, quant_model: Any, name: str, x: np.ndarray) -> np.ndarray:
    """Mean pre-activation output of layer ``name`` per channel, float model minus ``quant_model`` (the
    same architecture, its own weights), each fed by its own earlier layers on ``x``."""
    lf, lq = float_model.get_layer(name), quant_model.get_layer(name)
    xf = layer_inputs(float_model, [lf], x)[0]
    xq = layer_inputs(quant_model, [lq], x)[0]
    yf = np.asarray(linear_twin(lf)(xf))
    yq = np.asarray(linear_twin(lq)(xq))
    return channel_mean(yf) - channel_mean(yq)


def bias_correct(model: Any, x: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` (BatchNorm folded, every kernel layer given a bias) whose biases cancel the mean
    output shift of int8 weights on the calibration inputs ``x``; the metrics give, per layer, the mean
    |shift| measured before the correction and after it."""
    require_graph(model, "bias correction")
    ref, _ = fold_batchnorm(model)  # the float model: the target, never changed
    out = with_biases(ref)  # float kernels, corrected biases: what the converter gets
    sim = on_grid(out)  # kernels on the grid, the same corrected biases: what the .tflite computes
    per_layer = {}
    for layer in linear_layers(out):
        shift = output_shift(ref, sim, layer.name, x)
        for m in (out, sim):
            w = m.get_layer(layer.name).get_weights()
            w[1] = (w[1] + shift).astype(np.float32)
            m.get_layer(layer.name).set_weights(w)
        after = output_shift(ref, sim, layer.name, x)
        per_layer[layer.name] = {
            "mean_abs_shift_before": float(np.abs(shift).mean()),
            "mean_abs_shift_after": float(np.abs(after).mean()),
        }
    log.info("bias correction on %d layers", len(per_layer))
    return out, {"layers": per_layer}
