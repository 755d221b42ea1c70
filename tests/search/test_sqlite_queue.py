"""A queued trial (trial 0, the pipeline as written, or a retry) goes to one worker of an embedded (SQLite)
study, never to two: Optuna's hand-over relies on SELECT ... FOR UPDATE, which SQLite ignores (the search
bench saw both local workers run trial 0, the second failing with "Cannot tell a COMPLETE trial";
optuna/optuna#4621). ``storage.serialize_sqlite`` makes the read and the write one locked transaction."""

from __future__ import annotations

import threading

import optuna

from edgeopt.search import storage as st

WORKERS = 8
ROUNDS = 10


def _open(url: str):
    return st.open_storage(url, heartbeat_interval=10, grace_period=30, max_retry=0)


def _pop(study, barrier, got, lock) -> None:
    barrier.wait()
    trial_id = study._pop_waiting_trial_id()
    with lock:
        got.append(trial_id)


def _popped_per_round(url: str) -> list[list[int]]:
    """Each round queues one trial; WORKERS threads, each with its own storage (its own connections, as
    worker processes have), ask for a queued trial at the same moment."""
    study = optuna.create_study(study_name="queue", storage=_open(url))
    studies = [optuna.load_study(study_name="queue", storage=_open(url)) for _ in range(WORKERS)]
    rounds = []
    for _ in range(ROUNDS):
        study.enqueue_trial({})
        barrier, got, lock = threading.Barrier(WORKERS), [], threading.Lock()

        threads = [threading.Thread(target=_pop, args=(s, barrier, got, lock)) for s in studies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rounds.append([t for t in got if t is not None])
    return rounds


def test_a_queued_trial_goes_to_one_worker_only(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rounds = _popped_per_round(f"sqlite:///{tmp_path / 'study.db'}")
    assert all(len(r) == 1 for r in rounds), rounds
