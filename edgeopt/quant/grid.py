"""The integer grid the TFLite converter puts weights on, simulated in NumPy so a method can see the
weights the ``.tflite`` will hold before converting.

TensorFlow 2.21's converter quantizes the kernels of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED
per output channel, symmetric, on the narrow int8 range [-127, 127]: ``scale = max|w| / 127`` of the
channel, ``q = round(w / scale)``. (Checked on the converter's output: the int8 kernels of a Dense
layer carry one scale per unit; ``edgeopt.quant`` tests compare this simulation with the .tflite.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

QMAX = {8: 127, 4: 7}


def channels_last(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """The kernel with output channels on the last axis: a depthwise kernel (kh, kw, C, M) becomes
    (kh, kw, C * M), as TFLite stores it."""
    if depthwise:
        return kernel.reshape(*kernel.shape[:2], -1)
    return kernel


def scales(kernel: np.ndarray, *, depthwise: bool = False, bits: int = 8, per_channel: bool = True) -> np.ndarray:
    """Symmetric scales (``max|w| / qmax``) per output channel, or one for the tensor."""
    k = channels_last(kernel, depthwise)
    m = np.abs(k).reshape(-1, k.shape[-1]).max(axis=0) if per_channel else np.abs(k).max(keepdims=True)
    return np.where(m > 0, m / QMAX[bits], 1.0).astype(np.float32)


def quantize(
    kernel: np.ndarray, *, depthwise: bool = False, bits: int = 8, per_channel: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(integers, scales)``: the kernel on the converter's grid (same shape as ``kernel``)."""
    s = scales(kernel, depthwise=depthwise, bits=bits, per_channel=per_channel)
    k = channels_last(kernel, depthwise)
    q = np.clip(np.round(k / s), -QMAX[bits], QMAX[bits])
    return q.reshape(kernel.shape).astype(np.int32), s


def dequantize(q: np.ndarray, s: np.ndarray, *, depthwise: bool = False) -> np.ndarray:
    shape = q.shape
    return (channels_last(q, depthwise) * s).reshape(shape).astype(np.float32)


def fake_quantize(
    kernel: np.ndarray, *, depthwise: bool = False, bits: int = 8, per_channel: bool = True
) -> np.ndarray:
    """The float values the converter's integers stand for."""
    q, s = quantize(kernel, depthwise=depthwise, bits=bits, per_channel=per_channel)
    return dequantize(q, s, depthwise=depthwise)


def is_depthwise(layer: Any) -> bool:
    return type(layer).__name__ == "DepthwiseConv2D"
