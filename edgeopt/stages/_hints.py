"""Feature distillation (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015): besides the
teacher's softened outputs, the student learns to predict one of the teacher's intermediate outputs (the
hint) from one of its own (the guided layer) through a small regressor, a 1x1 convolution for feature
maps and a Dense layer for vectors. The loss adds ``hint_weight * mean((regressor(guided) - hint)^2)``.

The teacher runs inside the training graph (up to the hint layer, frozen, in inference mode), so no
feature maps are stored: a Fashion-MNIST conv hint would be gigabytes for the training split. The
regressor is training-only and is not part of the student that the stage returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt._keras import keras, tf
from edgeopt.errors import BadInput


class HintLoss(keras.layers.Layer):
    """Passes the student's output through and adds the hint loss (``add_loss``) of its other inputs."""

    def __init__(self, weight: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs: list[Any]) -> Any:
        out, guess, hint = inputs
        mse = tf.reduce_mean(tf.square(guess - hint))
        self.add_loss(self.weight * mse)
        self.add_metric(mse, name="hint_mse")
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight": self.weight}


def _layer(model: Any, name: str, who: str) -> Any:
    try:
        return model.get_layer(name)
    except ValueError:
        names = ", ".join(layer.name for layer in model.layers)
        raise BadInput(f"hint: the {who} has no layer {name!r}; its layers are {names}") from None


def hinted(student: Any, teacher: Any, hint_layer: str, student_layer: str | None, weight: float) -> tuple[Any, Any]:
    """(the model to train: the student's layers and output, plus the hint loss; a function giving the hint
    MSE of the current student on inputs). The student's layers are shared, so training it trains them."""
    t_layer = _layer(teacher, hint_layer, "teacher")
    s_layer = _layer(student, student_layer or hint_layer, "student")
    t_shape, s_shape = tuple(t_layer.output_shape[1:]), tuple(s_layer.output_shape[1:])
    if t_shape[:-1] != s_shape[:-1]:
        raise BadInput(
            f"hint: teacher layer {t_layer.name} gives {t_shape}, student layer {s_layer.name} {s_shape}: "
            "all but the channels must match"
        )
    frozen = keras.models.clone_model(teacher)  # setting trainable would change the caller's layers
    frozen.set_weights(teacher.get_weights())
    t_feat = keras.Model(frozen.inputs, frozen.get_layer(t_layer.name).output, name="hint_teacher")
    t_feat.trainable = False
    s_multi = keras.Model(student.inputs, [student.output, s_layer.output], name="hint_student")
    channels = int(t_shape[-1])
    reg = (
        keras.layers.Conv2D(channels, 1, name="hint_regressor")
        if len(t_shape) == 3
        else keras.layers.Dense(channels, name="hint_regressor")
    )
    x = keras.Input(shape=student.input_shape[1:])
    out, feat = s_multi(x)
    guess = reg(feat)
    hint = t_feat(x, training=False)
    y = HintLoss(weight, name="hint_loss")([out, guess, hint])
    train = keras.Model(x, y, name=f"{student.name}_hinted")
    probe = keras.Model(x, [guess, hint])

    def hint_mse(xs: np.ndarray) -> float:
        g, h = probe.predict(xs, batch_size=512, verbose=0)
        return float(np.mean((g - h) ** 2))

    return train, hint_mse
