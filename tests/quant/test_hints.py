"""Feature distillation (FitNets): the student's guided layer, through the regressor, learns to predict the
teacher's intermediate output; the teacher and the returned student carry nothing of it."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt import stages
from edgeopt.config import DistillConfig
from edgeopt.errors import BadInput
from tests.conftest import same_weights, weights_of


def test_hint_loss_follows_the_teacher_layer(tiny_model, digits):
    before = weights_of(tiny_model)
    cfg = DistillConfig(width=0.5, epochs=6, learning_rate=3e-3, hint_layer="pool1", hint_weight=1.0)
    r = stages.distill(tiny_model, digits, cfg, seed=0)
    h = r.metrics["hint"]
    assert h["layer"] == "pool1" and h["student_layer"] == "pool1"
    # the student's pool1 (4 channels), through a 1x1 regressor, predicts the teacher's pool1 (8 channels)
    assert h["mse_after"] < 0.4 * h["mse_before"], h
    assert "hint_mse" in r.metrics["history"]
    assert same_weights(before, weights_of(tiny_model))  # the teacher is frozen and never touched
    assert all(layer.trainable for layer in tiny_model.layers)
    assert [layer.name for layer in r.model.layers] == ["conv1", "pool1", "flatten", "fc1", "logits"]  # no regressor


def test_hint_errors(tiny_model, digits):
    with pytest.raises(BadInput, match="no layer 'nope'"):
        stages.distill(tiny_model, digits, DistillConfig(width=0.5, epochs=1, hint_layer="nope"))
    # fc1 (32 units) and conv1 (8x8x4 feature maps): only the channels may differ
    with pytest.raises(BadInput, match="all but the channels must match"):
        stages.distill(
            tiny_model, digits, DistillConfig(width=0.5, epochs=1, hint_layer="fc1", student_hint_layer="conv1")
        )
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs hint_layer"):
        DistillConfig(width=0.5, student_hint_layer="conv1")


def test_hint_regressor_for_vectors(tiny_model, digits):
    cfg = DistillConfig(width=0.5, epochs=3, learning_rate=3e-3, hint_layer="fc1", hint_weight=0.5)
    r = stages.distill(tiny_model, digits, cfg, seed=0)
    assert r.metrics["hint"]["mse_after"] < r.metrics["hint"]["mse_before"]
    assert np.isfinite(r.metrics["history"]["loss"]).all()
