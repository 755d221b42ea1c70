"""Child-process side of runtime isolation: ``python -m edgeopt.runtimes.worker JOB_DIR``.

Interpreters run untrusted bytes and have crashed (tflite-micro with SIGSEGV on malformed models), so
every run happens here, in a separate process the parent watches with a timeout. The job folder
holds ``job.json`` (task and arguments), ``model.tflite`` and ``x.npy``; the child writes
``result.json`` and, for evaluations, ``y.npy``. This module imports no TensorFlow.

It has no test hook: tests make it hang or crash from outside (``tests/faultinject``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.runtimes.litert import LiteRTModel, quantize
from edgeopt.runtimes.litert import tensors as litert_tensors_of
from edgeopt.runtimes.tflm import MAX_ARENA, ArenaExceeded, ProbeCrashed, _interpreter, min_arena, run
from edgeopt.runtimes.tflm import tensors as tflm_tensors_of


def _litert(content: bytes, threads: int | None, resolver: str, preserve: bool = False) -> Any:
    return LiteRTModel(content, num_threads=threads, resolver=resolver, preserve=preserve)


def litert_eval(job: dict[str, Any], content: bytes, x: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Raw outputs (in the output tensor's own dtype) for every example; with ``tap``, that tensor's
    raw values too (stacked after the outputs along a new first axis is not possible for different
    shapes, so they go to ``tap.npy`` beside the job)."""
    tap = job.get("tap")
    m = _litert(content, job.get("threads"), job.get("resolver", "auto"), preserve=tap is not None)
    out = m.predict(x, batch_size=int(job.get("batch_size", 64)), raw=True, tap=tap)
    if tap is not None:
        out, tapped = out
        np.save(Path(job["dir"]) / "tap.npy", tapped)
    return {"output_dtype": out.dtype.name}, out


def litert_bench(job: dict[str, Any], content: bytes, x: np.ndarray) -> tuple[dict[str, Any], None]:
    """Init time, then warm-up and timed ``invoke()`` calls at batch 1 (only the invoke is timed)."""

    t0 = time.perf_counter()
    m = _litert(content, job.get("threads"), "auto")
    m._allocate(1)
    init_ms = (time.perf_counter() - t0) * 1e3
    interp, inp = m.interpreter, m.inputs[0]
    interp.set_tensor(inp["index"], quantize(x[:1], inp))
    for _ in range(int(job.get("warmup", 10))):
        interp.invoke()
    times: list[float] = []
    min_runs, max_runs, budget_s = (
        int(job.get("min_runs", 50)),
        int(job.get("max_runs", 2000)),
        float(job.get("seconds", 2.0)),
    )
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t) * 1e3)
    return {"init_ms": init_ms, "times_ms": times}, None


MARK_MAGIC = 0x45440000  # edgeopt/arm/icount.c: the window marks the counting plugin watches for


def _mark(code: int, window: int) -> None:
    """Open (1) or close (2) a counting window: sched_get_priority_max() with a policy no one uses,
    which the plugin sees before it fails with EINVAL."""
    try:
        os.sched_get_priority_max(MARK_MAGIC | code << 8 | window)
    except OSError:
        pass


def litert_count(job: dict[str, Any], content: bytes, x: np.ndarray) -> tuple[dict[str, Any], None]:
    """Instructions executed per ``invoke()`` at batch 1, on an arm64 guest under QEMU with edgeopt's
    counting plugin (which writes one JSON line per window to ``counts.jsonl`` in the job folder): warm-up
    invokes (weights packed, code translated), then ``windows`` invokes, each in its own window."""
    m = _litert(content, job.get("threads"), "auto")
    m._allocate(1)
    interp, inp = m.interpreter, m.inputs[0]
    interp.set_tensor(inp["index"], quantize(x[:1], inp))
    for _ in range(int(job.get("warmup", 2))):
        interp.invoke()
    windows = int(job.get("windows", 3))
    for w in range(windows):
        _mark(1, w)
        interp.invoke()
        _mark(2, w)
    path = Path(job.get("count_file") or Path(job["dir"]) / "counts.jsonl")
    lines = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
    if len(lines) != windows:
        raise RuntimeError(f"the counting plugin wrote {len(lines)} of {windows} windows to {path}")
    return {"windows": lines}, None


