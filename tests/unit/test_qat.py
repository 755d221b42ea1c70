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


def test_cqat_keeps_clusters_and_zeros_in_the_int8_kernels(clustered, digits):
    before = weights_of(clustered)
    ptq = stages.convert(clustered, ConvertConfig(quantization="int8"), data=digits).metrics["kernels"]
    r = stages.qat(clustered, digits, QATConfig(epochs=1))
    assert same_weights(before, weights_of(clustered))
    assert r.metrics["preserve"] == "cluster" and r.metrics["accuracy_before"] - r.metrics["accuracy"] < 0.05
    cqat = stages.convert(r.model, ConvertConfig(quantization="int8"), data=digits).metrics["kernels"]
    dense_ptq = {k: v for k, v in ptq.items() if "Conv2D" not in k}
    dense_cqat = {k: v for k, v in cqat.items() if "Conv2D" not in k}
    # plain PTQ after clustering multiplies the distinct values of a kernel (tfmot PR #871) ...
    assert max(v["distinct_values"] for v in dense_ptq.values()) > 8
    # ... cluster-preserving QAT keeps them at the cluster count, and the zeros
    assert all(v["distinct_values"] <= 8 for v in dense_cqat.values()), dense_cqat
    assert all(v["sparsity"] == pytest.approx(0.5, abs=0.02) for v in cqat.values()), cqat


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
    assert (out / "saved_model.pb").is_file() and json.loads((tmp_path / "qat_model.json").read_text())["preserve"]
    t = tmp_path / "q.tflite"
    r = CliRunner().invoke(app, ["convert", str(out), "--out", str(t), "--data", "digits", "-q"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "q.tflite.json").read_text())
    assert m["inputs"][0]["dtype"] == "int8"
    assert np.max([v["distinct_values"] for k, v in m["kernels"].items() if "Conv2D" not in k]) <= 8
