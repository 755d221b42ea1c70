"""`make bench`: the default pipeline side by side with the usual baselines, on one teacher and one test set.

Rows: the float32 teacher .tflite (baseline); int8 post-training quantization of the teacher; the
tfmot pruning-tutorial recipe (polynomial decay to 80% sparsity, strip, int8); the edgeopt pipeline's
int8 artifact. Every figure is measured in this run: sizes of the .tflite bytes (gzip -9), top-1 on the
full test split through LiteRT, LiteRT p50 latency at 1 thread on this host.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeopt import stages
from edgeopt.artifacts import write_bytes, write_json
from edgeopt.config import ConvertConfig, PruneConfig, ValidateConfig, load_pipeline
from edgeopt.data import load_dataset
from edgeopt.errors import GateFailed

log = logging.getLogger(__name__)

# The targets of the compression issue (Deep Compression's 39-40x, kept honest by a real interpreter).
TARGETS = {"gzip_ratio_min": 40.0, "accuracy_drop_max_points": 1.0, "speedup_min": 3.0}


def _measure(name: str, content: bytes, data: Any, seconds: float, how: str) -> dict[str, Any]:
    v = stages.validate(content, data, ValidateConfig(cross_check=False), name=name).metrics
    s, lat = v["structure"], v["latency"]["1"]
    return {
        "name": name,
        "how": how,
        "bytes": s["bytes"],
        "gzip_bytes": s["gzip_bytes"],
        "accuracy": v["accuracy"],
        "p50_ms": lat["p50_ms"],
        "p90_ms": lat["p90_ms"],
        "runs": lat["runs"],
        "seconds": round(seconds, 1),
    }


def run_bench(
    pipeline: str | Path = "pipelines/fashion_mnist.yaml",
    out: str | Path = "bench",
    *,
    on_stage: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Measure every row and write ``out/results.md`` and ``results.json``; ``on_stage`` goes to the
    pipeline run (``edgeopt.pipeline.run``), e.g. for the CLI's per-stage tables."""
    from edgeopt.pipeline import ensure_teacher
    from edgeopt.pipeline import run as run_pipeline

    started = time.time()
    out = Path(out)
    cfg = load_pipeline(pipeline)
    data = load_dataset(cfg.data)
    teacher, _ = ensure_teacher(cfg, data)
    rows = []

    t = time.time()
    f32 = stages.convert(teacher, ConvertConfig(quantization="float32"), seed=cfg.seed).tflite
    rows.append(_measure("float32 teacher (baseline)", f32, data, time.time() - t, "TFLiteConverter, no optimization"))

    t = time.time()
    ptq = stages.convert(teacher, ConvertConfig(quantization="int8"), data=data, seed=cfg.seed).tflite
    rows.append(
        _measure("int8 PTQ of the teacher", ptq, data, time.time() - t, "full-integer int8, 200 calibration images")
    )

    t = time.time()
    # tfmot's pruning tutorial: PolynomialDecay 50% -> 80% over 2 epochs, batch 128, then strip and int8
    pr = stages.prune(
        teacher,
        data,
        PruneConfig(initial_sparsity=0.5, final_sparsity=0.8, epochs=2, end_step=None, learning_rate=1e-3),
        seed=cfg.seed,
    )
    tut = stages.convert(pr.model, ConvertConfig(quantization="int8"), data=data, seed=cfg.seed).tflite
    rows.append(
        _measure(
            "tfmot tutorial: prune 80% + int8",
            tut,
            data,
            time.time() - t,
            "PolynomialDecay 0.5->0.8, 2 epochs, strip_pruning, int8 PTQ",
        )
    )

    t = time.time()
    root = Path("build") / cfg.name  # the pipeline's own folder: `make export` reuses these stages
    try:
        run_pipeline(cfg, root, on_stage=on_stage)
    except GateFailed as e:  # the table is still worth having; the gates are in the manifest
        log.warning("the pipeline's validation gates failed: %s", e)
    manifest = json.loads((root / "manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["quantization"] == "int8")
    content = (root / art["path"]).read_bytes()
    steps = " -> ".join(s.stage for s in cfg.steps if s.stage != "validate")
    rows.append(_measure(f"edgeopt {cfg.name} pipeline", content, data, time.time() - t, steps))

    base = rows[0]
    for r in rows:
        r["gzip_ratio"] = base["gzip_bytes"] / r["gzip_bytes"]
        r["accuracy_drop_points"] = (base["accuracy"] - r["accuracy"]) * 100
        r["speedup"] = base["p50_ms"] / r["p50_ms"]
    ours = rows[-1]
    ours["validation_passed"] = manifest["passed"]
    verdict = {
        "gzip_ratio": {
            "measured": ours["gzip_ratio"],
            "target": TARGETS["gzip_ratio_min"],
            "met": ours["gzip_ratio"] >= TARGETS["gzip_ratio_min"],
        },
        "accuracy_drop_points": {
            "measured": ours["accuracy_drop_points"],
            "target": TARGETS["accuracy_drop_max_points"],
            "met": ours["accuracy_drop_points"] <= TARGETS["accuracy_drop_max_points"],
        },
        "speedup": {
            "measured": ours["speedup"],
            "target": TARGETS["speedup_min"],
            "met": ours["speedup"] >= TARGETS["speedup_min"],
        },
    }
    result = {
        "schema": "edgeopt.bench/1",
        "pipeline": str(pipeline),
        "test_examples": len(data.x_test),
        "rows": rows,
        "targets": verdict,
        "all_targets_met": all(v["met"] for v in verdict.values()),
        "wall_seconds": round(time.time() - started, 1),
        "method": "sizes: .tflite bytes and gzip -9; accuracy: top-1 on the full test split in ai_edge_litert; "
        "latency: ai_edge_litert p50, 1 thread, batch 1, this host (child process)",
    }
    write_json(out / "results.json", result)
    write_bytes(out / "results.md", markdown(result).encode())
    return result


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "| model | bytes | gzip bytes | smaller (gzip) | top-1 | drop (points) | p50 ms (1 thread) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['name']} | {x['bytes']:,} | {x['gzip_bytes']:,} | {x['gzip_ratio']:.1f}x | "
            f"{x['accuracy'] * 100:.2f}% | {x['accuracy_drop_points']:+.2f} | {x['p50_ms']:.4f} | "
            f"{x['speedup']:.1f}x |"
        )
    v = r["targets"]
    lines += [
        "",
        "Targets for the edgeopt pipeline: "
        + "; ".join(
            f"{k} {d['measured']:.2f} vs {d['target']} ({'met' if d['met'] else 'NOT met'})" for k, d in v.items()
        ),
        "",
        f"{r['test_examples']:,} test examples; {r['method']}. Wall time of the run: "
        f"{r['wall_seconds'] / 60:.1f} minutes.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run_bench(), indent=2))
