import numpy as np
import pytest

from edgeopt import stages
from edgeopt.config import PruneConfig
from edgeopt.errors import BadInput
from edgeopt.stages._common import kernels
from edgeopt.stages.prune import resolve_schedule
from tests.conftest import same_weights, weights_of


def _no_wrappers(model) -> bool:
    return not any("Prune" in type(layer).__name__ for layer in model.layers)


@pytest.mark.parametrize("schedule", ["polynomial", "constant"])
def test_reaches_target_sparsity_and_strips(digits, tiny_model, schedule):
    before = weights_of(tiny_model)
    r = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.6, schedule=schedule, epochs=3), seed=0)
    assert same_weights(before, weights_of(tiny_model)), "the caller's model was modified"
    assert _no_wrappers(r.model)
    assert abs(r.metrics["sparsity"] - 0.6) <= 0.01 and r.metrics["target_met"]
    for name, k in kernels(r.model).items():
        assert abs((k == 0).mean() - 0.6) <= 0.02, name
    assert r.metrics["accuracy_before"] - r.metrics["accuracy"] < 0.15


def test_skip_layer_stays_dense(digits, tiny_model):
    r = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.5, epochs=1, skip_layers=["logits"]))
    assert "logits" in r.metrics["skipped_layers"] and "logits" not in r.metrics["layers"]
    assert (kernels(r.model)["logits"] == 0).mean() < 0.05
    assert (kernels(r.model)["fc1"] == 0).mean() == pytest.approx(0.5, abs=0.01)


def test_unknown_skip_layer(digits, tiny_model):
    with pytest.raises(BadInput, match="no such layer; layers are conv1"):
        stages.prune(tiny_model, digits, PruneConfig(epochs=1, skip_layers=["nope"]))


def test_two_by_four_structured_sparsity(digits, tiny_model):
    r = stages.prune(tiny_model, digits, PruneConfig(m_by_n="2:4", epochs=1))
    k = kernels(r.model)["fc1"]  # (in, out): blocks of 4 along the input axis
    blocks = np.moveaxis(k, -1, 0).reshape(k.shape[-1], -1, 4)
    assert ((blocks == 0).sum(axis=-1) >= 2).all()
    assert r.metrics["target_sparsity"] == 0.5


def test_data_that_does_not_fit(tiny_model, fashion_slice):
    with pytest.raises(BadInput, match=r"shape \(28, 28, 1\).*\(8, 8, 1\)"):
        stages.prune(tiny_model, fashion_slice, PruneConfig(epochs=1))


def test_schedule_defaults_end_on_an_update_step():
    s = resolve_schedule(PruneConfig(), steps=1000)
    assert s["end_step"] <= 750 and s["end_step"] % s["frequency"] == 0
    s = resolve_schedule(PruneConfig(), steps=30)  # small data: still at least a few updates
    assert s["frequency"] >= 1 and s["end_step"] <= 30 and s["end_step"] % s["frequency"] == 0
    s = resolve_schedule(PruneConfig(end_step=500, frequency=50), steps=1000)
    assert (s["end_step"], s["frequency"]) == (500, 50)


def test_block_sparsity_gives_runs_of_zeros_in_the_tflite(digits, tiny_model):
    """block=2: a Dense unit loses its inputs two consecutive at a time, which is contiguous in the .tflite's
    [units, inputs] layout (what gzip sees); conv kernels (rank 4) stay weight by weight at the target.
    (tiny_cnn's fc1 reads a flattened 4x4x8 map: 8 channels take blocks of at most 2, see the next test.)"""
    from ai_edge_litert.interpreter import Interpreter

    from edgeopt.config import ConvertConfig

    r = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.6, epochs=2, block=2), seed=0)
    k = kernels(r.model)
    blocks = k["fc1"].T.reshape(k["fc1"].shape[1], -1, 2)  # (units, input blocks, 2)
    zeros = (blocks == 0).sum(axis=-1)
    assert set(np.unique(zeros)) <= {0, 2}, "a block is partly pruned"
    assert (zeros == 2).mean() == pytest.approx(0.6, abs=0.02)
    assert (k["conv1"] == 0).mean() == pytest.approx(0.6, abs=0.02)
    # logits ([32, 10]) is a Dense kernel taller than a block too
    assert r.metrics["schedule"]["block"] == 2 and r.metrics["schedule"]["blocked_layers"] == ["fc1", "logits"]
    c = stages.convert(r.model, ConvertConfig(quantization="int8"), data=digits)
    it = Interpreter(model_content=c.tflite)
    it.allocate_tensors()
    fc = [t for t in it.get_tensor_details() if "fc1" in t["name"] and tuple(t["shape"]) == (32, 128)]
    assert fc, [t["name"] for t in it.get_tensor_details()]
    row_runs = it.get_tensor(fc[0]["index"]).reshape(32, -1, 2)  # int8 may round a few more weights to 0
    assert (row_runs == 0).all(axis=-1)[zeros == 2].all(), "a pruned block is not a run of 2 zero bytes"


