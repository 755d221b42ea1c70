"""The user-mode emulator: which QEMU runs the arm64 guest, its version, and what it is trusted with.

``qemu-aarch64`` (Debian's ``qemu-user``, dynamically linked) is preferred: it loads TCG plugins, so
it can count instructions. ``qemu-aarch64-static`` runs the guest too but cannot load plugins (a
static binary has no ``dlopen``), so with it nothing is counted and the latency estimate says why.
``EDGEOPT_QEMU`` names another binary (a QEMU 10 build, say). No binfmt registration is needed: the
guest's Python is started through QEMU directly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache

from edgeopt.arm.cores import Core
from edgeopt.errors import BadInput

ENV = "EDGEOPT_QEMU"
CANDIDATES = ("qemu-aarch64", "qemu-aarch64-static")
# The first QEMU release whose SME emulation gave XNNPACK's SME kernels the same outputs as x86
# (checked with 10.0 from bookworm-backports; 7.2 gave top-1 agreement of 2-9%). Releases in between
# were not checked, so they are refused too.
SME_TRUSTED_FROM = (10, 0)


class EmulatorRefused(BadInput):
    """QEMU is known (or not known not) to compute this core's kernels wrongly."""


@dataclass(frozen=True)
class Emulator:
    path: str
    version: tuple[int, int, int]
    plugins: bool  # can load TCG plugins (-plugin): instruction counting works
    cpus: tuple[str, ...]  # its CPU models (-cpu help)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def describe(self) -> str:
        return f"{os.path.basename(self.path)} {self.version_text}" + ("" if self.plugins else " (no plugin support)")


def find() -> Emulator | None:
    """The emulator to use, or None when there is none (``missing()`` says what to install)."""
    named = os.environ.get(ENV)
    paths = [named] if named else [shutil.which(c) for c in CANDIDATES]
    for p in paths:
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return _probe(os.path.realpath(p))
    return None


def missing() -> str:
    if os.environ.get(ENV):
        return f"{ENV}={os.environ[ENV]} is not an executable file"
    return (
        "no qemu-aarch64 on PATH: install Debian's qemu-user (`apt-get install qemu-user`; `make arm-root` does "
        "it as root)"
    )


@cache
def _probe(path: str) -> Emulator:
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30).stdout
        helptext = subprocess.run([path, "-h"], capture_output=True, text=True, timeout=30).stdout
        cpus = subprocess.run([path, "-cpu", "help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise BadInput(f"{path} does not run: {e}") from None
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    if not m:
        raise BadInput(f"{path}: not a QEMU user-mode emulator (`-version` said {out.strip()[:80]!r})")
    version = (int(m[1]), int(m[2]), int(m[3] or 0))
    models = tuple(ln.split()[0] for ln in cpus.splitlines()[1:] if ln.strip())
    return Emulator(path, version, plugins="-plugin" in helptext, cpus=models)


def refuse(c: Core, emu: Emulator) -> None:
    """EmulatorRefused when this QEMU has no model of ``c`` or is not trusted with its kernels."""
    model = c.qemu_cpu.split(",")[0]
    if model not in emu.cpus:
        raise EmulatorRefused(
            f"{emu.describe()} has no CPU model {model!r} (for {c.name}); it has {', '.join(emu.cpus)}"
        )
    if c.sme and emu.version[:2] < SME_TRUSTED_FROM:
        raise EmulatorRefused(
            f"{emu.describe()} is not trusted with SME ({c.name}: QEMU `{c.qemu_cpu}`): QEMU 7.2 computes "
            "XNNPACK's SME kernels wrongly (top-1 agreement 2-9% against x86); use core armv9-i8mm "
            "(`max,sme=off`) or QEMU 10 or later (EDGEOPT_QEMU=/path/to/qemu-aarch64)"
        )
