"""The layer graph of a tf-keras model as the post-training methods need it: which layer feeds which,
the layers with kernels, their inputs on calibration data, and their linear (pre-activation) outputs.

Only Sequential and functional models (a layer graph) qualify; every layer is looked at through the
one node it has in the model (a layer shared between two call sites is never rewritten).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt._keras import keras, tf
from edgeopt.errors import BadInput

#: Layer types whose kernel the methods rewrite (their class names in tf-keras).
LINEAR_TYPES = ("Conv2D", "DepthwiseConv2D", "Dense")


def require_graph(model: Any, what: str) -> None:
    """BadInput for a subclassed model or one that is not a tf-keras model (a SavedModel, a QAT model)."""
    if isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False):
        if any(
            type(layer).__name__ == "QuantizeWrapperV2" or "Quantize" in type(layer).__name__ for layer in model.layers
        ):
            raise BadInput(f"{what} is a post-training method: this model was trained with quantization (QAT)")
        return
    raise BadInput(f"{what} needs a Keras Sequential or functional model (got {type(model).__name__})")


def inbound(model: Any) -> dict[str, list[str]]:
    """``{layer name: names of the layers whose outputs it reads}`` (the first layer of a Sequential model,
    and input layers, read nothing), from the model's config: Keras keeps no public graph API."""
    if isinstance(model, keras.Sequential):
        names = [layer.name for layer in model.layers]
        return {n: names[i - 1 : i] for i, n in enumerate(names)}
    out: dict[str, list[str]] = {}
    for entry in model.get_config()["layers"]:
        out[entry["name"]] = list(dict.fromkeys(_node_names(entry.get("inbound_nodes") or [])))
    return out


def _node_names(v: Any) -> list[str]:
    """Layer names in a (nested) tf-keras ``inbound_nodes`` entry: ``[name, node_index, tensor_index, kwargs]``."""
    if isinstance(v, list | tuple):
        if len(v) >= 3 and isinstance(v[0], str) and isinstance(v[1], int):
            return [v[0], *_node_names(v[3] if len(v) > 3 else [])]
        return [n for x in v for n in _node_names(x)]
    if isinstance(v, dict):
        return [n for x in v.values() for n in _node_names(x)]
    return []


def consumers(model: Any) -> dict[str, list[str]]:
    """``{layer name: the layers that read its output}``."""
    out: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    for name, srcs in inbound(model).items():
        for s in srcs:
            out.setdefault(s, []).append(name)
    return out


def clone_with(model: Any, edits: dict[str, dict[str, Any]], replace: dict[str, Any] | None = None) -> Any:
    """A copy of ``model`` (fresh weights: the caller sets them) in which layer ``name`` is rebuilt from its
    config updated with ``edits[name]``, or is ``replace[name]`` (a layer) instead."""
    replace = replace or {}

    def clone(layer: Any) -> Any:
        if layer.name in replace:
            return replace[layer.name]
        return type(layer).from_config({**layer.get_config(), **edits.get(layer.name, {})})

    return keras.models.clone_model(model, clone_function=clone)


def kind(layer: Any) -> str:
    return type(layer).__name__


def activation_name(layer: Any) -> str:
    """The fused activation of a layer with one (``linear`` when none), or ``""`` for a layer without."""
    act = getattr(layer, "activation", None)
    return "" if act is None else getattr(act, "__name__", str(act))


def linear_layers(model: Any) -> list[Any]:
    """Conv2D, DepthwiseConv2D and Dense layers in model order (the ones the methods rewrite)."""
    return [layer for layer in model.layers if kind(layer) in LINEAR_TYPES]


def out_channel_axis(layer: Any) -> int:
    """The axis of the kernel that indexes output channels (the converter quantizes along it)."""
    return 2 if kind(layer) == "DepthwiseConv2D" else -1


def kernel_and_bias(layer: Any) -> tuple[np.ndarray, np.ndarray | None]:
    w = layer.get_weights()
    return w[0], (w[1] if len(w) > 1 else None)


def layer_inputs(model: Any, layers: list[Any], x: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
    """The input each of ``layers`` receives when ``model`` runs on ``x`` (one forward pass)."""
    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    outs = probe.predict(x, batch_size=batch_size, verbose=0)
    return [np.asarray(o) for o in (outs if isinstance(outs, list) else [outs])]


def linear_twin(layer: Any, kernel: np.ndarray | None = None, bias: np.ndarray | None = None) -> Any:
    """A copy of ``layer`` without its activation (with a bias), holding ``kernel`` and ``bias`` (default:
    the layer's own): calling it gives the layer's pre-activation output."""
    cfg = {**layer.get_config(), "activation": "linear", "use_bias": True}
    twin = type(layer).from_config(cfg)
    twin.build(layer.input_shape)
    k, b = kernel_and_bias(layer)
    k = k if kernel is None else kernel
    b = (np.zeros(_bias_size(layer, k), np.float32) if b is None else b) if bias is None else bias
    twin.set_weights([k, b])
    return twin


def _bias_size(layer: Any, kernel: np.ndarray) -> int:
    if kind(layer) == "DepthwiseConv2D":
        return kernel.shape[2] * kernel.shape[3]
    return kernel.shape[-1]


def channel_mean(y: np.ndarray) -> np.ndarray:
    """Mean of every output channel (last axis) over examples and positions."""
    return y.reshape(-1, y.shape[-1]).mean(axis=0)


def apply_linear(layer: Any, x: Any, kernel: Any, bias: Any | None) -> Any:
    """The layer's pre-activation output on ``x`` with ``kernel`` and ``bias`` (tensors: differentiable
    in them), using the layer's strides, padding and dilation."""
    k = kind(layer)
    if k == "Dense":
        y = tf.tensordot(x, kernel, axes=1)
    elif k == "Conv2D":
        y = tf.nn.convolution(
            x, kernel, strides=list(layer.strides), padding=layer.padding.upper(), dilations=list(layer.dilation_rate)
        )
    elif k == "DepthwiseConv2D":
        y = tf.nn.depthwise_conv2d(
            x,
            kernel,
            strides=[1, *layer.strides, 1],
            padding=layer.padding.upper(),
            dilations=list(layer.dilation_rate),
        )
    else:  # pragma: no cover - callers pass LINEAR_TYPES only
        raise BadInput(f"no linear op for {k}")
    return y if bias is None else y + bias


def activation_fn(layer: Any) -> Any:
    """The layer's fused activation as a function of tensors (identity for ``linear``)."""
    name = activation_name(layer)
    return {"relu": tf.nn.relu, "relu6": tf.nn.relu6, "linear": tf.identity, "": tf.identity}.get(
        name, layer.activation
    )
