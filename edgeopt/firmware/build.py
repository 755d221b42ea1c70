"""Building a firmware: the cross compiler, the content-addressed library cache, ``make`` on the example,
and the flash and RAM the linked ELF takes.

The example's Makefile (``templates/Makefile``, shipped in the bundle's ``mcu/``) does the build; this
module points its ``LIB_BUILD`` at a cache folder named by the sha256 of what the compiled objects
depend on: the TFLite Micro tree's sources and headers (``tree.fingerprint``), the compiler and its
version, the core, the kernel set and the Makefile's flags. Objects of any op set accumulate there
(a kernel's object does not depend on which other kernels a model uses); the op set only decides which
of them ``make`` compiles and links. A rerun with the same inputs compiles nothing. The folder is
locked while ``make`` runs, so concurrent checks share it safely.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edgeopt.errors import BadInput, RuntimeCrash
from edgeopt.firmware.tree import Tree, fingerprint

log = logging.getLogger(__name__)

ENV_CACHE = "EDGEOPT_CACHE_DIR"
TEMPLATES = Path(__file__).parent / "templates"
DEBIAN_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib"
CROSS = "arm-none-eabi-"


class Cpu(StrEnum):
    """The Cortex-M cores the firmware check builds for, each with the MPS2 board QEMU emulates it on."""

    cortex_m4 = "cortex-m4"
    cortex_m7 = "cortex-m7"
    cortex_m33 = "cortex-m33"

    @property
    def board(self) -> str:
        return {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500", "cortex-m33": "mps2-an505"}[self.value]


def cache_root() -> Path:
    """``$EDGEOPT_CACHE_DIR/firmware`` or ``~/.cache/edgeopt/firmware``."""
    base = os.environ.get(ENV_CACHE)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "edgeopt") / "firmware"


@dataclass(frozen=True)
class Toolchain:
    gcc: Path
    version: str  # first line of ``arm-none-eabi-gcc --version``


def toolchain() -> Toolchain:
    """The arm-none-eabi cross compiler with newlib and libstdc++; BadInput with one line when missing."""
    gcc = shutil.which(CROSS + "gcc")
    if gcc is None or shutil.which(CROSS + "g++") is None:
        raise BadInput(f"no {CROSS}gcc/g++ cross compiler on PATH: install Debian's {DEBIAN_PACKAGES}")
    out = subprocess.run([gcc, "--version"], capture_output=True, text=True, timeout=30)
    version = (out.stdout.splitlines() or ["unknown"])[0].strip()
    nano = subprocess.run([gcc, "-print-file-name=nano.specs"], capture_output=True, text=True, timeout=30)
    if not Path(nano.stdout.strip()).is_file():
        raise BadInput(f"{gcc} has no newlib (nano.specs): install Debian's libnewlib-arm-none-eabi")
    return Toolchain(gcc=Path(gcc), version=version)


def lib_key(tree: Tree, tc: Toolchain, cpu: Cpu) -> str:
    """The cache key of the compiled TFLite Micro and CMSIS-NN objects."""
    h = hashlib.sha256()
    for part in (
        "edgeopt-firmware-lib/1",
        fingerprint(tree),
        tc.version,
        cpu.value,
        tree.kernels.value,
        (TEMPLATES / "Makefile").read_text(),  # the flags
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class BuildResult:
    elf: Path
    map: Path
    lib_dir: Path
    compiled: int  # source files compiled in this build (0: everything came from the cache)
    seconds: float
    log: Path


_COMPILE_LINE = re.compile(rf"^\S*{re.escape(CROSS)}(g\+\+|gcc) .* -c ")


def build(
    example: Path,
    tree: Tree,
    cpu: Cpu,
    *,
    out: Path,
    arena_bytes: int | None = None,
    jobs: int | None = None,
    timeout: float = 3600.0,
) -> BuildResult:
    """``make`` the example folder for ``cpu`` into ``out``, with the library objects in the cache."""
    tc = toolchain()
    lib_dir = cache_root() / "lib" / f"{cpu.value}-{tree.kernels.value}-{lib_key(tree, tc, cpu)}"
    lib_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "build.log"
    args = [
        "make",
        "-C",
        str(example),
        f"-j{jobs or os.cpu_count() or 1}",
        f"TFLM_DIR={tree.root}",
        f"CPU={cpu.value}",
        f"KERNELS={tree.kernels.value}",
        f"BUILD={out}",
        f"LIB_BUILD={lib_dir}",
        f"CROSS={tc.gcc.parent}/{CROSS}",
    ]
    if arena_bytes:
        args.append(f"ARENA_BYTES={int(arena_bytes)}")
    t0 = time.perf_counter()
    with open(lib_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one make at a time writes into a cache folder
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeCrash(f"firmware build for {cpu.value} did not finish within {timeout:.0f} s") from None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    log_path.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        errors = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "error" in ln.lower()]
        first = (errors or (proc.stderr + proc.stdout).strip().splitlines() or ["no output"])[0]
        raise BadInput(f"firmware build for {cpu.value} failed ({log_path}): {first.strip()[:400]}")
    compiled = sum(1 for ln in proc.stdout.splitlines() if _COMPILE_LINE.match(ln) and str(lib_dir) in ln)
    return BuildResult(
        elf=out / "firmware.elf",
        map=out / "firmware.map",
        lib_dir=lib_dir,
        compiled=compiled,
        seconds=time.perf_counter() - t0,
        log=log_path,
    )
