"""Post-training methods side by side on one Keras model: int8 top-1 on the test split in LiteRT (XNNPACK)
against the Keras model's own top-1, one JSON line per method. Used for the figures in bench/quant.md.

    .venv/bin/python -m benchmarks.quant.ptq_methods build/fashion_mnist/03_cluster/model.keras \
        --out bench/quant/ptq_default_cluster.jsonl

Every method is a ConvertConfig option (edgeopt convert flags, pipeline keys); "all" runs each alone and the
combinations listed in COMBOS.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

METHODS = {
    "int8": {},
    "equalize": {"equalize": True},
    "equalize_relu6": {"equalize": True, "equalize_relu6": True},
    "bias_correction": {"bias_correction": True},
    "adaround": {"adaround": True},
    "percentile": {"activation_ranges": "percentile"},
    "mse": {"activation_ranges": "mse"},
}
COMBOS = {
    "equalize+bias_correction": {"equalize": True, "bias_correction": True},
    "equalize+adaround": {"equalize": True, "adaround": True},
    "adaround+mse": {"adaround": True, "activation_ranges": "mse"},
    "equalize+adaround+mse": {"equalize": True, "adaround": True, "activation_ranges": "mse"},
    "equalize_relu6+bias_correction": {"equalize": True, "equalize_relu6": True, "bias_correction": True},
    "equalize_relu6+adaround+mse": {
        "equalize": True,
        "equalize_relu6": True,
        "adaround": True,
        "activation_ranges": "mse",
    },
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--data", default="fashion_mnist")
    ap.add_argument("--seed", type=int, default=42, help="data seed (the pipeline's): split and calibration images")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--extra", default="{}", help="JSON of ConvertConfig fields added to every method")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    from edgeopt import stages
    from edgeopt.artifacts import load_model
    from edgeopt.config import ConvertConfig, DataConfig, ValidateConfig
    from edgeopt.data import load_dataset
    from edgeopt.stages._common import accuracy

    data = load_dataset(DataConfig(name=a.data, seed=a.seed))
    model = load_model(a.model)
    keras_acc = accuracy(model, data.x_test, data.y_test)
    todo = {**METHODS, **COMBOS} if a.methods == "all" else {k: {**METHODS, **COMBOS}[k] for k in a.methods.split(",")}
    extra = json.loads(a.extra)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, cfg in todo.items():
        t = time.time()
        r = stages.convert(model, ConvertConfig(quantization="int8", **cfg, **extra), data=data, seed=a.seed)
        secs = time.time() - t
        v = stages.validate(r.tflite, data, ValidateConfig(cross_check=False, latency=False))
        row = {"model": a.model, "method": name, "config": {**cfg, **extra}, "keras_accuracy": keras_acc,
               "accuracy": v.measurements.accuracy, "drop_points": (keras_acc - v.measurements.accuracy) * 100,
               "bytes": len(r.tflite), "gzip_bytes": r.metrics["gzip_bytes"], "convert_seconds": round(secs, 1),
               "ptq": r.metrics.get("ptq")}  # fmt: skip
        shown = ("method", "keras_accuracy", "accuracy", "drop_points", "bytes", "convert_seconds")
        print(json.dumps({k: row[k] for k in shown}), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")


if __name__ == "__main__":
    main()
