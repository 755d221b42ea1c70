"""The check's test inputs and the reference outputs: examples quantized with the model's input scale,
and TFLite Micro's Python interpreter (in a child process) on the same bytes."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.data import load_dataset
from edgeopt.errors import BadInput
from edgeopt.runtimes.isolate import run_task
from edgeopt.runtimes.litert import quantize_values

REFERENCE_TIMEOUT = 600.0  # TFLite Micro's Python interpreter, in its child process


def sample_inputs(
    info: dict[str, Any], n: int, data: str | None, seed: int = 0, x: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """``n`` examples as rows of raw input-tensor bytes, and where they came from: the first ``n`` of the
    data's test split (or of ``x``, float examples) quantized with the model's input scale and zero
    point, or (no data, or several inputs) uniform random values of each input's dtype."""
    specs = info["inputs"]
    if (data or x is not None) and len(specs) == 1:
        if x is None:
            x = load_dataset(data).x_test
        t = specs[0]
        shape = [d if d > 0 else 1 for d in t["shape"]]
        if x[:n].size != len(x[:n]) * int(np.prod(shape[1:])):
            raise BadInput(f"{data or 'the data'}'s examples have shape {x.shape[1:]}, the model takes {t['shape']}")
        x = x[:n].reshape((-1, *shape[1:]))
        q = quantize_values(x.astype(np.float32), t["dtype"], t["scale"], t["zero_point"])
        rows = np.ascontiguousarray(q).view(np.uint8).reshape(len(q), -1)
        how = (
            f"the first {len(q)} test examples of {data or 'the given data'}, quantized with the input's scale "
            f"{t['scale']:.6g} "
            f"and zero point {t['zero_point']}"
        )
        return rows, how
    rng = np.random.default_rng(seed)
    parts = []
    for t in specs:
        dt = np.dtype(t["dtype"])
        shape = [n, *[d if d > 0 else 1 for d in t["shape"]][1:]]
        if dt.kind == "f":
            v = rng.uniform(-1, 1, size=shape).astype(dt)
        else:
            info_ = np.iinfo(dt)
            v = rng.integers(info_.min, info_.max, size=shape, endpoint=True, dtype=dt)
        parts.append(np.ascontiguousarray(v).view(np.uint8).reshape(n, -1))
    why = "no data given" if not data else "the model has several inputs"
    return np.concatenate(parts, axis=1), f"{n} uniform random inputs of each input's dtype (seed {seed}; {why})"


def split_rows(rows: np.ndarray, specs: list[dict[str, Any]]) -> list[list[np.ndarray]]:
    out = []
    for row in rows:
        off, ex = 0, []
        for t in specs:
            dt = np.dtype(t["dtype"])
            shape = [d if d > 0 else 1 for d in t["shape"]]
            k = int(np.prod(shape)) * dt.itemsize
            ex.append(np.frombuffer(row[off : off + k].tobytes(), dt).reshape(shape))
            off += k
        out.append(ex)
    return out


def reference_outputs(content: bytes, info: dict[str, Any], rows: np.ndarray, timeout: float) -> np.ndarray:
    """TFLite Micro's Python interpreter (reference kernels, in a child process) on the same input bytes."""
    specs = [{"dtype": t["dtype"], "shape": [d if d > 0 else 1 for d in t["shape"]]} for t in info["inputs"]]
    _, y = run_task("tflm_raw", "tflm", content, rows, timeout=timeout, inputs=specs, outputs=len(info["outputs"]))
    return y
