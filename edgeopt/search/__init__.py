"""``edgeopt search``: the best model for a device budget, found by a multi-objective Optuna study.

``config`` (the ``search:`` block), ``space`` (no TensorFlow), ``objectives``, ``storage``, ``worker`` (one process,
the trial function), ``study`` (``search()``: check, prepare, run workers, write outputs), ``report``.
Names are imported on first use so that loading a pipeline file does not import Optuna or TensorFlow.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "search": "edgeopt.search.study",
    "SearchResult": "edgeopt.search.study",
    "SearchConfig": "edgeopt.search.config",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgeopt.search' has no attribute {name!r}")
