"""Ethos-U Vela adapter: compile a .tflite for an NPU config and read its summary."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgeopt.config import VelaConfig
from edgeopt.runtimes.isolate import ChildFailed

NAME = "vela"


def version() -> str:
    from importlib.metadata import version as v

    return v("ethos-u-vela")


def _vela_command() -> list[str]:
    exe = Path(sys.executable).with_name("vela")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("vela")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from ethosu.vela.vela import main; sys.exit(main())"]


def compile_model(content: bytes, cfg: VelaConfig, *, timeout: float = 300.0) -> dict[str, Any]:
    """Run Vela (a child process with a timeout) and return its figures, with the time estimate from
    its cycle count at ``cfg.clock_hz``."""
    with tempfile.TemporaryDirectory(prefix="edgeopt-vela-") as tmp:
        d = Path(tmp)
        (d / "model.tflite").write_bytes(content)
        cmd = [
            *_vela_command(),
            str(d / "model.tflite"),
            "--accelerator-config",
            cfg.accelerator_config,
            "--system-config",
            cfg.system_config,
            "--memory-mode",
            cfg.memory_mode,
            "--output-dir",
            str(d / "out"),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ChildFailed(NAME, "hung", f"no answer within {timeout:.0f} s, killed") from None
        text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        if proc.returncode < 0:
            import signal

            raise ChildFailed(NAME, "crashed", f"killed by {signal.Signals(-proc.returncode).name}")
        summaries = list((d / "out").glob("*_summary_*.csv")) if (d / "out").is_dir() else []
        if proc.returncode != 0 or not summaries:
            last = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise ChildFailed(NAME, "failed", f"exit code {proc.returncode}: {last[0][:300]}")
        row = next(csv.DictReader(summaries[0].open()))
        compiled = next((d / "out").glob("*_vela.tflite"), None)
        npu = re.search(r"NPU operators = (\d+)", text)
        cpu = re.search(r"CPU operators = (\d+)", text)
        cycles = float(row["cycles_total"])
        return {
            "tool": f"ethos-u-vela {version()}",
            "accelerator_config": cfg.accelerator_config,
            "system_config": cfg.system_config,
            "memory_mode": cfg.memory_mode,
            "npu_ops": int(npu[1]) if npu else None,
            "cpu_ops": int(cpu[1]) if cpu else None,
            "sram_bytes": int(round(float(row["sram_memory_used"]) * 1024)),
            "flash_bytes": int(
                round((float(row["off_chip_flash_memory_used"]) + float(row["on_chip_flash_memory_used"])) * 1024)
            ),
            "cycles": cycles,
            "clock_hz": cfg.clock_hz,
            "estimated_ms": cycles / cfg.clock_hz * 1e3,
            "vela_inference_time_ms": float(row["inference_time"]) * 1e3,
            "macs": int(float(row["nn_macs"])),
            "compiled_bytes": compiled.stat().st_size if compiled else None,
            "method": f"Vela cycle estimate ({int(cycles)} cycles) at {cfg.clock_hz / 1e6:.0f} MHz",
        }
