"""Parent side of runtime isolation: run a worker task in a child process with a timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.runtimes import diagnose


class ChildFailed(Exception):
    """The child crashed (signal), hung (timeout) or reported an error; ``str`` says which."""

    def __init__(self, runtime: str, kind: str, detail: str) -> None:
        super().__init__(f"{runtime} {kind}: {detail}")
        self.runtime, self.kind, self.detail = runtime, kind, detail

    @property
    def crashed(self) -> bool:
        return self.kind in ("crashed", "hung")


Launch = Callable[[Path], tuple[list[str], dict[str, str]]]


def run_task(
    task: str,
    runtime: str,
    content: bytes,
    x: np.ndarray | None = None,
    *,
    timeout: float = 300.0,
    launch: Launch | None = None,
    **args: Any,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run ``task`` of ``edgeopt.runtimes.worker`` on ``content`` in a child; return (result, outputs).

    ``launch(job_dir)`` gives the interpreter command and environment to run the worker with (default:
    this Python and this environment); the arm64 runtime runs it under QEMU that way."""
    with tempfile.TemporaryDirectory(prefix="edgeopt-job-") as tmp:
        d = Path(tmp)
        (d / "model.tflite").write_bytes(content)
        if x is not None:
            np.save(d / "x.npy", x)
        (d / "job.json").write_text(json.dumps({"task": task, **args}))
        python, env = launch(d) if launch else ([sys.executable], {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        try:
            proc = subprocess.run(
                [*python, "-m", "edgeopt.runtimes.worker", str(d)],
                capture_output=True,
                timeout=timeout,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise ChildFailed(runtime, "hung", f"no answer within {timeout:.0f} s, killed") from None
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            last = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()][-1:]
            detail = f"killed by {name}" + (f" ({last[0][:200]})" if last else "")
            if proc.returncode == -signal.SIGABRT:
                detail += "".join(f"; {cause}" for cause in _abort_causes(runtime, content))
            raise ChildFailed(runtime, "crashed", detail)
        result_file = d / "result.json"
        if proc.returncode != 0 or not result_file.exists():
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ChildFailed(runtime, "crashed", f"exit code {proc.returncode}: {tail[0][:300]}")
        result = json.loads(result_file.read_text())
        if "error" in result:
            raise ChildFailed(runtime, "failed", result["error"][:500])
        y = np.load(d / "y.npy") if (d / "y.npy").exists() else None
        if (d / "tap.npy").exists():
            result["tap"] = np.load(d / "tap.npy")
        if (d / "tensors.npz").exists():
            with np.load(d / "tensors.npz") as z:
                result["tensors"] = {int(k): z[k] for k in z.files}
        return result, y


def _abort_causes(runtime: str, content: bytes) -> list[str]:
    """Why ``runtime`` aborts on this model, when the cause is a known one (kernels abort without a message)."""

    if runtime not in diagnose.SOFTMAX_MULTIPLIER_RUNTIMES:
        return []
    try:
        return diagnose.known_aborts(content)
    except Exception:  # noqa: BLE001 - a diagnosis must never hide the crash it explains
        return []
