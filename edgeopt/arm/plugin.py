"""The instruction-counting TCG plugin (``icount.c`` beside this file), built once per machine with the
host's C compiler into the guest cache and checked by loading it into QEMU once.

A plugin declares the plugin API level it was written for (``qemu_plugin_version``); QEMU refuses
levels below its minimum. ``icount.c`` calls only functions whose signatures have not changed since
QEMU 4.2, so it is built for level 1 and, when a newer QEMU names a higher minimum, built again for
that level.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from hashlib import sha256
from pathlib import Path

from edgeopt.arm.qemu import Emulator

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("icount.c")


def compiler() -> str | None:
    return next((c for c in (os.environ.get("CC"), "gcc", "cc") if c and shutil.which(c)), None)


def _compile(cc: str, api: int, out: Path) -> str | None:
    cmd = [cc, "-O2", "-shared", "-fPIC", "-fvisibility=hidden", f"-DPLUGIN_API={api}", "-o", str(out), str(SOURCE)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["failed"])[-1]


def _load_error(emu: Emulator, so: Path, root: Path) -> str | None:
    """None when QEMU loads the plugin and runs a guest program with it, else QEMU's message."""
    with tempfile.TemporaryDirectory(prefix="edgeopt-plugin-") as tmp:
        r = subprocess.run(
            [emu.path, "-L", str(root), "-plugin", f"{so},out={tmp}/counts.jsonl", str(root / "usr/bin/true")],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
    return None if r.returncode == 0 else (r.stderr.strip() or f"exit code {r.returncode}")[-300:]


def ensure(cache: Path, emu: Emulator, root: Path) -> tuple[Path | None, str | None]:
    """(the plugin, None), or (None, why there is none). Built at most once per source and QEMU."""
    if not emu.plugins:
        return None, (
            f"{emu.describe()} cannot load TCG plugins (a static build has no dlopen); install Debian's "
            "qemu-user, whose qemu-aarch64 can"
        )
    key = f"{sha256(SOURCE.read_bytes()).hexdigest()[:12]}-qemu{emu.version_text}"
    final = cache / "plugin" / f"icount-{key}.so"
    if final.is_file():
        return final, None
    cc = compiler()
    if cc is None:
        return None, "no C compiler to build the instruction-counting plugin (apt-get install gcc)"
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".icount-", suffix=".so", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        api, error = 1, None
        for _ in range(2):
            error = _compile(cc, api, tmp)
            if error:
                return None, f"building the counting plugin failed: {error}"
            error = _load_error(emu, tmp, root)
            m = re.search(r"minimum version of (\d+)", error or "")
            if not m:
                break
            api = int(m[1])
        if error:
            return None, f"{emu.describe()} does not load the counting plugin: {error}"
        os.replace(tmp, final)
        log.info("built the instruction-counting plugin %s (plugin API %d)", final, api)
        return final, None
    finally:
        tmp.unlink(missing_ok=True)
