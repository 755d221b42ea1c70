"""Activation ranges by percentile or by least quantization error instead of min/max.

The TFLite converter computes activation ranges itself from the representative dataset, with no option
to choose how. Its own two-step path is the way in (it is what TensorFlow's quantization debugger uses):
with ``converter._experimental_calibrate_only = True`` the converter stops after calibration and returns
a float ``.tflite`` whose activation tensors carry the calibrated ``min``/``max`` in their quantization
parameters; ``tensorflow.lite.python.convert.mlir_quantize`` then quantizes such a model. Between the two
steps edgeopt runs the calibrated model on the same calibration images in LiteRT (every tensor kept),
collects each activation tensor's values, replaces ``min``/``max`` by the chosen estimator's range, and
hands the edited model to ``mlir_quantize``. With min/max left as calibrated, the two steps give the same
tensors, scales and integers as the converter's one-step ``convert()``.

Estimators:

- ``percentile``: ``[P(100 - p), P(p)]`` of the values (a lower end at 0 or above stays at the minimum,
  so a ReLU output keeps 0 exactly);
- ``mse``: the range ``[a * min, b * max]`` (``a``, ``b`` in (0, 1]) whose 8-bit quantization of the values
  has the least mean squared error; ``a`` and ``b`` are searched on a grid, first together, then apart.

Tensors that must share one scale (the input and output of MAX_POOL_2D, RESHAPE, ...) are estimated
together, from all their values. The model's inputs and outputs keep the converter's ranges (an input's
range is the data's; clipping the outputs changes what the caller reads: on a model with rare large hidden
activations, clipping its linear outputs at the 1st/99th percentile made the output error 5.7x that of
min/max), and so do fixed-range outputs (SOFTMAX, LOGISTIC, TANH).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeopt.quant.flatbuf import pack
from edgeopt.tflite import op_names, parse

log = logging.getLogger(__name__)

#: ops whose output the int8 kernels require at the scale and zero point of their (first) input
SAME_SCALE_OPS = {
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "RESHAPE",
    "SQUEEZE",
    "EXPAND_DIMS",
    "TRANSPOSE",
    "SLICE",
    "STRIDED_SLICE",
    "CONCATENATION",
    "PAD",
    "GATHER",
    "SPACE_TO_DEPTH",
    "DEPTH_TO_SPACE",
    "RESIZE_NEAREST_NEIGHBOR",
}
#: ops whose int8 output range is fixed by the kernel, whatever was calibrated
FIXED_RANGE_OPS = {"SOFTMAX", "LOGISTIC", "TANH", "LOG_SOFTMAX"}
#: values kept per tensor (a uniform subsample beyond this)
MAX_VALUES = 2_000_000


def calibrate_only(converter: Any) -> bytes:
    """The converter's calibrated float model (``_experimental_calibrate_only``); the converter must be set
    up for full-integer conversion (optimizations, representative dataset)."""
    converter._experimental_calibrate_only = True  # noqa: SLF001 - the converter's own two-step path
    return converter.convert()


def quantize_calibrated(calibrated: bytes, io_dtype: Any, allow_float: bool = False) -> bytes:
    """``mlir_quantize`` of a calibrated model: full-integer, per-channel weights, inputs and outputs of
    ``io_dtype`` (a tf dtype)."""
    from tensorflow.lite.python import convert as tfl_convert

    return tfl_convert.mlir_quantize(
        calibrated,
        disable_per_channel=False,
        fully_quantize=not allow_float,
        input_data_type=io_dtype,
        output_data_type=io_dtype,
    )


def _op_names(model: Any) -> list[str]:
    names = op_names(model)
    return [names[op.opcodeIndex] for op in model.subgraphs[0].operators or []]


def activation_groups(calibrated: bytes) -> tuple[list[list[int]], set[int]]:
    """(groups of activation tensor indices that must share a range, tensors to leave alone: model inputs
    and outputs, fixed-range outputs). Every calibrated activation is in exactly one group."""
    model = parse(calibrated, "calibrated model")
    sg = model.subgraphs[0]
    calibrated_idx = [
        i
        for i, t in enumerate(sg.tensors)
        if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1
    ]
    parent = {i: i for i in calibrated_idx}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    keep = {int(i) for i in sg.inputs} | {int(o) for o in sg.outputs}
    for op, name in zip(sg.operators or [], _op_names(model), strict=True):
        outs = [int(o) for o in (op.outputs if op.outputs is not None else []) if o >= 0]
        ins = [int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0]
        if name in FIXED_RANGE_OPS:
            keep.update(outs)
        if name in SAME_SCALE_OPS:
            linked = [t for t in (ins if name == "CONCATENATION" else ins[:1]) + outs if t in parent]
            for t in linked[1:]:
                parent[find(t)] = find(linked[0])
    groups: dict[int, list[int]] = {}
    for i in calibrated_idx:
        groups.setdefault(find(i), []).append(i)
    return list(groups.values()), keep


def collect(calibrated: bytes, samples: np.ndarray, tensors: list[int], seed: int = 0) -> dict[int, np.ndarray]:
    """Every value each of ``tensors`` takes when the calibrated (float) model runs on ``samples``, one
    example at a time as the calibrator does (at most ``MAX_VALUES`` a tensor, subsampled uniformly)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True, num_threads=1)
    inp = it.get_input_details()[0]
    if list(inp["shape"][1:]) != list(samples.shape[1:]) or inp["shape"][0] != 1:
        it.resize_tensor_input(inp["index"], [1, *samples.shape[1:]])
    it.allocate_tensors()
    acc: dict[int, list[np.ndarray]] = {t: [] for t in tensors}
    for i in range(len(samples)):
        it.set_tensor(inp["index"], samples[i : i + 1].astype(np.float32))
        it.invoke()
        for t in tensors:
            acc[t].append(np.asarray(it.get_tensor(t), dtype=np.float32).ravel())
    rng = np.random.default_rng(seed)
    out = {}
    for t, parts in acc.items():
        v = np.concatenate(parts)
        out[t] = v if v.size <= MAX_VALUES else rng.choice(v, MAX_VALUES, replace=False)
    return out


