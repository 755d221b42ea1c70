"""Cross-layer equalisation (Nagel et al., "Data-Free Quantization Through Weight Equalization and
Bias Correction", ICCV 2019, section 4.1).

Two layers in a row, ``y = W2 f(W1 x + b1)``, with ``f`` positively homogeneous per channel (ReLU,
LeakyReLU, none, max or average pooling, flatten, dropout: ``f(x / s) = f(x) / s`` for ``s > 0``),
compute the same function after output channel ``i`` of the first layer is divided by ``s_i`` and input
channel ``i`` of the second multiplied by it. With ``s_i = sqrt(r1_i / r2_i)``, where ``r1_i`` is the
range (largest magnitude) of the first layer's output channel ``i`` and ``r2_i`` that of the second
layer's input channel ``i``, both become ``sqrt(r1_i * r2_i)``: channels with wide weight ranges stop
dominating, and so do their activations, which int8 quantizes with one scale for the whole tensor.

ReLU6 is not homogeneous (its clip at 6 moves when the channel is scaled). The paper replaces it by ReLU;
here that is a choice (``relu6=True``), because it changes the float model wherever an activation
exceeded 6: the metrics say how many calibration activations did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeopt._keras import keras
from edgeopt.quant.fold import fold_batchnorm
from edgeopt.quant.graph import (
    activation_name,
    clone_with,
    consumers,
    kind,
    layer_inputs,
    linear_twin,
    require_graph,
)

log = logging.getLogger(__name__)

# Layers between the two that scale with their input channel by channel.
_POOLS = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D")
_PASS = ("Dropout", "SpatialDropout2D", "GaussianDropout", "Flatten", "Identity", *_POOLS)
_FIRST = ("Conv2D", "DepthwiseConv2D", "Dense")
_SECOND = ("Conv2D", "DepthwiseConv2D", "Dense")


@dataclass
class Pair:
    """Two layers to equalise and what lies between them."""

    first: str
    second: str
    between: list[str] = field(default_factory=list)
    flatten: bool = False  # a Flatten between: channel c of the first is rows c::C of the second's kernel
    relu6: list[str] = field(default_factory=list)  # ReLU6 to turn into ReLU (layer names; the first's own)


def _act_kind(layer: Any) -> str:
    """``homogeneous``, ``relu6`` or ``other`` for an activation layer or a layer's fused activation."""
    k = kind(layer)
    if k == "ReLU":
        mv = layer.max_value
        mv = None if mv is None else float(np.asarray(mv))
        if float(np.asarray(layer.threshold)) != 0.0:
            return "other"
        if mv is None:
            return "homogeneous"
        return "relu6" if mv == 6.0 and float(np.asarray(layer.negative_slope)) == 0.0 else "other"
    if k == "LeakyReLU":
        return "homogeneous"
    name = activation_name(layer)
    if name in ("linear", "relu"):
        return "homogeneous"
    if name == "relu6":
        return "relu6"
    return "other"


def find_pairs(model: Any, *, relu6: bool = False) -> list[Pair]:
    """The layer pairs of ``model`` (BatchNorm already folded) that equalisation may rescale."""
    outs = consumers(model)
    layers = {layer.name: layer for layer in model.layers}
    pairs = []
    for first in model.layers:
        if kind(first) not in _FIRST:
            continue
        if kind(first) == "DepthwiseConv2D" and first.depth_multiplier != 1:
            continue
        own = _act_kind(first)
        if own == "other" or (own == "relu6" and not relu6):
            continue
        pair = Pair(first.name, "", relu6=[first.name] if own == "relu6" else [])
        cur = first.name
        while True:
            nxt = outs.get(cur, [])
            if len(nxt) != 1:
                break
            layer = layers[nxt[0]]
            k = kind(layer)
            if k in _SECOND:
                if k == "DepthwiseConv2D" and layer.depth_multiplier != 1:
                    break
                if pair.flatten and k != "Dense":
                    break
                pair.second = layer.name
                break
            if k in ("ReLU", "LeakyReLU", "Activation"):
                a = _act_kind(layer)
                if a == "other" or (a == "relu6" and not relu6):
                    break
                if a == "relu6":
                    pair.relu6.append(layer.name)
            elif k in _PASS:
                if k == "Flatten":
                    if len(layer.input_shape) != 4:
                        break
                    pair.flatten = True
            else:
                break
            pair.between.append(layer.name)
            cur = layer.name
        if pair.second:
            pairs.append(pair)
    return pairs


def out_ranges(layer: Any) -> np.ndarray:
    """Largest |weight| of every output channel."""
    k = layer.get_weights()[0]
    if kind(layer) == "DepthwiseConv2D":
        k = k.reshape(*k.shape[:2], -1)
    return np.abs(k).reshape(-1, k.shape[-1]).max(axis=0)


