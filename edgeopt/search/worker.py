"""One search worker: one process, one TensorFlow, ``study.optimize`` over the trial function.

A trial sets its parameters on the pipeline and runs it (stages shared with other trials through the
content-addressed cache): first at rungs of shorter fine-tuning, promoted from one to the next by
``selection.promote`` (successive halving on the accuracy objective: Optuna's pruners do not support
multi-objective studies), then in full, stopping early when the validation accuracy after a stage cannot
reach the floor any more and is below what the pipeline as written reached there. The trial pipeline ends
with a validation of its .tflite on the *validation* split against the device profiles
(``space.trial_pipeline``); its figures are the objective values, its gates and accuracy drop the Optuna
constraints (feasible <= 0). Trial 0 is the pipeline as written, run to the end.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt import threads
from edgeopt.artifacts import write_json
from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError, GateFailed
from edgeopt.manifest import TEACHER, RunManifest
from edgeopt.pipeline import registry, run
from edgeopt.pipeline.spec import load_pipeline
from edgeopt.search import selection, space
from edgeopt.search import storage as st
from edgeopt.search.config import SearchConfig
from edgeopt.search.objectives import accuracy_floor, resolve_profiles, score, with_constraints
from edgeopt.search.report import is_repeat, status_line
from edgeopt.search.space import distributions, floor_margin, remaining_fine_tuning, resolve_space
from edgeopt.validation import unpack_outcomes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs; plain values, so it crosses a 'spawn' process boundary."""

    pipeline_path: str
    storage_url: str
    study_name: str
    trials: int
    root: str  # build/search/<name>: trial folders
    cache_dir: str
    teacher_accuracy: float
    worker: int = 0
    threads: int = 0  # TensorFlow intra-op threads; 0: TensorFlow's default
    seed: int = 0
    quiet_progress: bool = True
    deadline: float | None = None  # time.time() after which no trial starts (the command's --minutes)


class TrialError(Exception):
    """A trial that could not finish (bad combination of values, a crash): recorded as failed, search goes on."""


def run_worker(job: WorkerJob) -> int:
    """Run ``job.trials`` trials of the study (Optuna's ``n_trials``); returns how many this worker ran.
    Raises StorageLost when the database goes away, KeyboardInterrupt on Ctrl-C (the interrupted trial is
    queued to run again first on the next run)."""
    threads.limit(job.threads)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pipeline = load_pipeline(job.pipeline_path)
    search = with_constraints(pipeline, pipeline.search or SearchConfig())
    params = resolve_space(pipeline, search, n_train=len(load_dataset(pipeline.data).x_train))
    trial_fn = TrialFunction(job, pipeline, search, params)
    storage = st.open_storage(
        job.storage_url,
        heartbeat_interval=search.heartbeat_interval,
        grace_period=search.grace,
        max_retry=search.max_retry,
    )
    try:
        study = optuna.load_study(study_name=job.study_name, storage=storage, sampler=make_sampler(job.seed))
        study.optimize(  # until trial_fn.after_trial stops it: a repeat of tried values does not count
            trial_fn,
            n_trials=None,
            catch=(TrialError,),
            callbacks=[trial_fn.after_trial],
            gc_after_trial=True,
        )
    except KeyboardInterrupt:
        _requeue_interrupted(study, search.max_retry)
        raise
    except Exception as e:  # noqa: BLE001 - a database error becomes one clear line
        lost = st.lost(e, job.storage_url)
        if lost is not None:
            raise lost from None
        raise
    return trial_fn.ran


