"""One int8 codebook per clustered kernel (edgeopt.quant.codebook): a clustered Conv2D + BatchNorm model
converted to int8 has a grid per channel; the rewrite puts every channel on the clusters' codes and keeps
what the model computes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from edgeopt import stages
from edgeopt._keras import keras, set_seed
from edgeopt.config import ConvertConfig
from edgeopt.quant import codebook
from edgeopt.runtimes.litert import LiteRTModel

CLUSTERS = 8


def _clustered(model, rng: np.random.Generator) -> None:
    """Every conv kernel of ``model`` replaced by CLUSTERS shared values (its own quantiles), as tfmot's
    clustering leaves it; BatchNorm given per-channel scales far apart, one of them negative."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel.numpy()
            centroids = np.quantile(k, np.linspace(0.02, 0.98, CLUSTERS))
            k = centroids[np.abs(k[..., None] - centroids).argmin(-1)]
            layer.kernel.assign(k.astype(np.float32))
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma = rng.uniform(0.3, 3.0, n)
            gamma[0] = -gamma[0]
            layer.gamma.assign(gamma.astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype(np.float32))


@pytest.fixture(scope="module")
def model(digits):
    set_seed(0)
    L = keras.layers
    i = keras.Input(digits.x_train.shape[1:])
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(i)))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 1, use_bias=False)(x)))
    o = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x))
    m = keras.Model(i, o)
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
    _clustered(m, np.random.default_rng(0))
    return m


def _codes(content: bytes) -> dict[str, int]:
    """Distinct int8 codes of each per-channel quantized weight tensor."""
    from edgeopt import tflite as tfl

    return {
        t["name"]: int(np.unique(t["values"]).size)
        for t in tfl.constant_tensors(content)
        if t["dtype"] == "int8" and len(t["shape"]) == 4
    }


def _outputs(content: bytes, x: np.ndarray) -> np.ndarray:
    return LiteRTModel(content).predict(x)


def test_clustered_convolutions_share_one_codebook_and_compute_the_same(model, digits):
    cfg = dict(quantization="int8", calibration_samples=64)
    off = stages.convert(model, ConvertConfig(**cfg, shared_codebook=False), data=digits)
    on = stages.convert(model, ConvertConfig(**cfg), data=digits)
    assert "shared_codebook" not in off.metrics
    rows = on.metrics["shared_codebook"]
    assert [r["layer"] for r in rows] == [
        layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
    ]
    before, after = _codes(off.tflite), _codes(on.tflite)
    assert max(before.values()) > 2 * CLUSTERS  # BatchNorm folded: a grid per channel
    assert max(after.values()) <= 2 * CLUSTERS  # the clusters, and their negatives for the negative gamma
    assert all(r["codes_after"] < r["codes_before"] and r["fit_residual_steps"] <= 1.0 for r in rows)
    assert len(on.tflite) == len(off.tflite)  # the same layout: only weights, biases and scales were rewritten
    assert len(gzip.compress(on.tflite, 9)) < len(gzip.compress(off.tflite, 9))
    x = digits.x_test[:300]
    a, b = _outputs(off.tflite, x), _outputs(on.tflite, x)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.97
    assert np.abs(a - b).max() <= 0.1  # softmax outputs: a few int8 steps of 1/256


def test_a_kernel_that_is_not_clustered_or_not_this_models_is_left_alone(model, digits):
    plain = keras.models.clone_model(model)  # fresh weights: nothing clustered
    cfg = ConvertConfig(quantization="int8", calibration_samples=64)
    result = stages.convert(plain, cfg, data=digits)
    assert result.metrics["shared_codebook"] == []
    # the clustered model's kernels do not explain another model's codes: nothing rewritten
    content, rows = codebook.share_codebooks(result.tflite, model)
    assert rows == [] and content == result.tflite


def test_only_int8_conversions_are_rewritten(model, digits):
    result = stages.convert(model, ConvertConfig(quantization="float16"))
    assert "shared_codebook" not in result.metrics
