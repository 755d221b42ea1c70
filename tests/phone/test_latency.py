"""The Arm-work latency estimate: fit, hold-out, choice of form, and the shipped fit (no emulator needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeopt import phone
from edgeopt.arm import latency
from edgeopt.arm.latency import Anchor

ROOT = Path(__file__).resolve().parents[2]


def anchor(profile: str, core: str, precision: str, cpi: float, insns: int = 10_000_000, clock: float = 2e9) -> Anchor:
    """A made-up published figure that a core running at ``cpi`` would give."""
    return Anchor(profile, core, clock, 4, precision, cpi * insns / clock * 1e3, "made up", insns)


def test_one_cpi_everywhere_is_found_and_held_out_exactly():
    data = [anchor(f"p{i}", f"c{i}", p, 0.8, 10_000_000 * (i + 1)) for i in range(3) for p in ("float32", "int8")]
    for form in latency.FORMS:
        assert all(abs(p.error) < 1e-12 for p in latency.holdout(data, form)), form
    assert latency.choose(data) == "one CPI"  # every form is exact: the fewest CPIs wins
    assert latency.fit(data, "one CPI") == {"all": pytest.approx(0.8)}


def test_cpi_per_core_is_chosen_when_the_cores_differ():
    data = [anchor(f"p{c}", f"core{c}", p, cpi) for c, cpi in enumerate((1.5, 1.0, 0.6)) for p in ("float32", "int8")]
    assert latency.choose(data) == "CPI per core"
    assert all(abs(p.error) < 1e-12 for p in latency.holdout(data, "CPI per core"))
    assert latency.median_abs_error(latency.holdout(data, "one CPI")) > 0.2


def test_a_held_out_figure_does_not_move_its_own_prediction():
    data = [anchor("a", "x", "float32", 1.0), anchor("a", "x", "int8", 2.0), anchor("b", "y", "int8", 1.5)]
    before = {latency.label(p.anchor): p.predicted_ms for p in latency.holdout(data, "one CPI")}
    data[0] = Anchor("a", "x", 2e9, 4, "float32", data[0].device_ms * 10, "made up", data[0].critical_path)
    after = {latency.label(p.anchor): p.predicted_ms for p in latency.holdout(data, "one CPI")}
    assert after["a float32"] == before["a float32"] and after["a int8"] != before["a int8"]
    [p] = [p for p in latency.holdout(data, "CPI per core") if latency.label(p.anchor) == "a float32"]
    assert p.fitted_on == ("a int8",) and p.predicted_ms == pytest.approx(2.0 * 10_000_000 / 2e9 * 1e3)
    # b's core has one figure: held out, nothing is left to fit its CPI on
    assert [latency.label(p.anchor) for p in latency.holdout(data, "CPI per core")] == ["a float32", "a int8"]


def test_estimate_names_its_method_and_knows_only_fitted_cores():
    data = [anchor(f"p{c}", f"core{c}", p, cpi) for c, cpi in enumerate((1.5, 1.0)) for p in ("float32", "int8")]
    fit = latency.Fit(
        "CPI per core", latency.fit(data, "CPI per core"), data, latency.holdout(data, "CPI per core"), {}
    )
    e = latency.estimate(1_000_000, "core1", 2.5e9, "int8", 4, fit)
    assert e is not None and e.ms == pytest.approx(1.0 * 1e6 / 2.5e9 * 1e3) and e.cpi == pytest.approx(1.0)
    assert "1,000,000 instructions per Invoke() on the busiest of 4 thread(s)" in e.method and "2.5 GHz" in e.method
    assert latency.estimate(1_000_000, "armv9-i8mm", 3e9, "int8", 1, fit) is None


def test_host_factor_holdout_uses_the_profiles_other_figure():
    a = Anchor("pixel4-cpu4", "kryo-485-gold", 2.42e9, 4, "int8", 5.0, "s", 17_000_000)
    cal = {
        "host_latency": {"int8": {"4": {"p50_ms": 2.0}}, "float32": {"4": {"p50_ms": 7.0}}},
        "profiles": {"pixel4-cpu4": {"float32": {"factor": 2.0}, "int8": {"factor": 2.5}}},
    }
    assert phone.host_factor_holdout(a, cal) == pytest.approx(4.0)  # 2.0 ms x float32's factor, not int8's own
    assert phone.host_factor_holdout(a, None) is None


def test_shipped_fit_is_the_one_bench_phone_reports():
    """The shipped counts give the fit and held-out errors bench/phone/fit.json records (and the docs
    quote); every published figure of the shipped phone profiles is held out."""
    report = phone.fit_report(counts=latency.load_counts())
    recorded = json.loads((ROOT / "bench" / "phone" / "fit.json").read_text())
    assert report["chosen_form"] == recorded["chosen_form"] == latency.fitted().form
    assert len(report["rows"]) == 6 and all(r["arm_ms"] is not None for r in report["rows"])
    for mine, theirs in zip(report["rows"], recorded["rows"], strict=True):
        assert (mine["profile"], mine["precision"]) == (theirs["profile"], theirs["precision"])
        assert mine["arm_ms"] == pytest.approx(theirs["arm_ms"]) and mine["critical_path"] == theirs["critical_path"]
    assert report["cpi"] == pytest.approx(recorded["cpi"])
