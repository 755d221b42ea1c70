"""Low-bit QAT tries on one student: QAT (edgeopt.stages.qat with the given config) -> convert int8 (int4,
ternary or binary kernels stored as INT4) -> top-1 on the full test split in LiteRT, TFLite Micro on the
cortex-m7-512k profile (1,000 test images), raw / gzip / dieted bytes. One JSON line per try, appended to
--out. Used for the figures in bench/quant.md, e.g.

    .venv/bin/python -m benchmarks.quant.lowbit_qat build/flash_first/01_distill/model.keras \
        --qat '{"weights": "int4", "epochs": 6, "learning_rate": 0.0003, "lr_schedule": "cosine"}' \
        --out bench/quant/lowbit_flash_first.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("student")
    ap.add_argument("--qat", default="{}", help="QATConfig fields as JSON")
    ap.add_argument("--convert", default="{}", help="ConvertConfig fields as JSON (quantization int8 by default)")
    ap.add_argument("--equalize", action="store_true", help="cross-layer equalisation of the student before QAT")
    ap.add_argument("--teacher", default="models/fashion_mnist_teacher.keras", help="for qat kd")
    ap.add_argument("--data", default="fashion_mnist")
    ap.add_argument("--data-seed", type=int, default=42, help="the pipeline's seed: split and calibration images")
    ap.add_argument("--seed", type=int, default=42, help="training seed")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    from edgeopt import stages, tflite_diet
    from edgeopt.artifacts import gzip_size, load_model
    from edgeopt.config import ConvertConfig, DataConfig, QATConfig, ValidateConfig
    from edgeopt.data import load_dataset
    from edgeopt.profiles import load_profile
    from edgeopt.stages import aeq
    from edgeopt.stages._common import accuracy

    data = load_dataset(DataConfig(name=a.data, seed=a.data_seed))
    student = load_model(a.student)
    qcfg = QATConfig(**json.loads(a.qat))
    teacher = load_model(a.teacher) if qcfg.kd is not None else None
    t0 = time.time()
    eq = None
    if a.equalize:
        from edgeopt.quant.equalize import equalize

        r = equalize(student)
        student, eq = r.model, {k: r.metrics[k] for k in ("pairs", "range_spread_before", "range_spread_after")}
    q = stages.qat(student, data, qcfg, seed=a.seed, teacher=teacher)
    qat_s = time.time() - t0
    conv = stages.convert(q.model, ConvertConfig(**{"quantization": "int8", **json.loads(a.convert)}), data=data,
                          seed=a.data_seed)  # fmt: skip
    v = stages.validate(conv.tflite, data, ValidateConfig(cross_check=False, latency=False, max_samples=None),
                        keras_model=q.model, profiles=[load_profile("cortex-m7-512k")]).to_dict()  # fmt: skip
    slim, rep = tflite_diet.diet(conv.tflite)
    kernels = aeq.weight_stats(conv.tflite)
    row = {
        "label": a.label, "student": a.student, "qat": json.loads(a.qat), "convert": json.loads(a.convert),
        "equalize": eq, "seed": a.seed, "student_accuracy": accuracy(load_model(a.student), data.x_test, data.y_test),
        "qat_accuracy": q.metrics["accuracy"], "accuracy": v["accuracy"], "bytes": len(conv.tflite),
        "gzip_bytes": gzip_size(conv.tflite), "diet_bytes": len(slim), "diet_gzip_bytes": gzip_size(slim),
        "tflm_arena": (v.get("tflm") or {}).get("arena_bytes"), "tflm_agree": (v.get("tflm") or {}).get("agree"),
        "failed_gates": [f"{g['profile']}:{g['gate']}" for g in v["gates"] if g["status"] == "failed"],
        "kernels": {k: {x: s[x] for x in ("dtype", "shape", "max_distinct_per_channel", "per_channel_scales")}
                    for k, s in kernels.items()},
        "low_bit_layers": q.metrics.get("low_bit_layers"), "qat_seconds": round(qat_s, 1),
    }  # fmt: skip
    shown = ("label", "accuracy", "qat_accuracy", "bytes", "diet_bytes", "gzip_bytes", "tflm_arena", "tflm_agree",
             "failed_gates", "qat_seconds")  # fmt: skip
    print(json.dumps({k: row[k] for k in shown}), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row, default=str) + "\n")


if __name__ == "__main__":
    main()
