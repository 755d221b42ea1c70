"""One place that turns what a command raised into a line on stderr and the documented exit code:
0 ok, 1 a gate failed, 2 bad input or usage, 3 a runtime crashed, 130 interrupted."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from edgeopt import interrupt
from edgeopt.cli import render
from edgeopt.errors import EdgeoptError

F = TypeVar("F", bound=Callable[..., Any])

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
CRASHED = 3


def command(fn: F) -> F:
    """Run a command inside a logging/progress session (``--quiet`` honoured) and map its errors.

    ``EdgeoptError`` carries its exit code; anything else is a crash inside TensorFlow or a runtime,
    shown as one line unless ``EDGEOPT_DEBUG`` asks for the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with render.session(quiet=bool(kwargs.get("quiet", False))), interrupt.catching():
            try:
                result = fn(*args, **kwargs)
                interrupt.check()  # a Ctrl-C that a finalizer swallowed after the last stage
                return result
            except EdgeoptError as e:
                render.error(str(e))
                raise typer.Exit(e.exit_code) from None
            except KeyboardInterrupt:
                render.interrupted()
                raise typer.Exit(INTERRUPTED) from None
            except Exception as e:  # noqa: BLE001 - the one place every unexpected error becomes exit 3
                if os.environ.get("EDGEOPT_DEBUG"):
                    raise
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                render.error(f"{type(e).__name__}: {first} (set EDGEOPT_DEBUG=1 for the traceback)")
                raise typer.Exit(CRASHED) from None

    return wrapper  # type: ignore[return-value]
