"""LiteRT's own aarch64 build on an emulated Arm core: the same worker tasks as the x86 runtime
(``edgeopt.runtimes.worker``: ``litert_eval``, ``litert_count``), run by the arm64 guest's Python
under QEMU user mode (``edgeopt.arm.guest``), in a child process with a timeout like every runtime.

A crash or hang is a ``ChildFailed`` whose runtime names the core (``litert-arm (kryo-485-gold) hung:
no answer within 600 s, killed``). A guest that is missing and cannot be built here
(``GuestMissing``) or an emulator that is refused for the core (``EmulatorRefused``) is raised before
any child starts; both are ``BadInput``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.arm.cores import Core
from edgeopt.arm.guest import Guest
from edgeopt.runtimes.isolate import run_task

NAME = "litert-arm"
PACKAGE = Path(__file__).resolve().parent.parent  # the edgeopt package the guest imports (pure Python)


def runtime_name(core: Core) -> str:
    return f"{NAME} ({core.name})"


def run(
    guest: Guest, core: Core, task: str, content: bytes, x: np.ndarray | None, *, timeout: float, **args: Any
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run worker ``task`` on ``content`` in the arm64 guest on ``core``: (result, outputs).
    ``litert_count`` runs with the counting plugin, which writes into the job folder."""

    def launch(job: Path) -> tuple[list[str], dict[str, str]]:
        python = guest.command(core, count_to=job / "counts.jsonl" if task == "litert_count" else None)
        src = job / "src"
        src.mkdir()
        (src / "edgeopt").symlink_to(PACKAGE)
        return python, guest.env([str(src)])

    return run_task(task, runtime_name(core), content, x, timeout=timeout, launch=launch, **args)
