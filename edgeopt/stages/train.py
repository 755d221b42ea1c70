"""Train a reference model from the zoo (the default teacher)."""

from __future__ import annotations

from edgeopt import zoo
from edgeopt._keras import set_seed
from edgeopt.config import TrainConfig
from edgeopt.data import Dataset
from edgeopt.progress import Timer
from edgeopt.stages._common import StageResult, accuracy, count_params, fit


def train(data: Dataset, config: TrainConfig | None = None, *, seed: int = 0) -> StageResult:
    """Build ``config.zoo`` for ``data`` and train it from scratch; metrics give the test accuracy."""
    config = config or TrainConfig()
    with Timer() as t:
        set_seed(seed)
        model = zoo.build(config.zoo, data.input_shape, data.num_classes)
        history = fit(
            model,
            data,
            description=f"train {config.zoo}",
            training=config,
        )
        acc = accuracy(model, data.x_test, data.y_test)
    metrics = {
        "zoo": config.zoo,
        "params": count_params(model),
        "epochs": config.epochs,
        "accuracy": acc,
        "val_accuracy": history.get("val_accuracy", [None])[-1],
        "seed": seed,
    }
    return StageResult("train", metrics=metrics, model=model, seconds=t.seconds)
