"""``run(config)``: the teacher, then every registered step in turn, then ``manifest.json``.

The loop knows no stage by name: each step says what its cache key depends on, runs, writes its
outputs into a cache entry and updates the run state (``edgeopt.pipeline.steps``). Outputs come
from a content-addressed cache (``edgeopt.pipeline.cache``) when a stage with the same key ran
before, in this run folder or, with a shared ``cache_dir``, in another run or worker.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import hostinfo
from edgeopt.artifacts import gzip_size, load_model, save_model, sha256_bytes, sha256_file, sha256_tree, write_json
from edgeopt.errors import BadInput, GateFailed, RuntimeCrash
from edgeopt.manifest import RunManifest
from edgeopt.pipeline import registry
from edgeopt.pipeline.cache import StageCache, cache_key
from edgeopt.pipeline.hashing import data_hash, model_hash, versions
from edgeopt.pipeline.steps import Artifact, RunState, Step, artifact_record, latency_summary

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = "edgeopt.manifest/1"
CACHE_DIR = ".cache"
CACHE_FILE = "cache.json"


@dataclass
class StageEvent:
    """Sent to ``on_stage`` after every step (run or reused)."""

    index: int
    stage: str
    folder: Path
    metrics: dict[str, Any]
    reused: bool
    seconds: float
    val_accuracy: float | None  # top-1 on the validation split after a model-making step, else None
    summary: list[tuple[str, Any]]


@dataclass
class RunReport:
    """What a run produced: the manifest (also written to ``out_dir/manifest.json``)."""

    out_dir: Path
    manifest: RunManifest

    @property
    def passed(self) -> bool:
        return self.manifest.passed


def ensure_teacher(config: Any, data: Any) -> tuple[Any, dict[str, Any]]:
    """Load the teacher, training it from the zoo first when the file is missing and the config says how."""
    from edgeopt import stages

    path = config.teacher.path
    if path.exists():
        return load_model(path, unsafe=config.teacher.unsafe), {"trained": False}
    if config.teacher.train is None:
        raise BadInput(f"teacher {path} does not exist and the pipeline has no teacher.train section to make it")
    tc = config.teacher.train
    log.info("teacher %s not found: training zoo model %s for %d epochs", path, tc.zoo, tc.epochs)
    result = stages.train(data, tc, seed=config.seed)
    save_model(result.model, path)
    write_json(path.with_suffix(path.suffix + ".json"), {**result.metrics, "seconds": round(result.seconds, 1)})
    return result.model, {"trained": True, **result.metrics, "seconds": result.seconds}


def plan(config: Any) -> list[Step]:
    """The steps of a run: the baseline conversion of the teacher (when configured), then ``steps:``."""
    steps: list[Step] = [registry.BASELINE(config.baseline, 0)] if config.baseline is not None else []
    return steps + [registry.make_step(s, i) for i, s in enumerate(config.steps, start=1)]


def run(
    config: Any,
    out_dir: str | Path | None = None,
    *,
    force: bool = False,
    cache_dir: str | Path | None = None,
    on_stage: Callable[[StageEvent], None] | None = None,
    strict: bool = False,
) -> RunReport:
    """Run every step of ``config`` (a ``PipelineConfig``); each step's outputs go to
    ``out_dir/<NN>_<stage>/`` (default ``build/<name>``) and the run ends with ``manifest.json``.
    Raises GateFailed (or RuntimeCrash) after writing the manifest when a gate failed (a runtime crashed).

    A step whose cache key (its config, the content hashes of its inputs, the seed, the data and the
    versions) matches an entry of ``cache_dir`` (default ``out_dir/.cache``) is loaded instead of run
    and recorded with ``reused: true``; ``force`` runs every step again. ``on_stage`` is called after
    each step; an exception it raises (e.g. ``optuna.TrialPruned``) ends the run and propagates.
    ``strict``: a gate that could not be evaluated fails the run too (``edgeopt export`` default)."""
    root = Path(out_dir) if out_dir is not None else Path("build") / config.name
    root.mkdir(parents=True, exist_ok=True)
    cache = StageCache(Path(cache_dir) if cache_dir is not None else root / CACHE_DIR)
    manifest_path = root / "manifest.json"
    manifest_path.unlink(missing_ok=True)  # no stale manifest may outlive a failed run
    steps = plan(config)
    expected = {s.folder_name for s in steps}
    for old in root.glob("[0-9][0-9]_*"):
        if old.name not in expected:
            shutil.rmtree(old) if old.is_dir() else old.unlink()

    started = time.time()
    from edgeopt.data import load_dataset

    data = load_dataset(config.data)
    teacher, teacher_info = ensure_teacher(config, data)
    data.check_fits(teacher, what="teacher")
    vers = versions()
    context = {"seed": config.seed, "data": data_hash(data), "versions": vers}
    t_hash = model_hash(teacher)
    state = RunState(config, root, data, teacher, t_hash, model=teacher, model_hash=t_hash)
    correct = _val_correct(teacher, data)  # which validation examples the current model gets right
    records: list[dict[str, Any]] = [
        {
            "name": "teacher",
            "output": str(config.teacher.path),
            "sha256": sha256_file(config.teacher.path),
            "content_sha256": t_hash,
            "seconds": teacher_info.pop("seconds", 0.0),
            "reused": not teacher_info["trained"],
            "metrics": teacher_info,
        }
    ]
    reused_names: list[str] = []
    for step in steps:
        if step.index:
            log.info("step %d/%d: %s", step.index, len(config.steps), step.name)
        folder = root / step.folder_name
        result, info, reused = _execute_or_reuse(step, state, cache, context, folder, force=force)
        guard = _guard(config, step, correct, _unpack(info)) if step.makes_model else None
        if guard is not None and guard["action"] == "failed":
            raise GateFailed(f"stage guard: {step.folder_name} {guard['detail']} (on_regression: fail)")
        if guard is not None and guard["action"] == "kept the input":
            log.warning("stage guard: %s %s; its input goes on (keep_best)", step.folder_name, guard["detail"])
        else:
            step.apply(state, result, folder, info)
            correct = _unpack(info) if step.makes_model else correct
        reused_names += [step.folder_name] if reused else []
        records.append(_record(step, result, info, folder, root, reused, guard))
        if on_stage is not None:
            val = info.get("val_accuracy") if step.makes_model else None
            summary = step.summary(result.metrics)
            on_stage(StageEvent(step.index, step.name, folder, result.metrics, reused, info["seconds"], val, summary))

    manifest = _manifest(config, state, records, reused_names, vers, time.time() - started, strict)
    write_json(manifest_path, manifest)
    report = RunReport(root, RunManifest.model_validate(manifest))
    if state.crashed:
        raise RuntimeCrash("runtime crashed: " + "; ".join(state.crashed))
    if state.failed_gates:
        raise GateFailed(f"{len(state.failed_gates)} gate(s) failed: " + "; ".join(state.failed_gates))
    if strict and state.not_evaluated:
        raise GateFailed(
            f"{len(state.not_evaluated)} gate(s) not evaluated (strict: every gate must run): "
            + "; ".join(state.not_evaluated)
        )
    return report


def _execute_or_reuse(
    step: Step, state: RunState, cache: StageCache, context: dict[str, Any], folder: Path, *, force: bool
) -> tuple[Any, dict[str, Any], bool]:
    """The step's result and its cache entry's info, from the cache when its key has an entry, else by
    running it (and storing the entry); the outputs end up in ``folder`` either way."""
    parts = {"stage": step.name, "config": step.config, "inputs": step.key_inputs(state), **context}
    key = cache_key(parts)
    entry = None if force else cache.get(key)
    if entry is not None:
        _materialize(entry.folder, folder)
        log.info("  reused %s (inputs, config, seed, data and versions unchanged)", step.folder_name)
        return step.load(folder, entry.info), entry.info, True
    result = step.execute(state)
    extra = {"seconds": round(result.seconds, 3), **(_val_info(result.model, state.data) if step.makes_model else {})}
    if not step.cacheable(result):  # e.g. a validation in which a runtime crashed: kept for inspection only
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return result, {**step.persist(result, folder), **extra}, False
    entry = cache.put(key, lambda d: {**step.persist(result, d), **extra}, parts=parts, replace=force)
    _materialize(entry.folder, folder)
    return result, entry.info, False


def _record(
    step: Step,
    result: Any,
    info: dict[str, Any],
    folder: Path,
    root: Path,
    reused: bool,
    guard: dict[str, Any] | None,
) -> dict[str, Any]:
    """The manifest's record of one step. ``seconds`` is how long it took when it ran (earlier if reused)."""
    out = folder / info["output"]
    record = {
        "name": step.name,
        "output": str(out.relative_to(root)),
        "sha256": sha256_tree(out),
        "seconds": round(float(info["seconds"]), 3),
        "reused": reused,
        "metrics": result.metrics,
    }
    if step.makes_model:
        record["val_accuracy"] = info.get("val_accuracy")
    if guard is not None:
        record["guard"] = guard
    return record