def make_sampler(seed: int) -> Any:
    """TPE with constraints (Optuna 5 reads them from ``trial.set_constraint``). A few random trials first,
    each worker with its own seed so that two workers do not start with the same trials."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, constant_liar=True)


def _requeue_interrupted(study: Any, max_retry: int) -> None:
    """Ctrl-C failed this worker's running trial: queue it again so that a rerun resumes with it."""
    import optuna

    try:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
            if t.user_attrs.get("pid") == os.getpid() and t.user_attrs.get("error") == "interrupted (Ctrl-C)":
                if not t.user_attrs.get("requeued"):
                    study._storage.set_trial_user_attr(t._trial_id, "requeued", True)
                    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, t)
    except Exception:  # noqa: BLE001 - best effort on the way out; the study keeps the failed trial anyway
        log.debug("could not queue the interrupted trial again", exc_info=True)


class TrialFunction:
    """The objective: ``(trial) -> [accuracy, size/speed objectives...]``.

    Trial 0 (``user_attrs["reference"]``) is the pipeline as written. Every trial runs its rungs first (the
    fine-tuning stages at a fraction of their length, accuracy only) and goes on to the next rung only when
    ``selection.promote`` says so; the last rung is the full trial pipeline with every gate."""

    def __init__(self, job: WorkerJob, pipeline: Any, search: Any, params: list[Any]) -> None:
        self.job = job
        self.pipeline = pipeline
        self.search = search
        self.params = params
        self.profiles = resolve_profiles(pipeline, search)
        self.floor = accuracy_floor(search, job.teacher_accuracy)
        self.fractions = space.rung_fractions(search, pipeline)
        self.reference_values = space.reference_values(pipeline, params)
        self.root = Path(job.root)
        self.host = socket.gethostname()
        self.ran = 0  # trials run; a sampled repeat of values already tried is skipped and not counted
        self.repeats = 0

    # -- the trial ---------------------------------------------------------------------------------

    def __call__(self, trial: Any) -> list[float]:
        import optuna

        started = time.time()
        reference = bool(trial.user_attrs.get("reference"))
        trial.set_user_attr("worker", self.job.worker)
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("pid", os.getpid())
        for key in ("rungs", "stages"):  # a retried trial starts over (Optuna copies the dead one's attributes)
            trial.set_user_attr(key, {})
        values = {p.name: space.round_value(self._suggest(trial, p)) for p in self.params}
        twin = None if reference else repeat_of(trial)
        if twin is not None:
            self.repeats += 1
            trial.set_user_attr("repeat_of", twin)
            trial.set_user_attr("pruned", f"repeats trial {twin}'s values: not run, not counted in --trials")
            trial.set_user_attr("seconds", round(time.time() - started, 1))
            raise optuna.TrialPruned(f"repeats trial {twin}")
        self.ran += 1
        try:
            if reference:  # exactly the file
                full = space.apply(self.pipeline, [], {}, name=f"{self.pipeline.name}_best")
            else:
                full = space.apply(self.pipeline, self.params, values, name=f"{self.pipeline.name}_best")
            trial.set_user_attr("pipeline", full.model_dump(mode="json", exclude_unset=True))
            out = self.root / "trials" / f"{trial.number:04d}"
            for k, fraction in enumerate(self.fractions[:-1]):
                self._rung(trial, k, fraction, full, out / f"rung{k}", reference)
            run_cfg = space.trial_pipeline(full, self.profiles)
            manifest = self._run(trial, run_cfg, out, reference)
            score = self._score(trial, manifest, out)
            if reference:
                trial.set_user_attr("stage_accuracy", reached(run_cfg, manifest))
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", round(time.time() - started, 1))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted (Ctrl-C)")
            raise
        except (EdgeoptError, RuntimeError, ValueError, OSError) as e:
            if _is_db_error(e):
                raise
            trial.set_user_attr("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            trial.set_user_attr("seconds", round(time.time() - started, 1))
            log.warning("trial %d failed: %s", trial.number, e)
            raise TrialError(str(e)) from e
        trial.set_user_attr("metrics", score.metrics)
        trial.set_user_attr("failed_gates", score.failed_gates)
        trial.set_user_attr("not_evaluated", score.not_evaluated)
        trial.set_user_attr("feasible", score.feasible)
        trial.set_user_attr("seconds", round(time.time() - started, 1))
        for key, value in score.constraints.items():
            trial.set_constraint(key, value)
        return score.values

    def _suggest(self, trial: Any, p: Any) -> Any:
        if p.choices is not None:
            return trial.suggest_categorical(p.name, list(p.choices))
        r = p.range
        if r.is_int:
            return trial.suggest_int(p.name, int(r.low), int(r.high), step=int(r.step or 1), log=r.log)
        dist = _float_dist(p)
        return trial.suggest_float(p.name, dist.low, dist.high, step=dist.step, log=dist.log)

    # -- rungs -------------------------------------------------------------------------------------

    def _rung(self, trial: Any, k: int, fraction: float, full: Any, out: Path, reference: bool) -> None:
        """Rung ``k``: the fine-tuning stages at ``fraction`` of their length, the .tflite's accuracy on the
        validation split; then go on (return) or stop the trial (``optuna.TrialPruned``)."""
        import optuna

        cfg = space.at_fidelity(space.trial_pipeline(full, self.profiles, light=True), fraction)
        manifest = run_quietly(cfg, out, self.job.cache_dir)
        validation = tflite_validation(manifest)
        record = {
            "fraction": fraction,
            "accuracy": validation["accuracy"],
            "n": validation["samples"],
            "correct": validation.get("correct"),
        }
        rungs = {**trial.user_attrs.get("rungs", {}), str(k): record}
        trial.set_user_attr("rungs", rungs)
        if reference:
            return
        ok, why = self._promotion(trial, k, record)
        log.info("trial %d, rung %d (%.3g of the fine-tuning): %s", trial.number, k, fraction, why)
        if not ok:
            why = f"at rung {k} ({fraction:.3g} of the fine-tuning length): {why}"
            trial.set_user_attr("pruned", why)
            raise optuna.TrialPruned(why)

    def _promotion(self, trial: Any, k: int, record: dict[str, Any]) -> tuple[bool, str]:
        trials = [t for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number]
        others = [
            float(t.user_attrs["rungs"][str(k)]["accuracy"])
            for t in trials
            if t.state.name in ("COMPLETE", "PRUNED", "RUNNING") and str(k) in (t.user_attrs.get("rungs") or {})
        ]
        ref = self._reference(trials)
        against = on_track = None
        pending = False
        if ref is not None:
            r = (ref.user_attrs.get("rungs") or {}).get(str(k))
            pending = r is None and ref.state.name == "RUNNING"
            if r and r.get("correct") and record.get("correct") and r["n"] == record["n"]:
                against = selection.paired(unpack_outcomes(r["correct"], r["n"]), _outcomes(record))
            full = ref.user_attrs.get("metrics", {}).get("accuracy") if ref.state.name == "COMPLETE" else None
            if r and full is not None and self.floor is not None:
                # the reference's own gain from this rung to the full length, as the model of what is left
                on_track = record["accuracy"] + (full - r["accuracy"]) >= self.floor
        return selection.promote(
            float(record["accuracy"]),
            others,
            self.search.reduction_factor,
            against_reference=against,
            on_track=on_track,
            reference_pending=pending,
        )

    def _reference(self, trials: list[Any]) -> Any | None:
        """The pipeline as written among ``trials`` (the earliest, with this file's values), if it has started."""
        refs = [
            t
            for t in trials
            if t.user_attrs.get("reference")
            and t.state.name in ("COMPLETE", "RUNNING", "PRUNED")
            and t.params == self.reference_values
        ]
        return min(refs, key=lambda t: t.number) if refs else None

    # -- the full rung -----------------------------------------------------------------------------

    def _run(self, trial: Any, run_cfg: Any, out: Path, reference: bool) -> Any:
        """The pipeline up to the trial's .tflite; raises TrialPruned from ``on_stage`` when the validation
        accuracy after a stage is below the floor by more than the remaining stages may win back, and below
        what the pipeline as written reached at that stage (the reference itself always runs to the end)."""
        import optuna

        stages: dict[str, Any] = {}
        keys = space.stage_keys(run_cfg)
        ref = None if reference else self._reference(trial.study.get_trials(deepcopy=False))
        ref_stages = (ref.user_attrs.get("stage_accuracy") or {}) if ref is not None else {}

        def on_stage(event: Any) -> None:
            stages[f"{event.index:02d}_{event.stage}"] = {
                "val_accuracy": event.val_accuracy,
                "reused": event.reused,
                "seconds": round(event.seconds, 2),
            }
            trial.set_user_attr("stages", stages)
            if reference or event.val_accuracy is None or self.floor is None:
                return
            # the model that goes on: the stage's input when the stage guard kept it
            kept = event.guard is not None and event.guard.action == "kept the input"
            acc = event.guard.val_accuracy_before if kept else event.val_accuracy  # type: ignore[union-attr]
            left = remaining_fine_tuning(run_cfg, event.index)
            need = self.floor - floor_margin(self.search, left)
            as_written = ref_stages.get(keys[event.index - 1])
            if acc < need and (as_written is None or acc < as_written):
                why = (
                    f"after {event.stage}: validation accuracy {acc:.4f} < floor {self.floor:.4f}"
                    f" - {self.search.recover_points:g} points x {left} remaining fine-tuning stage(s)"
                )
                if as_written is not None:
                    why += f", and below the pipeline as written at that stage ({as_written:.4f})"
                trial.set_user_attr("pruned", why)
                log.info("trial %d pruned %s", trial.number, why)
                raise optuna.TrialPruned(why)

        try:
            return run(run_cfg, out, cache_dir=self.job.cache_dir, on_stage=on_stage).manifest
        except GateFailed as e:  # a failed gate is a constraint of the trial, not an error: score it
            return _written(out, e)

    def _score(self, trial: Any, manifest: RunManifest, out: Path) -> Any:
        art = manifest.shipped()[0]
        if art is None:
            raise RuntimeError("the trial made no .tflite")
        validation = manifest.validations()[art.name]
        trial.set_user_attr("tflite", str(out / art.path))
        trial.set_user_attr("quantization", art.quantization)
        trial.set_user_attr("correct", validation.get("correct"))
        trial.set_user_attr("n", validation.get("samples"))
        trial.set_user_attr("guard", _guard_actions(manifest))
        write_json(out / "validation_val.json", validation)
        return score((out / art.path).read_bytes(), validation, self.search, self.job.teacher_accuracy)

    # -- progress ----------------------------------------------------------------------------------

    def after_trial(self, study: Any, trial: Any) -> None:
        """Log the trial; stop the worker once it ran ``job.trials`` trials, when the time budget is spent
        (``job.deadline``: checked between trials, after the worker's first one that is not a skipped repeat,
        so trial 0 always runs), or when the sampler keeps proposing values already tried (``max_repeats``: few
        untried values left)."""
        if not is_repeat(trial):
            log.info(
                "worker %d: trial %d %s; %s", self.job.worker, trial.number, _trial_summary(trial), status_line(study)
            )
        if self.ran >= self.job.trials:
            study.stop()
        elif self.ran and self.job.deadline is not None and time.time() >= self.job.deadline:
            study.set_user_attr(budget_key(self.host, os.getpid()), time.time())
            log.warning(
                "worker %d: time budget spent; stopping after %d of %d trials",
                self.job.worker,
                self.ran,
                self.job.trials,
            )
            study.stop()
        elif self.repeats >= max_repeats(self.job.trials):
            log.warning(
                "worker %d: %d sampled trials repeated values already tried; stopping after %d of %d trials (the "
                "space has few untried values left)",
                self.job.worker,
                self.repeats,
                self.ran,
                self.job.trials,
            )
            study.stop()


def budget_key(host: str, pid: int) -> str:
    """The study attribute a worker process sets (to the time) when the time budget stops it."""
    return f"budget_stop:{host}:{pid}"


def repeat_of(trial: Any) -> int | None:
    """The earlier trial (done, stopped early or running, not itself a repeat) whose values this trial's
    sampled values repeat, or None. Such a trial would cost the stage cache only seconds, but it takes a
    place in the budget: in each of three bench runs one sampled trial (of four on Fashion-MNIST, of nine
    on digits) repeated another's values."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    for t in trial.study.get_trials(deepcopy=False, states=states):
        if t.number != trial.number and not is_repeat(t) and t.params == trial.params:
            return int(t.number)
    return None


def max_repeats(trials: int) -> int:
    """How many sampled repeats a worker skips before it stops: the sampler is then stuck on tried values."""
    return max(5, trials)


def reached(run_cfg: Any, manifest: RunManifest) -> dict[str, float]:
    """The validation accuracy of the model that went on after each model-making stage, by stage key: the
    stage's own, or its input's when the stage guard kept the input (what the pipeline as written reached)."""
    records = [s for s in manifest.stages if s.name not in (TEACHER, registry.BASELINE.name)]
    out: dict[str, float] = {}
    for key, rec in zip(space.stage_keys(run_cfg), records, strict=False):
        if rec.val_accuracy is None:
            continue
        kept = rec.guard is not None and rec.guard.action == "kept the input"
        out[key] = rec.guard.val_accuracy_before if kept else rec.val_accuracy  # type: ignore[union-attr]
    return out


def _guard_actions(manifest: RunManifest) -> dict[str, str]:
    """Stages the stage guard acted on (``{stage: action}``): a reverted stage is worth a line in the table."""
    return {s.name: s.guard.action for s in manifest.stages if s.guard is not None and s.guard.action != "none"}


def run_quietly(cfg: Any, out: Path, cache_dir: str) -> RunManifest:
    """A rung or a re-measurement fold: the pipeline's manifest, gates or not (a light run has none)."""
    try:
        return run(cfg, out, cache_dir=cache_dir).manifest
    except GateFailed as e:
        return _written(out, e)


def _written(out: Path, e: GateFailed) -> RunManifest:
    """The manifest a run wrote before it raised GateFailed; a run stopped before it wrote one (the stage
    guard with ``on_regression: fail``) is an error of the trial."""
    path = out / "manifest.json"
    if not path.is_file():
        raise RuntimeError(str(e)) from e
    return RunManifest.model_validate_json(path.read_text())


def tflite_validation(manifest: RunManifest) -> dict[str, Any]:
    art = manifest.shipped()[0]
    if art is None:
        raise RuntimeError("the trial made no .tflite")
    v = manifest.validations()[art.name]
    if v.get("accuracy") is None:
        raise RuntimeError(
            f"no accuracy for {art.name}: " + "; ".join(f"{k}: {f}" for k, f in v.get("failures", {}).items())
        )
    return v


def _outcomes(record: dict[str, Any]) -> Any:
    return unpack_outcomes(record["correct"], record["n"])


def _float_dist(p: Any) -> Any:
    return distributions([p])[p.name]


def _is_db_error(e: BaseException) -> bool:
    try:
        from sqlalchemy.exc import DBAPIError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(e, DBAPIError)


def _trial_summary(trial: Any) -> str:
    state = trial.state.name.lower()
    if state == "complete":
        m = trial.user_attrs.get("metrics", {})
        feas = "feasible" if trial.user_attrs.get("feasible") else "infeasible"
        return f"done in {trial.user_attrs.get('seconds', 0):.0f} s ({feas}): " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in m.items() if k in ("accuracy", "gzip_bytes", "flash_bytes")
        )
    if state == "pruned":
        return "pruned " + trial.user_attrs.get("pruned", "")
    return f"{state}: {trial.user_attrs.get('error', '')}"


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v < 1.5:
        return f"{v:.4f}"
    if isinstance(v, int | float):
        return f"{v:,.0f}"
    return str(v)
