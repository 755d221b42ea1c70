"""``search(pipeline_file, ...)``: check the input, make the teacher and the study once, run the trials in
``workers`` local processes (or in this one), then write the outputs.

Every machine of a shared study runs this same function with the same ``storage``: the study is created
by whoever comes first (creating it twice is harmless), each adds ``trials`` trials.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import calibrate, interrupt
from edgeopt.config import Split, ValidateConfig
from edgeopt.data import load_dataset
from edgeopt.errors import BadInput, EdgeoptError, GateFailed, RuntimeCrash
from edgeopt.pipeline.cache import StageCache
from edgeopt.pipeline.guard import detectable_drop, examples_needed
from edgeopt.pipeline.runner import ensure_teacher
from edgeopt.pipeline.spec import PipelineConfig, load_pipeline
from edgeopt.pipeline.validating import validate_artifact
from edgeopt.search import report, selection
from edgeopt.search import storage as st
from edgeopt.search.config import Objective, SearchConfig
from edgeopt.search.objectives import accuracy_floor, resolve_profiles, with_constraints
from edgeopt.search.report import status_line
from edgeopt.search.space import as_shipped, reference_values, resolve_space, trial_pipeline
from edgeopt.search.storage import safe
from edgeopt.search.worker import WorkerJob, budget_key, make_sampler, run_quietly, run_worker, tflite_validation
from edgeopt.validation import unpack_outcomes

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 30.0


@dataclass
class SearchResult:
    """Where the outputs went and what the study holds."""

    out_dir: Path
    storage: str
    study: str
    summary: dict[str, Any]

    @property
    def best(self) -> Path | None:
        p = self.out_dir / "best.yaml"
        return p if p.exists() else None


@dataclass(frozen=True)
class Prepared:
    """The checked input of a search: everything workers need, nothing TensorFlow has made yet."""

    pipeline: Any
    search: Any
    params: list[Any]
    storage_url: str
    study_name: str
    root: Path  # build/search/<name>: study file, trial folders, default cache
    cache_dir: Path
    out_dir: Path  # search/<name>: the results


def prepare(
    pipeline_file: str | Path,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    cache: str | Path | None = None,
    out: str | Path | None = None,
    build: str | Path = "build",
) -> Prepared:
    """Everything that can be checked before any training: the file, the space, the objectives against
    the profiles, the storage URL and the server. BadInput (exit 2, one line) for each mistake."""

    pipeline = load_pipeline(pipeline_file)
    search = with_constraints(pipeline, pipeline.search or SearchConfig())
    params = resolve_space(pipeline, search, n_train=len(load_dataset(pipeline.data).x_train))
    resolve_profiles(pipeline, search)
    root = Path(build) / "search" / pipeline.name
    url = st.normalize_url(storage) if storage else st.default_url(root)
    st.check_reachable(url)
    return Prepared(
        pipeline,
        search,
        params,
        url,
        study_name or pipeline.name,
        root,
        Path(cache) if cache is not None else root / "cache",
        Path(out) if out is not None else Path("search") / pipeline.name,
    )


def create_study(prep: Prepared) -> Any:
    """Create the study (or load it when it exists with the same objectives and parameters). Done once
    before workers start: two workers creating Optuna's tables at once on a fresh database collide."""

    s = prep.search
    storage = st.open_storage(
        prep.storage_url, heartbeat_interval=s.heartbeat_interval, grace_period=s.grace, max_retry=s.max_retry
    )
    study = st.create_or_load(
        storage, prep.study_name, s.parsed_objectives, [p.name for p in prep.params], make_sampler(prep.pipeline.seed)
    )
    if study.user_attrs.get("select") != s.select:
        study.set_user_attr("select", s.select)
    st.ensure_reference(study, reference_values(prep.pipeline, prep.params))
    return study


def teacher_accuracy(prep: Prepared) -> float:
    """Make the teacher when missing (once, here, not in every worker) and measure it on the validation split."""
    from edgeopt.stages._common import accuracy  # lazy: imports TensorFlow

    data = load_dataset(prep.pipeline.data)
    teacher, _ = ensure_teacher(prep.pipeline, data)
    data.check_fits(teacher, what="teacher")
    if not len(data.x_val):
        raise BadInput(f"data {data.name}: no validation split (val_fraction is 0); the search selects on it")
    return accuracy(teacher, data.x_val, data.y_val)