def _val_correct(model: Any, data: Any) -> np.ndarray | None:
    """Which validation examples ``model`` classifies right (None without a validation split)."""
    if model is None or not len(data.x_val):
        return None
    from edgeopt.stages._common import predict

    return np.argmax(predict(model, data.x_val), axis=-1) == data.y_val


def _val_info(model: Any, data: Any) -> dict[str, Any]:
    """Top-1 on the validation split (what a search selects on without touching the test split) and the
    per-example outcome, packed, for the stage guard; kept in the cache entry."""
    c = _val_correct(model, data)
    if c is None:
        return {"val_accuracy": None}
    return {"val_accuracy": float(c.mean()), "val_correct": base64.b64encode(np.packbits(c)).decode(), "val_n": len(c)}


def _unpack(info: dict[str, Any]) -> np.ndarray | None:
    if not info.get("val_correct"):
        return None
    bits = np.unpackbits(np.frombuffer(base64.b64decode(info["val_correct"]), np.uint8))
    return bits[: info["val_n"]].astype(bool)


def _guard(config: Any, step: Step, before: np.ndarray | None, after: np.ndarray | None) -> dict[str, Any] | None:
    """The stage guard's verdict on a training step: did it lower validation top-1 by more than the
    tolerance, and by more than chance? The two models are scored on the same examples, so the test is
    McNemar's: of the examples only one of them gets right, the input must win by more than two
    standard deviations (b - c > 2 sqrt(b + c)). A validation split of 150 images moves 0.7 points per
    image: without this, one-epoch fine-tuning would be judged on noise."""
    if before is None or after is None or len(before) != len(after):
        return None
    policy = getattr(step.config, "on_regression", None)
    if policy is None:
        policy = config.on_regression.value if step.fine_tunes else "continue"
    policy = getattr(policy, "value", policy)
    tol = getattr(step.config, "regression_tolerance", None)
    tol = config.regression_tolerance if tol is None else tol
    b, c = int(np.sum(before & ~after)), int(np.sum(~before & after))
    drop = (float(before.mean()) - float(after.mean())) * 100
    significant = b - c > 2 * math.sqrt(b + c) if b + c else False
    regressed = drop > tol and significant
    detail = (
        f"validation top-1 {before.mean():.2%} -> {after.mean():.2%} ({-drop:+.2f} points, tolerance {tol:.2f}; "
        f"{b} examples lost, {c} gained)"
    )
    action = "none"
    if regressed:
        action = {"keep_best": "kept the input", "fail": "failed", "continue": "continued"}[policy]
    return {
        "policy": policy,
        "tolerance_points": tol,
        "val_accuracy_before": float(before.mean()),
        "val_accuracy_after": float(after.mean()),
        "drop_points": drop,
        "examples_lost": b,
        "examples_gained": c,
        "regressed": regressed,
        "action": action,
        "detail": detail,
    }


