"""QEMU adapter: a Cortex-M firmware (``edgeopt.firmware``) run in ``qemu-system-arm`` on an MPS2 board.

Like the other runtimes it runs untrusted work in a child process with a timeout: the firmware may
hang or fault, and then the child is killed (with its process group) and the failure names what QEMU
said last. QEMU runs with ``-icount shift=0``: every guest instruction advances the virtual clock by
one nanosecond, so the firmware's tick counter measures executed instructions (no host timing enters
the figures, whatever the load on this machine). The firmware prints ``edgeopt ...`` lines through
semihosting, which ``parse`` reads.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeopt.errors import BadInput
from edgeopt.runtimes.isolate import ChildFailed

NAME = "tflm-qemu"
DEBIAN_PACKAGE = "qemu-system-arm"
ICOUNT = "shift=0"


def binary() -> Path:
    """``qemu-system-arm``; BadInput with one line when it is not installed."""
    path = shutil.which("qemu-system-arm")
    if path is None:
        raise BadInput(f"no qemu-system-arm on PATH: install Debian's {DEBIAN_PACKAGE}")
    return Path(path)


def version() -> str:
    out = subprocess.run([str(binary()), "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout.splitlines() or ["unknown"])[0].strip()


def command(elf: Path, board: str, cpu: str) -> list[str]:
    """The QEMU command line (the example's ``make run`` uses the same flags)."""
    return [
        str(binary()),
        "-M",
        board,
        "-cpu",
        cpu,
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "null",
        "-semihosting-config",
        "enable=on,target=native",
        "-icount",
        ICOUNT,
        "-kernel",
        str(elf),
    ]


@dataclass
class FirmwareOutput:
    """What the firmware printed: per example the ticks of its ``Invoke()`` and its output tensors' bytes."""

    ticks: dict[int, int] = field(default_factory=dict)
    outputs: dict[tuple[int, int], bytes] = field(default_factory=dict)
    arena_used: int | None = None
    arena_size: int | None = None
    calibration: tuple[int, int] | None = None  # (instructions, ticks) of the calibration loop
    stack_used: int | None = None
    stack_size: int | None = None
    heap: int | None = None
    expected: str | None = None
    errors: list[str] = field(default_factory=list)
    done: bool = False
    returncode: int = 0
    seconds: float = 0.0
    last_words: str = ""

    @property
    def instructions_per_tick(self) -> float:
        if not self.calibration or not self.calibration[1]:
            raise BadInput("the firmware reported no calibration: it did not run to the end")
        return self.calibration[0] / self.calibration[1]


_LINE = re.compile(r"^edgeopt (\w+)(?::)? ?(.*)$")


def parse(text: str) -> FirmwareOutput:
    out = FirmwareOutput()
    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if not m:
            continue
        key, rest = m.group(1), m.group(2).split()
        if key == "ticks":
            out.ticks[int(rest[0])] = int(rest[1])
        elif key == "out":
            out.outputs[(int(rest[0]), int(rest[1]))] = bytes.fromhex(rest[2] if len(rest) > 2 else "")
        elif key == "arena":
            out.arena_used, out.arena_size = int(rest[0]), int(rest[1])
        elif key == "calibration":
            out.calibration = (int(rest[0]), int(rest[1]))
        elif key == "stack":
            out.stack_used, out.stack_size = int(rest[0]), int(rest[1])
        elif key == "heap":
            out.heap = int(rest[0])
        elif key == "expected":
            out.expected = rest[0] if rest else None
        elif key in ("error", "fault"):
            out.errors.append(raw.strip())
        elif key == "done":
            out.done = True
    return out


def _last_words(stdout: str, stderr: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in (stdout + "\n" + stderr).splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "nothing"


def run(elf: Path, board: str, cpu: str, *, timeout: float = 300.0) -> FirmwareOutput:
    """Run ``elf`` on ``board`` until it exits; ChildFailed (``hung``: killed after ``timeout`` seconds;
    ``crashed``: the firmware faulted or QEMU died) with QEMU's last words."""
    cmd = command(elf, board, cpu)
    t0 = time.perf_counter()
    # A session of its own: on timeout the whole group goes, whatever QEMU started.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        stdout_b, stderr_b = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout_b, stderr_b = proc.communicate()
        words = _last_words(stdout_b.decode(errors="replace"), stderr_b.decode(errors="replace"))
        raise ChildFailed(
            NAME, "hung", f"the firmware did not finish within {timeout:g} s on {board}, killed; last words: {words}"
        ) from None
    stdout, stderr = stdout_b.decode(errors="replace"), stderr_b.decode(errors="replace")
    out = parse(stdout)
    # The fault handler writes with SYS_WRITE0, which QEMU sends to its stderr.
    out.errors += [e for e in parse(stderr).errors if e not in out.errors]
    out.returncode, out.seconds = proc.returncode, time.perf_counter() - t0
    out.last_words = _last_words(stdout, stderr)
    if proc.returncode < 0:
        raise ChildFailed(NAME, "crashed", f"QEMU killed by {signal.Signals(-proc.returncode).name}: {out.last_words}")
    faults = [e for e in out.errors if e.startswith("edgeopt fault")]
    if faults:
        raise ChildFailed(NAME, "crashed", f"the firmware faulted on {board}: {faults[0]}")
    if not out.done and not out.errors:
        raise ChildFailed(
            NAME, "crashed", f"the firmware stopped early on {board} (exit status {proc.returncode}): {out.last_words}"
        )
    return out
