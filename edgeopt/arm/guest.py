"""The arm64 guest: a Debian 12 (bookworm) arm64 root and a folder of LiteRT's own aarch64 wheels, built
once per machine in a cache folder (``~/.cache/edgeopt/arm64``, or ``EDGEOPT_ARM_CACHE``), and run
through QEMU user-mode emulation: ``qemu-aarch64 -L CORE_ROOT ROOT/usr/bin/python3.11`` with the
wheels on ``PYTHONPATH``. No binfmt registration, no chroot.

How the root is made (about 260 MB; a minute on a fast mirror):

1. ``debootstrap --arch=arm64 --foreign --variant=minbase --include=python3.11,libstdc++6,libgomp1
   bookworm ROOT MIRROR``: the first stage only (the second would run arm64 code as root); it
   downloads every package and unpacks the essential ones;
2. every downloaded ``.deb`` unpacked with ``dpkg-deb --fsys-tarfile | tar -x --keep-directory-symlink``
   (merged /usr: ``/lib`` is a symlink that must stay one);
3. ``ROOT/proc`` (a symlink to the host's ``/proc``) and ``ROOT/dev`` removed: QEMU's ``-L`` looks a
   path up in the root first and falls back to the host's, so the host's ``/dev`` and ``/proc`` serve,
   except ``/proc/cpuinfo``, which each core's own root provides (``core_root``).

The mirror is the machine's own: the first ``deb`` source for the ``bookworm`` suite in
``/etc/apt/sources.list`` or ``/etc/apt/sources.list.d/`` (one-line or deb822 format), unless one is
given (``--mirror``, ``EDGEOPT_ARM_MIRROR``).

The wheels (about 120 MB): the host's pip installs ``ai-edge-litert`` and ``numpy`` at the versions
installed on the host, ``--target DIR --only-binary=:all: --python-version 3.11 --implementation cp
--abi cp311`` with every ``--platform manylinux_2_N_aarch64`` for N = 17..36 (pip does not expand a
manylinux tag downwards).

Each part is built in a temporary folder and renamed into place, and carries a stamp written last: a
folder without its stamp or with a file missing is incomplete and is rebuilt. Builds take a lock, so
several processes can ask for the guest at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path

from edgeopt.arm import cores, plugin, qemu
from edgeopt.arm.cores import Core
from edgeopt.errors import BadInput

log = logging.getLogger(__name__)

CACHE_ENV = "EDGEOPT_ARM_CACHE"
MIRROR_ENV = "EDGEOPT_ARM_MIRROR"
SUITE = "bookworm"  # Debian 12: Python 3.11, the version LiteRT's cp311 wheels and edgeopt need
PACKAGES = ("python3.11", "libstdc++6", "libgomp1")
PYTHON = "usr/bin/python3.11"
MANYLINUX = range(17, 37)
STAMP = ".edgeopt-stamp.json"
ROOT_FILES = (
    PYTHON,
    "lib/ld-linux-aarch64.so.1",
    "usr/lib/aarch64-linux-gnu/libstdc++.so.6",
    "usr/lib/aarch64-linux-gnu/libgomp.so.1",
    "usr/lib/python3.11/encodings/__init__.py",
)
WHEEL_FILES = ("ai_edge_litert/interpreter.py", "numpy/__init__.py")
PLUGIN_SOURCE = Path(__file__).with_name("icount.c")


class GuestMissing(BadInput):
    """The arm64 guest is not there and cannot be built here; the message names what is missing."""


def cache_dir(path: str | Path | None = None) -> Path:
    if path:
        return Path(path).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgeopt" / "arm64"


def wanted_versions() -> dict[str, str]:
    """The aarch64 wheels to install: the versions installed on the host, so both sides run the same."""
    return {"ai-edge-litert": installed_version("ai-edge-litert"), "numpy": installed_version("numpy")}


# ---- the Debian mirror -----------------------------------------------------------------------------


def _sources(etc: Path) -> Iterator[tuple[str, str, list[str]]]:
    """(type, uri, suites) of every apt source, one-line (``*.list``) and deb822 (``*.sources``) files."""
    files = [etc / "sources.list"] + sorted((etc / "sources.list.d").glob("*.list"))
    for f in files:
        if not f.is_file():
            continue
        for line in f.read_text(errors="replace").splitlines():
            line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()  # type: ignore[assignment]
            if len(line) >= 3:
                yield line[0], line[1], [line[2]]
    for f in sorted((etc / "sources.list.d").glob("*.sources")):
        if not f.is_file():
            continue
        for stanza in re.split(r"\n\s*\n", f.read_text(errors="replace")):
            fields: dict[str, str] = {}
            key = ""
            for raw in stanza.splitlines():
                if raw.startswith("#") or not raw.strip():
                    continue
                if raw[0] in " \t" and key:
                    fields[key] += " " + raw.strip()
                elif ":" in raw:
                    key, _, value = raw.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for t in fields.get("types", "").split():
                for uri in fields.get("uris", "").split():
                    yield t, uri, fields.get("suites", "").split()


def mirror_from_apt(etc: str | Path = "/etc/apt") -> str | None:
    """The first ``deb`` source of this machine's apt configuration that serves Debian's ``bookworm``."""
    for kind, uri, suites in _sources(Path(etc)):
        if kind == "deb" and SUITE in suites and uri.split(":", 1)[0] in ("http", "https", "ftp", "file"):
            return uri
    return None


def mirror(given: str | None = None) -> str:
    m = given or os.environ.get(MIRROR_ENV) or mirror_from_apt()
    if not m:
        raise GuestMissing(
            f"no Debian mirror: this machine's apt configuration (/etc/apt/sources.list, sources.list.d/) has no "
            f"`deb` source for {SUITE}; give one with --mirror URL (or {MIRROR_ENV})"
        )
    return m


# ---- what is there -----------------------------------------------------------------------------


def _stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _wheels_dir(cache: Path, versions: dict[str, str]) -> Path:
    return cache / "wheels" / "_".join(f"{k}-{v}" for k, v in sorted(versions.items()))


def _folder_problems(folder: Path, what: str, files: tuple[str, ...], absent: str) -> list[str]:
    """What a built folder lacks: the folder, its stamp (written last: without it the build did not
    finish), or some of ``files``."""
    if not folder.is_dir():
        return [absent]
    out = []
    if _stamp(folder) is None:
        out.append(f"{what} {folder} is incomplete (no {STAMP}: its build did not finish)")
    missing = [f for f in files if not (folder / f).exists()]
    if missing:
        out.append(f"{what} {folder} lacks {', '.join(missing)}")
    return out


def _problems(cache: Path) -> dict[str, list[str]]:
    """What is missing or incomplete, by part (``root``, ``wheels``)."""
    root = cache / "root"
    versions = wanted_versions()
    wheels = _wheels_dir(cache, versions)
    wanted = ", ".join(f"{k} {v}" for k, v in versions.items())
    return {
        "root": _folder_problems(root, "arm64 root", ROOT_FILES, f"no arm64 root ({root})"),
        "wheels": _folder_problems(wheels, "wheel folder", WHEEL_FILES, f"no aarch64 wheels for {wanted} ({wheels})"),
    }


def problems(cache: str | Path | None = None) -> list[str]:
    """What is missing or incomplete in the guest (an empty list: it is complete)."""
    return [t for part in _problems(cache_dir(cache)).values() for t in part]


def build_tools_missing() -> list[str]:
    """Host tools the build needs and does not find."""
    out = []
    if not shutil.which("debootstrap"):
        out.append("debootstrap (apt-get install debootstrap)")
    if not shutil.which("dpkg-deb"):
        out.append("dpkg-deb (Debian's dpkg)")
    if not shutil.which("tar"):
        out.append("tar")
    if os.geteuid() != 0 and not shutil.which("fakeroot"):
        out.append("root privileges or fakeroot, for debootstrap (apt-get install fakeroot)")
    return out


# ---- building ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_stamp(folder: Path, data: dict) -> None:
    tmp = folder / (STAMP + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, folder / STAMP)


def _swap(tmp: Path, final: Path) -> None:
    """Put ``tmp`` at ``final`` in one rename; an older ``final`` is moved aside and removed."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _run(cmd: list[str], logfile: Path, what: str, **kw) -> None:
    with open(logfile, "a") as lf:
        lf.write(f"$ {' '.join(cmd)}\n")
        lf.flush()
        r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
    if r.returncode != 0:
        tail = [ln for ln in logfile.read_text(errors="replace").splitlines() if ln.strip()][-3:]
        raise GuestMissing(f"{what} failed (exit {r.returncode}; log {logfile}): {' | '.join(tail)[-400:]}")


