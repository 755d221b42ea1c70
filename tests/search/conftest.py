"""Fixtures of the search tests: a small digits pipeline with a search block, and a real PostgreSQL
server on a free 127.0.0.1 port in a temp folder (started and stopped here; skipped only where the
PostgreSQL server binaries are not installed)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# tiny_cnn on digits: the teacher trains in seconds; distill is the same in every trial (cached once),
# the searched steps come after it.
PIPELINE = {
    "name": "digits_search",
    "seed": 7,
    "data": "digits",
    "teacher": {
        "path": "models/digits_teacher.keras",
        "train": {"zoo": "tiny_cnn", "epochs": 20, "learning_rate": 0.003},
    },
    "steps": [
        {"stage": "distill", "width": 0.5, "epochs": 25, "learning_rate": 0.01},
        {"stage": "prune", "final_sparsity": 0.5, "epochs": 2},
        {"stage": "cluster", "clusters": 8, "epochs": 1},
        {"stage": "qat", "epochs": 1},
        {"stage": "convert", "quantization": "int8"},
        {"stage": "validate", "profiles": ["cortex-m7-512k"], "max_step_diff": 2},
    ],
    "search": {
        # Sparsities a 2-epoch prune survives: at 0.8 the student collapses to ~40%, and a worker whose
        # trials all fall below the floor exits 1 (no feasible trial), which these tests do not study.
        "space": {"prune.final_sparsity": [0.4, 0.5], "cluster.clusters": [8, None], "qat": [True, False]},
        "objectives": ["accuracy", "gzip_bytes", "arena_bytes@cortex-m7-512k"],
        "max_accuracy_drop": 15,
        "recover_points": 2.0,
        # A heartbeat every second, a trial failed after 10 s of silence: long enough that a worker starved
        # of CPU on a loaded 2-core machine is not taken for a dead one.
        "heartbeat_interval": 1,
        "grace_period": 10,
        "max_retry": 2,
    },
}


def write_pipeline(folder: Path, **search: object) -> Path:
    """The test pipeline in ``folder`` (its relative paths resolve there); ``search`` overrides keys."""
    cfg = {**PIPELINE, "search": {**PIPELINE["search"], **search}}
    path = folder / "digits_search.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def search_cmd(pipeline: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "edgeopt", "search", str(pipeline), *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def run_search_cmd(pipeline: Path, *args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``edgeopt search PIPELINE ARGS`` in its own process from ``cwd``, run to its end, output captured."""
    return subprocess.run(
        search_cmd(pipeline, *args), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout
    )


class PostgresServer:
    """A throwaway PostgreSQL cluster: ``url(db)`` creates database ``db`` and gives its URL."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="edgeopt-pg-"))  # /tmp: the postgres user must reach it
        self.data = self.dir / "data"
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0  # the server refuses to run as root
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        full = ["runuser", "-u", "postgres", "--", *cmd] if self.as_postgres else list(cmd)
        return subprocess.run(full, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"
        )

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def url(self, db: str) -> str:
        self._run(
            str(self.bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            f"create database {db}",
        )
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path | None:
    """The folder of the server binaries: on the PATH, or where Debian's postgresql package puts them."""
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # newest major first
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists() and (bindir / "psql").exists():
            return bindir
    return None


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, psql) are not installed: no server to test against")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
    server = PostgresServer(bindir)
    try:
        server.init()
        server.start()
        deadline = time.monotonic() + 30
        while server._run(
            str(bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "-c",
            "select 1",
            check=False,
        ).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not accept connections: " + (server.dir / "log").read_text()[-2000:])
            time.sleep(0.3)
        yield server
    finally:
        server.cleanup()