def _materialize(entry: Path, folder: Path) -> None:
    """Copy a cache entry into the run's stage folder (swapped in whole, so never half written)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        shutil.copytree(entry, tmp, dirs_exist_ok=True)
        os.replace(tmp / "entry.json", tmp / CACHE_FILE)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _manifest(
    config: Any,
    state: RunState,
    records: list[dict[str, Any]],
    reused: list[str],
    vers: dict[str, str],
    seconds: float,
    strict: bool,
) -> dict[str, Any]:
    root = state.root
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "pipeline": config.name,
        "seed": config.seed,
        "versions": vers,
        "data": {**state.data.summary(), "class_names": list(state.data.class_names)},
        "config": config.model_dump(mode="json"),
        "baseline": None,
        "stages": records,
        "artifacts": [artifact_record(a, root) for a in state.artifacts],
        "seconds": seconds,
        "reused": reused,
        "passed": not state.failed_gates and not state.crashed and not (strict and state.not_evaluated),
        "strict": strict,
        "failed_gates": state.failed_gates,
        "not_evaluated": state.not_evaluated,
        "crashed": state.crashed,
        "host": hostinfo.host(),
    }
    base: Artifact | None = state.baseline
    if base is not None:
        b = {
            "path": str(base.path.relative_to(root)),
            "quantization": base.quantization,
            "bytes": len(base.tflite),
            "gzip_bytes": gzip_size(base.tflite),
            "sha256": sha256_bytes(base.tflite),
            "accuracy": base.validation["accuracy"] if base.validation else None,
            "latency": latency_summary(base.validation),
        }
        manifest["baseline"] = b
        for rec in manifest["artifacts"]:
            rec["gzip_ratio_vs_baseline"] = b["gzip_bytes"] / rec["gzip_bytes"]
            base_lat, lat = b["latency"].get("1"), rec["latency"].get("1")
            if base_lat and lat:
                rec["speedup_vs_baseline_p50_1thread"] = base_lat["p50_ms"] / lat["p50_ms"]
            if rec["accuracy"] is not None and b["accuracy"] is not None:
                rec["accuracy_drop_vs_baseline"] = b["accuracy"] - rec["accuracy"]
    return manifest
