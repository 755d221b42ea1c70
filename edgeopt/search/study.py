"""``search(pipeline_file, ...)``: check the input, make the teacher and the study once, run the trials in
``workers`` local processes (or in this one), then write the outputs.

Every machine of a shared study runs this same function with the same ``storage``: the study is created
by whoever comes first (creating it twice is harmless), each adds ``trials`` trials.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeopt import calibrate
from edgeopt.config import Split, ValidateConfig
from edgeopt.data import load_dataset
from edgeopt.errors import BadInput, EdgeoptError, GateFailed, RuntimeCrash
from edgeopt.pipeline.cache import StageCache
from edgeopt.pipeline.runner import ensure_teacher
from edgeopt.pipeline.spec import load_pipeline
from edgeopt.pipeline.validating import validate_artifact
from edgeopt.search import report
from edgeopt.search import storage as st
from edgeopt.search.config import SearchConfig
from edgeopt.search.objectives import resolve_profiles
from edgeopt.search.report import status_line
from edgeopt.search.space import resolve_space
from edgeopt.search.storage import safe
from edgeopt.search.worker import WorkerJob, make_sampler, run_worker

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
    search = pipeline.search or SearchConfig()
    params = resolve_space(pipeline, search)
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
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    cache: str | Path | None = None,
    out: str | Path | None = None,
    build: str | Path = "build",
    report: bool = True,
) -> SearchResult:
    """Run ``trials`` trials (default: the ``search:`` block's) of the pipeline's study in ``workers``
    processes, then write the outputs. Raises GateFailed when no trial of the study is feasible."""
    if workers < 1:
        raise BadInput(f"--workers {workers}: must be at least 1")
    prep = prepare(pipeline_file, storage=storage, study_name=study_name, cache=cache, out=out, build=build)
    n = prep.search.trials if trials is None else trials
    if n < 0:
        raise BadInput(f"--trials {n}: must be 0 or more")
    study = create_study(prep)
    t_acc = teacher_accuracy(prep)
    # A phone profile's latency gate needs the host's calibration: measured here once, not in every worker.
    calibrate.ensure(resolve_profiles(prep.pipeline, prep.search))
    log.info(
        "study %s in %s: %s trial(s) in %d worker(s); teacher validation accuracy %.4f",
        prep.study_name,
        safe(prep.storage_url),
        n,
        workers,
        t_acc,
    )

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
    )
    if n > 0:
        run_workers(job, workers, study)
    summary: dict[str, Any] = {}
    if report:
        summary = write_report(prep, study, pipeline_file)
    result = SearchResult(prep.out_dir, prep.storage_url, prep.study_name, summary)
    if report and result.best is None:
        raise GateFailed(f"no trial of study {prep.study_name} met every constraint; see {prep.out_dir / 'trials.csv'}")
    return result


def _seed(base: int) -> int:
    """A sampler seed per process: reproducible for one worker, different across workers and machines."""
    import socket
    import zlib

    return (base * 1_000_003 + zlib.crc32(socket.gethostname().encode()) + os.getpid()) % (2**31)


def run_workers(job: Any, workers: int, study: Any) -> None:
    """This process alone for one worker; else ``workers`` spawned processes sharing ``job.trials`` out."""

    if workers == 1:
        run_worker(job)
        return
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


def _child(job: Any) -> None:
    """A spawned worker's main: logging like the parent's, errors as one line and an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    try:
        run_worker(job)
    except EdgeoptError as e:
        print(f"error: worker {job.worker}: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def write_report(prep: Prepared, study: Any, pipeline_file: str | Path) -> dict[str, Any]:
    """Measure the test split once for the Pareto front and the chosen trial, write the outputs. The chosen
    trial need not be on the front: the rule's metric (``select``) may be none of the objectives."""

    study = _reload(prep, study)
    measured = {t.number: t for t in report.pareto(study)}
    chosen = report.choose(study.get_trials(deepcopy=False), prep.search.select)
    if chosen is not None:
        measured.setdefault(chosen.number, chosen)
    test = test_accuracies(prep, [measured[n] for n in sorted(measured)])
    command = f"edgeopt search {shlex.quote(str(pipeline_file))}"
    summary = report.write_outputs(
        study,
        prep.out_dir,
        search=prep.search,
        params=[p.name for p in prep.params],
        test_accuracy=test,
        source=str(pipeline_file),
        command=command,
    )
    log.info("search: %s; outputs in %s", report.status_line(study, prep.search.select), prep.out_dir)
    return summary


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


def test_accuracies(prep: Prepared, trials: list[Any]) -> dict[int, float]:
    """Top-1 of each trial's .tflite on the test split (LiteRT, in a child process), through the one
    validation path (``validate_artifact``), cached by the bytes and the data in the search's cache."""
    out: dict[int, float] = {}
    if not trials:
        return out
    data = load_dataset(prep.pipeline.data)
    cache = StageCache(prep.cache_dir)
    config = ValidateConfig(split=Split.test, latency=False, cross_check=False)
    for t in trials:
        path = Path(t.user_attrs.get("tflite", ""))
        if not path.is_file():
            log.warning("trial %d: %s is not on this machine; its test accuracy is left out", t.number, path)
            continue
        v, _ = validate_artifact(path.read_bytes(), data, config, name=path.name, cache=cache)
        if v.get("accuracy") is not None:
            out[t.number] = float(v["accuracy"])
    return out
