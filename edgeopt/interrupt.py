"""A Ctrl-C is never lost.

Python raises KeyboardInterrupt wherever the main thread next checks for signals. When that is inside a
finalizer (``__del__`` or a weakref callback; TensorFlow runs many of them while it trains), Python prints
"Exception ignored in ..." and drops the exception, and the run would go on to its end and exit 0.
``catching()`` installs a SIGINT handler that remembers the signal as well as raising it; ``check()``,
called at every stage boundary, every training batch and before a bundle is written, raises it again.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_pending = threading.Event()


def _handler(signum: int, frame: FrameType | None) -> None:
    _pending.set()
    raise KeyboardInterrupt


@contextmanager
def catching() -> Iterator[None]:
    """While the block runs, a SIGINT is remembered until ``check()`` sees it (main thread only; a SIGINT
    the parent process ignores stays ignored)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
        signal.SIG_IGN,
        None,
    ):
        yield
        return
    previous = signal.signal(signal.SIGINT, _handler)
    _pending.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pending.clear()


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived (even one that was swallowed where it was first raised)."""
    if _pending.is_set():
        raise KeyboardInterrupt
