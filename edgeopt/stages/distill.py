"""Knowledge distillation (Hinton et al. 2015) from a teacher into a compact student.

loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt import zoo
from edgeopt._keras import keras, set_seed, tf
from edgeopt.artifacts import load_model
from edgeopt.config import DistillConfig
from edgeopt.data import Dataset
from edgeopt.errors import BadInput
from edgeopt.progress import Timer
from edgeopt.stages._common import (
    StageResult,
    accuracy,
    clone_with_weights,
    count_params,
    fit,
    outputs_probabilities,
    predict,
    require_layer_graph,
    training_plan,
    weight_depth,
)
from edgeopt.stages._hints import hinted


def build_student(teacher: Any, data: Dataset, config: DistillConfig, *, unsafe: bool = False) -> Any:
    """The (untrained) student the config names: a zoo model, a model file, or the teacher at a width;
    with ``config.dropout``, its Dropout layers at that rate."""
    if config.width is not None:
        student = zoo.width_scaled(teacher, config.width)
    elif config.student is not None:
        student = zoo.build(config.student, data.input_shape, data.num_classes)
    else:
        student = load_model(config.student_file, unsafe=unsafe)
    return student if config.dropout is None else zoo.with_dropout(student, config.dropout)


def teacher_logits(teacher: Any, x: np.ndarray) -> np.ndarray:
    """Teacher logits; for a softmax output, log-probabilities (equal to logits up to a constant per row,
    which the tempered softmax ignores)."""
    out = predict(teacher, x).astype(np.float64)
    if outputs_probabilities(teacher):
        out = np.log(np.clip(out, 1e-30, 1.0))
    return out.astype(np.float32)


def kd_loss(num_classes: int, temperature: float, alpha: float, student_probs: bool) -> Any:
    """Loss on ``y = [one-hot labels | teacher logits]`` (shape ``(n, 2 * classes)``)."""
    T = float(temperature)

    def loss(y: Any, out: Any) -> Any:
        labels, t_logits = y[:, :num_classes], y[:, num_classes:]
        s_logits = tf.math.log(tf.clip_by_value(out, 1e-7, 1.0)) if student_probs else out
        ce = tf.nn.softmax_cross_entropy_with_logits(labels, s_logits)
        p_t = tf.nn.softmax(t_logits / T)
        kl = tf.reduce_sum(p_t * (tf.nn.log_softmax(t_logits / T) - tf.nn.log_softmax(s_logits / T)), axis=-1)
        return alpha * ce + (1.0 - alpha) * T * T * kl

    return loss


def kd_fit_args(
    teacher: Any, data: Dataset, temperature: float, alpha: float, *, student_probs: bool
) -> dict[str, Any]:
    """What ``fit`` needs to train against ``teacher``: the loss, a label-accuracy metric and targets
    ``[one-hot labels | teacher logits]`` for the training and validation splits (the teacher runs once)."""
    data.check_fits(teacher, what="teacher")
    n = int(teacher.output_shape[-1])
    eye = np.eye(n, dtype=np.float32)
    y_tr = np.concatenate([eye[data.y_train], teacher_logits(teacher, data.x_train)], axis=1)
    y_va = np.concatenate([eye[data.y_val], teacher_logits(teacher, data.x_val)], axis=1) if len(data.x_val) else None
    return {
        "loss": kd_loss(n, temperature, alpha, student_probs),
        "metrics": [_label_accuracy(n)],
        "y_train": y_tr,
        "y_val": y_va,
    }


def fine_tune_args(model: Any, data: Dataset, config: Any, teacher: Any | None, stage: str) -> dict[str, Any]:
    """``fit`` arguments of a fine-tuning stage (``config``: its training config): none (labels alone)
    without ``config.kd``, else the teacher's targets (not computed when there is no epoch to train).
    ``model`` is the stage's input before any wrapper hides its final activation."""
    kd = config.kd
    if kd is None:
        return {}
    if teacher is None:
        raise BadInput(f"{stage} with kd (distillation from the teacher) needs the teacher model")
    if teacher.output_shape[-1] != model.output_shape[-1]:
        raise BadInput(
            f"{stage}: the model has {model.output_shape[-1]} outputs, the teacher {teacher.output_shape[-1]}"
        )
    if config.epochs == 0:
        return {}
    return kd_fit_args(teacher, data, kd.temperature, kd.alpha, student_probs=outputs_probabilities(model))


def _label_accuracy(num_classes: int) -> Any:
    def accuracy(y: Any, out: Any) -> Any:
        return tf.cast(tf.equal(tf.argmax(y[:, :num_classes], -1), tf.argmax(out, -1)), tf.float32)

    return accuracy


def distill(
    teacher: Any,
    data: Dataset,
    config: DistillConfig,
    *,
    student: Any | None = None,
    seed: int = 0,
    unsafe: bool = False,
) -> StageResult:
    """Train a student (given, or built from ``config``) to match ``teacher`` on ``data``.

    The teacher is left untouched; its logits are computed once, then the student trains on them.
    ``unsafe`` allows code-carrying layers in ``config.student_file``.
    """
    data.check_fits(teacher, what="teacher")
    with Timer() as t:
        set_seed(seed)
        if student is None:
            student = build_student(teacher, data, config, unsafe=unsafe)
        else:
            student = clone_with_weights(student)
            student = student if config.dropout is None else zoo.with_dropout(student, config.dropout)
        require_layer_graph(student, "distill")
        data.check_fits(student, what="student")
        if student.output_shape[-1] != teacher.output_shape[-1]:
            raise BadInput(f"student has {student.output_shape[-1]} outputs, teacher {teacher.output_shape[-1]}")
        kd = kd_fit_args(teacher, data, config.temperature, config.alpha, student_probs=outputs_probabilities(student))
        trainee, hint = student, None
        if config.hint_layer is not None:  # FitNets: the student also predicts a teacher layer's output
            trainee, hint_mse = hinted(
                student, teacher, config.hint_layer, config.student_hint_layer, config.hint_weight
            )
            probe = (data.x_val if len(data.x_val) else data.x_train)[:1000]
            hint = {"layer": config.hint_layer, "student_layer": config.student_hint_layer or config.hint_layer,
                    "weight": config.hint_weight, "mse_before": hint_mse(probe)}  # fmt: skip
        history = fit(trainee, data, description="distill", training=config, **kd)
        if hint is not None:
            hint["mse_after"] = hint_mse(probe)
        metrics: dict[str, Any] = {
            "teacher_params": count_params(teacher),
            "student_params": count_params(student),
            "compression": count_params(teacher) / max(1, count_params(student)),
            "teacher_accuracy": accuracy(teacher, data.x_test, data.y_test),
            "accuracy": accuracy(student, data.x_test, data.y_test),
            "temperature": config.temperature,
            "alpha": config.alpha,
            "dropout": config.dropout,
            "epochs": config.epochs,
            "history": history,
            "training": training_plan(config, data, weight_depth(student)),
            "seed": seed,
        }
        if hint is not None:
            metrics["hint"] = hint
        metrics["accuracy_drop"] = metrics["teacher_accuracy"] - metrics["accuracy"]
        if config.compare_scratch:
            set_seed(seed)
            scratch = keras.models.clone_model(student)  # same architecture, fresh weights
            fit(
                scratch,
                data,
                description="student from scratch",
                training=config,
            )
            metrics["scratch_accuracy"] = accuracy(scratch, data.x_test, data.y_test)
            metrics["distillation_gain"] = metrics["accuracy"] - metrics["scratch_accuracy"]
    return StageResult("distill", metrics=metrics, model=student, seconds=t.seconds)
