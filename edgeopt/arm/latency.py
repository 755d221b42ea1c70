"""Phone latency from the work LiteRT's Arm kernels do: instructions per ``Invoke()`` on the phone's
core model (counted under QEMU, ``edgeopt.arm.check``) times a cycles-per-instruction figure, divided
by the core's clock:

    latency = CPI x W / f

where W is the critical path (the busiest thread's instructions, waiting excluded) at the profile's
thread count and f the clock of the cores the threads run on (the profile's ``arm.clock_hz``). The
counts do not depend on the host: the same model gives the same W on any machine.

The CPI is fitted on the published MobileNet 1.0 224 figures of the phone profiles (float32 and int8;
Pixel 2 at 1 thread, Pixel 3 and 4 at 4 threads; ANCHORS.md) against the instructions the same
architecture executes on each phone's core model (``mobilenet_counts.json`` beside this file, measured
by ``edgeopt phone fit --measure``). Three forms, from one CPI for everything to one per core, are
each tested by leaving one published figure out, fitting on the rest and predicting it (``holdout``);
the form with the smallest median held-out error is used (``choose``), and every figure in the table
of ``edgeopt phone fit`` is held out in that way. A fit is least squares on log latency, i.e. a CPI
is the geometric mean of the figures' ``t f / W`` in its group.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from edgeopt.errors import BadInput
from edgeopt.profiles import load_profile, shipped

COUNTS = Path(__file__).with_name("mobilenet_counts.json")
COUNTS_SCHEMA = "edgeopt.arm-counts/1"

# Groups sharing one CPI, by form: what the anchors can tell apart with 6 figures.
FORMS: dict[str, Callable[[str, str], str]] = {
    "one CPI": lambda core, precision: "all",
    "CPI per precision": lambda core, precision: precision,
    "CPI per core": lambda core, precision: core,
}


@dataclass(frozen=True)
class Anchor:
    """A published device latency and the instructions the same architecture executes on its core."""

    profile: str
    core: str
    clock_hz: float
    threads: int
    precision: str  # float32 or int8
    device_ms: float
    source: str
    critical_path: int  # instructions per Invoke() on the busiest thread

    def cpi(self) -> float:
        return self.device_ms * 1e-3 * self.clock_hz / self.critical_path


@dataclass(frozen=True)
class Prediction:
    anchor: Anchor
    predicted_ms: float
    fitted_on: tuple[str, ...]  # the anchors' labels it was fitted on

    @property
    def error(self) -> float:
        """Relative error of the prediction (+0.10: 10% too slow)."""
        return self.predicted_ms / self.anchor.device_ms - 1.0


def label(a: Anchor) -> str:
    return f"{a.profile} {a.precision}"


def load_counts(path: str | Path | None = None) -> dict[str, Any]:
    p = Path(path) if path else COUNTS
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"{p}: no MobileNet instruction counts ({e}); run `edgeopt phone fit --measure`") from None
    if data.get("schema") != COUNTS_SCHEMA:
        raise BadInput(f"{p}: schema {data.get('schema')!r}, expected {COUNTS_SCHEMA}")
    return data


def anchors(profiles: Iterable[Any], counts: dict[str, Any]) -> list[Anchor]:
    """One anchor per phone profile with an ``arm`` core and a published reference, and precision."""
    table = {(c["core"], c["precision"], c["threads"]): c for c in counts["counts"]}
    out = []
    for p in profiles:
        ref, arm = getattr(p, "reference", None), getattr(p, "arm", None)
        if ref is None or arm is None:
            continue
        for precision, ms in (("float32", ref.float32_ms), ("int8", ref.int8_ms)):
            c = table.get((arm.core, precision, ref.threads))
            if ms is None or c is None:
                continue
            out.append(
                Anchor(p.name, arm.core, arm.clock_hz, ref.threads, precision, ms, ref.source, c["critical_path"])
            )
    return out


def fit(data: list[Anchor], form: str) -> dict[str, float]:
    """The CPI of each group of ``form``: the geometric mean of its anchors' ``t f / W``."""
    key = FORMS[form]
    groups: dict[str, list[float]] = {}
    for a in data:
        groups.setdefault(key(a.core, a.precision), []).append(math.log(a.cpi()))
    return {g: math.exp(statistics.fmean(v)) for g, v in groups.items()}


def predict(
    cpis: dict[str, float], form: str, core: str, precision: str, instructions: float, clock_hz: float
) -> float | None:
    cpi = cpis.get(FORMS[form](core, precision))
    return None if cpi is None else cpi * instructions / clock_hz * 1e3