def percentile_range(v: np.ndarray, p: float) -> tuple[float, float]:
    lo, hi = float(v.min()), float(v.max())
    if lo < 0:
        lo = float(np.percentile(v, 100.0 - p))
    hi = float(np.percentile(v, p)) if hi > 0 else hi
    return min(lo, 0.0), max(hi, 0.0)


def quant_error(v: np.ndarray, lo: float, hi: float, levels: int = 256) -> float:
    """Mean squared error of ``v`` quantized to ``levels`` steps on [lo, hi] (zero exactly representable,
    as TFLite nudges it)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return float(np.mean(v**2))
    scale = (hi - lo) / (levels - 1)
    zp = np.round(-lo / scale)
    q = np.clip(np.round(v / scale) + zp, 0, levels - 1)
    return float(np.mean(((q - zp) * scale - v) ** 2))


def mse_range(v: np.ndarray, *, grid: int = 100, max_values: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """The range ``[a * min, b * max]`` with the least 8-bit quantization error on ``v``."""
    if v.size > max_values:
        v = np.random.default_rng(seed).choice(v, max_values, replace=False)
    lo0, hi0 = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
    fr = np.linspace(1.0 / grid, 1.0, grid)
    best = min(fr, key=lambda f: quant_error(v, lo0 * f, hi0 * f))
    a = b = float(best)
    if lo0 < 0 and hi0 > 0:  # a signed tensor: each end on its own, the other held
        b = float(min(fr, key=lambda f: quant_error(v, lo0 * a, hi0 * f)))
        a = float(min(fr, key=lambda f: quant_error(v, lo0 * f, hi0 * b)))
    return lo0 * a, hi0 * b


def estimate(
    calibrated: bytes, samples: np.ndarray, method: str, *, percentile: float = 99.99, seed: int = 0
) -> dict[int, tuple[float, float, float, float]]:
    """``{tensor index: (calibrated min, calibrated max, new min, new max)}`` for every activation the
    estimator sets (``method``: ``percentile`` or ``mse``)."""
    groups, keep = activation_groups(calibrated)
    groups = [g for g in groups if not keep.intersection(g)]
    values = collect(calibrated, samples, sorted({t for g in groups for t in g}), seed=seed)
    tensors = parse(calibrated).subgraphs[0].tensors
    out = {}
    for g in groups:
        v = np.concatenate([values[t] for t in g])
        lo, hi = percentile_range(v, percentile) if method == "percentile" else mse_range(v, seed=seed)
        for t in g:
            q = tensors[t].quantization
            out[t] = (float(q.min[0]), float(q.max[0]), lo, hi)
    return out


def with_ranges(calibrated: bytes, ranges: dict[int, tuple[float, float, float, float]]) -> bytes:
    """The calibrated model with the new ``min``/``max`` of ``ranges`` written into its tensors."""
    model = parse(calibrated, "calibrated model")
    tensors = model.subgraphs[0].tensors
    for t, (_, _, lo, hi) in ranges.items():
        tensors[t].quantization.min = np.array([lo], np.float32)
        tensors[t].quantization.max = np.array([hi], np.float32)
    return pack(model, len(calibrated))


def summary(ranges: dict[int, tuple[float, float, float, float]]) -> dict[str, Any]:
    """How much the estimator narrowed the calibrated ranges (width new / calibrated)."""
    ratios = [(r[3] - r[2]) / (r[1] - r[0]) for r in ranges.values() if r[1] - r[0] > 0]
    return {
        "tensors": len(ranges),
        "width_ratio_mean": float(np.mean(ratios)) if ratios else None,
        "width_ratio_min": float(np.min(ratios)) if ratios else None,
    }
