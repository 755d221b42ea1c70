"""Quantization-aware training that keeps what pruning and clustering made (tfmot collaborative
optimization): cluster-preserving QAT (with sparsity kept), prune-preserving QAT, or plain QAT.

Per-channel int8 quantization after plain clustering multiplies the distinct values of a kernel
(8 clusters became 24 in tfmot PR #871); cluster-preserving QAT keeps them at the cluster count.
The result still carries tfmot's quantize wrappers: it is meant for the convert stage, which turns
the learned ranges into an int8 .tflite.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgeopt._keras import set_seed, tf, tfmot
from edgeopt.config import QATConfig, QATPreserve, WeightFormat
from edgeopt.data import Dataset
from edgeopt.errors import BadInput
from edgeopt.progress import Timer
from edgeopt.quant import lowbit
from edgeopt.stages._common import (
    StageResult,
    accuracy,
    clone_with_weights,
    dense_by_share,
    fit,
    kernels,
    training_plan,
)
from edgeopt.stages.distill import fine_tune_args

# A kernel with at most this many distinct values counts as clustered.
CLUSTERED_MAX_DISTINCT = 256
# Training examples whose activation ranges start the quantizers (the converter calibrates on 200).
CALIBRATION_EXAMPLES = 512


@contextlib.contextmanager
def _ranges_from_batch() -> Iterator[None]:
    """While open, tfmot's activation quantizers take the range of the batch they see (moving-average decay
    0) instead of moving 0.1% of the way from their initial [-6, 6] (tfmot's MovingAverageQuantizer
    hard-codes the decay 0.999 in its call)."""
    # tfmot's private fake-quant op; importable once edgeopt._keras has loaded tfmot (with tf-keras)
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    cls = tfmot.quantization.keras.quantizers.MovingAverageQuantizer
    original = cls.__call__

    def call(self: Any, inputs: Any, training: Any, weights: Any, **kwargs: Any) -> Any:
        return quant_ops.MovingAvgQuantize(
            inputs,
            weights["min_var"],
            weights["max_var"],
            ema_decay=0.0,
            is_training=training,
            num_bits=self.num_bits,
            per_channel=self.per_axis,
            symmetric=self.symmetric,
            narrow_range=self.narrow_range,
        )

    cls.__call__ = call
    try:
        yield
    finally:
        cls.__call__ = original


def _is_range(v: Any) -> bool:
    name = v.name.split("/")[-1].split(":")[0]
    return name.endswith("_min") or name.endswith("_max")


def calibrate_ranges(qmodel: Any, x: np.ndarray) -> dict[str, Any]:
    """Set the quantizers' [min, max] from one forward pass over ``x``, as post-training quantization
    calibrates, and leave every other variable (BatchNorm's moving statistics among them) as it was."""
    keep = [(v, v.numpy()) for v in qmodel.weights if not _is_range(v)]
    with _ranges_from_batch():
        qmodel(tf.constant(x), training=True)
    for v, value in keep:
        v.assign(value)
    ranges = [v for v in qmodel.weights if _is_range(v)]
    return {"examples": int(len(x)), "quantizer_variables": len(ranges)}


def detect_preserve(model: Any) -> tuple[QATPreserve, dict[str, Any]]:
    """What the model has that QAT should keep: clusters, zeros, or nothing.

    Clustered means that most of the kernel weights sit in kernels with few distinct values: small
    layers left out of clustering (the first conv, the classifier) do not change that."""
    ks = kernels(model)
    total = sum(k.size for k in ks.values())
    clustered = sum(k.size for k in ks.values() if np.unique(k).size <= CLUSTERED_MAX_DISTINCT)
    zeros = sum(int((k == 0).sum()) for k in ks.values()) / max(1, total)
    info = {
        "clustered_weight_fraction": clustered / max(1, total),
        "max_distinct_values": max((int(np.unique(k).size) for k in ks.values()), default=0),
        "sparsity": zeros,
    }
    if total and clustered / total > 0.5:
        return QATPreserve.cluster, info
    if zeros > 0.05:
        return QATPreserve.sparsity, info
    return QATPreserve.none, info


def qat(
    model: Any, data: Dataset, config: QATConfig | None = None, *, seed: int = 0, teacher: Any | None = None
) -> StageResult:
    """Fine-tune ``model`` (left untouched) with fake int8 quantization in the loop."""
    config = config or QATConfig()
    data.check_fits(model)
    q = tfmot.quantization.keras
    combine = tfmot.experimental.combine
    with Timer() as t:
        set_seed(seed)
        base = clone_with_weights(model)
        found, before_info = detect_preserve(base)
        preserve = found if config.preserve is QATPreserve.auto else config.preserve
        low_bit: dict[str, str] = {}
        if config.weights is not WeightFormat.int8:  # low-bit kernels keep nothing else (edgeopt.quant.lowbit)
            preserve = QATPreserve.none
        if preserve is QATPreserve.cluster:
            scheme = combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=before_info["sparsity"] > 0.05)
        elif preserve is QATPreserve.sparsity:
            scheme = combine.Default8BitPrunePreserveQuantizeScheme()
        else:
            scheme = q.Default8BitQuantizeScheme() if hasattr(q, "Default8BitQuantizeScheme") else None
        try:
            custom: dict[str, Any] = {}
            if config.weights is WeightFormat.int8:
                annotated = q.quantize_annotate_model(base)
            else:
                candidates = [layer for layer in base.layers if type(layer).__name__ in lowbit.LOW_BIT_LAYERS]
                keep = set(dense_by_share(candidates, config.int8_share))
                annotated, low_bit = lowbit.annotate(base, config.weights.value, keep)
                custom = lowbit.CUSTOM_OBJECTS
            with q.quantize_scope(custom):
                qmodel = q.quantize_apply(annotated, scheme) if scheme is not None else q.quantize_apply(annotated)
        except (ValueError, RuntimeError) as e:
            raise BadInput(
                f"quantization-aware training cannot wrap this model: {str(e).splitlines()[0][:300]}"
            ) from None
        ranges = (
            calibrate_ranges(qmodel, data.representative(CALIBRATION_EXAMPLES)) if config.calibrate_ranges else None
        )
        acc_before = accuracy(model, data.x_test, data.y_test)
        history = fit(
            qmodel,
            data,
            description="qat",
            training=config,
            **fine_tune_args(model, data, config, teacher, "qat"),
        )
        if low_bit:
            levels = lowbit.freeze(qmodel)
        acc = accuracy(qmodel, data.x_test, data.y_test)
    metrics = {
        "preserve": preserve.value,
        "weights": config.weights.value,
        "low_bit_layers": low_bit,
        **({"low_bit_levels": levels} if low_bit else {}),
        "input": before_info,
        "ranges_calibrated": ranges,
        "accuracy_before": acc_before,
        "accuracy": acc,
        "accuracy_drop": acc_before - acc,
        "history": history,
        "training": training_plan(config, data),
        "kd": config.kd.model_dump() if config.kd is not None else None,
        "seed": seed,
    }
    return StageResult("qat", metrics=metrics, model=qmodel, seconds=t.seconds)
