"""``edgeopt phone``: the arm64 guest's setup, and the latency fit of the phone check.

``measure_counts`` counts the instructions MobileNet 1.0 224 (float32 and int8, random weights, as
``edgeopt calibrate`` builds it) executes per ``Invoke()`` on each phone profile's core model, at 1
thread and at the thread count of the profile's published figure; ``fit_report`` fits the CPI on the
published figures (``edgeopt.arm.latency``), holds each figure out in turn, and sets the held-out
errors beside those of the host-factor estimate (``edgeopt.calibrate``) measured the same way.
"""

from __future__ import annotations

import logging
import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from edgeopt import calibrate, hostinfo, progress
from edgeopt.arm import check, cores, guest, latency
from edgeopt.artifacts import sha256_bytes, write_json
from edgeopt.config import DeviceProfile
from edgeopt.errors import BadInput
from edgeopt.profiles import load_profile, shipped
from edgeopt.runtimes import litert_arm

log = logging.getLogger(__name__)

COUNT_TIMEOUT_S = 3600.0  # MobileNet float32 at 1 thread takes about a minute under QEMU with the plugin
COUNT_WINDOWS = 7  # invokes counted per run: the median critical path of several threads varies run to run


def phone_profiles(profiles: list[DeviceProfile] | None = None) -> list[DeviceProfile]:
    """The profiles with a core model and a published reference (default: the shipped ones)."""
    if profiles is None:
        profiles = [load_profile(n) for n in shipped()]
    return [p for p in profiles if p.arm is not None and p.reference is not None]


