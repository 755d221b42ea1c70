"""Helpers for tests that make edgeopt's child processes hang or crash (see ``sitecustomize.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

DIR = Path(__file__).resolve().parent


def fault_env(spec: str, log_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for processes whose children should fail as ``spec`` says (``task:action,...``)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(DIR), *filter(None, [env.get("PYTHONPATH")])])
    env["EDGEOPT_FAULT"] = spec
    env["EDGEOPT_FAULT_LOG"] = str(log_dir)
    return env


def fired(log_dir: Path) -> list[dict]:
    """The faults that fired, as ``{"target", "action", "pid"}`` records."""
    return [json.loads(p.read_text()) for p in sorted(Path(log_dir).glob("*.json"))]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