def in_ranges(layer: Any, channels: int, flatten: bool) -> np.ndarray:
    """Largest |weight| reading each of ``channels`` input channels."""
    k = layer.get_weights()[0]
    if kind(layer) == "Dense":
        rows = np.abs(k).max(axis=1)
        return rows.reshape(-1, channels).max(axis=0) if flatten else rows
    # Conv2D (kh, kw, in, out) and DepthwiseConv2D (kh, kw, in, 1): input channel on axis 2
    return np.abs(k).transpose(2, 0, 1, 3).reshape(k.shape[2], -1).max(axis=1)


def _scale_pair(first: Any, second: Any, pair: Pair) -> float:
    """Rescale one pair in place; the largest |log s| applied (0 when nothing moved)."""
    r1 = out_ranges(first)
    r2 = in_ranges(second, r1.size, pair.flatten)
    ok = (r1 > 0) & (r2 > 0)
    s = np.ones_like(r1)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    w1 = first.get_weights()
    k1 = w1[0]
    if kind(first) == "DepthwiseConv2D":
        k1 = (k1.reshape(*k1.shape[:2], -1) / s).reshape(k1.shape)
    else:
        k1 = k1 / s
    new1 = [k1.astype(np.float32)] + ([(w1[1] / s).astype(np.float32)] if len(w1) > 1 else [])
    first.set_weights(new1)
    w2 = second.get_weights()
    k2 = w2[0]
    if kind(second) == "Dense":
        rows = np.tile(s, k2.shape[0] // s.size) if pair.flatten else s
        k2 = k2 * rows[:, None]
    else:
        k2 = k2 * s[None, None, :, None]
    second.set_weights([k2.astype(np.float32), *w2[1:]])
    return float(np.max(np.abs(np.log(s)))) if s.size else 0.0


@dataclass
class EqualizeResult:
    model: Any
    metrics: dict[str, Any]


def equalize(
    model: Any, *, relu6: bool = False, sweeps: int = 20, tolerance: float = 1e-4, x: np.ndarray | None = None
) -> EqualizeResult:
    """A copy of ``model`` with BatchNorm folded and every equalisable pair rescaled, sweeping over the
    pairs until no scale moves by more than ``tolerance`` (a layer can sit in two pairs). ``relu6``:
    equalise across ReLU6 too, turning those into ReLU; ``x`` (calibration inputs) then measures how
    many activations exceeded 6, that is where the float model changed."""

    require_graph(model, "equalize")
    folded, bns = fold_batchnorm(model)
    pairs = find_pairs(folded, relu6=relu6)
    relu6_layers = sorted({n for p in pairs for n in p.relu6})
    clipped = None
    if relu6_layers:
        if x is not None:
            clipped = _share_above_six(folded, relu6_layers, x)
        folded = _relu6_to_relu(folded, set(relu6_layers))
        pairs = find_pairs(folded, relu6=False)
    layers = {layer.name: layer for layer in folded.layers}
    spread_before = _spread(layers, pairs)
    moved, done = 0.0, 0
    while pairs and done < sweeps:
        moved = max(_scale_pair(layers[p.first], layers[p.second], p) for p in pairs)
        done += 1
        if moved < tolerance:
            break
    metrics = {
        "pairs": [[p.first, p.second] for p in pairs],
        "folded_batchnorm": bns,
        "sweeps": done,
        "last_move": moved,
        "range_spread_before": spread_before,
        "range_spread_after": _spread(layers, pairs),
        "relu6_replaced": relu6_layers,
        "relu6_share_above_6": clipped,
    }
    log.info("equalised %d layer pairs in %d sweeps", len(pairs), metrics["sweeps"])
    assert isinstance(folded, keras.Model)
    return EqualizeResult(folded, metrics)


def _spread(layers: dict[str, Any], pairs: list[Pair]) -> float | None:
    """The largest ratio between the widest and narrowest output channel range of a pair's first layer."""
    worst = None
    for p in pairs:
        r = out_ranges(layers[p.first])
        r = r[r > 0]
        if r.size:
            worst = max(worst or 0.0, float(r.max() / r.min()))
    return worst


def _share_above_six(model: Any, names: list[str], x: np.ndarray) -> dict[str, float]:
    """For every ReLU6 about to become ReLU: the share of its activations on ``x`` that exceeded 6."""

    layers = [model.get_layer(n) for n in names]
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    outs = probe.predict(x, batch_size=256, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    shares = {}
    for layer, y in zip(layers, outs, strict=True):
        if kind(layer) in _FIRST:  # fused: its output is already clipped, so ask the linear output
            y = linear_twin(layer)(layer_inputs(model, [layer], x)[0]).numpy()
            shares[layer.name] = float((y > 6.0).mean())
        else:
            pre = keras.Model(model.inputs, layer.input).predict(x, batch_size=256, verbose=0)
            shares[layer.name] = float((np.asarray(pre) > 6.0).mean())
    return shares


def _relu6_to_relu(model: Any, names: set[str]) -> Any:
    """A copy of ``model`` whose named ReLU6 layers (and fused relu6 activations) are plain ReLU."""
    layers = {layer.name: layer for layer in model.layers}
    edits = {n: {"max_value": None} if kind(layers[n]) == "ReLU" else {"activation": "relu"} for n in names}
    copy = clone_with(model, edits)
    copy.set_weights(model.get_weights())
    return copy
