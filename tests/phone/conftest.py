"""The arm64 guest, built once per machine (in ``~/.cache/edgeopt/arm64`` or ``EDGEOPT_ARM_CACHE``) and
shared by the whole test session; small int8 models for the emulated cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeopt.config import ConvertConfig

DATA = Path(__file__).parent / "data"
DEFAULT_MODEL = DATA / "fashion_mnist_default.tflite"  # `make export`'s android asset at commit ab0801f


@pytest.fixture(scope="session")
def arm_guest():
    """The guest, built on first use. Skipped, saying why, only where it cannot be built: no QEMU or
    no debootstrap (`make test` installs both as root where apt exists)."""
    from edgeopt.arm import guest, qemu

    if qemu.find() is None:
        pytest.skip(f"the phone check needs QEMU user mode: {qemu.missing()}")
    if guest.problems() and (tools := guest.build_tools_missing()):
        pytest.skip("the arm64 guest is not built and cannot be built here; missing: " + "; ".join(tools))
    return guest.setup()


def _int8(model, seed: int = 0) -> bytes:
    """``model`` (16x16x1 inputs) converted to int8 with random calibration images."""
    from edgeopt import stages
    from edgeopt.data import Dataset

    x = np.random.default_rng(seed).random((16, 16, 16, 1), dtype=np.float32)
    y = np.zeros(16, np.int64)
    data = Dataset("random", "random", 0, x, y, x[:0], y[:0], x[:1], y[:1], [str(i) for i in range(10)])
    return stages.convert(model, ConvertConfig(quantization="int8", calibration_samples=16), data=data).tflite


@pytest.fixture(scope="session")
def small_int8() -> bytes:
    """A small int8 CNN (random weights) with the ops of small vision models: convolution, depthwise
    convolution, add, average and max pooling, fully connected; logits out (no softmax)."""
    from edgeopt._keras import keras, set_seed

    set_seed(3)
    L = keras.layers
    inp = keras.Input((16, 16, 1))
    a = L.Conv2D(16, 3, padding="same", activation="relu")(inp)
    b = L.DepthwiseConv2D(3, padding="same", activation="relu")(a)
    c = L.MaxPooling2D()(L.Add()([a, b]))
    d = L.Conv2D(24, 1, activation="relu")(L.AveragePooling2D()(c))
    out = L.Dense(10)(L.Flatten()(d))
    return _int8(keras.Model(inp, out))


def random_cnn_int8(width: int, seed: int = 0) -> bytes:
    """An untrained int8 CNN on 16x16x1 inputs whose MACs grow with ``width`` squared (weights do not
    change the work the kernels do)."""
    from edgeopt._keras import keras, set_seed

    set_seed(seed)
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            L.Conv2D(width, 3, padding="same", activation="relu"),
            L.Conv2D(width, 3, padding="same", activation="relu"),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(10),
        ]
    )
    return _int8(model, seed)
