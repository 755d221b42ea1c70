"""A sampled trial that repeats the values of a trial already tried is skipped: not run, shown as a repeat,
and not counted in the worker's budget (the sampler proposed tried values in 3 bench runs, each time taking
one of four or nine sampled trials); a sampler stuck on tried values stops the worker."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import optuna
import pytest

from edgeopt.search import report, worker
from edgeopt.search.space import Param
from edgeopt.search.worker import TrialFunction, max_repeats, repeat_of

NAME = "prune.final_sparsity"
DIST = {NAME: optuna.distributions.CategoricalDistribution([0.4, 0.5, 0.6, 0.7])}


def _add(study, state, value, **attrs):
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            params={NAME: value},
            distributions=DIST,
            user_attrs=attrs,
            values=[0.9] if state == optuna.trial.TrialState.COMPLETE else None,
        )
    )


def test_repeat_of_finds_the_trial_tried_with_the_same_values():
    study = optuna.create_study(directions=["maximize"])
    _add(study, optuna.trial.TrialState.COMPLETE, 0.4)  # 0
    _add(study, optuna.trial.TrialState.PRUNED, 0.5, pruned="at rung 0")  # 1: stopped early counts as tried
    _add(study, optuna.trial.TrialState.PRUNED, 0.6, repeat_of=7)  # 2: a skipped repeat is not a try
    _add(study, optuna.trial.TrialState.FAIL, 0.7)  # 3: a failed trial is run again, not a try
    _add(study, optuna.trial.TrialState.RUNNING, 0.7)  # 4: another worker's, running
    for value, twin in ((0.4, 0), (0.5, 1), (0.6, None), (0.7, 4), (0.8, None)):
        sampled = SimpleNamespace(number=5, params={NAME: value}, study=study)  # a new trial's values
        assert repeat_of(sampled) == twin, value
    assert repeat_of(SimpleNamespace(number=4, params={NAME: 0.7}, study=study)) is None  # not its own twin


def _asked(study):
    return [t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING]


def _function(trials: int) -> TrialFunction:
    fn = TrialFunction.__new__(TrialFunction)
    fn.job = SimpleNamespace(worker=0, trials=trials, deadline=None)
    fn.params = [Param(NAME, "prune", 1, "final_sparsity", choices=(0.4, 0.5, 0.6, 0.7))]
    fn.host, fn.ran, fn.repeats = "test", 0, 0
    fn.pipeline = SimpleNamespace(name="t")
    return fn


def test_a_repeat_is_skipped_and_not_counted_until_the_budget_is_run(monkeypatch):
    """The worker's own trial function and callback in Optuna's loop (run_worker's n_trials=None): each
    trial that is not a repeat gets as far as building its pipeline (stubbed: stopped there)."""

    def stop_here(*a, **k):
        raise optuna.TrialPruned("stub: the pipeline is not run in this test")

    monkeypatch.setattr(worker.space, "apply", stop_here)
    study = optuna.create_study(directions=["maximize"])
    for value in (0.5, 0.5, 0.5, 0.4, 0.6):  # what the sampler proposes, in order
        study.enqueue_trial({NAME: value})
    fn = _function(trials=2)
    study.optimize(fn, n_trials=None, callbacks=[fn.after_trial])
    trials = _asked(study)
    assert [t.user_attrs.get("repeat_of") for t in trials] == [None, 0, 0, None], trials  # 0.6 still waiting
    assert fn.ran == 2 and fn.repeats == 2
    assert "repeats trial 0's values" in trials[1].user_attrs["pruned"]
    c = report.counts(study)
    assert c["repeats"] == 2 and c["pruned"] == 2  # the two stubbed trials, not the repeats
    assert "2 repeat(s) skipped" in report.status_line(study, "gzip_bytes")


def test_a_sampler_stuck_on_tried_values_stops_the_worker(monkeypatch, caplog):
    monkeypatch.setattr(worker.space, "apply", lambda *a, **k: (_ for _ in ()).throw(optuna.TrialPruned()))
    study = optuna.create_study(directions=["maximize"])
    for _ in range(20):
        study.enqueue_trial({NAME: 0.5})
    fn = _function(trials=4)
    with caplog.at_level(logging.WARNING, logger="edgeopt.search.worker"):
        study.optimize(fn, n_trials=None, callbacks=[fn.after_trial])
    assert fn.ran == 1 and fn.repeats == max_repeats(4) == 5
    assert len(_asked(study)) == 6 and "few untried values left" in caplog.text


@pytest.mark.parametrize("trials", [1, 5, 30])
def test_max_repeats_grows_with_the_budget(trials):
    assert max_repeats(trials) >= min(trials, 5)
