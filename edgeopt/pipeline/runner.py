"""``run(config)``: the teacher, then every registered step in turn, then ``manifest.json``.

The loop knows no stage by name: each step says what its cache key depends on, runs, writes its
outputs into a cache entry and updates the run state (``edgeopt.pipeline.steps``). Outputs come
from a content-addressed cache (``edgeopt.pipeline.cache``) when a stage with the same key ran
before, in this run folder or, with a shared ``cache_dir``, in another run or worker. The stage guard
(``guard``) judges each training step; the manifest's records are built by ``record``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import interrupt
from edgeopt.artifacts import load_model, save_model, write_json
from edgeopt.data import load_dataset
from edgeopt.errors import BadInput, GateFailed, RuntimeCrash
from edgeopt.manifest import GuardVerdict, RunManifest
from edgeopt.pipeline import guard, registry
from edgeopt.pipeline.cache import StageCache, cache_key
from edgeopt.pipeline.hashing import data_hash, model_hash, versions
from edgeopt.pipeline.record import run_manifest, stage_record, teacher_record
from edgeopt.pipeline.steps import RunState, Step

log = logging.getLogger(__name__)

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
    guard: GuardVerdict | None = None  # the stage guard's verdict (its action says whether the input went on)


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
    from edgeopt import stages  # lazy: imports TensorFlow

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
    steps = plan(config)
    _prepare(root, steps)
    started = time.time()
    data = load_dataset(config.data)
    teacher, teacher_info = ensure_teacher(config, data)
    data.check_fits(teacher, what="teacher")
    vers, t_hash = versions(), model_hash(teacher)
    cache = StageCache(Path(cache_dir) if cache_dir is not None else root / CACHE_DIR)
    context = {"seed": config.seed, "data": data_hash(data), "versions": vers}
    state = RunState(
        config,
        root,
        data,
        teacher,
        t_hash,
        model=teacher,
        model_hash=t_hash,
        keras_model=teacher,
        keras_model_hash=t_hash,
        cache=cache,
        context=context,
    )
    correct = _val_correct(teacher, data)  # which validation examples the current model gets right
    if correct is not None and (why := at_chance(correct, data.y_val)):
        log.warning("teacher: %s", why)
    if any(_guarded(config, s) for s in steps) and (
        why := guard.split_warning(len(data.x_val), config.regression_tolerance)
    ):
        log.warning("stage guard: %s", why)
    records, reused = [teacher_record(config, t_hash, teacher_info)], []
    for step in steps:
        interrupt.check()
        if step.index:
            log.info("step %d/%d: %s", step.index, len(config.steps), step.name)
        folder = root / step.folder_name
        result, info, was_reused = _execute_or_reuse(step, state, folder, force=force)
        verdict = _judge(config, step, correct, guard.unpack(info)) if step.makes_model else None
        if verdict is None or verdict.action != "kept the input":
            step.apply(state, result, folder, info)
            correct = guard.unpack(info) if step.makes_model else correct
        reused += [step.folder_name] if was_reused else []
        records.append(stage_record(step, result, info, folder, root, was_reused, verdict))
        if on_stage is not None:
            val = info.get("val_accuracy") if step.makes_model else None
            summary = step.summary(result.metrics)
            on_stage(
                StageEvent(
                    step.index, step.name, folder, result.metrics, was_reused, info["seconds"], val, summary, verdict
                )
            )
    manifest = run_manifest(state, records, reused, vers, time.time() - started, strict)
    write_json(root / "manifest.json", manifest.to_json())
    _raise_for_status(state, strict)
    return RunReport(root, manifest)


def _prepare(root: Path, steps: list[Step]) -> None:
    """The run folder without a stale manifest (none may outlive a failed run) or stage folders of
    steps this run does not have."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").unlink(missing_ok=True)
    expected = {s.folder_name for s in steps}
    for old in root.glob("[0-9][0-9]_*"):
        if old.name not in expected:
            shutil.rmtree(old) if old.is_dir() else old.unlink()


