"""Latency and energy of one inference on a board, estimated from the instructions the firmware check
counted in QEMU.

QEMU counts instructions, not cycles: it models no pipeline, cache or flash wait state. A core's
cycles are its instructions times a cycles-per-instruction factor, and the time is cycles / the
profile's clock. Energy is the board's average power while inferring (its published MLPerf Tiny
microjoules / milliseconds, ``McuConfig.energy``) times that time.

Where the factors come from (published figures only, the same ones ``edgeopt.mcu_latency`` uses):

- **Cortex-M4**: the geometric mean, over the published MLPerf Tiny CMSIS-NN results that the MAC
  model is fitted on (role ``fit``: OctoML v1.0 and Skymizer v1.1 on the NUCLEO-L4R5ZI at 120 MHz), of
  published cycles (latency x clock) / the instructions this check counts for the same architecture
  on the M4 (``MEASURED``). The M4 issues one instruction a cycle at best; loads, taken branches and
  the board's flash wait states add cycles, so the factor is above 1. It is an effective factor: it
  also absorbs the difference between those engines' CMSIS-NN code and today's TFLite Micro.
- **Cortex-M33 and M7**: the M4 factor x the core's published cycle ratio to the M4 for the same
  engine (``mcu_latency.core_factors``: X-CUBE-AI, Plumerai and HALE on M4, M33 and M7 boards) x the
  ratio of the instructions counted on the M4 to those counted on that core (the compilers' code for
  the cores differs by under 2%).

``comparison()`` sets the estimate against every published CMSIS-NN figure (the fit rows, the
hold-out rows neither model was fitted on, and the 2021 TFLite Micro reference as context) beside
the MAC model's estimate; ``method_for(core)`` says which of the two is used for a core: the one
with the smaller mean error on that core's hold-out rows (the M7 has none: it follows the M4, whose
transfer it shares). bench/firmware.md shows the table; ``make firmware-table`` measures ``MEASURED``
again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

from edgeopt import mcu_latency
from edgeopt.manifest import FirmwareEnergy, FirmwareLatency
from edgeopt.profiles import load_profile, shipped

BASE_CORE = mcu_latency.BASE_CORE
INSTRUCTIONS = "instructions"
MACS = "macs"

# Instructions per Invoke() of MLPerf Tiny's reference architectures (edgeopt.zoo: ResNet-8 "ic",
# DS-CNN "kws", MobileNetV1 0.25/96 "vww", FC autoencoder "ad"; int8, random weights, batch 1) counted
# by the firmware check with CMSIS-NN kernels: TFLite Micro 90b983c, CMSIS-NN 4ab83cc,
# arm-none-eabi-gcc 12.2.1, QEMU 7.2 (`make firmware-table`, bench/firmware.json).
MEASURED_SOURCE = (
    "firmware check (make firmware-table, bench/firmware.json): TFLite Micro 90b983c + CMSIS-NN 4ab83cc, "
    "arm-none-eabi-gcc 12.2.1, QEMU 7.2 -icount"
)
MEASURED: dict[str, dict[str, int]] = {
    "cortex-m4": {"ic": 29_858_443, "kws": 7_699_720, "vww": 24_395_192, "ad": 596_120},
    "cortex-m33": {"ic": 29_954_250, "kws": 7_682_000, "vww": 24_353_741, "ad": 595_985},
    "cortex-m7": {"ic": 30_013_160, "kws": 7_645_560, "vww": 24_314_194, "ad": 596_160},
}


@dataclass(frozen=True)
class CoreCpi:
    core: str
    cpi: float
    source: str


def _cycles(anchor: dict[str, Any]) -> float:
    return anchor["latency_ms"] * 1e-3 * anchor["clock_hz"]


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


@cache
def cpi_table() -> dict[str, CoreCpi]:
    """The cycles-per-instruction factor of every core with measured instructions (see the module)."""
    fit_rows = [a for a in mcu_latency.ANCHORS if a["role"] == "fit" and a["core"] == BASE_CORE]
    base = _geomean([_cycles(a) / MEASURED[BASE_CORE][a["benchmark"]] for a in fit_rows])
    fitted_on = "; ".join(sorted({f"{a['org']} {a['version']} {a['board']}" for a in fit_rows}))
    out = {
        BASE_CORE: CoreCpi(
            BASE_CORE,
            base,
            f"published cycles / counted instructions, geometric mean over {len(fit_rows)} MLPerf Tiny CMSIS-NN "
            "results "
            f"on the Cortex-M4 ({fitted_on}; edgeopt.mcu_latency.ANCHORS)",
        )
    }
    factors = mcu_latency.core_factors(mcu_latency.ANCHORS)
    for core, counts in MEASURED.items():
        if core == BASE_CORE or core not in factors:
            continue
        shared = [b for b in counts if b in MEASURED[BASE_CORE]]
        ratio = _geomean([MEASURED[BASE_CORE][b] / counts[b] for b in shared])
        out[core] = CoreCpi(
            core,
            base * factors[core] * ratio,
            f"the Cortex-M4's {base:.3g} x {factors[core]:.3g} (published {core} / Cortex-M4 cycles of the same "
            f"engine, edgeopt.mcu_latency.core_factors) x {ratio:.4g} (instructions counted on the M4 / on {core})",
        )
    return out


def instruction_estimate_ms(instructions: float, core: str, clock_hz: float) -> float:
    return instructions * cpi_table()[core].cpi / clock_hz * 1e3


@cache
def comparison() -> list[dict[str, Any]]:
    """Every published MLPerf Tiny CMSIS-NN result the MAC model uses, with both estimates and their errors."""
    rows = []
    for a in mcu_latency.ANCHORS:
        if a["kernels"] != "cmsis-nn" or a["core"] not in MEASURED or a["benchmark"] not in MEASURED[a["core"]]:
            continue
        ins = MEASURED[a["core"]][a["benchmark"]]
        by_ins = instruction_estimate_ms(ins, a["core"], a["clock_hz"])
        by_macs = mcu_latency.predict_ms(mcu_latency.REFERENCE_MIX[a["benchmark"]], a["core"], a["clock_hz"])
        rows.append(
            a
            | {
                "instructions": ins,
                "cycles": _cycles(a),
                "cycles_per_instruction": _cycles(a) / ins,
                "instructions_ms": by_ins,
                "instructions_error_pct": (by_ins - a["latency_ms"]) / a["latency_ms"] * 100,
                "macs_ms": by_macs,
                "macs_error_pct": (by_macs - a["latency_ms"]) / a["latency_ms"] * 100,
            }
        )
    return rows


def _mean_abs(rows: list[dict[str, Any]], key: str) -> float | None:
    return sum(abs(r[key]) for r in rows) / len(rows) if rows else None


@cache
def verdicts() -> dict[str, dict[str, Any]]:
    """Per core: both estimates' mean and worst error on its hold-out rows, and which is used."""
    out: dict[str, dict[str, Any]] = {}
    rows = [r for r in comparison() if r["role"] == "holdout"]
    for core in sorted(cpi_table()):
        mine = [r for r in rows if r["core"] == core]
        ins, macs = _mean_abs(mine, "instructions_error_pct"), _mean_abs(mine, "macs_error_pct")
        out[core] = {
            "holdout_rows": len(mine),
            "instructions_mean_error_pct": ins,
            "instructions_max_error_pct": max((abs(r["instructions_error_pct"]) for r in mine), default=None),
            "macs_mean_error_pct": macs,
            "macs_max_error_pct": max((abs(r["macs_error_pct"]) for r in mine), default=None),
        }
    for core, v in out.items():
        if v["holdout_rows"]:
            v["used"] = INSTRUCTIONS if v["instructions_mean_error_pct"] < v["macs_mean_error_pct"] else MACS
            v["why"] = f"smaller mean error on its {v['holdout_rows']} hold-out results"
        else:
            v["used"] = out[BASE_CORE]["used"]
            v["why"] = (
                f"no published CMSIS-NN result on {core}: follows the Cortex-M4, whose transfer both estimates share"
            )
    return out


