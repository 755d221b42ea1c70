"""Deprecated: the old console module, kept so that callers not yet moved keep working.

Library code logs with ``logging.getLogger(__name__)`` and reports progress with ``edgeopt.progress``;
all rendering lives in ``edgeopt.cli.render``. This shim imports no rich, and is removed once every
caller has moved (``Timer``/``captured_stderr``: ``edgeopt.progress``).
"""

from __future__ import annotations

import logging
from typing import Any

from edgeopt.progress import Timer, captured_stderr, task
from edgeopt.progress import keras_callback as keras_progress

__all__ = ["Timer", "captured_stderr", "info", "is_quiet", "keras_progress", "set_quiet", "task"]

_log = logging.getLogger("edgeopt")
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Kept for old callers; quietness is now the CLI's logging level and its (absent) reporter."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def info(msg: str) -> None:
    """Deprecated: use ``logging.getLogger(__name__).info``."""
    _log.info("%s", msg)


def __getattr__(name: str) -> Any:
    raise AttributeError(
        f"edgeopt.ui.{name} is gone: rendering moved to edgeopt.cli.render, progress to edgeopt.progress"
    )
