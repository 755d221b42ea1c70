"""Console output: rich progress bars (training epochs, interpreter runs) that ``--quiet`` silences."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def info(msg: str) -> None:
    if not _quiet:
        console.print(msg, highlight=False)


def progress() -> Progress:
    """A progress display; disabled when quiet, so callers never need to branch."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=_quiet,
        transient=False,
    )


@contextlib.contextmanager
def task(description: str, total: int) -> Iterator[Any]:
    """``with task("evaluate", n) as advance: advance(k)`` — one bar for a loop."""
    with progress() as p:
        tid = p.add_task(description, total=total, status="")

        def advance(n: int = 1, status: str = "") -> None:
            p.update(tid, advance=n, status=status)

        yield advance


def keras_progress(description: str, epochs: int, steps: int) -> Any:
    """A tf-keras callback that draws one bar over all training steps, with loss and accuracy."""
    from edgeopt._keras import keras

    class _Bar(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._p = progress()
            self._epoch = 0

        def on_train_begin(self, logs: Any = None) -> None:
            self._p.start()
            self._tid = self._p.add_task(description, total=epochs * steps, status="")

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._epoch = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self._p.update(self._tid, advance=1, status=f"epoch {self._epoch + 1}/{epochs} {_fmt(logs)}")

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            status = f"epoch {epoch + 1}/{epochs} {_fmt(logs)}"
            self._p.update(self._tid, completed=(epoch + 1) * steps, status=status)
            if not console.is_terminal:  # a log file or CI: no live bar, so one line per epoch
                console.print(f"{description}: {status}", highlight=False)

        def on_train_end(self, logs: Any = None) -> None:
            self._p.stop()

    return _Bar()


def _fmt(logs: Any) -> str:
    if not logs:
        return ""
    keys = [k for k in ("loss", "accuracy", "val_accuracy") if k in logs]
    return " ".join(f"{k}={float(logs[k]):.4f}" for k in keys)


def table(title: str, rows: list[tuple[str, Any]]) -> None:
    """A two-column summary table printed at the end of a command (to stderr; stdout stays clean)."""
    if _quiet:
        return
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value")
    for k, v in rows:
        t.add_row(k, v if isinstance(v, str) else _num(v))
    console.print(t)


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 (the converter's MLIR diagnostics).

    The captured lines are appended to the yielded list when the block ends.
    """
    lines: list[str] = []
    sys.stderr.flush()
    import tempfile

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
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
