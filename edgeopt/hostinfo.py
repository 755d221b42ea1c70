"""What host a latency was measured on: CPU model, the ISA flags that decide int8 and float kernel
speed (AVX2, AVX-512, VNNI, AMX, NEON/dot-product), and a fingerprint of them.

XNNPACK's int8 kernels run slower than float32 on an AVX2 host without VNNI and faster with it, so a
host figure without these facts cannot be compared with another host's, and a latency calibration
made on one host must not be used on another.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

# Flags that change which kernels XNNPACK and the TFLite builtins pick (x86 and Arm names).
KERNEL_FLAGS = (
    "sse4_2",
    "fma",
    "avx",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
)


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown", flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model or platform.processor() or "unknown", flags


@functools.cache
def host() -> dict[str, Any]:
    """CPU model, kernel-relevant ISA flags, cores and a fingerprint of those (not of the host name)."""
    model, flags = _cpuinfo()
    isa = [f for f in KERNEL_FLAGS if f in flags]
    facts = {"cpu": model, "machine": platform.machine(), "isa": isa, "cpus": os.cpu_count()}
    fp = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    return {**facts, "vnni": any("vnni" in f for f in isa) or "asimddp" in isa, "fingerprint": fp}


def describe() -> str:
    """One line for a report: ``AMD EPYC, x86_64, 2 CPUs, ISA avx2 avx512f avx512_vnni (VNNI)``."""
    h = host()
    vnni = "with" if h["vnni"] else "without"
    isa = " ".join(h["isa"]) or "baseline"
    return f"{h['cpu']}, {h['machine']}, {h['cpus']} CPUs, ISA {isa} ({vnni} VNNI/dot-product)"
