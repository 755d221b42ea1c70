"""``make search-bench`` (``python -m benchmarks.search_bench``): does the search beat the hand-tuned recipe?

1. Fashion-MNIST: the default pipeline (``pipelines/fashion_mnist.yaml``) runs, then the search of
   ``pipelines/search_fashion_mnist.yaml`` with the default's int8 validation accuracy added as a floor
   (``min_accuracy``) and the least gzip bytes as the rule. The chosen model must dominate the default on
   the test split: accuracy at least as high and gzip bytes at most as large, one strictly better.
2. Digits (a dataset the recipe was not tuned for): the fixed recipe (``pipelines/search_digits.yaml``
   without its search block) against the search with a 1-point floor below the teacher.

Both share one stage cache, so the search's trials reuse the default's distilled student. Writes
``bench/search/results.{md,json}`` and the Pareto plots; the verdicts are stated as measured, pass or not.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks._report import write_results_md
from edgeopt.artifacts import gzip_size
from edgeopt.config import Split, ValidateConfig
from edgeopt.data import load_dataset
from edgeopt.errors import GateFailed
from edgeopt.manifest import RunManifest
from edgeopt.pipeline import run
from edgeopt.pipeline.spec import load_pipeline
from edgeopt.pipeline.validating import validate_artifact
from edgeopt.search.study import search

log = logging.getLogger(__name__)


def _val_accuracy(tflite: bytes, data: Any) -> float:
    """The .tflite's top-1 on the validation split (what the search selects on)."""
    config = ValidateConfig(split=Split.val, latency=False, cross_check=False)
    v, _ = validate_artifact(tflite, data, config, name="fixed")
    return float(v["accuracy"])


def run_fixed(pipeline_file: Path, build: Path, cache: Path) -> dict[str, Any]:
    """The pipeline as written (its search block ignored): test and validation accuracy, bytes, the teacher's."""

    cfg = load_pipeline(pipeline_file)
    out = build / f"fixed_{cfg.name}"
    t = time.time()
    passed = True
    try:
        run(cfg, out, cache_dir=cache)
    except GateFailed as e:  # the fixed recipe may fail a gate: that is a result, not a bench error
        passed = False
        log.warning("fixed recipe %s: %s", cfg.name, e)
    m = RunManifest.model_validate_json((out / "manifest.json").read_text())
    art = m.shipped()[0]
    assert art is not None, "a pipeline makes at least one .tflite"
    tflite = (out / art.path).read_bytes()
    data = load_dataset(cfg.data)
    return {
        "pipeline": str(pipeline_file),
        "seconds": round(time.time() - t, 1),
        "passed_gates": passed,
        "test_accuracy": art.accuracy,
        "val_accuracy": _val_accuracy(tflite, data),
        "gzip_bytes": gzip_size(tflite),
        "flash_bytes": len(tflite),
        "teacher_test_accuracy": m.baseline.accuracy if m.baseline else None,
    }


