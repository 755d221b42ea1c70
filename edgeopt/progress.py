"""Progress reporting for library code, drawn by whoever sets a reporter (the CLI draws rich bars).

Library code never prints: it logs through ``logging.getLogger(__name__)`` and reports progress here::

    from edgeopt import progress

    with progress.task("validate model.tflite", total=5) as advance:
        advance()                      # advance(n=1, status="")

Without a reporter (a library user, the tests, ``--quiet``) it is a no-op; Keras training reports
through ``edgeopt.stages._common.progress_callback``, which forwards to the same reporter. This module
imports nothing of edgeopt and nothing heavy (no TensorFlow, no rich). It also holds two small helpers
every stage uses, ``Timer`` and ``captured_stderr``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = [
    "Advance",
    "Reporter",
    "Timer",
    "captured_stderr",
    "format_logs",
    "get_reporter",
    "no_op",
    "set_reporter",
    "task",
]


class Advance(Protocol):
    """Moves a task's bar: ``n`` more steps done, with an optional status text.

    ``milestone=True`` marks a status worth keeping as a line where no live bar is drawn (a log file,
    CI): the end of a training epoch."""

    def __call__(self, n: int = 1, status: str = "", *, milestone: bool = False) -> None: ...


class Reporter(Protocol):
    """What draws progress. ``task`` may be entered while another task is open (nested loops)."""

    def task(self, description: str, total: int) -> contextlib.AbstractContextManager[Advance]: ...


_reporter: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> Reporter | None:
    """Install ``reporter`` (None: no progress) for the whole process; returns the previous one."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def get_reporter() -> Reporter | None:
    return _reporter


def no_op(n: int = 1, status: str = "", *, milestone: bool = False) -> None:
    """The ``advance`` handed out when nobody draws progress."""


@contextlib.contextmanager
def task(description: str, total: int) -> Iterator[Advance]:
    """One bar for a loop of ``total`` steps: ``with task("evaluate", n) as advance: advance()``."""
    reporter = _reporter
    if reporter is None:
        yield no_op
        return
    with reporter.task(description, total) as advance:
        yield advance


def format_logs(logs: Any) -> str:
    """``loss=0.3120 accuracy=0.9000 val_accuracy=0.8800`` from Keras' logs (those keys only)."""
    if not logs:
        return ""
    keys = [k for k in ("loss", "accuracy", "val_accuracy") if k in logs]
    return " ".join(f"{k}={float(logs[k]):.4f}" for k in keys)


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 (the converter's MLIR diagnostics).

    The captured lines are appended to the yielded list when the block ends.
    """
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall clock, perf_counter)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
