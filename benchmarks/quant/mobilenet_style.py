"""The Keras 3 MobileNet-style model of the model-family suite (``edgeopt.zoo.mobilenet_style``: 3x3
depthwise convolutions, BatchNormalization, ReLU6, 1x1 convolutions, residual Add, global average pooling),
trained in Keras 3 on the full Fashion-MNIST training split and saved as a Keras 3 ``.keras`` file, which
edgeopt reads through its Keras 3 bridge: the model of issue 21's PTQ comparison. Keras 3 runs in this
process only (edgeopt._keras is never imported here: tf-keras and Keras 3 do not share one process).

    .venv/bin/python -m benchmarks.quant.mobilenet_style --out models/mobilenet_style_fashion.keras
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

EPOCHS, LEARNING_RATE = 12, 0.003  # the suite trains it at 3e-3 with cosine decay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/mobilenet_style_fashion.keras")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lr", type=float, default=LEARNING_RATE)
    a = ap.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as edgeopt._keras sets it
    import keras  # Keras 3

    from edgeopt import zoo
    from edgeopt.config import DataConfig
    from edgeopt.data import load_dataset

    data = load_dataset(DataConfig(name="fashion_mnist", seed=a.seed))
    keras.utils.set_random_seed(a.seed)
    model = zoo.mobilenet_style(keras, data.input_shape, data.num_classes)
    steps = -(-len(data.x_train) // 128) * a.epochs
    model.compile(
        keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(a.lr, steps)),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    t = time.time()
    model.fit(data.x_train, data.y_train, batch_size=128, epochs=a.epochs, verbose=2)
    seconds = time.time() - t
    _, acc = model.evaluate(data.x_test, data.y_test, verbose=0)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    info = {"params": model.count_params(), "accuracy": acc, "epochs": a.epochs, "learning_rate": a.lr,
            "seed": a.seed, "seconds": round(seconds, 1), "keras": keras.__version__}  # fmt: skip
    out.with_suffix(".keras.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
