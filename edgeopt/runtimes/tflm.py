"""TFLite Micro adapter (the runtime microcontrollers run), used inside the worker child process."""

from __future__ import annotations

import faulthandler
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.progress import captured_stderr
from edgeopt.runtimes.litert import quantize_values

NAME = "tflm"

# The arena search starts at START_ARENA and doubles it up to MAX_ARENA: a model that needs far more
# than its profile's budget (EfficientNetB0 at 96x96: ~1 MB) still gets a figure ("needs N bytes,
# budget M") instead of "failed to allocate".
START_ARENA = 8 << 20
MAX_ARENA = 64 << 20
# Lines TFLite Micro prints (MicroPrintf) when an op of the model has no kernel or a kernel refuses its
# tensors: such a model cannot run with any arena, so the search stops at once.
_CANNOT_RUN = re.compile(
    r"Didn't find op|Failed to get registration|Missing registration|not supported|Unsupported|"
    r"Hybrid models|Dynamic tensors",
    re.IGNORECASE,
)
_EXCEEDED_RE = re.compile(r"TFLite Micro needs more than (\d+) bytes of tensor arena")


class CannotRun(RuntimeError):
    """An op of the model cannot run in TFLite Micro (the message names it), whatever the arena."""


class ProbeCrashed(RuntimeError):
    """TFLite Micro died by ``signal`` on an arena that was not shown to be too small (no larger arena
    had run): the model crashes the runtime, whatever the arena (e.g. the int8 SOFTMAX abort)."""

    def __init__(self, signal: int, arena: int, said: list[str]) -> None:
        last = f" ({said[-1][:200]})" if said else ""
        super().__init__(f"TFLite Micro died by signal {signal} with a {arena}-byte arena{last}")
        self.signal, self.arena, self.said = signal, arena, said


class ArenaExceeded(RuntimeError):
    """The model needs more than ``limit`` bytes of tensor arena (the largest arena tried)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"TFLite Micro needs more than {limit} bytes of tensor arena: TFLM failed to allocate tensors in that arena"
        )
        self.limit = limit


def arena_exceeded(message: str) -> int | None:
    """The arena (bytes) a failure message says the model needs more than, or None (for gates, which
    see the failure only as the text the worker reported)."""
    m = _EXCEEDED_RE.search(message)
    return int(m.group(1)) if m else None


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


@dataclass
class Probe:
    """One try of an arena size: whether the model allocated and ran, the signal that killed the try
    (0: none) and what TFLite Micro printed."""

    fits: bool
    signal: int
    said: list[str]

    @property
    def cannot_run(self) -> str | None:
        """The lines that name an op TFLite Micro cannot run (None: the arena was too small, or it ran)."""
        bad = [ln for ln in self.said if _CANNOT_RUN.search(ln)]
        return "; ".join(dict.fromkeys(bad))[:400] if bad and not self.fits else None


def probe(content: bytes, sample: np.ndarray, arena: int) -> Probe:
    """Try ``arena`` bytes in a forked child. TFLite Micro does not always fail cleanly on an arena
    that is a little too small: for some models (MLPerf Tiny's FC autoencoder: 64 bytes short) it stops
    with "All temp buffers must be freed before calling ResetTempAllocations()" and a SIGSEGV, which
    would end the whole search; a try that dies counts as not fitting."""

    with captured_stderr() as lines:
        pid = os.fork()
        if pid == 0:  # the child: no cleanup of the parent's state, just the verdict
            faulthandler.disable()  # a crash here is an expected answer, not a traceback for the log
            code = 1
            try:
                code = 0 if _fits(content, sample, arena) else 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    said = [ln.strip() for ln in lines if ln.strip()]
    if os.WIFSIGNALED(status):
        return Probe(False, os.WTERMSIG(status), said)
    return Probe(os.WEXITSTATUS(status) == 0, 0, said)


def min_arena(
    content: bytes,
    sample: np.ndarray,
    *,
    limit: int = MAX_ARENA,
    start: int = START_ARENA,
    step: int = 16,
    crashes: list[int] | None = None,
) -> int:
    """The smallest tensor arena (bytes, to ``step``) with which the model allocates and runs, at most
    ``limit``.

    The search tries ``start`` first and doubles it up to ``limit`` while the model does not fit, so a
    model far over a microcontroller's budget still gets its figure, then bisects; every try runs in a
    forked child (``probe``). A try that crashes below a size that ran counts as too small and is
    appended to ``crashes``; one that crashes before any size ran is ProbeCrashed (the model crashes
    the runtime). CannotRun when an op has no kernel (no arena helps), ArenaExceeded when ``limit``
    bytes are not enough."""
    crashes = crashes if crashes is not None else []

    def fits(size: int) -> Probe:
        p = probe(content, sample, size)
        if p.signal:
            crashes.append(size)
        return p

    lo, hi = 0, min(start, limit)
    while not (p := fits(hi)).fits:
        if p.signal:
            raise ProbeCrashed(p.signal, hi, p.said)
        if p.cannot_run:
            raise CannotRun(f"TFLite Micro cannot run the model: {p.cannot_run}")
        if hi >= limit:
            raise ArenaExceeded(hi)
        lo, hi = hi, min(hi * 2, limit)
    while hi - lo > step:
        mid = (lo + hi) // 2
        if fits(mid).fits:
            hi = mid
        else:
            lo = mid
    return hi


def _preserving(content: bytes, arena: int, limit: int) -> Any:
    """An interpreter that keeps every tensor (so one can be read after ``invoke``). Its arena holds
    all tensors at once, often far more than 4x the planned arena (EfficientNetB0 at 96x96): double it
    from ``4 * arena`` until the allocation succeeds."""
    size = arena * 4
    while True:
        try:
            return _interpreter(content, size, preserve=True)
        except RuntimeError:
            if size >= limit:
                raise ArenaExceeded(size) from None
            size = min(size * 2, limit)


def run(
    content: bytes, x: np.ndarray, arena: int, tap: int | None = None, *, limit: int = MAX_ARENA
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw outputs (output tensor dtype) for every example, one at a time as on a device; with
    ``tap``, also that tensor's raw values (run with all tensors preserved, in an arena grown until
    they fit)."""
    it = _preserving(content, arena, max(limit, arena)) if tap is not None else _interpreter(content, arena)
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


def tensors(
    content: bytes, x: np.ndarray, arena: int, indices: list[int], *, limit: int = MAX_ARENA
) -> dict[int, np.ndarray]:
    """The raw values of tensors ``indices`` after running one example ``x`` (every tensor preserved)."""
    it = _preserving(content, arena, max(limit, arena))
    it.set_input(_quantize(x[:1], it.get_input_details(0)), 0)
    it.invoke()
    out = {}
    for i in indices:
        t = it.GetTensor(i, 0)
        out[i] = np.asarray(t["tensor_data"]).reshape(t["shape"]).copy()
    return out
