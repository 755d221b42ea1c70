"""Pipelines: a pipeline file (``spec``) run as a loop over registered steps (``registry``, ``steps``)
with a content-addressed stage cache (``cache``) by ``runner.run``.

Names are re-exported on first use, so importing the registry or the file schema does not import
TensorFlow.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "run": "edgeopt.pipeline.runner",
    "plan": "edgeopt.pipeline.runner",
    "RunReport": "edgeopt.pipeline.runner",
    "StageEvent": "edgeopt.pipeline.runner",
    "ensure_teacher": "edgeopt.pipeline.runner",
    "model_hash": "edgeopt.pipeline.hashing",
    "data_hash": "edgeopt.pipeline.hashing",
    "versions": "edgeopt.pipeline.hashing",
    "StageCache": "edgeopt.pipeline.cache",
    "PipelineConfig": "edgeopt.pipeline.spec",
    "load_pipeline": "edgeopt.pipeline.spec",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgeopt.pipeline' has no attribute {name!r}")
