"""A Keras 3 functional model of MobileNetV2-style blocks for Fashion-MNIST (3x3 depthwise convolutions,
BatchNormalization, ReLU6, 1x1 convolutions, residual Add, global average pooling), trained in Keras 3 and
saved as a Keras 3 ``.keras`` file, which edgeopt reads through its Keras 3 bridge. The model of issue 21's
PTQ comparison (6,4xx parameters), built the way issue 18's model-family suite describes it.

    .venv/bin/python bench/quant/mobilenet_style.py --out models/mobilenet_style_fashion.keras --epochs 12 --seed 42
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def build(keras: Any, input_shape: tuple[int, ...] = (28, 28, 1), classes: int = 10) -> Any:
    L = keras.layers

    def bn_relu6(x: Any, name: str) -> Any:
        x = L.BatchNormalization(name=f"{name}_bn")(x)
        return L.ReLU(6.0, name=f"{name}_relu6")(x)

    def block(x: Any, out: int, stride: int, expand: int, name: str) -> Any:
        inp = x
        c = x.shape[-1]
        x = L.Conv2D(c * expand, 1, use_bias=False, name=f"{name}_expand")(x)
        x = bn_relu6(x, f"{name}_expand")
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
        x = bn_relu6(x, f"{name}_dw")
        x = L.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(x)
        x = L.BatchNormalization(name=f"{name}_project_bn")(x)
        if stride == 1 and c == out:
            x = L.Add(name=f"{name}_add")([inp, x])
        return x

    x = inp = keras.Input(shape=input_shape, name="input")
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = bn_relu6(x, "stem")
    x = block(x, 8, 1, 2, "b1")
    x = block(x, 16, 2, 2, "b2")
    x = block(x, 16, 1, 2, "b3")
    x = block(x, 20, 2, 2, "b4")
    x = block(x, 20, 1, 2, "b5")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(classes, activation="softmax", name="logits")(x)
    return keras.Model(inp, out, name="mobilenet_style")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/mobilenet_style_fashion.keras")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lr", type=float, default=4e-3)
    a = ap.parse_args()

    import edgeopt._keras  # noqa: F401 - TensorFlow's environment before Keras 3 imports it
    import keras

    from edgeopt.config import DataConfig
    from edgeopt.data import load_dataset

    data = load_dataset(DataConfig(name="fashion_mnist", seed=a.seed))
    keras.utils.set_random_seed(a.seed)
    model = build(keras, data.input_shape, data.num_classes)
    steps = -(-len(data.x_train) // 128) * a.epochs
    model.compile(
        keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(a.lr, steps)),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    t = time.time()
    model.fit(data.x_train, data.y_train, batch_size=128, epochs=a.epochs, verbose=2,
              validation_data=(data.x_val, data.y_val))  # fmt: skip
    seconds = time.time() - t
    _, acc = model.evaluate(data.x_test, data.y_test, verbose=0)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    info = {"params": model.count_params(), "accuracy": acc, "epochs": a.epochs, "seed": a.seed,
            "seconds": round(seconds, 1), "keras": keras.__version__}  # fmt: skip
    out.with_suffix(".keras.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
