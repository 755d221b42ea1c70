"""Cluster- and sparsity-preserving QAT: the int8 kernels keep the cluster count and the zeros."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeopt import stages
from edgeopt.cli import app
from edgeopt.config import ClusterConfig, ConvertConfig, PruneConfig, QATConfig
from tests.conftest import same_weights, weights_of


@pytest.fixture(scope="module")
def clustered(tiny_model, digits):
    pruned = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.5, epochs=2)).model
    return stages.cluster(pruned, digits, ClusterConfig(clusters=8, epochs=1)).model


def _weight_quantizers(qmodel) -> dict[str, object]:
    """The weight quantizer of every QAT-wrapped layer that has a kernel, by the original layer's name."""
    out = {}
    for layer in qmodel.layers:
        config = getattr(layer, "quantize_config", None)
        if config is not None and getattr(layer.layer, "kernel", None) is not None:
            out[layer.layer.name] = config.weight_quantizer
    return out


def _tflite_kernels(metrics: dict) -> dict[str, dict]:
    """convert's ``kernels`` metrics by layer name (``tiny_cnn/quant_fc1/MatMul;...`` -> ``fc1``)."""
    return {k.split(";")[0].split("/")[1].removeprefix("quant_"): v for k, v in metrics["kernels"].items()}


def test_cqat_keeps_clusters_and_zeros_in_the_int8_kernels(clustered, digits):
    from edgeopt.stages._common import kernels

    before = weights_of(clustered)
    keras_kernels = kernels(clustered)
    # the converter's own per-channel grids (shared_codebook, on by default, puts them back on the clusters)
    plain = ConvertConfig(quantization="int8", shared_codebook=False)
    ptq = _tflite_kernels(stages.convert(clustered, plain, data=digits).metrics)
    r = stages.qat(clustered, digits, QATConfig(epochs=1))
    assert same_weights(before, weights_of(clustered))
    assert r.metrics["preserve"] == "cluster" and r.metrics["accuracy_before"] - r.metrics["accuracy"] < 0.05
    # the scheme: tfmot's cluster-preserving weight quantizers, keeping the zeros (the input is 50% sparse)
    quantizers = _weight_quantizers(r.model)
    assert {n: type(q).__name__ for n, q in quantizers.items()} == {
        "conv1": "ClusterPreserveDefault8BitConvWeightsQuantizer",
        "fc1": "ClusterPreserveDefault8BitWeightsQuantizer",
        "logits": "ClusterPreserveDefault8BitWeightsQuantizer",
    }
    assert all(q.preserve_sparsity is True for q in quantizers.values())
    cqat = _tflite_kernels(stages.convert(r.model, ConvertConfig(quantization="int8"), data=digits).metrics)
    assert set(cqat) == set(ptq) == set(keras_kernels) == {"conv1", "fc1", "logits"}
    for name in ("fc1", "logits"):  # Dense kernels: one scale per tensor
        clusters = int(np.unique(keras_kernels[name]).size)
        zeros = float(np.mean(keras_kernels[name] == 0))
        assert clusters == 8 and zeros == pytest.approx(0.5, abs=0.02)
        # plain PTQ after clustering multiplies the distinct values of a kernel (tfmot PR #871) ...
        assert ptq[name]["distinct_values"] > clusters, (name, ptq[name])
        # ... cluster-preserving QAT keeps exactly the clusters, and the zeros
        assert cqat[name]["distinct_values"] == clusters, (name, cqat[name])
        assert cqat[name]["sparsity"] == pytest.approx(zeros, abs=1e-9), (name, cqat[name])
    # the conv kernel is quantized per output channel: at most the clusters in each channel
    assert cqat["conv1"]["max_distinct_per_channel"] <= int(np.unique(keras_kernels["conv1"]).size)
    assert cqat["conv1"]["sparsity"] == pytest.approx(float(np.mean(keras_kernels["conv1"] == 0)), abs=1e-9)


def test_pruned_model_gets_the_sparsity_preserving_scheme(tiny_model, digits):
    from edgeopt.stages._common import kernels

    pruned = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.5, epochs=1)).model
    r = stages.qat(pruned, digits, QATConfig(epochs=1))
    assert r.metrics["preserve"] == "sparsity"
    assert {n: type(q).__name__ for n, q in _weight_quantizers(r.model).items()} == {
        "conv1": "PrunePreserveDefault8BitConvWeightsQuantizer",
        "fc1": "PrunePreserveDefault8BitWeightsQuantizer",
        "logits": "PrunePreserveDefault8BitWeightsQuantizer",
    }
    tfl = _tflite_kernels(stages.convert(r.model, ConvertConfig(quantization="int8"), data=digits).metrics)
    for name, k in kernels(pruned).items():
        assert tfl[name]["sparsity"] == pytest.approx(float(np.mean(k == 0)), abs=1e-9), name


def test_layers_left_out_of_clustering_do_not_hide_the_clusters(tiny_model, digits):
    from edgeopt.stages.qat import detect_preserve

    pruned = stages.prune(tiny_model, digits, PruneConfig(final_sparsity=0.5, epochs=1)).model
    c = stages.cluster(pruned, digits, ClusterConfig(clusters=8, epochs=1, skip_layers=["conv1", "logits"])).model
    preserve, info = detect_preserve(c)
    assert preserve.value == "cluster" and info["max_distinct_values"] > 8 and info["clustered_weight_fraction"] > 0.8
    assert detect_preserve(pruned)[0].value == "sparsity" and detect_preserve(tiny_model)[0].value == "none"


def test_qat_cli_writes_a_saved_model_that_converts(clustered, tmp_path):
    from edgeopt.artifacts import save_model

    src = save_model(clustered, tmp_path / "c.keras")
    out = tmp_path / "qat_model"
    r = CliRunner().invoke(app, ["qat", str(src), "--data", "digits", "--out", str(out), "--epochs", "1", "-q"])
    assert r.exit_code == 0, r.output
    assert (out / "saved_model.pb").is_file()
    qm = json.loads((tmp_path / "qat_model.json").read_text())
    assert qm["preserve"] == "cluster" and qm["input"]["max_distinct_values"] == 8
    assert qm["input"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    t = tmp_path / "q.tflite"
    r = CliRunner().invoke(app, ["convert", str(out), "--out", str(t), "--data", "digits", "-q"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "q.tflite.json").read_text())
    assert m["inputs"][0]["dtype"] == "int8"
    dense = {k: v["distinct_values"] for k, v in _tflite_kernels(m).items() if k != "conv1"}
    assert dense == {"fc1": 8, "logits": 8}  # the clusters, kept through the SavedModel folder
