"""Progress reporting for library code, drawn by whoever sets a reporter (the CLI draws rich bars).

Library code never prints: it logs through ``logging.getLogger(__name__)`` and reports progress here::

    from edgeopt import progress

    with progress.task("validate model.tflite", total=5) as advance:
        advance()                      # advance(n=1, status="")
    cb = progress.keras_callback("distill", epochs, steps)   # a tf-keras Callback, or None

Without a reporter (a library user, the tests, ``--quiet``) both are no-ops. This module imports
nothing heavy: no TensorFlow, no rich. It also holds two small helpers every stage uses, ``Timer`` and
``captured_stderr``.
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
    "keras_callback",
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


def _no_op(n: int = 1, status: str = "", *, milestone: bool = False) -> None:
    """The ``advance`` handed out when nobody draws progress."""


@contextlib.contextmanager
def task(description: str, total: int) -> Iterator[Advance]:
    """One bar for a loop of ``total`` steps: ``with task("evaluate", n) as advance: advance()``."""
    reporter = _reporter
    if reporter is None:
        yield _no_op
        return
    with reporter.task(description, total) as advance:
        yield advance


def keras_callback(description: str, epochs: int, steps: int) -> Any:
    """A tf-keras callback that draws one bar over ``epochs * steps`` training batches with loss and
    accuracy, or None when no reporter is set (so ``fit`` gets no callback at all)."""
    if _reporter is None:
        return None
    reporter = _reporter
    from edgeopt._keras import keras  # lazily: importing this module must not import TensorFlow

    class _ProgressCallback(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._ctx: contextlib.AbstractContextManager[Advance] | None = None
            self._advance: Advance = _no_op
            self._epoch = 0
            self._done = 0

        def on_train_begin(self, logs: Any = None) -> None:
            self._ctx = reporter.task(description, epochs * steps)
            self._advance = self._ctx.__enter__()
            self._done = 0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._epoch = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self._done += 1
            self._advance(1, f"epoch {self._epoch + 1}/{epochs} {format_logs(logs)}")

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            # The epoch's logs now hold val_accuracy; also square the count if Keras ran fewer batches.
            target = (epoch + 1) * steps
            self._advance(target - self._done, f"epoch {epoch + 1}/{epochs} {format_logs(logs)}", milestone=True)
            self._done = target

        def on_train_end(self, logs: Any = None) -> None:
            if self._ctx is not None:
                ctx, self._ctx = self._ctx, None
                ctx.__exit__(None, None, None)

    return _ProgressCallback()


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