def _raise_for_status(state: RunState, strict: bool) -> None:
    if state.crashed:
        raise RuntimeCrash("runtime crashed: " + "; ".join(state.crashed))
    if state.failed_gates:
        raise GateFailed(f"{len(state.failed_gates)} gate(s) failed: " + "; ".join(state.failed_gates))
    if strict and state.not_evaluated:
        raise GateFailed(
            f"{len(state.not_evaluated)} gate(s) not evaluated (strict: every gate must run): "
            + "; ".join(state.not_evaluated)
        )


def _policy(config: Any, step: Step) -> str:
    """The step's own on_regression, else the pipeline's for steps that fine-tune; a new student (distill)
    is not guarded unless its step asks (the release gates judge it against the teacher)."""
    policy = getattr(step.config, "on_regression", None)
    if policy is None:
        policy = config.on_regression.value if step.fine_tunes else "continue"
    return str(getattr(policy, "value", policy))


def _guarded(config: Any, step: Step) -> bool:
    return step.makes_model and _policy(config, step) != "continue"


def _judge(config: Any, step: Step, before: np.ndarray | None, after: np.ndarray | None) -> GuardVerdict | None:
    """The stage guard on a model-making step, with its policy and tolerance: the step's own, else the
    pipeline's for steps that fine-tune (a new student is judged by the release gates instead)."""
    tol = getattr(step.config, "regression_tolerance", None)
    verdict = guard.judge(_policy(config, step), config.regression_tolerance if tol is None else tol, before, after)
    if verdict is not None and verdict.action == "failed":
        raise GateFailed(f"stage guard: {step.folder_name} {verdict.detail} (on_regression: fail)")
    if verdict is not None and verdict.action == "kept the input":
        log.warning("stage guard: %s %s; its input goes on (keep_best)", step.folder_name, verdict.detail)
    return verdict


def _execute_or_reuse(step: Step, state: RunState, folder: Path, *, force: bool) -> tuple[Any, dict[str, Any], bool]:
    """The step's result and its cache entry's info, from the cache when its key has an entry, else by
    running it (and storing the entry); the outputs end up in ``folder`` either way."""
    parts = {"stage": step.name, "config": step.config, "inputs": step.key_inputs(state), **state.context}
    key = cache_key(parts)
    entry = None if force else state.cache.get(key)
    if entry is not None:
        _materialize(entry.folder, folder)
        log.info("  reused %s (inputs, config, seed, data and versions unchanged)", step.folder_name)
        return step.load(folder, entry.info), entry.info, True
    result = step.execute(state)
    correct = _val_correct(result.model, state.data) if step.makes_model else None
    extra = {"seconds": round(result.seconds, 3), **(guard.pack(correct) if step.makes_model else {})}
    if not step.cacheable(result):  # e.g. a validation in which a runtime crashed: kept for inspection only
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return result, {**step.persist(result, folder), **extra}, False
    entry = state.cache.put(key, lambda d: {**step.persist(result, d), **extra}, parts=parts, replace=force)
    _materialize(entry.folder, folder)
    return result, entry.info, False


def _val_correct(model: Any, data: Any) -> np.ndarray | None:
    """Which validation examples ``model`` classifies right (None without a validation split)."""
    if model is None or not len(data.x_val):
        return None
    from edgeopt.stages._common import predict  # lazy: imports TensorFlow

    return np.argmax(predict(model, data.x_val), axis=-1) == data.y_val


def at_chance(correct: np.ndarray, labels: np.ndarray) -> str | None:
    """Why a model whose validation results are ``correct`` has learned nothing, or None: its accuracy is
    not above always answering the commonest class by more than two standard errors."""
    n = len(correct)
    base = np.bincount(labels).max() / n if n else 0.0
    acc = float(np.mean(correct)) if n else 0.0
    if n == 0 or acc > base + 2 * np.sqrt(max(base * (1 - base), 1e-12) / n):
        return None
    return (
        f"{acc:.2%} on {n} validation examples, no better than always answering the commonest class "
        f"({base:.2%}): it has not learned this data (check the input scaling and the labels); every stage "
        "after it starts from nothing"
    )


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
