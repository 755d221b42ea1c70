"""Low-bit weights trained in the loop (QAT): 4-bit integers, ternary {-a, 0, a} and binary {-a, a}, all
stored in the ``.tflite`` as INT4 with int8 activations.

Each kernel passes through a fake-quant op with ``num_bits=4``, narrow range and ``min = -7 s``,
``max = 7 s`` (so its integers are in [-7, 7] and its scale is ``s``). TensorFlow 2.21's converter turns
such a kernel into an INT4 tensor (two values a byte), and TFLite Micro and LiteRT run it with their int8
kernels (they unpack it). For int4, ``s = max|w| / 7``; for binary (BinaryConnect, Courbariaux et al.
2015, with XNOR-Net's scale, Rastegari et al. 2016) the kernel is ``a * sign(w)`` with ``a = mean|w|``
and ``s = a``, so the integers are -1 and +1; ternary (TWN, Li et al. 2016) zeroes the weights under
``0.7 * mean|w|`` and scales the rest by their mean magnitude. The rounding is a straight-through
estimator: the float weights train, the forward pass sees their low-bit values.

Where the scale is per output channel and where per tensor follows what TFLite Micro runs: CONV_2D takes
per-channel INT4 filters, FULLY_CONNECTED only per-tensor ones (kernels/fully_connected_common.cc), so
Dense kernels get one scale. DepthwiseConv2D kernels stay at 8 bits (few weights; the converter's
per-channel fake-quant of a depthwise kernel would need a reshape it does not fold).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt._keras import keras, tf, tfmot

_q = tfmot.quantization.keras

#: the integer levels each format uses (at most)
LEVELS = {"int4": 15, "ternary": 3, "binary": 2}
#: layer types whose kernel gets low-bit weights, and whether per output channel (TFLite Micro's rule)
LOW_BIT_LAYERS = {"Conv2D": True, "Dense": False}


class LowBitWeights(_q.quantizers.Quantizer):
    """A kernel quantizer for tfmot: ``mode`` int4, ternary or binary; ``per_axis``: one scale per output
    channel (the last axis) or one for the tensor.

    While training it computes the low-bit kernel from the float one (straight-through) and records the
    range in two variables. ``freeze`` then stores the low-bit values in the kernel itself and sets
    ``frozen``: the graph traced for conversion is then a fake-quant of a constant with constant ranges, the
    pattern the converter turns into an INT4 tensor (the converter does not fold a large kernel's sign
    and scale arithmetic, and would compute it at run time)."""

    def __init__(self, mode: str, per_axis: bool) -> None:
        if mode not in LEVELS:
            raise ValueError(f"mode {mode!r}; allowed: {', '.join(LEVELS)}")
        self.mode, self.per_axis = mode, per_axis
        self.frozen = False

    def build(self, tensor_shape: Any, name: str, layer: Any) -> dict[str, Any]:
        shape = (int(tensor_shape[-1]),) if self.per_axis else ()
        init = keras.initializers.Constant
        lo = layer.add_weight(name + "_min", shape=shape, initializer=init(-1.0), trainable=False)
        hi = layer.add_weight(name + "_max", shape=shape, initializer=init(1.0), trainable=False)
        return {"min_var": lo, "max_var": hi}

    def values(self, w: Any) -> tuple[Any, Any]:
        """(the low-bit kernel, straight-through in ``w``; its scale ``s``: integers = kernel / s)."""
        mag = tf.abs(w)
        axes = list(range(len(w.shape) - 1)) if self.per_axis else None
        if self.mode == "int4":
            return w, tf.maximum(tf.stop_gradient(tf.reduce_max(mag, axis=axes)) / 7.0, 1e-8)
        if self.mode == "binary":
            s = tf.maximum(tf.stop_gradient(tf.reduce_mean(mag, axis=axes)), 1e-8)
            return w + tf.stop_gradient(s * tf.where(w >= 0, 1.0, -1.0) - w), s
        keep = tf.cast(mag > 0.7 * tf.reduce_mean(mag, axis=axes), w.dtype)  # ternary
        s = tf.reduce_sum(mag * keep, axis=axes) / tf.maximum(tf.reduce_sum(keep, axis=axes), 1.0)
        s = tf.maximum(tf.stop_gradient(s), 1e-8)
        return w + tf.stop_gradient(s * tf.sign(w) * keep - w), s

    def _fake_quant(self, x: Any, lo: Any, hi: Any) -> Any:
        fq = tf.quantization
        if self.per_axis:
            return fq.fake_quant_with_min_max_vars_per_channel(x, lo, hi, num_bits=4, narrow_range=True)
        return fq.fake_quant_with_min_max_vars(x, lo, hi, num_bits=4, narrow_range=True)

    def __call__(self, inputs: Any, training: Any, weights: Any, **kwargs: Any) -> Any:
        if self.frozen:
            return self._fake_quant(inputs, weights["min_var"], weights["max_var"])
        q, s = self.values(inputs)
        weights["min_var"].assign(-7.0 * s)
        weights["max_var"].assign(7.0 * s)
        return self._fake_quant(q, -7.0 * s, 7.0 * s)

    def get_config(self) -> dict[str, Any]:
        return {"mode": self.mode, "per_axis": self.per_axis}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LowBitWeights) and self.get_config() == other.get_config()

    def __ne__(self, other: object) -> bool:
        return not self == other


def freeze(model: Any) -> dict[str, int]:
    """Write every low-bit kernel's final values into the kernel and its range into the quantizer's
    variables, then switch the quantizers to ``frozen`` (for conversion; the function the model computes
    does not change: the low-bit values of low-bit values are themselves). ``{layer: most distinct
    integers of an output channel}``."""
    levels = {}
    for layer in model.layers:
        for weight, quantizer, qvars in getattr(layer, "_weight_vars", []):
            if not isinstance(quantizer, LowBitWeights):
                continue
            q, s = quantizer.values(tf.constant(weight.numpy()))
            qv = q.numpy()
            weight.assign(qv)
            qvars["min_var"].assign(-7.0 * s)
            qvars["max_var"].assign(7.0 * s)
            quantizer.frozen = True
            ints = np.round(qv / s.numpy())
            levels[layer.name] = max(int(np.unique(ints[..., c]).size) for c in range(ints.shape[-1]))
    return levels


class LowBitConfig(_q.QuantizeConfig):
    """Low-bit kernel, int8 activation (as tfmot's default config for Conv2D and Dense, with the kernel
    quantizer swapped)."""

    def __init__(self, mode: str, per_axis: bool) -> None:
        self.mode, self.per_axis = mode, per_axis

    def get_weights_and_quantizers(self, layer: Any) -> list[tuple[Any, Any]]:
        return [(layer.kernel, LowBitWeights(self.mode, self.per_axis))]

    def get_activations_and_quantizers(self, layer: Any) -> list[tuple[Any, Any]]:
        return [
            (
                layer.activation,
                _q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False),
            )
        ]

    def set_quantize_weights(self, layer: Any, quantize_weights: list[Any]) -> None:
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer: Any, quantize_activations: list[Any]) -> None:
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer: Any) -> list[Any]:
        return []

    def get_config(self) -> dict[str, Any]:
        return {"mode": self.mode, "per_axis": self.per_axis}


CUSTOM_OBJECTS = {"LowBitWeights": LowBitWeights, "LowBitConfig": LowBitConfig}


def annotate(model: Any, mode: str, keep: set[str]) -> tuple[Any, dict[str, str]]:
    """``model`` annotated for tfmot: Conv2D and Dense layers not in ``keep`` with low-bit kernels (``mode``),
    every other layer as tfmot annotates it by default (8 bits). Returns the annotated model and
    ``{layer: "int4 per channel"...}``."""
    chosen: dict[str, str] = {}

    def clone(layer: Any) -> Any:
        kind = type(layer).__name__
        if kind in LOW_BIT_LAYERS and layer.name not in keep:
            per_axis = LOW_BIT_LAYERS[kind]
            chosen[layer.name] = f"{mode} per {'channel' if per_axis else 'tensor'}"
            return _q.quantize_annotate_layer(
                layer.__class__.from_config(layer.get_config()), LowBitConfig(mode, per_axis)
            )
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return _q.quantize_annotate_model(copy), chosen


def levels_per_channel(values: np.ndarray) -> int:
    """Most distinct integers in one output channel (axis 0 of a TFLite kernel)."""
    return max(int(np.unique(values[i]).size) for i in range(values.shape[0]))
