"""A search's time budget (``--minutes``, ``search.minutes``): no trial starts once it is spent, the trial
running then finishes, a worker always runs one trial (so trial 0, the pipeline as written, always runs),
and trials.json says what the command spent."""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timedelta
from types import SimpleNamespace

import optuna
import pytest

from edgeopt.errors import BadInput
from edgeopt.search import study as search_study
from edgeopt.search import worker
from edgeopt.search.config import SearchConfig
from edgeopt.search.space import Param
from edgeopt.search.worker import TrialFunction

NAME = "prune.final_sparsity"
CHOICES = (0.3, 0.4, 0.5, 0.6, 0.7)


def _function(trials: int, deadline: float | None) -> TrialFunction:
    fn = TrialFunction.__new__(TrialFunction)
    fn.job = SimpleNamespace(worker=0, trials=trials, deadline=deadline)
    fn.params = [Param(NAME, "prune", 1, "final_sparsity", choices=CHOICES)]
    fn.host, fn.ran, fn.repeats = "test", 0, 0
    fn.pipeline = SimpleNamespace(name="t")
    return fn


@pytest.fixture
def clock(monkeypatch):
    """The worker's clock, moved on a minute by every trial that gets as far as building its pipeline (the
    pipeline itself is not run: the trial stops there)."""
    now = [0.0]

    def one_minute(*a, **k):
        now[0] += 60
        raise optuna.TrialPruned("stub: the pipeline is not run in this test")

    monkeypatch.setattr(worker, "time", SimpleNamespace(time=lambda: now[0]))
    monkeypatch.setattr(worker.space, "apply", one_minute)
    return now


def _study(*values: float) -> optuna.Study:
    study = optuna.create_study(directions=["maximize"])
    for v in values:
        study.enqueue_trial({NAME: v})
    return study


@pytest.mark.parametrize(("deadline", "ran"), [(150.0, 3), (120.0, 2), (1.0, 1), (None, 5)])
def test_no_trial_starts_once_the_budget_is_spent(clock, deadline, ran, caplog):
    """Trials of a minute each: with 150 s, trials start at 0, 60 and 120 s (the third ends at 180 s, after
    the budget) and no fourth starts; a budget spent during the first trial still lets it finish."""
    study = _study(*CHOICES)
    fn = _function(trials=5, deadline=deadline)
    with caplog.at_level(logging.WARNING, logger="edgeopt.search.worker"):
        study.optimize(fn, n_trials=None, callbacks=[fn.after_trial])
    started = [t for t in study.trials if t.state != optuna.trial.TrialState.WAITING]
    assert fn.ran == ran == len(started)
    assert (f"time budget spent; stopping after {ran} of 5 trials" in caplog.text) is (deadline is not None)


def test_a_skipped_repeat_does_not_use_up_the_one_trial_a_worker_always_runs(clock):
    study = optuna.create_study(directions=["maximize"])
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE,
            params={NAME: 0.3},
            distributions={NAME: optuna.distributions.CategoricalDistribution(CHOICES)},
            values=[0.9],
        )
    )
    for v in (0.3, 0.4, 0.5):  # a repeat of the finished trial first: skipped at no cost, then one trial
        study.enqueue_trial({NAME: v})
    fn = _function(trials=3, deadline=-1.0)  # spent before the worker started
    study.optimize(fn, n_trials=None, callbacks=[fn.after_trial])
    assert (fn.repeats, fn.ran) == (1, 1)
    assert [t.params[NAME] for t in study.trials if t.state != optuna.trial.TrialState.WAITING] == [0.3, 0.3, 0.4]


def test_budget_spent_counts_this_commands_trials_not_repeats_nor_earlier_nor_other_workers():
    """Trials: one of an earlier command (same process id, an hour before), one this command ran, one this
    command skipped as a repeat, one another machine's worker ran meanwhile in the shared study."""
    study = optuna.create_study(directions=["maximize"])
    since = datetime.now()
    host = socket.gethostname()
    made = [
        (since - timedelta(hours=1), {"pid": 11, "host": host}),
        (since + timedelta(seconds=5), {"pid": 11, "host": host}),
        (since + timedelta(seconds=9), {"pid": 11, "host": host, "repeat_of": 1}),
        (since + timedelta(seconds=7), {"pid": 11, "host": "another-machine"}),
    ]
    for i, (_, attrs) in enumerate(made):
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE,
                params={NAME: CHOICES[i]},
                distributions={NAME: optuna.distributions.CategoricalDistribution(CHOICES)},
                values=[0.9],
                user_attrs=attrs,
            )
        )
    for t, (start, _) in zip(study.get_trials(deepcopy=False), made, strict=True):
        t.datetime_start = start  # the in-memory storage's own FrozenTrial
    now = time.time()
    spent = search_study.budget_spent(study, 4, 2.0, now - 150, {11})
    assert spent == {**spent, "trials": 4, "ran": 1, "minutes": 2.0, "stopped_by_time": False}
    assert spent["minutes_taken"] == pytest.approx(2.5, abs=0.05)
    assert search_study.budget_spent(study, 4, 2.0, now - 150, {12})["ran"] == 0  # not its workers
    # the flag is what a worker of this command said when the budget stopped it: an earlier command's
    # (before this one started) or another process's does not count
    study.set_user_attr(worker.budget_key(host, 11), now - 3600)
    study.set_user_attr(worker.budget_key(host, 13), now - 10)
    assert search_study.budget_spent(study, 4, 2.0, now - 150, {11})["stopped_by_time"] is False
    study.set_user_attr(worker.budget_key(host, 11), now - 10)
    assert search_study.budget_spent(study, 4, 2.0, now - 150, {11})["stopped_by_time"] is True


def test_a_worker_stopped_by_the_budget_says_so_in_the_study(clock):
    study = _study(*CHOICES)
    fn = _function(trials=5, deadline=90.0)
    study.optimize(fn, n_trials=None, callbacks=[fn.after_trial])
    assert fn.ran == 2
    assert study.user_attrs[worker.budget_key("test", os.getpid())] == 120.0  # the worker's clock then


def test_a_worker_out_of_untried_values_is_not_stopped_by_the_budget(clock):
    study = _study(*([0.3] * 8))  # the sampler proposes only tried values after the first trial
    fn = _function(trials=3, deadline=1e9)
    study.optimize(fn, n_trials=None, callbacks=[fn.after_trial])
    assert fn.ran == 1 and not any(k.startswith("budget_stop:") for k in study.user_attrs)


def test_minutes_on_the_command_line_override_the_file_and_0_lifts_the_limit():
    assert search_study.time_budget(None, 12.0) == 12.0
    assert search_study.time_budget(3.0, 12.0) == 3.0
    assert search_study.time_budget(0.0, 12.0) is None
    assert search_study.time_budget(None, None) is None


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_a_budget_must_be_positive(tmp_path, bad):
    with pytest.raises(ValueError):
        SearchConfig(minutes=0)
    assert SearchConfig().minutes is None and SearchConfig(minutes=1.5).minutes == 1.5
    with pytest.raises(BadInput, match="must be 0 \\(no limit\\) or more"):
        search_study.search(tmp_path / "not_read.yaml", minutes=bad)  # refused before the file is read
