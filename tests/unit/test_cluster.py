import numpy as np

from edgeopt import stages
from edgeopt.config import ClusterConfig, PruneConfig
from edgeopt.stages._common import kernels
from tests.conftest import same_weights, weights_of


def test_distinct_values_at_most_clusters(digits, tiny_model):
    before = weights_of(tiny_model)
    r = stages.cluster(tiny_model, digits, ClusterConfig(clusters=8, epochs=1))
    assert same_weights(before, weights_of(tiny_model))
    assert not any("Cluster" in type(layer).__name__ for layer in r.model.layers)
    assert set(r.metrics["layers"]) == {"conv1", "fc1", "logits"}
    for name, k in kernels(r.model).items():
        assert np.unique(k).size <= 8, name
    assert r.metrics["preserve_sparsity"] is False  # dense input
    assert r.metrics["accuracy_before"] - r.metrics["accuracy"] < 0.1


def test_sparsity_is_kept_by_default_on_sparse_input(digits, tiny_model):
    pruned = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.5, epochs=2)).model
    zero_masks = {n: k == 0 for n, k in kernels(pruned).items()}
    r = stages.cluster(pruned, digits, ClusterConfig(clusters=4, epochs=1))
    assert r.metrics["preserve_sparsity"] is True
    assert abs(r.metrics["sparsity"] - r.metrics["input_sparsity"]) < 0.01
    for name, k in kernels(r.model).items():
        assert (k[zero_masks[name]] == 0).all(), f"{name}: pruned weights came back"
        assert np.unique(k[k != 0]).size <= 4


def test_no_preserve_sparsity_option(digits, tiny_model):
    pruned = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.5, epochs=1)).model
    r = stages.cluster(pruned, digits, ClusterConfig(clusters=4, epochs=1, preserve_sparsity=False))
    assert r.metrics["preserve_sparsity"] is False
    assert r.metrics["sparsity"] < 0.2  # zeros collapse into clusters