def measure_counts(
    profiles: list[DeviceProfile] | None = None, *, cache: str | Path | None = None, out: str | Path | None = None
) -> dict[str, Any]:
    """Count MobileNet's instructions per Invoke() on each profile's core; write them to ``out``."""
    todo = phone_profiles(profiles)
    if not todo:
        raise BadInput("no phone profile with both an `arm:` core and a published `reference:` latency")
    g = guest.setup(cache)
    if g.plugin is None:
        raise BadInput(f"cannot count instructions: {g.no_count}")
    runs = sorted({(p.arm.core, t) for p in todo for t in (1, p.reference.threads)})  # type: ignore[union-attr]
    tfl, x = calibrate.reference_tflites()
    counts = []
    with progress.task("count MobileNet instructions (QEMU)", len(runs) * len(tfl)) as advance:
        for precision, content in tfl.items():
            for core_name, threads in runs:
                t0 = time.perf_counter()
                r, _ = litert_arm.run(
                    g,
                    cores.core(core_name),
                    "litert_count",
                    content,
                    x[:1],
                    timeout=COUNT_TIMEOUT_S,
                    threads=threads,
                    windows=COUNT_WINDOWS,
                )
                s = check.summarize(threads, r["windows"])
                counts.append({"core": core_name, "precision": precision, **s.model_dump(mode="json")})
                log.info(
                    "%s %s, %d thread(s): %s instructions on the busiest thread (%s) in %.0f s",
                    core_name,
                    precision,
                    threads,
                    f"{s.critical_path:,}",
                    s.kernels,
                    time.perf_counter() - t0,
                )
                advance()
    data = {
        "schema": latency.COUNTS_SCHEMA,
        "model": "mobilenet_1.0_224, random weights (edgeopt.calibrate.reference_tflites; int8 calibrated on 8 "
        "random images), batch 1",
        "models_sha256": {k: sha256_bytes(v) for k, v in tfl.items()},
        "litert": version("ai-edge-litert"),
        "numpy": version("numpy"),
        "emulator": g.emulator.describe(),
        "method": f"instructions per Invoke() counted by edgeopt's QEMU TCG plugin (edgeopt/arm/icount.c), median "
        f"of {COUNT_WINDOWS} invokes after 2 warm-up invokes; critical_path: the busiest thread, waiting (YIELD/WFE "
        "blocks) excluded",
        "host": {**hostinfo.host(), "platform": platform.platform()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "counts": counts,
    }
    if out:
        write_json(out, data)
    return data


def host_factor_holdout(anchor: latency.Anchor, calibration: dict[str, Any] | None) -> float | None:
    """The host-factor estimate of ``anchor`` without it: this host's p50 of the same precision times the
    factor the profile's other published figure gives (the one other figure a host factor of that
    device can be fitted on). None without a calibration."""
    if not calibration:
        return None
    host = calibration.get("host_latency", {})
    other = "int8" if anchor.precision == "float32" else "float32"
    entry = calibration.get("profiles", {}).get(anchor.profile, {}).get(other)
    here = host.get(anchor.precision, {}).get(str(anchor.threads))
    if entry is None or here is None:
        return None
    return float(here["p50_ms"]) * float(entry["factor"])


def fit_report(
    profiles: list[DeviceProfile] | None = None,
    counts: dict[str, Any] | None = None,
    calibrations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The fit, every form's held-out errors, and the comparison with the host-factor estimate, held out
    the same way on each of ``calibrations`` (host calibrations scatter with the host's load; the
    Arm-work estimate is counted, not timed). The Arm-work estimate is ``better`` for a profile when its
    mean held-out error is below the host factor's on every calibration given: a clear win, not a draw
    within the host's noise."""
    calibrations = [c for c in calibrations or [] if c]
    todo = phone_profiles(profiles)
    counts = counts if counts is not None else latency.load_counts()
    data = latency.anchors(todo, counts)
    if len(data) < 2:
        raise BadInput("fewer than two published figures have instruction counts: nothing to fit and hold out")
    chosen = latency.choose(data)
    forms = []
    for form in latency.FORMS:
        held = latency.holdout(data, form)
        forms.append(
            {
                "form": form,
                "cpi": latency.fit(data, form),
                "held_out": len(held),
                "median_abs_error": latency.median_abs_error(held) if held else None,
                "max_abs_error": max((abs(p.error) for p in held), default=None),
                "chosen": form == chosen,
            }
        )
    held = {latency.label(p.anchor): p for p in latency.holdout(data, chosen)}
    rows = []
    for a in data:
        p = held.get(latency.label(a))
        hfs = [host_factor_holdout(a, c) for c in calibrations]
        hf = hfs[0] if hfs else None
        rows.append(
            {
                "profile": a.profile,
                "precision": a.precision,
                "threads": a.threads,
                "core": a.core,
                "clock_ghz": a.clock_hz / 1e9,
                "device_ms": a.device_ms,
                "critical_path": a.critical_path,
                "cpi_implied": a.cpi(),
                "arm_ms": p.predicted_ms if p else None,
                "arm_error": p.error if p else None,
                "arm_fitted_on": list(p.fitted_on) if p else [],
                "host_factor_ms": hf,
                "host_factor_error": hf / a.device_ms - 1 if hf else None,
                "host_factor_errors": [h / a.device_ms - 1 if h else None for h in hfs],  # one per calibration
                "source": a.source,
            }
        )
    verdicts = []
    for prof in todo:
        mine = [r for r in rows if r["profile"] == prof.name]
        arm = [abs(r["arm_error"]) for r in mine if r["arm_error"] is not None]
        arm_e = sum(arm) / len(arm) if arm else None
        hf_es = []  # the host factor's mean held-out error, per calibration
        for i in range(len(calibrations)):
            errs = [abs(r["host_factor_errors"][i]) for r in mine if r["host_factor_errors"][i] is not None]
            if errs:
                hf_es.append(sum(errs) / len(errs))
        better = "arm" if arm_e is not None and all(arm_e < e for e in hf_es) else "host-factor"
        verdicts.append(
            {
                "profile": prof.name,
                "core": prof.arm.core if prof.arm else None,
                "arm_mean_abs_error": arm_e,
                "host_factor_mean_abs_error": hf_es[0] if hf_es else None,
                "host_factor_mean_abs_errors": hf_es,
                "better": better,
                "gate_uses": prof.arm.latency.value if prof.arm else None,
            }
        )
    full = latency.fit(data, chosen)
    return {
        "schema": "edgeopt.phone-fit/1",
        "chosen_form": chosen,
        "cpi": full,
        "forms": forms,
        "rows": rows,
        "profiles": verdicts,
        "counts": {k: v for k, v in counts.items() if k != "counts"},
        "count_table": counts["counts"],
        "calibrations": [
            {k: c.get(k) for k in ("created", "auto", "host", "host_latency", "path")} for c in calibrations
        ],
        "method": latency.__doc__.strip().split("\n\n")[0] if latency.__doc__ else "",
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.0%}"


def fit_markdown(r: dict[str, Any]) -> str:
    """The fit report as Markdown tables (what `edgeopt phone fit` writes and prints)."""
    n = len(r["calibrations"])
    lines = [
        "| profile | precision | threads | core (clock) | published | instructions (busiest thread) | "
        f"Arm-work estimate, held out | error | host-factor estimate, held out | error{'s' if n > 1 else ''} |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["rows"]:
        arm = "-" if x["arm_ms"] is None else f"{x['arm_ms']:.1f} ms"
        hf = "-" if x["host_factor_ms"] is None else f"{x['host_factor_ms']:.1f} ms"
        errs = ", ".join(_pct(e) for e in x["host_factor_errors"]) or "-"
        lines.append(
            f"| {x['profile']} | {x['precision']} | {x['threads']} | {x['core']} ({x['clock_ghz']:.3g} GHz) | "
            f"{x['device_ms']} ms | {x['critical_path']:,} | {arm} | {_pct(x['arm_error'])} | {hf} | {errs} |"
        )
    lines += [
        "",
        "| form | CPI fitted on all figures | held-out median error | held-out max error | used |",
        "|---|---|---:|---:|---|",
    ]
    for f in r["forms"]:
        cpi = ", ".join(f"{k} {v:.3g}" for k, v in sorted(f["cpi"].items()))
        med = "-" if f["median_abs_error"] is None else f"{f['median_abs_error']:.0%}"
        mx = "-" if f["max_abs_error"] is None else f"{f['max_abs_error']:.0%}"
        lines.append(f"| {f['form']} | {cpi} | {med} | {mx} | {'yes' if f['chosen'] else ''} |")
    lines += [
        "",
        "| profile | core | Arm-work held-out error (mean) | host-factor held-out error (mean"
        + (", per calibration" if n > 1 else "")
        + ") | better | latency gate uses |",
        "|---|---|---:|---:|---|---|",
    ]
    for v in r["profiles"]:
        a = "-" if v["arm_mean_abs_error"] is None else f"{v['arm_mean_abs_error']:.0%}"
        h = ", ".join(f"{e:.0%}" for e in v["host_factor_mean_abs_errors"]) or "-"
        lines.append(f"| {v['profile']} | {v['core']} | {a} | {h} | {v['better']} | {v['gate_uses']} |")
    return "\n".join(lines) + "\n"