def holdout(data: list[Anchor], form: str) -> list[Prediction]:
    """Each anchor predicted by a fit on the others (none when no other anchor shares its group)."""
    out = []
    for i, a in enumerate(data):
        rest = data[:i] + data[i + 1 :]
        ms = predict(fit(rest, form), form, a.core, a.precision, a.critical_path, a.clock_hz)
        if ms is not None:
            out.append(
                Prediction(
                    a,
                    ms,
                    tuple(
                        label(r) for r in rest if FORMS[form](r.core, r.precision) == FORMS[form](a.core, a.precision)
                    ),
                )
            )
    return out


def median_abs_error(preds: list[Prediction]) -> float:
    return statistics.median(abs(p.error) for p in preds) if preds else math.inf


def choose(data: list[Anchor]) -> str:
    """The form with the smallest median held-out error (ties: the fewer CPIs), over forms that
    predict every anchor when it is held out."""
    scored = [(median_abs_error(h), len(fit(data, f)), f) for f in FORMS if len(h := holdout(data, f)) == len(data)]
    if not scored:
        raise BadInput("too few published figures to hold any out")
    return min(scored)[2]


@dataclass(frozen=True)
class Fit:
    form: str
    cpis: dict[str, float]
    anchors: list[Anchor]
    held_out: list[Prediction]
    counts: dict[str, Any]  # the provenance of the counts (without the counts)

    def describe(self) -> str:
        cpis = ", ".join(f"{g} {v:.3g}" for g, v in sorted(self.cpis.items()))
        return (
            f"CPI fitted on {len(self.anchors)} published MobileNet 1.0 224 figures ({self.form}: {cpis}); "
            f"held-out median error {median_abs_error(self.held_out):.0%}"
        )


def fitted(profiles: Iterable[Any] | None = None, counts: dict[str, Any] | None = None) -> Fit:
    """The chosen fit on the phone profiles (default: the shipped ones) and counts (default: the
    shipped ``mobilenet_counts.json``); the default fit is computed once."""
    if profiles is None and counts is None:
        return _shipped_fit()
    if profiles is None:
        profiles = _shipped_profiles()
    counts = counts if counts is not None else load_counts()
    data = anchors(profiles, counts)
    form = choose(data)
    return Fit(form, fit(data, form), data, holdout(data, form), {k: v for k, v in counts.items() if k != "counts"})


def _shipped_profiles() -> list[Any]:
    return [load_profile(n) for n in shipped()]


@cache
def _shipped_fit() -> Fit:
    return fitted(_shipped_profiles(), load_counts())


@dataclass(frozen=True)
class Estimate:
    ms: float
    cpi: float
    method: str


def estimate(
    instructions: int, core: str, clock_hz: float, precision: str, threads: int, f: Fit | None = None
) -> Estimate | None:
    """The latency of ``instructions`` (critical path per Invoke()) on ``core`` at ``clock_hz``; None when
    the fit has no CPI for this core and precision (a core no published figure was measured on)."""
    f = f or fitted()
    group = FORMS[f.form](core, precision)
    cpi = f.cpis.get(group)
    if cpi is None:
        return None
    ms = cpi * instructions / clock_hz * 1e3
    method = (
        f"estimate from Arm work: {instructions:,} instructions per Invoke() on the busiest of {threads} thread(s) "
        f"({core}, counted under QEMU) x CPI {cpi:.3g} / {clock_hz / 1e9:.3g} GHz; {f.describe()}"
    )
    return Estimate(ms, cpi, method)


def for_profile(arm: dict[str, Any], profile: Any, precision: str) -> tuple[Estimate | None, str]:
    """The estimate of a phone profile's latency from validate's phone-check measurements (``arm``: core
    name -> ArmCheck or its dict), or None and why there is none."""
    core = profile.arm.core
    check = arm.get(core)
    counts = (check.get("counts") if isinstance(check, dict) else getattr(check, "counts", None)) or []
    count = next((c for c in counts if (c["threads"] if isinstance(c, dict) else c.threads) == profile.threads), None)
    if count is None:
        return None, f"no instruction count on {core} at {profile.threads} thread(s)"
    critical = count["critical_path"] if isinstance(count, dict) else count.critical_path
    try:
        f = fitted()
    except BadInput as e:
        return None, str(e)
    est = estimate(critical, core, profile.arm.clock_hz, precision, profile.threads, f)
    if est is None:
        return None, (
            f"no published figure was measured on {core}, so there is no CPI to turn its instructions into time "
            f"({critical:,} per Invoke()); set `arm: {{latency: host-factor}}` in the profile"
        )
    return est, ""
