"""Workers on a real PostgreSQL server (started by the ``postgres`` fixture): two workers share one study,
a worker killed mid-trial has its trial failed by the heartbeat and run again, and a database that goes
away is one clear error after which a rerun resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import optuna
import pytest

from tests.search.conftest import env, run_search_cmd, search_cmd, write_pipeline

RUNNING = (optuna.trial.TrialState.RUNNING,)


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="digits_search", storage=url)


def _prepare(path, url):
    """What the first machine does before any worker starts: the study and the teacher, once."""
    from edgeopt.search.study import create_study, prepare, teacher_accuracy

    prep = prepare(path, storage=url)
    create_study(prep)
    teacher_accuracy(prep)


def test_two_workers_share_one_study_and_a_killed_trial_is_retried(tmp_path, monkeypatch, postgres):
    monkeypatch.chdir(tmp_path)
    url = postgres.url("search_two")
    path = write_pipeline(tmp_path)
    _prepare(path, url)

    # Two "machines": the same command against the same storage, three trials each.
    procs = [
        subprocess.Popen(
            search_cmd(path, "--storage", url, "--trials", "3", "--cache", str(tmp_path / f"cache{i}")),
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    trials = _study(url).trials
    ran = [t for t in trials if "repeat_of" not in t.user_attrs]  # a sampled repeat of tried values is not run
    assert len(ran) == 6 and len({tuple(sorted(t.params.items())) for t in ran}) == 6, "every trial once"
    pids = {t.user_attrs["pid"] for t in trials}
    assert pids == {p.pid for p in procs}, "both workers ran trials"
    assert all(t.state.is_finished() for t in trials)

    # A worker killed mid-trial (SIGKILL: no chance to clean up), with a cache of its own so it is busy.
    a = subprocess.Popen(
        search_cmd(path, "--storage", url, "--trials", "2", "--cache", str(tmp_path / "cache_killed")),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # A trial that is at work: its pipeline is recorded only after the repeat check, so a sampled repeat of
    # tried values (pruned at once, never run) is not the one killed.
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and a.poll() is None:
        for t in _study(url).get_trials(states=RUNNING):
            if t.user_attrs.get("pid") == a.pid and "pipeline" in t.user_attrs:
                killed = t.number
        time.sleep(0.2)
    assert killed is not None, "the worker never started a trial"
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=30)
    state = {t.number: t.state for t in _study(url).trials}[killed]
    assert state is optuna.trial.TrialState.RUNNING, f"trial {killed} ended before the kill ({state.name})"
    # Past the grace period (10 s, heartbeat every 1 s), the next worker fails the silent trial and queues it again.
    time.sleep(11)
    b = run_search_cmd(path, "--storage", url, "--trials", "2", cwd=tmp_path)
    assert b.returncode == 0, b.stderr[-3000:]
    trials = {t.number: t for t in _study(url).trials}
    assert trials[killed].state is optuna.trial.TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert retries[0].params == trials[killed].params, "the same trial, run again"
    assert all(t.state.is_finished() for t in trials.values()), "the study completes: nothing left running or waiting"
    ran = [t for t in trials.values() if "repeat_of" not in t.user_attrs]  # a sampled repeat is not run
    assert len(ran) == 6 + 1 + 2  # + the killed trial + the two trials of the last worker (one of them the retry)


def test_database_gone_is_one_clear_error_and_a_rerun_resumes(tmp_path, monkeypatch, postgres):
    monkeypatch.chdir(tmp_path)
    url = postgres.url("search_gone")
    path = write_pipeline(tmp_path)
    _prepare(path, url)
    w = subprocess.Popen(
        search_cmd(path, "--storage", url, "--trials", "4", "--cache", str(tmp_path / "cache_gone")),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300  # until the worker runs a trial (trial 0 waits in the study from the start)
    while time.monotonic() < deadline and w.poll() is None and not _study(url).get_trials(states=RUNNING):
        time.sleep(0.2)
    postgres.stop()
    try:
        _, err = w.communicate(timeout=300)
    finally:
        postgres.start()
    assert w.returncode == 3, err[-3000:]
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert "went away" in last and "rerun the same command" in last, err[-3000:]
    before = {t.number for t in _study(url).trials if t.state.is_finished()}
    r = run_search_cmd(path, "--storage", url, "--trials", "1", cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr[-3000:]  # 1: no feasible trial yet, which is not the point here
    after = _study(url).trials
    assert before < {t.number for t in after if t.state.is_finished()}, "the rerun added to the same study"


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres@127.0.0.1:1/nodb"])
def test_unreachable_storage_is_bad_input(tmp_path, url):
    path = write_pipeline(tmp_path)
    r = run_search_cmd(path, "--storage", url, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot connect" in lines[0], r.stderr
