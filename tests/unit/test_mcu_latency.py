"""MCU latency estimate: the model on made-up op mixes, its calibration on published MLPerf Tiny results
(hold-out error), and the latency gate of a Cortex-M profile on a real int8 .tflite."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt import gates, mcu_latency, zoo
from edgeopt.config import Budget, ConvertConfig, DeviceProfile, McuConfig, McuCore
from edgeopt.errors import BadInput
from edgeopt.profiles import load_profile
from edgeopt.stages.convert import convert
from edgeopt.tflite import inspect
from edgeopt.validation import GateStatus, Measurements

MIX = {"conv": 4_000_000, "depthwise": 500_000, "fully_connected": 200_000, "ops": 12}


def structure_of(ops: list[tuple[str, int]]) -> dict:
    """The part of ``edgeopt.tflite.inspect``'s answer the estimate reads."""
    return {"macs_per_op": [{"op": op, "macs": macs} for op, macs in ops]}


def test_op_mix_sums_macs_per_class_and_counts_every_op():
    s = structure_of([("CONV_2D", 100), ("DEPTHWISE_CONV_2D", 30), ("CONV_2D", 50), ("ADD", 7), ("FULLY_CONNECTED", 9)])
    assert mcu_latency.op_mix(s) == {"conv": 150, "depthwise": 30, "fully_connected": 9, "ops": 5}


@pytest.mark.parametrize("cls", mcu_latency.CLASSES)
def test_estimate_grows_with_the_macs_of_every_class(cls):
    base = mcu_latency.predict_ms(MIX, "cortex-m7", 216e6)
    more = mcu_latency.predict_ms(MIX | {cls: MIX[cls] * 2}, "cortex-m7", 216e6)
    assert more > base
    # linear in MACs: the added time is the added MACs at that class's fitted rate
    km = mcu_latency.model()
    added = MIX[cls] * km.cycles_per_mac[cls] * km.core_factors["cortex-m7"] / 216e6 * 1e3
    assert more - base == pytest.approx(added, rel=1e-9)


def test_estimate_scales_with_the_inverse_of_the_clock():
    at_100 = mcu_latency.predict_ms(MIX, "cortex-m4", 100e6)
    assert mcu_latency.predict_ms(MIX, "cortex-m4", 200e6) == pytest.approx(at_100 / 2, rel=1e-12)
    assert mcu_latency.predict_ms(MIX, "cortex-m4", 50e6) == pytest.approx(at_100 * 2, rel=1e-12)


def test_an_unknown_core_or_clock_is_bad_input():
    with pytest.raises(BadInput, match="no MCU latency model for core 'cortex-m0'; known: cortex-m33, cortex-m4"):
        mcu_latency.predict_ms(MIX, "cortex-m0", 48e6)
    with pytest.raises(BadInput, match="clock_hz must be positive"):
        mcu_latency.predict_ms(MIX, "cortex-m4", 0)


def test_every_profile_core_has_a_factor_from_published_results():
    assert {c.value for c in McuCore} == set(mcu_latency.model().core_factors)


def test_anchors_are_published_figures_with_their_source():
    for a in mcu_latency.ANCHORS:
        assert a["latency_ms"] == pytest.approx(1000 / a["throughput"])
        assert f"tiny_results_{a['version']}/closed/" in a["source"] and a["source"].endswith("/results.txt")
        assert a["benchmark"] in mcu_latency.REFERENCE_MIX and a["role"] in {"fit", "core", "holdout", "context"}
    fit_boards = {(a["org"], a["board"]) for a in mcu_latency.ANCHORS if a["role"] == "fit"}
    held_boards = {(a["org"], a["board"]) for a in mcu_latency.ANCHORS if a["role"] == "holdout"}
    assert fit_boards and held_boards and not fit_boards & held_boards


def test_core_factors_of_different_engines_agree():
    """The transfer from Cortex-M4 to M7 and M33 assumes a core's speed-up does not depend on the engine:
    each engine's own factor (X-CUBE-AI, Plumerai, HALE) is within 8% of the pooled one."""
    pooled = mcu_latency.model().core_factors
    for engine in ("x-cube-ai", "plumerai", "hale"):
        own = mcu_latency.core_factors([a for a in mcu_latency.ANCHORS if a["kernels"] == engine])
        for core in ("cortex-m7", "cortex-m33"):
            assert abs(own[core] / pooled[core] - 1) < 0.08, (engine, core, own[core], pooled[core])
    assert 0.5 < pooled["cortex-m7"] < 0.6 and 0.78 < pooled["cortex-m33"] < 0.88


def test_holdout_error_on_published_results_not_fitted_on():
    """Twelve published CMSIS-NN figures the constants were not fitted on (Nuvoton v1.1 M467 Cortex-M4 at
    200 MHz; OctoML v1.0 nRF5340 and Renesas v0.7 RA6M4, both Cortex-M33): mean absolute error 17.8%,
    worst 50.2% (Nuvoton's visual wake words, where ONNC's depthwise kernels beat the fit's)."""
    rows = mcu_latency.holdout()
    errors = np.array([r["error_pct"] for r in rows])
    assert len(rows) == 12
    assert np.mean(np.abs(errors)) < 20
    assert np.max(np.abs(errors)) < 55
    assert mcu_latency.max_holdout_error_pct() == pytest.approx(np.max(np.abs(errors)))
    assert mcu_latency.mean_holdout_error_pct() == pytest.approx(np.mean(np.abs(errors)))
    # The estimate is not biased one way over the hold-out boards: it errs on both sides.
    assert errors.min() < -10 and errors.max() > 10


