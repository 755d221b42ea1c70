"""Where a study lives: a SQLite file under ``build/`` by default, or a PostgreSQL server that many machines
share (``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB``). URL checks, one-line errors, and the storage
with heartbeats so that a trial whose worker died is failed and run again.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

from edgeopt.errors import BadInput, RuntimeCrash

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10


class StorageLost(RuntimeCrash):
    """The study's database went away while the search ran (exit 3); a rerun resumes the study."""


def default_url(root: Path) -> str:
    """The embedded default: a SQLite file in the search's build folder."""
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / 'study.db').resolve()}"


def normalize_url(url: str) -> str:
    """Check a storage URL's shape (no connection yet). ``postgresql://`` means psycopg 3, the driver we ship."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except ArgumentError:
        raise BadInput(
            f"--storage {url!r}: not a database URL; expected sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB"
        ) from None
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.drivername not in ("sqlite", "postgresql+psycopg"):
        raise BadInput(
            f"--storage {safe(url)}: unsupported database {u.drivername!r}; use sqlite or postgresql+psycopg"
        )
    if u.drivername == "sqlite" and not u.database:
        raise BadInput(
            f"--storage {safe(url)}: an in-memory SQLite study cannot be shared; give a file, sqlite:///PATH"
        )
    if u.drivername.startswith("postgresql") and not (u.host and u.database):
        raise BadInput(f"--storage {safe(url)}: a PostgreSQL URL needs a host and a database name")
    return u.render_as_string(hide_password=False)


def safe(url: str) -> str:
    """The URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown as given, minus anything after '@'-credentials
        return url.split("@")[-1]


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Several local workers write one file: wait for the lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}


def check_reachable(url: str) -> None:
    """Connect once; BadInput (one line) when the server cannot be reached or refuses us."""
    import sqlalchemy
    from sqlalchemy.exc import DBAPIError

    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    except DBAPIError as e:
        raise BadInput(f"--storage {safe(url)}: cannot connect: {first_line(e)}") from None
    finally:
        engine.dispose()


def first_line(e: BaseException) -> str:
    """The first line of a driver's error, without SQLAlchemy's background link."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def open_storage(url: str, *, heartbeat_interval: int, grace_period: int, max_retry: int) -> Any:
    """Optuna's RDB storage with heartbeats: a trial silent for ``grace_period`` seconds is failed and queued
    again (``RetryHeartbeatStaleTrialCallback``) at most ``max_retry`` times. Creating the schema is retried
    once or twice: two workers that create it at once on a fresh database collide (duplicate type)."""
    import warnings

    import optuna
    from sqlalchemy.exc import DBAPIError

    # Heartbeats and the retry callback are marked experimental since Optuna 2.8; they are what we rely on.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for attempt in range(4):
        try:
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=_engine_kwargs(url),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
            )
            if url.startswith("sqlite"):
                serialize_sqlite(storage.engine)
            return storage
        except DBAPIError as e:
            if attempt == 3 or e.connection_invalidated or "could not connect" in str(e).lower():
                raise BadInput(f"--storage {safe(url)}: {first_line(e)}") from None
            log.debug("creating the study schema collided with another worker; retrying: %s", first_line(e))
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def serialize_sqlite(engine: Any) -> None:
    """Make every transaction on a SQLite study take the write lock when it begins (``BEGIN IMMEDIATE``).

    Optuna hands a queued trial to one worker by reading that it is waiting and marking it running in one
    transaction, with ``SELECT ... FOR UPDATE``, which SQLite ignores; and Python's sqlite3 driver begins a
    transaction only at the first write. Two local workers could both read "waiting" and both run the trial
    (seen in the search bench: both workers ran trial 0, the second then failed with "Cannot tell a COMPLETE
    trial"; optuna/optuna#4621). SQLAlchemy's recipe for pysqlite: the driver emits no BEGIN of its own, and
    every transaction starts with BEGIN IMMEDIATE, so the read and the write happen under one lock. A
    worker waits for the lock (the connection's 60-second timeout); the transactions are short."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the hooks are replaced by ones that have them


def create_or_load(storage: Any, name: str, objectives: list[Any], space_names: list[str], sampler: Any) -> Any:
    """The study ``name``, created when new; BadInput when it exists with other objectives or parameters
    (a rerun must ask the same question to resume it)."""
    import optuna

    directions = ["maximize" if o.maximize else "minimize" for o in objectives]
    keys = [o.key for o in objectives]
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, directions=directions, sampler=sampler, load_if_exists=True
        )
    except Exception as e:  # noqa: BLE001 - a database error becomes one clear line
        raise (lost(e, storage.url) or e) from None
    attrs = study.user_attrs
    if not attrs.get("objectives"):
        study.set_user_attr("objectives", keys)
        study.set_user_attr("space", sorted(space_names))
    elif attrs["objectives"] != keys or sorted(attrs.get("space", [])) != sorted(space_names):
        raise BadInput(
            f"study {name!r} exists with objectives {', '.join(attrs['objectives'])} and parameters "
            f"{', '.join(attrs.get('space', []))}; this file asks for {', '.join(keys)} and {', '.join(space_names)}: "
            "use --study NEW_NAME"
        )
    return study


def lost(e: BaseException, url: str) -> StorageLost | None:
    """StorageLost for a database error (or a wrapped one), else None."""
    from sqlalchemy.exc import DBAPIError

    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, DBAPIError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    return StorageLost(
        f"storage {safe(url)} went away: {first_line(cause)}; completed trials are kept there, "
        "rerun the same command when it is back to resume the study"
    )


def ensure_reference(study: Any, values: dict[str, Any]) -> None:
    """Queue trial 0, the pipeline as written (``values``: the file's own), before any sampled trial, unless
    the study already has it with these values (a resumed study keeps its own; an edited file gets a new one).
    Two machines starting at once may both queue it: the copy runs from the stage cache, and the earliest
    complete one is the reference."""
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("reference") and (t.params or t.system_attrs.get("fixed_params")) == values:
            return
    study.enqueue_trial(values, user_attrs={"reference": True})
