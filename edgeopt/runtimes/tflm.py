"""TFLite Micro adapter (the runtime microcontrollers run), used inside the worker child process."""

from __future__ import annotations

from typing import Any

import numpy as np

NAME = "tflm"


def version() -> str:
    from importlib.metadata import version as v

    return v("tflite-micro")


def _interpreter(content: bytes, arena: int, preserve: bool = False) -> Any:
    from tflite_micro.python.tflite_micro import runtime

    if preserve:  # keeps intermediate tensors readable (GetTensor); needs a larger arena
        return runtime.Interpreter.from_bytes(
            content, arena_size=arena, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors
        )
    return runtime.Interpreter.from_bytes(content, arena_size=arena)


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    from edgeopt.runtimes.litert import quantize_values

    q = detail["quantization_parameters"]
    scales, zps = q["scales"], q["zero_points"]
    scale, zp = (float(scales[0]), int(zps[0])) if len(scales) else (0.0, 0)
    return quantize_values(x, detail["dtype"], scale, zp)


def _fits(content: bytes, sample: np.ndarray, arena: int) -> bool:
    try:
        it = _interpreter(content, arena)
        it.set_input(_quantize(sample, it.get_input_details(0)), 0)
        it.invoke()
        return True
    except (RuntimeError, ValueError):
        return False


def min_arena(content: bytes, sample: np.ndarray, *, limit: int = 8 << 20, step: int = 16) -> int:
    """The smallest tensor arena (bytes, to ``step``) with which the model allocates and runs."""
    if not _fits(content, sample, limit):
        # Find out why with a generous arena: an unsupported op is the usual reason.
        try:
            _interpreter(content, limit)
        except (RuntimeError, ValueError) as e:
            raise RuntimeError(f"TFLite Micro cannot run the model: {str(e).strip()[:300]}") from None
        raise RuntimeError(f"TFLite Micro needs more than {limit} bytes of arena")
    lo, hi = 0, limit
    while hi - lo > step:
        mid = (lo + hi) // 2
        if _fits(content, sample, mid):
            hi = mid
        else:
            lo = mid
    return hi


def run(content: bytes, x: np.ndarray, arena: int, tap: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw outputs (output tensor dtype) for every example, one at a time as on a device; with
    ``tap``, also that tensor's raw values (run with all tensors preserved and a 4x arena)."""
    it = _interpreter(content, arena * 4 if tap is not None else arena, preserve=tap is not None)
    detail = it.get_input_details(0)
    outs, tapped = [], []
    for i in range(len(x)):
        it.set_input(_quantize(x[i : i + 1], detail), 0)
        it.invoke()
        outs.append(np.array(it.get_output(0)))
        if tap is not None:
            t = it.GetTensor(tap, 0)
            tapped.append(np.asarray(t["tensor_data"]).reshape(t["shape"]))
    return np.concatenate(outs), (np.concatenate(tapped) if tap is not None else None)
