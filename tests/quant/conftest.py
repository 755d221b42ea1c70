"""Small models on which each post-training method measurably matters: tiny_cnn with deliberately unequal
conv1 channel scales (an exact rescaling of the trained model: the same float function, int8 activations
ruined), and a MobileNet-style block (BatchNorm, ReLU6, depthwise, residual Add) trained briefly on digits."""

from __future__ import annotations

import numpy as np
import pytest

#: conv1's channel i is multiplied by SCALES[i] and fc1's rows reading it divided by it (through ReLU,
#: max pooling and flatten, which commute with a positive per-channel factor)
SCALES = np.array([1.0, 50.0, 0.05, 1.0, 20.0, 0.1, 1.0, 5.0], np.float32)


@pytest.fixture(scope="session")
def unequal_model(tiny_model):
    from edgeopt.stages._common import clone_with_weights

    m = clone_with_weights(tiny_model)
    conv = m.get_layer("conv1")
    k, b = conv.get_weights()
    conv.set_weights([k * SCALES, b * SCALES])
    fc = m.get_layer("fc1")
    k, b = fc.get_weights()
    fc.set_weights([k / np.tile(SCALES, k.shape[0] // SCALES.size)[:, None], b])
    return m


def build_mobilenet_block(input_shape: tuple[int, ...], classes: int):
    """Conv-BN-ReLU6 stem, an inverted residual block (1x1 expand, 3x3 depthwise, 1x1 project, Add), global
    average pooling, Dense: the structure of MobileNetV2 at digits' size (tf-keras, functional)."""
    from edgeopt._keras import keras

    L = keras.layers
    x = inp = keras.Input(shape=input_shape)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu6")(x)
    skip = x
    x = L.Conv2D(16, 1, use_bias=False, name="expand")(x)
    x = L.BatchNormalization(name="expand_bn")(x)
    x = L.ReLU(6.0, name="expand_relu6")(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(6.0, name="dw_relu6")(x)
    x = L.Conv2D(8, 1, use_bias=False, name="project")(x)
    x = L.BatchNormalization(name="project_bn")(x)
    x = L.Add(name="add")([skip, x])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(classes, activation="softmax", name="logits")(x)
    return keras.Model(inp, out, name="mobilenet_block")


@pytest.fixture(scope="session")
def mobilenet_model(digits):
    from edgeopt._keras import keras, set_seed

    set_seed(3)
    m = build_mobilenet_block(digits.input_shape, digits.num_classes)
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(digits.x_train, digits.y_train, epochs=30, batch_size=64, verbose=0)
    assert m.evaluate(digits.x_test, digits.y_test, verbose=0)[1] > 0.8
    return m


def run_litert(content: bytes, x: np.ndarray) -> np.ndarray:
    """Raw outputs of ``content`` on ``x``, one example at a time, in LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    it.allocate_tensors()
    d, o = it.get_input_details()[0], it.get_output_details()[0]
    scale, zp = d["quantization"]
    out = []
    for xi in x:
        v = xi[None].astype(np.float32)
        if d["dtype"] != np.float32:
            v = np.clip(np.round(v / scale + zp), -128, 127).astype(d["dtype"])
        it.set_tensor(d["index"], v)
        it.invoke()
        out.append(it.get_tensor(o["index"]).copy())
    return np.concatenate(out)


def dequantized(content: bytes, raw: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    o = Interpreter(model_content=content).get_output_details()[0]
    scale, zp = o["quantization"]
    return raw.astype(np.float32) if o["dtype"] == np.float32 else (raw.astype(np.float32) - zp) * scale
