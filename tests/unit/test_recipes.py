"""Recipes written in terms of the data: training length in optimizer steps with floors, learning rates tied
to the batch size, QAT ranges started from calibration data, the stage guard's split size, depthwise
kernels pruned and clustered when asked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeopt import stages
from edgeopt._keras import keras
from edgeopt.config import ClusterConfig, DataConfig, DistillConfig, PruneConfig, QATConfig, TrainConfig
from edgeopt.data import Dataset, load_dataset
from edgeopt.pipeline import guard
from edgeopt.stages._common import accuracy, training_plan, weight_depth


def sized(n: int) -> Dataset:
    """A dataset object with ``n`` training examples (only its size matters to the plan)."""
    x = np.zeros((n, 2), np.float32)
    y = np.zeros(n, np.int64)
    return Dataset("made-up", "test", 0, x, y, x[:1], y[:1], x[:1], y[:1], ["a", "b"])


def test_a_step_floor_binds_on_small_data_only():
    prune = PruneConfig(epochs=10, min_steps=2000)
    big, small = training_plan(prune, sized(54_000)), training_plan(prune, sized(4_000))
    assert big == {"epochs": 10, "steps": 4220, "steps_per_epoch": 422, "learning_rate": prune.learning_rate}
    assert small["steps_per_epoch"] == 32 and small["epochs"] == math.ceil(2000 / 32) and small["steps"] >= 2000
    assert training_plan(QATConfig(epochs=2), sized(4_000))["steps"] == 64  # no floor: the epochs as given


def test_weight_depth_is_the_longest_path_of_weight_layers():
    L = keras.layers
    seq = keras.Sequential(
        [L.Input((8, 8, 1)), L.Conv2D(4, 3), L.BatchNormalization(), L.ReLU(), L.Flatten(), L.Dense(10)]
    )
    assert weight_depth(seq) == 2  # BatchNorm, activations and Flatten count nothing
    x = inp = L.Input((8, 8, 4))
    branch = L.Conv2D(4, 3, padding="same")(L.DepthwiseConv2D(3, padding="same")(x))
    x = L.Add()([x, L.Conv2D(4, 1)(branch)])  # the long way round: 3 layers; the shortcut: none
    res = keras.Model(inp, L.Dense(10)(L.GlobalAveragePooling2D()(x)))
    assert weight_depth(res) == 4
    outer = keras.Sequential([L.Input((8, 8, 4)), L.Conv2D(4, 1), res])
    assert weight_depth(outer) == 5  # a nested model counts its own depth


def test_distillation_floor_grows_with_the_students_depth():
    """min_steps_per_layer x depth when that is more than min_steps: on 12,000 images (94 steps an epoch) an
    8-layer student trains the 3,000-step floor, a 15-layer one 4,500 steps; large data keeps its epochs."""
    cfg = DistillConfig(width=0.5, epochs=20, min_steps=3000, min_steps_per_layer=300)
    shallow, deep = training_plan(cfg, sized(12_000), depth=8), training_plan(cfg, sized(12_000), depth=15)
    assert (shallow["min_steps"], shallow["epochs"]) == (3000, math.ceil(3000 / 94))
    assert (deep["min_steps"], deep["epochs"], deep["depth"]) == (4500, math.ceil(4500 / 94), 15)
    assert training_plan(cfg, sized(54_000), depth=15)["steps"] == 20 * 422  # 8,440 steps > 4,500
    assert "depth" not in training_plan(DistillConfig(width=0.5, min_steps=3000), sized(12_000), depth=15)
    assert "min_steps_per_layer" not in DistillConfig(width=0.5).model_dump(mode="json")


def test_learning_rate_scales_with_the_batch_size_by_its_square_root():
    base = PruneConfig(learning_rate=1e-3)
    assert training_plan(base, sized(1000))["learning_rate"] == pytest.approx(1e-3)
    big = PruneConfig(learning_rate=1e-3, batch_size=512)
    assert training_plan(big, sized(1000))["learning_rate"] == pytest.approx(2e-3)  # 4x the batch: 2x the rate


def test_defaults_stay_out_of_the_resolved_config():
    """New options at their defaults leave an existing pipeline's config (and so its hash) as it was."""
    dumped = PruneConfig().model_dump(mode="json")
    assert "min_steps" not in dumped and "lr_batch_size" not in dumped and "depthwise" not in dumped
    assert PruneConfig(min_steps=10).model_dump(mode="json")["min_steps"] == 10