def run_search(
    pipeline_file: Path, build: Path, cache: Path, out: Path, trials: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """The search of ``pipeline_file`` with ``extra`` keys set in its search block; the chosen trial's figures."""

    raw = yaml.safe_load(pipeline_file.read_text())
    raw["search"] = {**raw.get("search", {}), **extra}
    build.mkdir(parents=True, exist_ok=True)
    path = build / pipeline_file.name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    t = time.time()
    try:
        result = search(path, trials=trials, cache=cache, out=out, build=build)
        summary = result.summary
    except GateFailed as e:
        log.warning("search %s: %s", pipeline_file, e)
        summary = json.loads((out / "trials.json").read_text())
    rows = {r["trial"]: r for r in summary["trials"]}
    chosen = rows.get(summary["chosen"]) if summary["chosen"] is not None else None
    return {
        "pipeline": str(pipeline_file),
        "search": raw["search"],
        "seconds": round(time.time() - t, 1),
        "counts": summary["counts"],
        "chosen": chosen,
        "rows": summary["trials"],
    }


def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """``a`` at least as accurate and at most as large as ``b`` on the test split, one of them strictly."""
    acc_a, acc_b, gz_a, gz_b = a["test_accuracy"], b["test_accuracy"], a["gzip_bytes"], b["gzip_bytes"]
    return acc_a >= acc_b and gz_a <= gz_b and (acc_a > acc_b or gz_a < gz_b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/search"))
    ap.add_argument("--build", type=Path, default=Path("build/search-bench"))
    ap.add_argument("--fashion-trials", type=int, default=10)
    ap.add_argument("--digits-trials", type=int, default=16)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache = args.build / "cache"
    started = time.time()
    results: dict[str, Any] = {}

    # 1. Fashion-MNIST: the default pipeline, then the search with the default's accuracy as a floor.
    default = run_fixed(Path("pipelines/fashion_mnist.yaml"), args.build, cache)
    fashion = run_search(
        Path("pipelines/search_fashion_mnist.yaml"),
        args.build,
        cache,
        args.out / "fashion_mnist",
        args.fashion_trials,
        {"min_accuracy": default["val_accuracy"], "select": "gzip_bytes"},
    )
    c = fashion["chosen"]
    chosen_fig = {"test_accuracy": c["test_accuracy"], "gzip_bytes": c["gzip_bytes"]} if c else None
    results["fashion_mnist"] = {
        "default": default,
        "search": fashion,
        "dominates": bool(chosen_fig and dominates(chosen_fig, default)),
    }

    # 2. Digits: the fixed recipe against the search, both judged by a 1-point floor below the teacher.
    fixed = run_fixed(Path("pipelines/search_digits.yaml"), args.build, cache)
    digits = run_search(
        Path("pipelines/search_digits.yaml"), args.build, cache, args.out / "digits", args.digits_trials, {}
    )
    teacher = fixed["teacher_test_accuracy"]
    c = digits["chosen"]
    results["digits"] = {
        "fixed": fixed,
        "search": digits,
        "fixed_drop_points": (teacher - fixed["test_accuracy"]) * 100,
        "search_drop_points": (teacher - c["test_accuracy"]) * 100 if c else None,
    }
    results["seconds"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    write_results_md(args.out / "results.md", markdown(results))
    for part in ("fashion_mnist", "digits"):
        src = args.out / part / "pareto.png"
        if src.exists():
            shutil.copy(src, args.out / f"pareto_{part}.png")
    print(markdown(results))
    return 0


def markdown(r: dict[str, Any]) -> str:
    """The results as the README shows them: two tables and the verdicts, as measured."""
    f, d = r["fashion_mnist"], r["digits"]
    fc, dc = f["search"]["chosen"], d["search"]["chosen"]

    def row(name: str, acc: float | None, val: float | None, gz: Any, flash: Any) -> str:
        a = f"{acc:.4f}" if acc is not None else "n/a"
        v = f"{val:.4f}" if val is not None else "n/a"
        return (
            f"| {name} | {a} | {v} | {gz:,} | {flash:,} |" if gz is not None else f"| {name} | {a} | {v} | n/a | n/a |"
        )

    lines = [
        "### Fashion-MNIST: search vs the hand-tuned default pipeline",
        "",
        "| model | test accuracy | validation accuracy | gzip bytes | flash bytes |",
        "|---|---|---|---|---|",
        row(
            "default pipeline (int8)",
            f["default"]["test_accuracy"],
            f["default"]["val_accuracy"],
            f["default"]["gzip_bytes"],
            f["default"]["flash_bytes"],
        ),
    ]
    if fc:
        lines.append(
            row(
                f"search, chosen trial {fc['trial']}",
                fc["test_accuracy"],
                fc["accuracy"],
                int(fc["gzip_bytes"]),
                int(fc["flash_bytes"]),
            )
        )
    n = f["search"]["counts"]
    lines += [
        "",
        f"{n['done']} trials done ({n['feasible']} feasible), {n['pruned']} pruned, {n['failed']} failed; "
        f"search {f['search']['seconds'] / 60:.1f} min. Chosen: the least gzip bytes among trials at or above the "
        "default's validation accuracy and within every gate.",
        "",
        f"**The chosen model {'dominates' if f['dominates'] else 'does NOT dominate'} the default** "
        "(test accuracy at least as high and gzip bytes at most as large, one strictly).",
        "",
        "### Digits: the fixed recipe vs the search, 1-point floor below the teacher",
        "",
        "| model | test accuracy | validation accuracy | gzip bytes | flash bytes |",
        "|---|---|---|---|---|",
        row("teacher (float32)", d["fixed"]["teacher_test_accuracy"], None, None, None),
        row(
            "fixed recipe (int8)",
            d["fixed"]["test_accuracy"],
            d["fixed"]["val_accuracy"],
            d["fixed"]["gzip_bytes"],
            d["fixed"]["flash_bytes"],
        ),
    ]
    if dc:
        lines.append(
            row(
                f"search, chosen trial {dc['trial']}",
                dc["test_accuracy"],
                dc["accuracy"],
                int(dc["gzip_bytes"]),
                int(dc["flash_bytes"]),
            )
        )
    fixed_ok = d["fixed_drop_points"] <= 1.0
    search_ok = d["search_drop_points"] is not None and d["search_drop_points"] <= 1.0
    lines += [
        "",
        f"Fixed recipe: {d['fixed_drop_points']:.2f} points below the teacher on the test split "
        f"({'meets' if fixed_ok else 'misses'} the 1-point floor). Search: "
        + (
            f"{d['search_drop_points']:.2f} points ({'meets' if search_ok else 'misses'} it on the test split; "
            "selected on the validation split)."
            if dc
            else "no trial met the floor on the validation split."
        ),
        "",
        f"Total {r['seconds'] / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