def test_no_blocks_across_a_thin_flattened_map(digits, tiny_model):
    """A block of a flattened map's inputs is `block` channels at one position: fc1 reads 8 channels, so
    blocks of 4 would drop whole positions; it is pruned weight by weight, logits (no Flatten) in blocks."""
    r = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.6, epochs=1, block=4), seed=0)
    assert r.metrics["schedule"]["blocked_layers"] == ["logits"]
    k = kernels(r.model)
    per_block = (k["fc1"].T.reshape(k["fc1"].shape[1], -1, 4) == 0).sum(axis=-1)
    assert not set(np.unique(per_block)) <= {0, 4}, "fc1 was pruned in blocks of 4"
    assert (k["fc1"] == 0).mean() == pytest.approx(0.6, abs=0.02)


def test_block_falls_back_where_tfmot_cannot_block(digits):
    """Dense kernels no taller than a block, or with one unit, are pruned weight by weight (tfmot squeezes a
    kernel before pooling it into blocks, which fails on those), the others in blocks."""
    from edgeopt._keras import keras

    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    f = L.Flatten()(L.Reshape((2, 1, 32))(inputs))  # 32 channels: not a thin map for blocks of 8
    b = L.Dense(16, activation="relu", name="b")(L.Dense(8, activation="relu", name="a")(f))  # b: [8, 16]
    c = L.Dense(1, activation="relu", name="c")(f)  # [64, 1]
    out = L.Dense(10, activation="softmax", name="logits")(L.Concatenate()([b, c]))  # [17, 10]
    model = keras.Model(inputs, out)
    r = stages.prune(model, digits, PruneConfig(final_sparsity=0.5, epochs=2, block=8), seed=0)
    assert r.metrics["schedule"]["blocked_layers"] == ["a", "logits"]
    k = kernels(r.model)
    for name in ("a", "b", "c"):  # logits' blocks (8, 8 and 1 of its 17 inputs) make its share coarse
        assert (k[name] == 0).mean() == pytest.approx(0.5, abs=0.07), name
    assert (k["logits"] == 0).mean() > 0.2
    runs = k["a"].T.reshape(8, -1, 8)
    assert set(np.unique((runs == 0).sum(axis=-1))) <= {0, 8}
    b_runs = (k["b"].T == 0).sum(axis=-1)  # b ([8, 16]) weight by weight: not whole rows of 8 zeros
    assert not set(np.unique(b_runs)) <= {0, 8}


def test_block_and_m_by_n_exclude_each_other():
    with pytest.raises(ValueError, match="two sparsity patterns"):
        PruneConfig(block=4, m_by_n="2:4")


def _shifted_teacher(model):
    """``model`` whose classifier answers class (c + 1) % 10 where ``model`` answers c."""
    from edgeopt.stages._common import clone_with_weights

    t = clone_with_weights(model)
    kernel, bias = t.get_layer("logits").get_weights()
    t.get_layer("logits").set_weights([np.roll(kernel, 1, axis=1), np.roll(bias, 1)])
    return t


def test_kd_fine_tunes_against_the_teacher(digits, tiny_model):
    """With alpha 0 the labels are ignored: fine-tuning follows a teacher that answers the next class, so
    the student comes to agree with that teacher and to miss the labels."""
    from edgeopt.config import KDConfig
    from edgeopt.stages._common import predict

    teacher = _shifted_teacher(tiny_model)
    cfg = PruneConfig(final_sparsity=0.3, epochs=15, learning_rate=5e-3, kd=KDConfig(temperature=2, alpha=0.0))
    r = stages.prune(tiny_model, digits, cfg, teacher=teacher, seed=0)
    want = np.argmax(predict(teacher, digits.x_test), -1)
    assert (np.argmax(predict(tiny_model, digits.x_test), -1) == want).mean() < 0.15  # before: they disagree
    got = np.argmax(predict(r.model, digits.x_test), -1)
    assert (got == want).mean() > 0.6
    assert r.metrics["accuracy"] < 0.4


def test_kd_without_a_teacher_is_bad_input(digits, tiny_model):
    from edgeopt.config import KDConfig

    with pytest.raises(BadInput, match="needs the teacher"):
        stages.prune(tiny_model, digits, PruneConfig(epochs=1, kd=KDConfig()))


@pytest.mark.parametrize("stage", ["cluster", "qat"])
def test_kd_reaches_every_fine_tuning_stage(digits, tiny_model, stage, monkeypatch):
    """cluster and qat take the teacher as prune does: without one, kd is refused; with one, they train on
    [labels | the teacher's logits] with the distillation loss."""
    import importlib

    from edgeopt.config import ClusterConfig, KDConfig, QATConfig
    from edgeopt.stages._common import predict

    module = importlib.import_module(f"edgeopt.stages.{stage}")
    seen = {}
    real_fit = module.fit

    def spy(model, data, **kw):
        seen.update(kw)
        return real_fit(model, data, **kw)

    monkeypatch.setattr(module, "fit", spy)
    cfg = {"cluster": ClusterConfig, "qat": QATConfig}[stage](epochs=1, kd=KDConfig(alpha=0.5))
    with pytest.raises(BadInput, match=f"{stage} with kd"):
        getattr(stages, stage)(tiny_model, digits, cfg)
    teacher = _shifted_teacher(tiny_model)
    r = getattr(stages, stage)(tiny_model, digits, cfg, teacher=teacher)
    assert seen["y_train"].shape == (len(digits.x_train), 20)
    t_logits = np.log(np.clip(predict(teacher, digits.x_train), 1e-30, 1.0))
    np.testing.assert_allclose(seen["y_train"][:, 10:], t_logits, rtol=1e-4, atol=1e-4)
    assert r.metrics["kd"] == {"temperature": 4.0, "alpha": 0.5}
