"""Run a .tflite on the test split in LiteRT: top-1 accuracy and agreement with the Keras model."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt import ui
from edgeopt.config import ValidateConfig
from edgeopt.data import Dataset
from edgeopt.errors import BadInput
from edgeopt.runtimes import litert
from edgeopt.stages._common import StageResult, predict
from edgeopt.ui import Timer


def validate(
    tflite: bytes,
    data: Dataset,
    config: ValidateConfig | None = None,
    *,
    keras_model: Any | None = None,
    baseline_accuracy: float | None = None,
) -> StageResult:
    """Top-1 accuracy of ``tflite`` on ``data``'s test split through ``ai_edge_litert``; with
    ``keras_model``, the Keras accuracy on the same examples and the fraction of equal top-1 answers.
    Gates (``min_accuracy``, ``max_accuracy_drop`` vs ``baseline_accuracy``) are reported in
    ``metrics["gates"]``; the caller decides what a failure means."""
    config = config or ValidateConfig()
    if not tflite:
        raise BadInput("the .tflite is empty")
    with Timer() as t:
        model = litert.LiteRTModel(tflite)
        x, y = data.x_test, data.y_test
        if config.max_samples is not None:
            x, y = x[: config.max_samples], y[: config.max_samples]
        with ui.task("LiteRT evaluate", len(x)) as advance:
            out = model.predict(x, batch_size=config.batch_size, progress=advance)
        pred = np.argmax(out, axis=-1)
        metrics: dict[str, Any] = {
            "runtime": f"ai_edge_litert {litert.version()} (default kernels, XNNPACK)",
            "samples": int(len(x)),
            "accuracy": float(np.mean(pred == y)),
            "outputs_finite": bool(np.isfinite(out).all()),
            "predicted_classes": int(len(np.unique(pred))),
        }
        if keras_model is not None:
            k_out = predict(keras_model, x)
            k_pred = np.argmax(k_out, axis=-1)
            metrics["keras_accuracy"] = float(np.mean(k_pred == y))
            metrics["agreement"] = float(np.mean(k_pred == pred))
            metrics["accuracy_drop_vs_keras"] = metrics["keras_accuracy"] - metrics["accuracy"]
            metrics["max_abs_output_diff"] = float(np.max(np.abs(k_out - out)))
        gates = []
        if config.min_accuracy is not None:
            gates.append(_gate("min_accuracy", metrics["accuracy"] >= config.min_accuracy,
                               f"accuracy {metrics['accuracy']:.4f} vs minimum {config.min_accuracy:.4f}"))  # fmt: skip
        if config.max_accuracy_drop is not None:
            if baseline_accuracy is None:
                gates.append({"gate": "max_accuracy_drop", "status": "not evaluated", "detail": "no baseline"})
            else:
                drop = (baseline_accuracy - metrics["accuracy"]) * 100
                gates.append(_gate("max_accuracy_drop", drop <= config.max_accuracy_drop,
                                   f"drop {drop:.2f} points vs budget {config.max_accuracy_drop:.2f}"))  # fmt: skip
        metrics["gates"] = gates
        metrics["passed"] = all(g["status"] != "failed" for g in gates) and metrics["outputs_finite"]
    return StageResult("validate", metrics=metrics, seconds=t.seconds)


def _gate(name: str, ok: bool, detail: str) -> dict[str, str]:
    return {"gate": name, "status": "passed" if ok else "failed", "detail": detail}
