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
