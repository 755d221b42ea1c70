"""Feature distillation (FitNets hint) on the flash-first student: distill as pipelines/flash_first_int4.yaml
does, plus a hint on a teacher layer; save the student for benchmarks.quant.lowbit_qat. One JSON line to --out.

    .venv/bin/python -m benchmarks.quant.hint_distill --hint-layer pool2 --hint-weight 1.0 \
        --save build/quant/ff_hint_pool2.keras --out bench/quant/hint_flash_first.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pipeline", default="pipelines/flash_first_int4.yaml")
    ap.add_argument("--hint-layer", required=True)
    ap.add_argument("--hint-weight", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--save", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    from edgeopt import stages
    from edgeopt.artifacts import load_model, save_model
    from edgeopt.data import load_dataset
    from edgeopt.pipeline.spec import load_pipeline

    cfg = load_pipeline(a.pipeline)
    data = load_dataset(cfg.data)  # the pipeline's split seed
    teacher = load_model(cfg.teacher.path)
    dcfg = next(s for s in cfg.steps if s.stage == "distill")
    from edgeopt.config import DistillConfig

    fields = {k: v for k, v in dcfg.model_dump().items() if k in DistillConfig.model_fields}
    d = DistillConfig(**{**fields, "hint_layer": a.hint_layer, "hint_weight": a.hint_weight})
    t = time.time()
    r = stages.distill(teacher, data, d, seed=a.seed)
    save_model(r.model, Path(a.save))
    row = {"hint": r.metrics["hint"], "accuracy": r.metrics["accuracy"], "seconds": round(time.time() - t, 1),
           "seed": a.seed, "saved": a.save}  # fmt: skip
    print(json.dumps(row), flush=True)
    with Path(a.out).open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