def build_root(cache: Path, mirror_uri: str) -> Path:
    """Debootstrap's first stage, then every downloaded package unpacked; see the module docstring."""
    tools = build_tools_missing()
    if tools:
        raise GuestMissing("cannot build the arm64 root here; missing: " + "; ".join(tools))
    tmp = Path(tempfile.mkdtemp(prefix=".root-tmp-", dir=cache))
    logfile = cache / "build.log"
    try:
        cmd = [
            "debootstrap",
            "--arch=arm64",
            "--foreign",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(tmp),
            mirror_uri,
        ]
        if os.geteuid() != 0:
            cmd = ["fakeroot", *cmd]
        log.info("debootstrap (first stage) of Debian %s arm64 from %s into %s ...", SUITE, mirror_uri, cache)
        _run(cmd, logfile, "debootstrap")
        debs = sorted((tmp / "var/cache/apt/archives").glob("*.deb"))
        if not debs:
            raise GuestMissing(f"debootstrap downloaded no packages into {tmp} (log {logfile})")
        log.info("unpacking %d packages ...", len(debs))
        for deb in debs:
            with open(logfile, "a") as lf:
                deb_tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=lf)
                untar = subprocess.run(
                    ["tar", "-x", "-C", str(tmp), "--keep-directory-symlink", "--no-same-owner"],
                    stdin=deb_tar.stdout,
                    stderr=lf,
                )
                assert deb_tar.stdout is not None
                deb_tar.stdout.close()
                if deb_tar.wait() != 0 or untar.returncode != 0:
                    raise GuestMissing(f"unpacking {deb.name} failed (log {logfile})")
            deb.unlink()  # the unpacked files are what is kept
        for name in ("proc", "dev"):
            p = tmp / name
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p)
        (tmp / "proc").mkdir()
        missing = [f for f in ROOT_FILES if not (tmp / f).exists()]
        if missing:
            raise GuestMissing(f"the unpacked root lacks {', '.join(missing)} (log {logfile})")
        _write_stamp(tmp, {"suite": SUITE, "mirror": mirror_uri, "packages": list(PACKAGES), "created": _now()})
        tmp.chmod(0o755)
        _swap(tmp, cache / "root")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache / "root"


