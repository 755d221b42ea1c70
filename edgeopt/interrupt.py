"""A Ctrl-C is never lost in an edgeopt command.

Python raises KeyboardInterrupt wherever the main thread next checks for signals. When that is inside a
finalizer (``__del__`` or a weakref callback; TensorFlow runs many of them while it trains), Python prints
"Exception ignored in ..." and drops the exception, and the run would go on to its end and exit 0.
``catching()`` (entered by every CLI command and every spawned search worker) installs a SIGINT handler that
remembers the signal as well as raising it; ``check()``, called at every stage boundary, every training
batch and before a bundle is put in place, raises it again. Code that calls edgeopt as a library and wants
the same enters ``catching()`` itself; without it ``check()`` does nothing. Code that catches a Ctrl-C on
purpose and carries on calls ``forget()``. While ``catching()``, the dropped KeyboardInterrupt is not printed
either (``sys.unraisablehook``): the user sees the one "interrupted" line of the command, not a traceback from
inside TensorFlow.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_pending = threading.Event()


def _handler(signum: int, frame: FrameType | None) -> None:
    _pending.set()
    raise KeyboardInterrupt


def _quiet_unraisable(previous: Any) -> Any:
    """An unraisable hook that drops a remembered Ctrl-C (``check()`` raises it again) and passes the rest on."""

    def hook(args: Any) -> None:
        if isinstance(args.exc_value, KeyboardInterrupt) and _pending.is_set():
            return
        previous(args)

    return hook


@contextmanager
def catching() -> Iterator[None]:
    """While the block runs, a SIGINT is remembered until ``check()`` sees it (main thread only; a SIGINT
    the parent process ignores stays ignored; a block inside another one changes nothing)."""
    current = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if current in (None, signal.SIG_IGN, _handler):
        yield
        return
    previous = signal.signal(signal.SIGINT, _handler)
    hook = sys.unraisablehook
    sys.unraisablehook = _quiet_unraisable(hook)
    _pending.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = hook
        _pending.clear()


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived (even one that was swallowed where it was first raised)."""
    if _pending.is_set():
        raise KeyboardInterrupt


def forget() -> None:
    """The Ctrl-C was handled on purpose: ``check()`` no longer raises it."""
    _pending.clear()