def test_fit_reproduces_the_figures_it_was_fitted_on_better_than_the_holdout():
    fitted = [abs(r["error_pct"]) for r in mcu_latency.holdout(role="fit")]
    assert np.mean(fitted) < np.mean([abs(r["error_pct"]) for r in mcu_latency.holdout()])
    # The constants are the non-negative least-squares fit on relative error, as scipy solves it too.
    from scipy.optimize import nnls

    rows = [a for a in mcu_latency.ANCHORS if a["role"] == "fit"]
    factors = mcu_latency.core_factors(mcu_latency.ANCHORS)
    a = np.array([[mcu_latency.REFERENCE_MIX[r["benchmark"]][c] for c in mcu_latency.CLASSES] for r in rows])
    y = np.array([r["latency_ms"] * 1e-3 * r["clock_hz"] / factors[r["core"]] for r in rows])
    want, _ = nnls(a / y[:, None], np.ones(len(rows)))
    got = mcu_latency.model().cycles_per_mac
    assert [got[c] for c in mcu_latency.CLASSES] == pytest.approx(list(want), rel=1e-6)
    # Physically possible on a Cortex-M4: CMSIS-NN's SMLAD does at most 2 MACs a cycle, and no class costs
    # more cycles per MAC than a plain C loop (~20); a class the fit dropped to 0 would fail here.
    assert all(0.5 <= v <= 20 for v in got.values()), got


@pytest.mark.parametrize(("name", "benchmark"), [("ds_cnn", "kws"), ("fc_autoencoder", "ad")])
def test_zoo_models_have_the_reference_op_mix_the_anchors_use(name, benchmark):
    ref = zoo.REFERENCE_COUNTS[name]
    m = zoo.build(name, ref["input_shape"], ref["classes"])
    mix = mcu_latency.op_mix(inspect(convert(m, ConvertConfig(quantization="float32")).tflite))
    want = mcu_latency.REFERENCE_MIX[benchmark]
    assert {c: mix[c] for c in mcu_latency.CLASSES} == {c: want[c] for c in mcu_latency.CLASSES}


# ---- the gate ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_int8(digits) -> dict:
    """inspect() of an int8 tiny_cnn (random weights: the estimate reads shapes, not values)."""
    model = zoo.build("tiny_cnn", digits.input_shape, digits.num_classes)
    return inspect(convert(model, ConvertConfig(quantization="int8", calibration_samples=20), data=digits).tflite)


def m7(budget_ms: float) -> DeviceProfile:
    mcu = McuConfig(core="cortex-m7", clock_hz=216e6, source="test")
    return DeviceProfile(name="m7", runtime="tflm", budgets=Budget(latency_p90_ms=budget_ms), mcu=mcu)


@pytest.mark.parametrize(("factor", "status"), [(1.01, GateStatus.passed), (0.99, GateStatus.failed)])
def test_latency_gate_of_a_cortex_m_profile_is_the_estimate(tiny_int8, factor, status):
    est = mcu_latency.estimate(tiny_int8, "cortex-m7", 216e6)
    assert est.macs == sum(op["macs"] for op in tiny_int8["macs_per_op"] if op["op"] in ("CONV_2D", "FULLY_CONNECTED"))
    g = gates.latency_gate(m7(est.ms * factor), Measurements(structure=tiny_int8, samples=1), {}, None)
    assert g.status is status and g.measured == pytest.approx(est.ms) and g.unit == "ms"
    assert g.detail.startswith(f"{gates.fmt(est.ms, 'ms')} (budget <= ")
    assert "estimate for CMSIS-NN int8 kernels on cortex-m7 at 216 MHz" in g.detail and g.method == est.method
    assert f"{est.macs:,} MACs" in g.method and "% at worst, on the published results it was not fitted on" in g.method


def test_latency_gate_estimate_follows_the_clock(tiny_int8):
    fast = m7(1.0).model_copy(update={"mcu": McuConfig(core="cortex-m7", clock_hz=432e6, source="test")})
    m = Measurements(structure=tiny_int8, samples=1)
    slow_ms = gates.latency_gate(m7(1.0), m, {}, None).measured
    assert gates.latency_gate(fast, m, {}, None).measured == pytest.approx(slow_ms / 2)


def test_latency_gate_of_a_float_model_is_not_evaluated(digits):
    model = zoo.build("tiny_cnn", digits.input_shape, digits.num_classes)
    s = inspect(convert(model, ConvertConfig(quantization="float32")).tflite)
    g = gates.latency_gate(m7(100), Measurements(structure=s, samples=1), {}, None)
    assert g.status is GateStatus.not_evaluated and "covers int8 models" in g.detail and "float32" in g.detail


def test_shipped_m7_profile_estimates_the_mlperf_tiny_models_against_its_budget():
    """cortex-m7-512k's 100 ms admits the visual wake words reference and not ResNet-8 (see its YAML)."""
    p = load_profile("cortex-m7-512k")
    assert p.mcu.core is McuCore.cortex_m7 and p.mcu.clock_hz == 216_000_000 and p.budgets.latency_p90_ms == 100
    ms = {
        b: mcu_latency.predict_ms(mix, p.mcu.core.value, p.mcu.clock_hz) for b, mix in mcu_latency.REFERENCE_MIX.items()
    }
    assert ms["vww"] < 100 < ms["ic"]