def build_wheels(cache: Path, versions: dict[str, str]) -> Path:
    final = _wheels_dir(cache, versions)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wheels-tmp-", dir=final.parent))
    logfile = cache / "build.log"
    try:
        platforms = [a for n in MANYLINUX for a in ("--platform", f"manylinux_2_{n}_aarch64")]
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--target",
            str(tmp),
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            *platforms,
            *(f"{k}=={v}" for k, v in versions.items()),
        ]
        log.info("installing aarch64 wheels (%s) ...", ", ".join(f"{k} {v}" for k, v in versions.items()))
        _run(cmd, logfile, "pip install of the aarch64 wheels")
        missing = [f for f in WHEEL_FILES if not (tmp / f).exists()]
        if missing:
            raise GuestMissing(f"the aarch64 wheels lack {', '.join(missing)} (log {logfile})")
        _write_stamp(tmp, {"versions": versions, "created": _now()})
        tmp.chmod(0o755)
        _swap(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- the guest ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guest:
    """A complete guest: run ``command(core)`` with ``env()``."""

    cache: Path
    root: Path
    wheels: Path
    emulator: qemu.Emulator
    plugin: Path | None  # the instruction-counting plugin, None when it cannot be built or loaded
    no_count: str | None  # why there is no plugin

    @property
    def python(self) -> Path:
        return self.root / PYTHON

    def core_root(self, c: Core) -> Path:
        """The root as core ``c`` sees it: the shared root's folders (symlinks) and its own
        ``proc/cpuinfo``, whose Features line is what QEMU reports for ``c.qemu_cpu``."""
        folder = self.cache / "cores" / c.name
        want = {
            "core": c.name,
            "qemu": self.emulator.describe(),
            "qemu_cpu": c.qemu_cpu,
            "midr": str(c.midr),
            "root": (_stamp(self.root) or {}).get("created"),
            "processors": os.cpu_count() or 1,
        }
        have = _stamp(folder)
        if have is not None and {k: have.get(k) for k in want} == want and (folder / "proc/cpuinfo").is_file():
            return folder
        with _locked(self.cache):
            have = _stamp(folder)
            if have is not None and {k: have.get(k) for k in want} == want:
                return folder
            hwcap, hwcap2 = self._hwcaps(c)
            features = cores.hwcap_names(hwcap, hwcap2)
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{c.name}-tmp-", dir=folder.parent))
            try:
                for entry in os.listdir(self.root):
                    if entry not in ("proc", STAMP):
                        os.symlink(os.path.relpath(self.root / entry, folder), tmp / entry)
                (tmp / "proc").mkdir()
                (tmp / "proc/cpuinfo").write_text(cores.cpuinfo(c, features, want["processors"]))
                _write_stamp(tmp, {**want, "features": features, "hwcap": hex(hwcap), "hwcap2": hex(hwcap2)})
                _swap(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def _hwcaps(self, c: Core) -> tuple[int, int]:
        """AT_HWCAP and AT_HWCAP2 as QEMU reports them to a guest on ``c.qemu_cpu`` (from the guest's
        /proc/self/auxv, which QEMU emulates)."""
        code = (
            "import struct;d=open('/proc/self/auxv','rb').read();"
            "v=dict(struct.unpack('<QQ',d[i:i+16]) for i in range(0,len(d)-15,16));print(v.get(16,0),v.get(26,0))"
        )
        r = subprocess.run(
            [self.emulator.path, "-L", str(self.root), "-cpu", c.qemu_cpu, str(self.python), "-S", "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            env=self.env(),
        )
        if r.returncode != 0:
            raise GuestMissing(
                f"the arm64 Python does not start under {self.emulator.describe()}: {r.stderr.strip()[-300:]}"
            )
        a, b = r.stdout.split()
        return int(a), int(b)

    def env(self, pythonpath: list[str] | None = None) -> dict[str, str]:
        """The guest's environment: little of the host's (its LD_PRELOAD would load into QEMU, its
        QEMU_* variables would override the command line), the wheels first on PYTHONPATH, then
        ``pythonpath``, then the caller's PYTHONPATH (tests put their fault injection there)."""
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
        env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("EDGEOPT_")}
        path = [
            str(self.wheels),
            *(pythonpath or []),
            *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
        ]
        env.update(PYTHONPATH=os.pathsep.join(path), PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="3")
        return env

    def command(self, c: Core, *, count_to: Path | None = None) -> list[str]:
        """``qemu-aarch64 -L CORE_ROOT -cpu CPU [-plugin ...] ROOT/usr/bin/python3.11`` (arguments follow)."""
        qemu.refuse(c, self.emulator)
        cmd = [self.emulator.path, "-L", str(self.core_root(c)), "-cpu", c.qemu_cpu]
        if count_to is not None:
            if self.plugin is None:
                raise GuestMissing(f"cannot count instructions: {self.no_count}")
            cmd += ["-plugin", f"{self.plugin},out={count_to}"]
        return [*cmd, str(self.python)]


def environment(cache: str | Path | None = None) -> str:
    """What the phone check's results depend on besides the model and the versions a cache key holds
    already: the emulator (its version and whether it can count), or why the check cannot run here. A
    cached validation made without the check is not reused once the check can run."""
    emu = qemu.find()
    if emu is None:
        return f"unavailable: {qemu.missing()}"
    if problems(cache) and (tools := build_tools_missing()):
        return "unavailable: cannot build the guest: " + "; ".join(tools)
    return emu.describe()


def setup(
    cache: str | Path | None = None, *, mirror_uri: str | None = None, rebuild: bool = False, build: bool = True
) -> Guest:
    """The guest, built first when it is missing or incomplete (``build``) or when ``rebuild``.
    GuestMissing (exit 2) names what is missing when it cannot be built here."""
    cache = cache_dir(cache)
    emu = qemu.find()
    if emu is None:
        raise GuestMissing(qemu.missing())
    todo = problems(cache)
    if todo or rebuild:
        if not build:
            raise GuestMissing("; ".join(todo) + "; run `edgeopt phone setup` (or `make arm-root`)")
        if todo:
            log.warning("arm64 guest: %s; building it (once per machine, in %s)", "; ".join(todo), cache)
        with _locked(cache):
            parts = _problems(cache)  # another process may have built it meanwhile
            if rebuild or parts["root"]:
                build_root(cache, mirror(mirror_uri))
            if rebuild or parts["wheels"]:
                build_wheels(cache, wanted_versions())
        todo = problems(cache)
        if todo:
            raise GuestMissing("; ".join(todo))
    root = cache / "root"
    so, why = plugin.ensure(cache, emu, root)
    return Guest(cache, root, _wheels_dir(cache, wanted_versions()), emu, so, why)
