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
CLUSTERED = ("conv", "dw", "pw", "head")


def _clustered(model, rng: np.random.Generator | None = None) -> None:
    """The CLUSTERED kernels of ``model`` replaced by CLUSTERS shared values (quantiles of their own), as tfmot's
    clustering leaves a kernel; one BatchNorm channel's scale made negative, so its folded factor is. With
    ``rng``, BatchNorm's statistics are drawn at random instead (scales far apart, the model at chance)."""
    for layer in model.layers:
        if layer.name in CLUSTERED:
            kernel = layer.depthwise_kernel if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.kernel
            k = kernel.numpy()
            centroids = np.quantile(k, np.linspace(0.02, 0.98, CLUSTERS))
            kernel.assign(centroids[np.abs(k[..., None] - centroids).argmin(-1)].astype(np.float32))
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma = layer.gamma.numpy() if rng is None else rng.uniform(0.3, 3.0, layer.gamma.shape[0])
            gamma[0] = -gamma[0]
            layer.gamma.assign(gamma.astype(np.float32))
            if rng is not None:
                layer.moving_variance.assign(rng.uniform(0.5, 2.0, gamma.size).astype(np.float32))


def _build(shape: tuple[int, ...]):
    L = keras.layers
    i = keras.Input(shape)
    x = L.Conv2D(8, 1, name="stem")(i)  # not clustered: left as it is
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(x)))
    x = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 1, use_bias=False, name="pw")(x)))
    return keras.Model(i, L.Dense(10, activation="softmax", name="head")(L.GlobalAveragePooling2D()(x)))


@pytest.fixture(scope="module")
def model(digits):
    """Trained (76% on digits' test split), then clustered (56%)."""
    set_seed(0)
    m = _build(digits.x_train.shape[1:])
    m.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    m.fit(digits.x_train, digits.y_train, epochs=20, batch_size=32, verbose=0)
    _clustered(m)
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


def _convolutions(content: bytes) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
    """Per convolution: its input scale, weight scales, bias scales and int32 biases."""
    from ai_edge_litert import schema_py_generated as schema

    from edgeopt import tflite as tfl

    m = tfl.parse(content)
    g = m.subgraphs[0]
    ops = (schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D)
    out = []
    for op in g.operators:
        if m.operatorCodes[op.opcodeIndex].builtinCode not in ops:
            continue
        x, w, b = (g.tensors[i] for i in op.inputs[:3])
        bias = np.frombuffer(bytes(m.buffers[b.buffer].data), dtype=np.int32)
        out.append((x.quantization.scale[0], np.asarray(w.quantization.scale), np.asarray(b.quantization.scale), bias))
    return out


def _both(model, digits, monkeypatch) -> tuple[object, object]:
    cfg = dict(quantization="int8", calibration_samples=64)
    off = stages.convert(model, ConvertConfig(**cfg, shared_codebook=False), data=digits)
    with monkeypatch.context() as mp:
        mp.setattr(codebook, "pack", lambda *a: pytest.fail("not written in place"))
        on = stages.convert(model, ConvertConfig(**cfg), data=digits)
    assert "shared_codebook" not in off.metrics
    return off, on


def test_every_channel_of_a_clustered_kernel_gets_the_same_codes_and_its_bias_follows(digits, monkeypatch):
    """BatchNorm statistics drawn far apart (the model then at chance): the folded depthwise and pointwise
    kernels hold a grid per channel and go on the clusters' codes; each bias to its channel's new scale."""
    set_seed(0)
    model = _build(digits.x_train.shape[1:])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
    _clustered(model, np.random.default_rng(0))
    off, on = _both(model, digits, monkeypatch)
    rows = {r["layer"]: r for r in on.metrics["shared_codebook"]}
    assert {"dw", "pw"} <= set(rows) and "stem" not in rows
    assert all(
        r["codes_after"] < r["codes_before"] and r["max_change_steps"] <= codebook.MAX_MOVE_STEPS for r in rows.values()
    )
    before, after = _codes(off.tflite), _codes(on.tflite)
    assert max(before.values()) > 2 * CLUSTERS  # BatchNorm folded: a grid per channel
    assert max(after.values()) <= 2 * CLUSTERS  # the clusters, and their negatives for the negative gamma
    rewritten = 0
    for (x, w0, b0_scale, b0), (x1, w1, b1_scale, b1) in zip(
        _convolutions(off.tflite), _convolutions(on.tflite), strict=True
    ):
        assert x == x1
        rewritten += not np.array_equal(w0, w1)
        np.testing.assert_allclose(b1_scale, x * w1, rtol=1e-5)  # input scale x weight scale
        assert np.all(np.abs(b1 * b1_scale - b0 * b0_scale) <= b1_scale / 2 * 1.001)  # within half a step
    assert rewritten == len(set(rows) - {"head"})
    assert len(on.tflite) == len(off.tflite)  # written in place: only weights, biases and scales changed
    assert len(gzip.compress(on.tflite, 9)) < len(gzip.compress(off.tflite, 9))


def test_a_rewritten_model_computes_what_the_converters_did(model, digits, monkeypatch):
    off, on = _both(model, digits, monkeypatch)
    assert on.metrics["shared_codebook"] and len(gzip.compress(on.tflite, 9)) < len(gzip.compress(off.tflite, 9))
    x, y = digits.x_test, digits.y_test
    f, a, b = model.predict(x, verbose=0), _outputs(off.tflite, x), _outputs(on.tflite, x)
    assert (a.argmax(1) == y).mean() > 0.5  # a model that has learnt something: its outputs are not ties
    assert abs((b.argmax(1) == y).mean() - (a.argmax(1) == y).mean()) <= 0.02
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.95
    # the rewrite adds little to what int8 quantization itself changed
    assert np.abs(b - f).mean() <= 1.25 * np.abs(a - f).mean()


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
