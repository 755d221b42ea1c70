"""``dense_share``: the layers left dense are chosen by their share of the kernel weights, not by name."""

import pytest

from edgeopt import stages
from edgeopt.config import ClusterConfig, PruneConfig
from edgeopt.stages._common import dense_by_share, kernel_weights, kernels

# tiny_cnn on 8x8 digits: conv1 3*3*1*8 = 72, fc1 (4*4*8)*32 = 4096, logits 32*10 = 320 kernel weights.
SIZES = {"conv1": 72, "fc1": 4096, "logits": 320}
TOTAL = sum(SIZES.values())


def test_kernel_weights_of_the_tiny_model(tiny_model):
    assert {layer.name: kernel_weights(layer) for layer in tiny_model.layers if layer.weights} == SIZES


@pytest.mark.parametrize(
    ("share", "dense"),
    [
        (0.0, set()),
        (71 / TOTAL, set()),  # conv1 alone is 72 weights: just over
        (72 / TOTAL, {"conv1"}),
        (0.05, {"conv1"}),  # 224 allowed: conv1 (72), then logits (320) would make 392
        (0.1, {"conv1", "logits"}),  # 448 allowed: 392 held; fc1 would make all of them
        (0.9, {"conv1", "logits"}),
    ],
)
def test_smallest_layers_up_to_the_share(tiny_model, share, dense):
    layers = [layer for layer in tiny_model.layers if layer.weights]
    got = dense_by_share(layers, share)
    assert set(got) == dense
    for name in got:
        assert got[name].startswith(f"dense_share: {SIZES[name]} of {TOTAL} kernel weights")


def test_prune_leaves_the_smallest_layers_dense(digits, tiny_model):
    r = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.5, epochs=1, dense_share=0.1))
    skipped = r.metrics["skipped_layers"]
    assert set(skipped) == {"conv1", "logits"}
    assert skipped["logits"] == "dense_share: 320 of 4488 kernel weights (7.1%; smallest layers up to 10.0%)"
    assert set(r.metrics["layers"]) == {"fc1"}
    k = kernels(r.model)
    assert (k["conv1"] == 0).mean() < 0.05 and (k["logits"] == 0).mean() < 0.05
    assert (k["fc1"] == 0).mean() == pytest.approx(0.5, abs=0.01)


def test_cluster_share_counts_only_clusterable_layers(digits, tiny_model):
    # With clusters=100, conv1 (72 weights) cannot be clustered at all, so the share is of fc1 + logits
    # (4416): 5% allows 220 weights, less than logits' 320, so nothing more is left out.
    r = stages.cluster(tiny_model, digits, ClusterConfig(clusters=100, epochs=0, dense_share=0.05))
    assert r.metrics["skipped_layers"] == {"conv1": "only 72 weights for 100 clusters"}
    r = stages.cluster(tiny_model, digits, ClusterConfig(clusters=100, epochs=0, dense_share=0.08))
    assert set(r.metrics["skipped_layers"]) == {"conv1", "logits"}
    assert r.metrics["skipped_layers"]["logits"].startswith("dense_share: 320 of 4416 kernel weights")
    assert set(r.metrics["layers"]) == {"fc1"}


def test_dense_share_is_validated():
    with pytest.raises(ValueError, match="less than 1"):
        PruneConfig(dense_share=1.0)