def method_for(core: str) -> str:
    """``instructions`` when the firmware check's estimate is the better one for ``core``, else ``macs``."""
    v = verdicts().get(core)
    return v["used"] if v else MACS


def profiles_for(cpu: Any, names: list[str] | None) -> list[Any]:
    """The profiles named, or else every shipped profile whose MCU core is ``cpu``."""
    if names:
        return [load_profile(n) for n in names]
    out = []
    for n in shipped():
        p = load_profile(n)
        # a profile with the firmware check is its board's profile again: the board once is enough
        if p.mcu is not None and p.mcu.core.value == str(cpu) and p.firmware is None:
            out.append(p)
    return out


def latencies(
    instructions: int,
    cpu: Any,
    profiles: list[Any] | None,
    structure: dict[str, Any] | None = None,
    kernels: str = "cmsis-nn",
) -> list[FirmwareLatency]:
    """The latency estimate on every profile whose core is ``cpu`` (the instructions were counted for it),
    beside the MAC model's estimate for the model ``structure`` (``edgeopt.tflite.inspect``). The MAC
    model is of CMSIS-NN kernels: with the reference kernels only the instruction estimate applies."""
    c = cpi_table().get(str(cpu))
    if c is None:
        return []
    v = dict(verdicts()[c.core])
    if kernels != "cmsis-nn":
        v.update(used=INSTRUCTIONS, holdout_rows=0, why=f"the MAC model is of CMSIS-NN kernels, these are {kernels}")
    if v["holdout_rows"]:
        errors = (
            f"off by {v['instructions_mean_error_pct']:.0f}% on average on {c.core}'s {v['holdout_rows']} published "
            f"hold-out results, the MAC estimate by {v['macs_mean_error_pct']:.0f}%"
        )
        used = f"the latency gate uses {'this estimate' if v['used'] == INSTRUCTIONS else 'the MAC estimate'}: {errors}"
    else:
        used = (
            f"the latency gate uses the {'instruction' if v['used'] == INSTRUCTIONS else 'MAC'} estimate ({v['why']})"
        )
    out = []
    for p in profiles or []:
        if p.mcu is None or p.mcu.core.value != c.core:
            continue
        ms = instructions * c.cpi / p.mcu.clock_hz * 1e3
        macs_ms = mcu_latency.estimate(structure, c.core, p.mcu.clock_hz).ms if structure is not None else float("nan")
        out.append(
            FirmwareLatency(
                profile=p.name,
                core=c.core,
                clock_hz=p.mcu.clock_hz,
                ms=ms,
                cycles_per_instruction=c.cpi,
                macs_ms=macs_ms,
                used=v["used"] if structure is not None else INSTRUCTIONS,
                method=f"{instructions:,} instructions x {c.cpi:.3g} cycles per instruction / "
                f"{p.mcu.clock_hz / 1e6:g} MHz; {used}",
                source=c.source,
            )
        )
    return out


def energies(latency: list[FirmwareLatency], profiles: list[Any] | None) -> list[FirmwareEnergy]:
    """Energy on every profile with published board energy: its average power while inferring x latency."""
    by_name = {p.name: p for p in profiles or []}
    out = []
    for lat in latency:
        p = by_name.get(lat.profile)
        refs = p.mcu.energy if p is not None and p.mcu is not None else []
        if not refs:
            continue
        mw = sum(r.microjoules / r.latency_ms for r in refs) / len(refs)  # uJ / ms = mW
        which = "from instructions" if lat.used == INSTRUCTIONS else "from MACs"
        out.append(
            FirmwareEnergy(
                profile=lat.profile,
                microjoules=mw * lat.gate_ms,
                milliwatts=mw,
                method=f"{mw:.1f} mW (the board's average power while inferring) x {lat.gate_ms:.3g} ms "
                f"(the latency estimate the gate uses, {which})",
                source="; ".join(
                    f"{r.benchmark}: {r.microjoules:g} uJ in {r.latency_ms:g} ms, {r.source}" for r in refs
                ),
            )
        )
    return out