def tflm_eval(job: dict[str, Any], content: bytes, x: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """TFLite Micro: the smallest arena that allocates and runs (``arena_limit`` at most, by default
    64 MiB: the search doubles from 8 MiB, then bisects), then raw outputs. When the tapped run (every
    tensor kept) does not fit the limit, the outputs come from a plain run and no tap is written."""

    limit = int(job.get("arena_limit", MAX_ARENA))
    crashes: list[int] = []  # arena sizes whose try crashed TFLite Micro (counted as too small)
    try:
        arena = min_arena(content, x[:1], limit=limit, crashes=crashes)
    except ProbeCrashed as e:  # die the way the forked try died, so the parent reports (and explains) the crash
        sys.stderr.write("\n".join(e.said[-3:]) + "\n")
        sys.stderr.flush()
        signal.signal(e.signal, signal.SIG_DFL)
        os.kill(os.getpid(), e.signal)
        raise
    try:
        out, tapped = run(content, x, arena, tap=job.get("tap"), limit=limit)
    except ArenaExceeded:
        out, tapped = run(content, x, arena)
    if tapped is not None:
        np.save(Path(job["dir"]) / "tap.npy", tapped)
    return {"arena_bytes": arena} | ({"arena_tries_crashed": crashes} if crashes else {}), out


def _save_tensors(job: dict[str, Any], values: dict[int, np.ndarray]) -> dict[str, Any]:
    np.savez(Path(job["dir"]) / "tensors.npz", **{str(i): v for i, v in values.items()})
    return {"tensors": sorted(values)}


def litert_tensors(job: dict[str, Any], content: bytes, x: np.ndarray) -> tuple[dict[str, Any], None]:
    """Every tensor of ``job["indices"]`` after one example, in LiteRT (``resolver`` as for litert_eval)."""
    values = litert_tensors_of(content, x, [int(i) for i in job["indices"]], resolver=job.get("resolver", "auto"))
    return _save_tensors(job, values), None


def tflm_tensors(job: dict[str, Any], content: bytes, x: np.ndarray) -> tuple[dict[str, Any], None]:
    """Every tensor of ``job["indices"]`` after one example, in TFLite Micro (arena from ``job["arena"]``)."""
    values = tflm_tensors_of(content, x, int(job["arena"]), [int(i) for i in job["indices"]])
    return _save_tensors(job, values), None


def tflm_raw(job: dict[str, Any], content: bytes, x: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """TFLite Micro on inputs already in the tensors' dtypes, as a firmware gets them: each row of ``x``
    (uint8) holds one example's input tensors' bytes one after another (``inputs``: dtype and shape of
    each); each row of the result holds its output tensors' bytes (``outputs`` of them) the same way."""
    specs = job["inputs"]
    it = _interpreter(content, int(job.get("arena", 16 << 20)))
    rows = []
    for row in np.asarray(x, np.uint8):
        off = 0
        for i, spec in enumerate(specs):
            dt = np.dtype(spec["dtype"])
            n = int(np.prod(spec["shape"])) * dt.itemsize
            it.set_input(np.frombuffer(row[off : off + n].tobytes(), dt).reshape(spec["shape"]), i)
            off += n
        it.invoke()
        rows.append(b"".join(np.ascontiguousarray(it.get_output(o)).tobytes() for o in range(int(job["outputs"]))))
    return {}, np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), -1)


TASKS = {
    "litert_eval": litert_eval,
    "litert_bench": litert_bench,
    "litert_count": litert_count,
    "tflm_eval": tflm_eval,
    "litert_tensors": litert_tensors,
    "tflm_tensors": tflm_tensors,
    "tflm_raw": tflm_raw,
}


def main(job_dir: str) -> int:
    d = Path(job_dir)
    job = json.loads((d / "job.json").read_text()) | {"dir": str(d)}
    task = job["task"]
    content = (d / "model.tflite").read_bytes()
    x = np.load(d / "x.npy") if (d / "x.npy").exists() else np.zeros((1,), np.float32)
    try:
        result, y = TASKS[task](job, content, x)
    except Exception as e:  # noqa: BLE001 - reported to the parent as a failed run, not a crash
        (d / "result.json").write_text(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 0
    if y is not None:
        np.save(d / "y.npy", y)
    (d / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