def threads_per_worker(workers: int) -> int:
    """Cores this process may use, shared out so that N TensorFlows do not oversubscribe them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def search(
    pipeline_file: str | Path,
    *,
    trials: int | None = None,
    minutes: float | None = None,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    cache: str | Path | None = None,
    out: str | Path | None = None,
    build: str | Path = "build",
    report: bool = True,
) -> SearchResult:
    """Run ``trials`` trials (default: the ``search:`` block's) of the pipeline's study in ``workers``
    processes, starting none once ``minutes`` (default: the block's ``minutes``; 0 or null: no limit) have passed,
    then write the outputs. Raises GateFailed when no trial of the study is feasible."""
    if workers < 1:
        raise BadInput(f"--workers {workers}: must be at least 1")
    time_budget(minutes, None)  # refused before anything is read
    prep = prepare(pipeline_file, storage=storage, study_name=study_name, cache=cache, out=out, build=build)
    n = prep.search.trials if trials is None else trials
    if n < 0:
        raise BadInput(f"--trials {n}: must be 0 or more")
    budget = time_budget(minutes, prep.search.minutes)
    study = create_study(prep)
    t_acc = teacher_accuracy(prep)
    # A phone profile's latency gate needs the host's calibration: measured here once, not in every worker.
    calibrate.ensure(resolve_profiles(prep.pipeline, prep.search))
    log.info(
        "study %s in %s: %s trial(s)%s in %d worker(s); teacher validation accuracy %.4f",
        prep.study_name,
        safe(prep.storage_url),
        n,
        f" within {budget:g} minutes" if budget is not None else "",
        workers,
        t_acc,
    )
    started = time.time()

    job = WorkerJob(
        pipeline_path=str(Path(pipeline_file).resolve()),
        storage_url=prep.storage_url,
        study_name=prep.study_name,
        trials=n,
        root=str(prep.root.resolve()),
        cache_dir=str(prep.cache_dir.resolve()),
        teacher_accuracy=t_acc,
        threads=threads_per_worker(workers) if workers > 1 else 0,
        seed=_seed(prep.pipeline.seed),
        deadline=started + budget * 60 if budget is not None else None,
    )
    spent = None
    if n > 0:
        pids = run_workers(job, workers, study)
        spent = budget_spent(study, n, budget, started, pids)
        if spent["stopped_by_time"]:
            log.warning(
                "search: the %g-minute budget was spent after %d of %d trial(s)", budget, spent["ran"], spent["trials"]
            )
    summary: dict[str, Any] = {}
    if report:
        summary = write_report(prep, study, pipeline_file, t_acc, budget=spent)
    result = SearchResult(prep.out_dir, prep.storage_url, prep.study_name, summary)
    if report and result.best is None:
        why = summary.get("why", "no trial met every constraint")
        raise GateFailed(f"study {prep.study_name}: {why}; see {prep.out_dir / 'trials.csv'}")
    return result


def time_budget(minutes: float | None, configured: float | None) -> float | None:
    """The minutes a search's trials may take: ``--minutes`` when given (0: no limit, whatever the file says),
    else the ``search:`` block's; None: no limit."""
    if minutes is None:
        return configured
    if not minutes >= 0:  # not `minutes < 0`: nan is refused too
        raise BadInput(f"--minutes {minutes:g}: must be 0 (no limit) or more")
    return minutes or None


def budget_spent(study: Any, trials: int, minutes: float | None, started: float, pids: set[int]) -> dict[str, Any]:
    """What this command's trials spent (for trials.json): trials asked for and run by its worker processes
    (``pids`` on this host, from ``started``: another command's trials in a shared study are not its; a
    skipped repeat is not a run), the time budget and the minutes the trials took, and whether the budget
    stopped them short (a worker that stopped for it says so in the study, ``worker.budget_key``; one that ran
    out of untried values did not)."""
    host = socket.gethostname()
    since = datetime.fromtimestamp(started)  # Optuna's start times are naive local times
    ran = sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.datetime_start
        and t.datetime_start >= since
        and t.user_attrs.get("pid") in pids
        and t.user_attrs.get("host") == host
        and not report.is_repeat(t)
    )
    stopped = study.user_attrs
    by_time = any(stopped.get(budget_key(host, pid), 0) >= started for pid in pids)
    took = (time.time() - started) / 60
    return {
        "trials": trials,
        "ran": ran,
        "minutes": minutes,
        "minutes_taken": round(took, 2),
        "stopped_by_time": by_time,
    }


def _seed(base: int) -> int:
    """A sampler seed per process: reproducible for one worker, different across workers and machines."""
    import zlib

    return (base * 1_000_003 + zlib.crc32(socket.gethostname().encode()) + os.getpid()) % (2**31)


def run_workers(job: Any, workers: int, study: Any) -> set[int]:
    """This process alone for one worker; else ``workers`` spawned processes sharing ``job.trials`` out.
    Returns the workers' process ids (their trials carry them)."""

    if workers == 1:
        run_worker(job)
        return {os.getpid()}
    ctx = mp.get_context("spawn")  # a fresh interpreter each: one TensorFlow per process, no forked threads
    shares = [job.trials // workers + (1 if i < job.trials % workers else 0) for i in range(workers)]
    procs = []
    for i, share in enumerate(shares):
        if share == 0:
            continue
        p = ctx.Process(
            target=_child, args=(replace(job, worker=i, trials=share, seed=job.seed + i),), name=f"search-worker-{i}"
        )
        p.start()
        procs.append(p)
    last = time.monotonic()
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=1.0)
            if time.monotonic() - last > PROGRESS_EVERY_S:
                log.info("search: %s", status_line(study))
                last = time.monotonic()
    except KeyboardInterrupt:
        for p in procs:  # they got the Ctrl-C too: give them time to record and requeue their trial
            p.join(timeout=30)
        raise
    failed = [p for p in procs if p.exitcode not in (0, None)]
    if failed:
        codes = ", ".join(f"{p.name} exit {p.exitcode}" for p in failed)

        err: type[Exception] = RuntimeCrash
        if all(p.exitcode == 2 for p in failed):
            err = BadInput
        raise err(f"search worker(s) ended with an error ({codes}); completed trials are in the study")
    return {p.pid for p in procs if p.pid is not None}


def _child(job: Any) -> None:
    """A spawned worker's main: logging like the parent's, errors as one line and an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    try:
        with interrupt.catching():
            run_worker(job)
    except EdgeoptError as e:
        print(f"error: worker {job.worker}: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def write_report(
    prep: Prepared, study: Any, pipeline_file: str | Path, teacher_accuracy: float, budget: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Choose ``best.yaml``'s trial (``selection.choose``: re-measuring the best candidates on k other folds when
    the validation split is too small for the difference that matters), measure the test split once for the
    Pareto front, the pipeline as written and the chosen trial, and write the outputs. The chosen trial need
    not be on the front: the rule's metric (``select``) may be none of the objectives."""

    study = _reload(prep, study)
    trials = study.get_trials(deepcopy=False)
    ref = report.reference(trials, reference_values(prep.pipeline, prep.params))
    choice, plan = select(prep, study, trials, ref, teacher_accuracy)
    chosen = next((t for t in trials if t.number == choice.chosen), None)
    measured = {t.number: t for t in report.pareto(study)}
    for t in (chosen, ref):
        if t is not None and t.state.name == "COMPLETE":
            measured.setdefault(t.number, t)
    test = test_results(prep, [measured[n] for n in sorted(measured)])
    command = f"edgeopt search {shlex.quote(str(pipeline_file))}"
    summary = report.write_outputs(
        study,
        prep.out_dir,
        search=prep.search,
        params=[p.name for p in prep.params],
        test=test,
        source=str(pipeline_file),
        command=command,
        reference=ref,
        choice=choice,
        plan=plan,
        budget=budget,
    )
    log.info("search: %s; %s; outputs in %s", report.status_line(study, prep.search.select), choice.why, prep.out_dir)
    return summary


def select(prep: Prepared, study: Any, trials: list[Any], ref: Any, teacher_accuracy: float) -> tuple[Any, dict]:
    """The selection (``selection.choose``) and how it measured: on the validation split alone when it can
    tell ``min_difference`` from chance, else on k other folds of the training data (the plan, for the report)."""
    data = load_dataset(prep.pipeline.data)
    s = prep.search
    n_val = len(data.x_val)
    folds = selection.folds_needed(n_val, data.val_folds, s.min_difference, s.max_folds)
    plan: dict[str, Any] = {
        "validation_examples": n_val,
        "min_difference_points": s.min_difference,
        "examples_needed": examples_needed(s.min_difference),
        "folds": folds,
        "examples": n_val * folds,
        "detectable_points": detectable_drop(n_val * folds),
    }
    plan["method"] = (
        f"the validation split ({n_val:,} examples) tells {s.min_difference:g} point(s) from chance"
        if n_val >= plan["examples_needed"]
        else f"{folds} validation folds of the training data other than the split that ranked the trials "
        f"({n_val * folds:,} examples; {plan['examples_needed']:,} would tell {s.min_difference:g} point(s) "
        "from chance)"
        if folds
        else f"the validation split only ({n_val:,} examples; too small to tell {s.min_difference:g} point(s) from "
        "chance, and no more folds allowed)"
    )
    maximize = Objective.parse(s.select).maximize
    candidates = [c for t in trials if (c := report.candidate(t, s.select)) is not None]
    reference = report.candidate(ref, s.select) if ref is not None else None
    remeasure = Remeasure(prep, study, folds, trials) if folds else None
    if remeasure is not None:
        plan["teachers"] = remeasure.teachers
    choice = selection.choose(
        reference,
        [c for c in candidates if reference is None or c.number != reference.number],
        maximize=maximize,
        floor=accuracy_floor(s, teacher_accuracy),
        remeasured_floor=remeasure.floor if remeasure is not None else None,
        recheck=s.recheck,
        remeasure=remeasure,
        tolerance=selection_tolerance(prep.pipeline, s),
    )
    if remeasure is not None and remeasure.teacher_pooled is not None:
        plan["teacher_remeasured"] = remeasure.teacher_pooled
    return choice, plan


def selection_tolerance(pipeline: Any, search: Any) -> float:
    """The points a smaller trial may lose beyond chance and still be chosen: ``search.tolerance``, else the
    pipeline's stage-guard tolerance (``regression_tolerance``)."""
    return float(search.tolerance if search.tolerance is not None else pipeline.regression_tolerance)


class Remeasure:
    """A candidate's per-example outcomes on validation folds 1 ... ``folds``, not fold 0: the validation
    split ranked the trials, so a candidate is there partly because it was lucky on those examples (the
    chosen digits trials scored 1 to 2 points less on the other folds than on it). Each fold is the trial's
    pipeline run again with that fold held out (``data.val_fold``; every stage trains again, on the other
    folds, so no example is scored by a model that trained on it), as the trial shipped it (``as_shipped``:
    the stages its guard undid left out, no guard). When the pipeline can make its teacher
    (``teacher.train``), each fold's run distills from a teacher trained again without that fold: the file's
    teacher trained on those folds, and its students score higher there than on images nobody trained on.
    Kept in the study (``fold:TRIAL:FOLD:shipped:TEACHER``), so a rerun or another machine
    does not run them again; the fold teachers are kept in ``build/search/<name>/teachers/``."""

    def __init__(self, prep: Prepared, study: Any, folds: int, trials: list[Any]) -> None:
        self.prep, self.study, self.folds = prep, study, folds
        self.trials = {t.number: t for t in trials}
        self.own_teachers = prep.pipeline.teacher.train is not None
        self.tag = teacher_tag(prep.pipeline) if self.own_teachers else "shared"
        self.teacher_pooled: float | None = None  # the teachers' accuracy over the folds, once measured
        self.teachers = (
            f"folds 1 to {folds}: a teacher trained again without the fold (teacher.train)"
            if self.own_teachers
            else f"the pipeline's teacher on every fold (no teacher.train to make one without a fold: it trained "
            f"on folds 1 to {folds}, which flatters its students there)"
        )

    def teacher_path(self, fold: int) -> Path:
        suffix = self.prep.pipeline.teacher.path.suffix or ".keras"
        return (self.prep.root / "teachers" / f"fold{fold}-{self.tag}{suffix}").resolve()

    def _fold_config(self, cfg: PipelineConfig, fold: int) -> PipelineConfig:
        raw = cfg.model_dump(mode="json", exclude_unset=True)
        raw["data"] = {**raw["data"], "val_fold": fold}
        if self.own_teachers:
            raw["teacher"] = {**raw["teacher"], "path": str(self.teacher_path(fold))}
        return PipelineConfig.model_validate(raw)

    def teacher_on(self, fold: int) -> dict[str, Any]:
        """The fold's teacher (trained first when missing) on the fold: accuracy and examples."""
        key = f"teacher:{fold}:{self.tag}"
        rec = self.study.user_attrs.get(key)
        if rec is None:
            from edgeopt.stages._common import accuracy  # lazy: imports TensorFlow

            cfg = self._fold_config(self.prep.pipeline, fold)
            data = load_dataset(cfg.data)
            if self.own_teachers and not cfg.teacher.path.exists():
                log.info("search: training a teacher without validation fold %d of %d", fold, self.folds)
            teacher, _ = ensure_teacher(cfg, data)
            rec = {"accuracy": accuracy(teacher, data.x_val, data.y_val), "n": len(data.x_val)}
            self.study.set_user_attr(key, rec)
        return rec

    def floor(self) -> float | None:
        """The accuracy floor on the pooled folds: the search's floor with the teachers' pooled accuracy."""
        recs = [self.teacher_on(f) for f in self.fold_numbers]
        self.teacher_pooled = sum(r["accuracy"] * r["n"] for r in recs) / sum(r["n"] for r in recs)
        return accuracy_floor(self.prep.search, self.teacher_pooled)

    @property
    def fold_numbers(self) -> range:
        return range(1, self.folds + 1)

    def __call__(self, cand: Any) -> Any | None:
        t = self.trials[cand.number]
        parts = []
        full = PipelineConfig.model_validate(t.user_attrs["pipeline"])
        for fold in self.fold_numbers:
            key = f"fold:{t.number}:{fold}:shipped:{self.tag}"
            rec = self.study.user_attrs.get(key)
            if rec is None:
                self.teacher_on(fold)  # made once, before the first run that distills from it
                log.info("search: re-measuring trial %d on validation fold %d of %d", t.number, fold, self.folds)
                out = self.prep.root / "trials" / f"{t.number:04d}" / f"fold{fold}"
                try:
                    shipped = as_shipped(trial_pipeline(full, [], light=True), t.user_attrs.get("guard") or {})
                    cfg = self._fold_config(shipped, fold)
                    manifest = run_quietly(cfg, out, str(self.prep.cache_dir))
                    v = tflite_validation(manifest)
                except (EdgeoptError, RuntimeError) as e:
                    log.warning("search: trial %d could not be re-measured on fold %d: %s", t.number, fold, e)
                    return None
                rec = {"accuracy": v["accuracy"], "n": v["samples"], "correct": v["correct"]}
                self.study.set_user_attr(key, rec)
            parts.append(unpack_outcomes(rec["correct"], rec["n"]))
        return np.concatenate(parts)


def teacher_tag(pipeline: PipelineConfig) -> str:
    """What names the fold teachers of a pipeline: a digest of how they are made (the training recipe, the
    data and the seed), so a changed recipe trains them again instead of reusing stale ones."""
    what = {
        "train": pipeline.teacher.train.model_dump(mode="json") if pipeline.teacher.train else None,
        "data": pipeline.data.model_dump(mode="json"),
        "seed": pipeline.seed,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]


def _reload(prep: Prepared, study: Any) -> Any:
    """The study, after failing (and queueing again) trials whose worker died unnoticed."""
    import optuna

    try:
        optuna.storages.fail_stale_trials(study)
    except Exception as e:  # noqa: BLE001 - a database error becomes one clear line
        lost = st.lost(e, prep.storage_url)
        if lost is not None:
            raise lost from None
        raise
    return study


def test_results(prep: Prepared, trials: list[Any]) -> dict[int, dict[str, Any]]:
    """Top-1 of each trial's .tflite on the test split (LiteRT, in a child process) and which examples it
    got right, through the one validation path (``validate_artifact``), cached by the bytes and the data in
    the search's cache."""
    out: dict[int, dict[str, Any]] = {}
    if not trials:
        return out
    data = load_dataset(prep.pipeline.data)
    cache = StageCache(prep.cache_dir)
    config = ValidateConfig(split=Split.test, latency=False, cross_check=False, outcomes=True)
    for t in trials:
        path = Path(t.user_attrs.get("tflite", ""))
        if not path.is_file():
            log.warning("trial %d: %s is not on this machine; its test accuracy is left out", t.number, path)
            continue
        v, _ = validate_artifact(path.read_bytes(), data, config, name=path.name, cache=cache)
        if v.get("accuracy") is not None:
            out[t.number] = {"accuracy": float(v["accuracy"]), "n": v["samples"], "correct": v.get("correct")}
    return out
