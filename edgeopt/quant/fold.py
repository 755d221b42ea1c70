"""Fold BatchNormalization into the convolution or Dense layer before it, as the TFLite converter does.

The methods that rewrite weights (equalisation, bias correction, AdaRound) must see the kernel the
``.tflite`` will hold: with a BatchNormalization after a convolution that is ``kernel * gamma /
sqrt(var + eps)``, not the Keras kernel. Folding gives a model without the BN layers (each replaced by
an identity ``Activation("linear")`` of the same name) that computes the same function in inference.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeopt._keras import keras
from edgeopt.quant.graph import activation_name, clone_with, consumers, inbound, kind, linear_layers

log = logging.getLogger(__name__)


class Identity(keras.layers.Layer):
    """Passes its input through (what a folded BatchNormalization becomes). It takes the call arguments a
    BatchNormalization node may carry: a model read from Keras 3 passes ``mask``."""

    def call(self, inputs: Any, **kwargs: Any) -> Any:
        return inputs


def foldable(model: Any) -> dict[str, str]:
    """``{BatchNormalization layer: the layer it folds into}``: a BN on the last axis whose only input is
    a Conv2D, DepthwiseConv2D or Dense without activation that feeds nothing else."""
    ins, outs = inbound(model), consumers(model)
    linear = {layer.name: layer for layer in linear_layers(model)}
    pairs = {}
    for layer in model.layers:
        if kind(layer) != "BatchNormalization":
            continue
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        rank = len(layer.input_shape)
        if axis is None or axis not in (-1, rank - 1):
            continue
        src = ins.get(layer.name, [])
        if len(src) != 1 or src[0] not in linear or outs.get(src[0]) != [layer.name]:
            continue
        if activation_name(linear[src[0]]) != "linear":
            continue
        pairs[layer.name] = src[0]
    return pairs


def fold_batchnorm(model: Any) -> tuple[Any, list[str]]:
    """A copy of ``model`` with every foldable BatchNormalization folded into its layer; the names of
    the folded BN layers. The caller's model is not touched."""
    pairs = foldable(model)
    if not pairs:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy, []
    targets = set(pairs.values())
    folded = clone_with(
        model, {name: {"use_bias": True} for name in targets}, replace={bn: Identity(name=bn) for bn in pairs}
    )
    by_name = {layer.name: layer for layer in model.layers}
    bn_of = {v: k for k, v in pairs.items()}
    for new in folded.layers:
        old = by_name[new.name]
        if new.name in pairs or not old.weights:
            continue
        if new.name not in targets:
            new.set_weights(old.get_weights())
            continue
        w = old.get_weights()
        kernel = w[0]
        bias = w[1] if len(w) > 1 else np.zeros(_out_channels(old, kernel), np.float32)
        gamma, beta, mean, var = _bn_params(by_name[bn_of[new.name]])
        factor = gamma / np.sqrt(var + by_name[bn_of[new.name]].epsilon)
        if kind(old) == "DepthwiseConv2D":
            kernel = (kernel.reshape(*kernel.shape[:2], -1) * factor).reshape(kernel.shape)
        else:
            kernel = kernel * factor
        new.set_weights([kernel.astype(np.float32), ((bias - mean) * factor + beta).astype(np.float32)])
    log.debug("folded %d BatchNormalization layers", len(pairs))
    return folded, sorted(pairs)


def _out_channels(layer: Any, kernel: np.ndarray) -> int:
    return kernel.shape[2] * kernel.shape[3] if kind(layer) == "DepthwiseConv2D" else kernel.shape[-1]


def _bn_params(bn: Any) -> tuple[np.ndarray, ...]:
    """gamma, beta, moving mean, moving variance (gamma 1 and beta 0 when the layer has none)."""
    n = int(bn.moving_mean.shape[0])
    gamma = bn.gamma.numpy() if bn.gamma is not None else np.ones(n, np.float32)
    beta = bn.beta.numpy() if bn.beta is not None else np.zeros(n, np.float32)
    return gamma, beta, bn.moving_mean.numpy(), bn.moving_variance.numpy()