def test_prune_trains_for_the_floor_on_small_data(digits, tiny_model):
    r = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.5, epochs=1, min_steps=60), seed=0)
    plan = r.metrics["training"]
    assert plan["steps"] >= 60 and plan["epochs"] > 1
    assert r.metrics["schedule"]["total_steps"] == plan["steps"]  # the sparsity schedule spans all of them
    assert len(r.metrics["history"]["loss"]) == plan["epochs"]


def test_prune_with_nothing_to_prune_keeps_its_input_untrained(digits, tiny_model):
    """Every layer of tiny_cnn reads at most 128 inputs a unit: with min_inputs 128 nothing can be pruned, and
    the stage does not spend its 2,000-step floor fine-tuning a model it does not prune."""
    r = stages.prune(tiny_model, digits, PruneConfig(min_inputs=128, min_steps=2000), seed=0)
    assert r.metrics["layers"] == {} and r.metrics["history"] == {} and r.metrics["training"]["steps"] == 0
    assert r.metrics["accuracy"] == r.metrics["accuracy_before"]
    assert all(np.array_equal(a, b) for a, b in zip(r.model.get_weights(), tiny_model.get_weights(), strict=True))
    assert r.model is not tiny_model and set(r.metrics["skipped_layers"]) >= {"fc1", "logits"}


@pytest.fixture(scope="module")
def small_fashion():
    """1,000 training images of Fashion-MNIST and a compact CNN trained on them."""
    d = load_dataset(DataConfig(name="fashion_mnist", max_train=1000, max_test=1000, seed=1))
    m = stages.train(d, TrainConfig(zoo="fashion_cnn_small", epochs=30, learning_rate=3e-3), seed=0).model
    return d, m


def test_qat_on_1000_examples_keeps_the_float_accuracy(small_fashion):
    """Two epochs are 16 optimizer steps here: from tfmot's initial [-6, 6] the activation ranges barely
    move and QAT collapses; started from calibration data they are right from the first step."""
    d, m = small_fashion
    before_val, before_test = accuracy(m, d.x_val, d.y_val), accuracy(m, d.x_test, d.y_test)
    good = stages.qat(m, d, QATConfig(epochs=2), seed=0)
    assert good.metrics["ranges_calibrated"]["examples"] == 512
    assert accuracy(good.model, d.x_val, d.y_val) >= before_val - 0.01
    assert good.metrics["accuracy"] >= before_test - 0.01
    slow = stages.qat(m, d, QATConfig(epochs=2, calibrate_ranges=False), seed=0)
    assert slow.metrics["accuracy"] < before_test - 0.03  # what the calibration prevents


def test_guard_says_when_the_validation_split_is_too_small():
    assert guard.split_warning(6000, 0.5) is None  # Fashion-MNIST's 6,000 images tell 0.45 points
    why = guard.split_warning(160, 0.5)
    assert why is not None and "160 examples" in why and "2.7 points" in why and "4,800" in why
    assert guard.detectable_drop(4800) == pytest.approx(0.5)


