"""edgeopt: get trained Keras models onto phones and microcontrollers.

Public API (re-exports only; TensorFlow is imported on first use, so ``edgeopt --help`` is quick)::

    from edgeopt import load_dataset, prune, PruneConfig
    result = prune(model, load_dataset("digits"), PruneConfig(final_sparsity=0.8))
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # stages
    "train": "edgeopt.stages",
    "distill": "edgeopt.stages",
    "prune": "edgeopt.stages",
    "cluster": "edgeopt.stages",
    "convert": "edgeopt.stages",
    "validate": "edgeopt.stages",
    "StageResult": "edgeopt.stages",
    "ConversionError": "edgeopt.stages",
    # pipeline
    "run": "edgeopt.pipeline",
    "RunReport": "edgeopt.pipeline",
    # data and models
    "load_dataset": "edgeopt.data",
    "Dataset": "edgeopt.data",
    "load_model": "edgeopt.artifacts",
    "save_model": "edgeopt.artifacts",
    # configuration
    "PipelineConfig": "edgeopt.pipeline.spec",
    "load_pipeline": "edgeopt.pipeline.spec",
    "DataConfig": "edgeopt.config",
    "TrainConfig": "edgeopt.config",
    "DistillConfig": "edgeopt.config",
    "PruneConfig": "edgeopt.config",
    "ClusterConfig": "edgeopt.config",
    "ConvertConfig": "edgeopt.config",
    "ValidateConfig": "edgeopt.config",
    "Quantization": "edgeopt.config",
    "Schedule": "edgeopt.config",
    "ClusterInit": "edgeopt.config",
    "IOType": "edgeopt.config",
    # errors
    "EdgeoptError": "edgeopt.errors",
    "BadInput": "edgeopt.errors",
    "GateFailed": "edgeopt.errors",
    "RuntimeCrash": "edgeopt.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgeopt' has no attribute {name!r}")
