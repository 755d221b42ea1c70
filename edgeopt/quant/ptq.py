"""What ``convert`` runs of the post-training methods a ``ConvertConfig`` asks for: the Keras-level ones
before the converter (equalisation, AdaRound, bias correction, in that order) and the activation range
estimator inside it."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeopt.artifacts import SavedModelDir
from edgeopt.config import ConvertConfig, RangeEstimator
from edgeopt.errors import BadInput
from edgeopt.quant import ranges
from edgeopt.quant.adaround import adaround
from edgeopt.quant.bias import bias_correct
from edgeopt.quant.equalize import equalize
from edgeopt.quant.graph import require_graph

log = logging.getLogger(__name__)


def prepare(model: Any, x: np.ndarray | None, config: ConvertConfig, *, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """``model`` rewritten by the Keras-level methods of ``config`` (a new model; the caller's is not
    touched) and their metrics, keyed by method. ``x``: the calibration inputs."""
    methods = config.keras_methods
    if not methods:
        return model, {}
    if isinstance(model, SavedModelDir):
        raise BadInput(
            f"{', '.join(methods)} rewrite a Keras model's weights; this model is a SavedModel (after QAT, "
            "quantization-aware training already chose the integers)"
        )
    if x is None:
        raise BadInput(f"{', '.join(methods)} need calibration data (--data)")
    for m in methods:
        require_graph(model, m)
    metrics: dict[str, Any] = {}
    if config.equalize:
        r = equalize(model, relu6=config.equalize_relu6, x=x)
        model, metrics["equalize"] = r.model, r.metrics
    if config.adaround:
        model, metrics["adaround"] = adaround(model, x, iterations=config.adaround_iterations, seed=seed)
    if config.bias_correction:
        model, metrics["bias_correction"] = bias_correct(model, x)
    return model, metrics


def convert_with_ranges(
    converter: Any, rep: np.ndarray, config: ConvertConfig, io_dtype: Any, *, seed: int = 0
) -> tuple[bytes, dict[str, Any]]:
    """The int8 model from ``converter`` (set up for full-integer conversion) with activation ranges by
    ``config.activation_ranges`` (percentile or mse) on the calibration inputs ``rep``."""
    method = config.activation_ranges
    assert method is not RangeEstimator.minmax
    calibrated = ranges.calibrate_only(converter)
    found = ranges.estimate(calibrated, rep, method.value, percentile=config.percentile, seed=seed)
    content = ranges.quantize_calibrated(ranges.with_ranges(calibrated, found), io_dtype, config.allow_float_fallback)
    info = {"method": method.value, **ranges.summary(found)}
    if method is RangeEstimator.percentile:
        info["percentile"] = config.percentile
    return content, info