def test_depthwise_kernels_are_pruned_and_clustered_when_asked(digits):
    from edgeopt import zoo

    m = zoo.build("mobilenet_style", digits.input_shape, digits.num_classes)
    plain = stages.prune(m, digits, PruneConfig(final_sparsity=0.5, epochs=1), seed=0)
    assert not any("_dw/" in k for k in plain.metrics["layers"])  # tfmot alone leaves them dense
    assert all("DepthwiseConv2D" in why for k, why in plain.metrics["skipped_layers"].items() if k.endswith("_dw"))
    r = stages.prune(m, digits, PruneConfig(final_sparsity=0.5, epochs=1, depthwise=True), seed=0)
    dw = {k: v for k, v in r.metrics["layers"].items() if "_dw/" in k}
    assert len(dw) == 6 and all(v["sparsity"] == pytest.approx(0.5, abs=0.02) for v in dw.values())
    assert type(r.model.get_layer("b0_dw")).__name__ == "DepthwiseConv2D"  # plain again after the stage
    c = stages.cluster(r.model, digits, ClusterConfig(clusters=8, epochs=1, depthwise=True), seed=0)
    assert all(v["distinct_values"] <= 8 for k, v in c.metrics["layers"].items() if "_dw/" in k)


def test_min_inputs_prunes_small_layers_less_and_tiny_ones_not_at_all(digits, tiny_model):
    """tiny_cnn: fc1 has 128 inputs per unit (pruned to at most 1 - 32/128 = 75%), logits 32 (left dense)."""
    from edgeopt.stages.prune import inputs_per_unit

    assert {n: inputs_per_unit(tiny_model.get_layer(n)) for n in ("conv1", "fc1", "logits")} == {
        "conv1": 9,
        "fc1": 128,
        "logits": 32,
    }
    r = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.8, epochs=2, min_inputs=32), seed=0)
    layers = r.metrics["layers"]
    assert layers["fc1"]["target"] == pytest.approx(0.75) and layers["fc1"]["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert "logits" not in layers and "min_inputs" in r.metrics["skipped_layers"]["logits"]
    assert r.metrics["target_met"]


def test_blocks_never_drop_whole_positions_of_a_thin_feature_map(digits, tiny_model):
    """tiny_cnn's fc1 reads 8 channels at each position: blocks of 4 would take half a position at once, so
    it is pruned weight by weight; fc1 -> logits (a Dense after a Dense) is blocked."""
    from edgeopt.stages.prune import blocked, flattened_channels

    fc1, logits = tiny_model.get_layer("fc1"), tiny_model.get_layer("logits")
    assert flattened_channels(fc1) == 8 and flattened_channels(logits) is None
    assert not blocked(fc1, 4) and blocked(fc1, 2) and blocked(logits, 4)


def test_fine_tuning_keeps_batchnorm_as_trained(digits):
    """Fine-tuning moves the convolutions only: BatchNormalization's statistics and scale stay as the student
    was trained (left trainable, the last batches' statistics made a MobileNet-style student's validation
    top-1 swing by two points from one epoch to the next)."""
    from edgeopt import zoo
    from edgeopt._keras import keras, set_seed

    set_seed(0)
    m = zoo.build("mobilenet_style", digits.input_shape, digits.num_classes)
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
    names = [layer.name for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]
    trained = {n: m.get_layer(n).get_weights() for n in names}
    for freeze in (True, False):
        r = stages.prune(m, digits, PruneConfig(final_sparsity=0.5, epochs=1, freeze_batchnorm=freeze), seed=0)
        after = {n: r.model.get_layer(n).get_weights() for n in names}
        same = all(np.array_equal(a, b) for n in names for a, b in zip(trained[n], after[n], strict=True))
        assert same is freeze


def test_a_teacher_at_chance_is_named():
    """A teacher that learned nothing (the suite's first ResNet-8, fed nearly blank images) is named before
    any stage runs on it; a weak but real one is not."""
    from edgeopt.pipeline.runner import at_chance

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    blind = labels == 3  # always answers class 3: about 10%
    why = at_chance(blind, labels)
    assert why is not None and "commonest class" in why and "input scaling" in why
    weak = rng.random(2000) < 0.2  # 20% on ten classes: learned something
    assert at_chance(weak, labels) is None
    assert at_chance(np.array([], bool), np.array([], np.int64)) is None
