"""Judging without an interpreter: every gate of edgeopt.gates on made-up measurements (passed,
failed, not evaluated with the reason), how measured values are shown, and how a ValidationResult
turns into an error and an exit code."""

from __future__ import annotations

import json
import re

import pytest

from edgeopt import gates
from edgeopt.config import Budget, DeviceProfile, ValidateConfig, VelaConfig
from edgeopt.errors import GateFailed, RuntimeCrash
from edgeopt.report import junit_xml, markdown, write_json_report
from edgeopt.validation import Gate, GateStatus, Measurements, ValidationResult

P, F, N = GateStatus.passed, GateStatus.failed, GateStatus.not_evaluated

STRUCTURE = {
    "bytes": 5016,
    "gzip_bytes": 4100,
    "params": 4538,
    "macs": 9024,
    "op_counts": {"CONV_2D": 1, "FULLY_CONNECTED": 2, "SOFTMAX": 1},
    "constant_dtypes": {"int8": 3, "int32": 3},
    "custom_ops": [],
    "inputs": [{"dtype": "int8", "shape": [1, 8, 8, 1]}],
    "outputs": [{"dtype": "int8", "shape": [1, 10]}],
}


def cross(max_diff: float = 1.0, agree: bool = True, unit: str = "steps", allowed: int = 1) -> dict:
    return {
        "samples": 200,
        "output_max_diff": max_diff + 1,
        "output_values_beyond_tolerance": 0,
        "values": 2000,
        "top1_agreement": 0.995,
        "unit": unit,
        "allowed": allowed,
        "compared": "logits (input of the final SOFTMAX)",
        "max_diff": max_diff,
        "agree": agree,
        "logits_max_diff": max_diff,
    }


def latency(p90: float = 0.02, threads: int = 1) -> dict:
    return {
        "threads": threads,
        "runs": 60,
        "init_ms": 1.5,
        "p50_ms": p90 / 2,
        "p90_ms": p90,
        "p99_ms": p90 * 2,
        "mean_ms": p90 / 2,
        "std_ms": 0.001,
        "times_ms": [p90 / 2] * 60,
        "method": "measured on this host",
    }


VELA = {
    "npu_ops": 4,
    "cpu_ops": 0,
    "sram_bytes": 12_288,
    "flash_bytes": 20_480,
    "cycles": 5000,
    "estimated_ms": 0.01,
    "method": "Vela cycle estimate (5000 cycles) at 500 MHz",
}


def measured(**over) -> Measurements:
    """A complete set of measurements of a small int8 model; ``over`` replaces or removes (None) fields."""
    m = {
        "structure": STRUCTURE,
        "samples": 360,
        "runtime": "ai_edge_litert (test)",
        "accuracy": 0.9306,
        "outputs_finite": True,
        "predicted_classes": 10,
        "keras_accuracy": 0.9333,
        "agreement": 0.99,
        "accuracy_drop_vs_keras": 0.9333 - 0.9306,
        "max_abs_output_diff": 0.02,
        "kernel_cross_check": cross(),
        "latency": {"1": latency()},
        "tflm": {"arena_bytes": 2720, "samples": 100, "method": "binary search", "vs_litert": cross()},
        "vela": {"ethos-u55-128": VELA},
    }
    m["tflm"].update(max_diff_vs_litert=1.0, unit="steps", agree=True)
    m.update(over)
    return Measurements.model_validate(m)


def one(gs: list[Gate], name: str, profile: str | None = None) -> Gate:
    found = [g for g in gs if g.gate == name and (profile is None or g.profile == profile)]
    assert len(found) == 1, [g.key for g in gs]
    return found[0]


def profile_gates(p: DeviceProfile, m: Measurements | None = None, failures=None, calibration=None) -> list[Gate]:
    return gates.profile_gates(p, m or measured(), failures or {}, calibration)


# ---- formatting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (2720, "bytes", "2,720 bytes"),
        (1_048_576.0, "bytes", "1,048,576 bytes"),
        (0.88, "points", "0.88 points"),
        (0.8799999999999, "points", "0.88 points"),
        (-0.0009999999999998899, "points", "0.00 points"),  # never "-0.00"
        (-1.25, "points", "-1.25 points"),
        (12.3456, "ms", "12.35 ms"),
        (1.0, "steps", "1 step"),
        (3.0, "steps", "3 steps"),
        (0.93055555, "", "0.9306"),
    ],
)
def test_fmt(value, unit, text):
    assert gates.fmt(value, unit) == text


def test_points_removes_float_noise_so_a_drop_equal_to_the_budget_passes():
    assert (0.9 - 0.89) * 100 != 1.0  # the noise the rounding is for
    assert gates.points(0.9 - 0.89) == 1.0
    g = gates.accuracy_gates(measured(accuracy=0.89), ValidateConfig(max_accuracy_drop=1.0), 0.9, {})[0]
    assert g.status is P and g.measured == 1.0


# ---- the validate config's gates ---------------------------------------------------------------------


@pytest.mark.parametrize(("budget", "status"), [(0.93, P), (0.9306, P), (0.931, F)])
def test_min_accuracy(budget, status):
    (g,) = gates.accuracy_gates(measured(), ValidateConfig(min_accuracy=budget), None, {})
    assert (g.profile, g.gate, g.status, g.measured, g.budget) == ("-", "min_accuracy", status, 0.9306, budget)
    assert g.detail == f"top-1 accuracy 0.9306 on 360 test examples (budget >= {budget:.4f})"


def test_min_accuracy_not_evaluated_when_litert_failed():
    why = "litert crashed: killed by SIGSEGV"
    (g,) = gates.accuracy_gates(
        measured(accuracy=None, outputs_finite=None),
        ValidateConfig(min_accuracy=0.5),
        None,
        {"litert:litert_eval": why},
    )
    assert g.status is N and g.detail == why and g.measured is None and g.budget == 0.5


@pytest.mark.parametrize(("budget", "status"), [(1.0, P), (0.5, F)])
def test_max_accuracy_drop_vs_baseline(budget, status):
    (g,) = gates.accuracy_gates(measured(accuracy=0.9212), ValidateConfig(max_accuracy_drop=budget), 0.9300, {})
    assert g.gate == "max_accuracy_drop" and g.status is status and g.unit == "points"
    assert g.measured == pytest.approx(0.88)
    want = f"0.88 points below the teacher (float32 baseline) (0.9300 -> 0.9212) (budget <= {budget:.2f} points)"
    assert g.detail == want


def test_max_accuracy_drop_better_than_baseline_reads_above():
    (g,) = gates.accuracy_gates(measured(accuracy=0.94), ValidateConfig(max_accuracy_drop=0.5), 0.93, {})
    assert g.status is P and g.detail.startswith("1.00 points above the teacher (float32 baseline) (0.9300 -> 0.9400)")


def test_max_accuracy_drop_without_baseline_says_how_to_get_one():
    (g,) = gates.accuracy_gates(measured(), ValidateConfig(max_accuracy_drop=1.0), None, {})
    assert g.status is N and "baseline:" in g.detail


def test_no_budget_no_gate():
    assert gates.accuracy_gates(measured(), ValidateConfig(), 0.9, {}) == []
    assert [g.gate for g in profile_gates(DeviceProfile(name="p", runtime="litert", builtin_ops_only=False))] == [
        "outputs_finite",
        "kernel_cross_check",
    ]


# ---- profile gates -------------------------------------------------------------------------------


@pytest.mark.parametrize(("budget", "status"), [(5016, P), (5000, F)])
def test_model_bytes(budget, status):
    g = one(profile_gates(DeviceProfile(name="mcu", runtime="tflm", budgets=Budget(model_bytes=budget))), "model_bytes")
    assert g.status is status and g.unit == "bytes" and g.measured == 5016
    assert g.detail == f"5,016 bytes (budget <= {budget:,} bytes)"


def test_dtype_gates():
    gs = profile_gates(DeviceProfile(name="p", runtime="litert", input_dtype="int8", output_dtype="uint8"))
    assert one(gs, "input_dtype").status is P and one(gs, "input_dtype").detail == "int8 (required int8)"
    assert one(gs, "output_dtype").status is F and one(gs, "output_dtype").detail == "int8 (required uint8)"


def test_builtin_ops_only():
    bad = measured(structure={**STRUCTURE, "custom_ops": ["CUSTOM:Erf", "FlexErf"]})
    g = one(profile_gates(DeviceProfile(name="p", runtime="litert"), bad), "builtin_ops_only")
    assert g.status is F and g.detail == "custom/Flex ops: CUSTOM:Erf, FlexErf" and g.measured == 2
    assert one(profile_gates(DeviceProfile(name="p", runtime="litert")), "builtin_ops_only").status is P


def test_outputs_finite():
    p = DeviceProfile(name="p", runtime="litert")
    assert one(profile_gates(p, measured(outputs_finite=False)), "outputs_finite").status is F
    why = "litert failed: RuntimeError: Encountered unresolved custom op: Erf"
    g = one(profile_gates(p, measured(outputs_finite=None), {"litert:litert_eval": why}), "outputs_finite")
    assert g.status is N and g.detail == why


@pytest.mark.parametrize(("budget", "status"), [(0.3, P), (0.2, F)])
def test_accuracy_drop_max_vs_keras(budget, status):
    p = DeviceProfile(name="p", runtime="litert", budgets=Budget(accuracy_drop_max=budget))
    g = one(profile_gates(p), "accuracy_drop_max")
    assert g.status is status and g.measured == pytest.approx(0.27)
    assert g.detail == f"0.27 points below the Keras model (0.9333 -> 0.9306) (budget <= {budget:.2f} points)"


@pytest.mark.parametrize(("budget", "status"), [(0.99, P), (0.995, F)])
def test_min_agreement(budget, status):
    g = one(
        profile_gates(DeviceProfile(name="p", runtime="litert", budgets=Budget(min_agreement=budget))), "min_agreement"
    )
    assert g.status is status and g.detail == f"top-1 agreement with the Keras model 0.9900 (budget >= {budget:.4f})"


def test_keras_gates_not_evaluated_without_a_keras_model():
    m = measured(keras_accuracy=None, agreement=None, accuracy_drop_vs_keras=None)
    gs = profile_gates(
        DeviceProfile(name="p", runtime="litert", budgets=Budget(accuracy_drop_max=1, min_agreement=0.9)), m
    )
    for name in ("accuracy_drop_max", "min_agreement"):
        assert one(gs, name).status is N and "--keras" in one(gs, name).detail


def test_kernel_cross_check():
    p = DeviceProfile(name="p", runtime="litert")
    g = one(profile_gates(p), "kernel_cross_check")
    assert g.status is P and (g.measured, g.budget, g.unit) == (1.0, 1, "steps")
    assert g.detail == (
        "max difference 1 step in the logits (input of the final SOFTMAX) over 200 inputs (allowed: 1 step); "
        "probabilities differ by up to 2 steps; top-1 agreement 0.9950"
    )
    bad = one(profile_gates(p, measured(kernel_cross_check=cross(3.0, agree=False))), "kernel_cross_check")
    assert bad.status is F and "max difference 3 steps" in bad.detail


def test_kernel_cross_check_float_outputs_read_absolute():
    c = {**cross(2e-6, unit="abs"), "compared": "output"}
    g = one(
        profile_gates(DeviceProfile(name="p", runtime="litert"), measured(kernel_cross_check=c)), "kernel_cross_check"
    )
    assert g.detail.startswith("max difference 2e-06 (absolute) in the output over 200 inputs (allowed: 1e-4")
    assert "step" not in g.detail


@pytest.mark.parametrize(
    ("failure", "status", "says"),
    [
        ("disabled (--no-cross-check)", N, "run without --no-cross-check"),
        ("litert-reference crashed: killed by SIGSEGV", F, "SIGSEGV"),
        ("litert-reference hung: no answer within 600 s, killed", F, "hung"),
    ],
)
def test_kernel_cross_check_not_run(failure, status, says):
    m = measured(kernel_cross_check=None)
    g = one(
        profile_gates(DeviceProfile(name="p", runtime="litert"), m, {"litert-reference:litert_eval": failure}),
        "kernel_cross_check",
    )
    assert g.status is status and says in g.detail


# ---- latency -------------------------------------------------------------------------------------

CAL = {
    "profiles": {
        "phone": {
            "threads": 1,
            "source": "TFLite performance page",
            "reference": "mobilenet_1.0_224",
            "int8": {"device_ms": 65.4, "host_p50_ms": 13.08, "factor": 65.4 / 13.08},
        }
    }
}


def phone(budget: float | None, threads: int = 1) -> DeviceProfile:
    return DeviceProfile(name="phone", runtime="litert", threads=threads, budgets=Budget(latency_p90_ms=budget))


@pytest.mark.parametrize(("budget", "status"), [(0.11, P), (0.09, F)])
def test_calibrated_latency_estimate(budget, status):
    g = one(profile_gates(phone(budget), calibration=CAL), "latency_p90_ms")
    assert g.status is status and g.measured == pytest.approx(0.02 * 5.0) and g.unit == "ms"
    assert g.detail.startswith(f"0.1 ms (budget <= {budget:.4g} ms); estimate: host p90 0.02 ms x factor 5")
    assert "65.4 ms on device / 13.08 ms on this host" in g.detail and g.method and g.method in g.detail


def test_latency_without_calibration_says_run_calibrate():
    g = one(profile_gates(phone(1.0), calibration=None), "latency_p90_ms")
    assert g.status is N and "no calibration for phone (int8)" in g.detail and "run `edgeopt calibrate`" in g.detail
    assert "host p90 0.020 ms at 1 thread(s)" in g.detail and g.budget == 1.0


def test_float_model_needs_a_float_calibration():
    m = measured(structure={**STRUCTURE, "constant_dtypes": {"float32": 3}})
    g = one(profile_gates(phone(1.0), m, calibration=CAL), "latency_p90_ms")
    assert g.status is N and "(float32)" in g.detail


def test_latency_not_measured():
    g = one(profile_gates(phone(1.0, threads=4), calibration=CAL), "latency_p90_ms")  # only 1 thread measured
    assert g.status is N and "--no-latency" in g.detail
    why = "litert crashed: killed by SIGSEGV"
    g = one(profile_gates(phone(1.0), measured(latency={}), {"litert:litert_bench": why}, CAL), "latency_p90_ms")
    assert g.status is N and g.detail == why


def test_mcu_latency_has_no_reference():
    g = one(profile_gates(DeviceProfile(name="m7", runtime="tflm", budgets=Budget(latency_p90_ms=1))), "latency_p90_ms")
    assert g.status is N and "no published reference latency" in g.detail


@pytest.mark.parametrize(("budget", "status"), [(0.01, P), (0.0099, F)])
def test_vela_latency_and_sram(budget, status):
    p = DeviceProfile(
        name="npu",
        runtime="tflm",
        budgets=Budget(latency_p90_ms=budget),
        vela=VelaConfig(sram_bytes=12_288 if status is P else 12_287),
    )
    gs = profile_gates(p)
    lat = one(gs, "latency_p90_ms")
    assert lat.status is status and lat.detail == f"0.01 ms (budget <= {budget:.4g} ms); estimate: {VELA['method']}"
    assert lat.method == VELA["method"]
    sram = one(gs, "npu_sram_bytes")
    assert sram.status is status and sram.detail.startswith("12,288 bytes (budget <= 12,28")
    assert one(gs, "vela_compile").detail == "4 NPU / 0 CPU ops, SRAM 12,288 bytes, flash 20,480 bytes"


def test_vela_did_not_run():
    p = DeviceProfile(name="npu", runtime="tflm", budgets=Budget(latency_p90_ms=1), vela=VelaConfig(sram_bytes=1))
    why = "vela failed: unsupported"
    gs = profile_gates(p, measured(vela={}), {"vela:{...}": why})
    assert one(gs, "vela_compile").status is F and one(gs, "vela_compile").detail == why
    assert one(gs, "latency_p90_ms").status is N
    assert [g.gate for g in gs if g.gate == "npu_sram_bytes"] == []


# ---- TFLite Micro ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("budget", "status"), [(2720, P), (2704, F)])
def test_arena_bytes(budget, status):
    gs = profile_gates(DeviceProfile(name="mcu", runtime="tflm", budgets=Budget(arena_bytes=budget)))
    assert one(gs, "tflm_runs").status is P and one(gs, "tflm_agreement").status is P
    g = one(gs, "arena_bytes")
    assert g.status is status and g.detail == f"2,720 bytes of tensor arena (budget <= {budget:,} bytes)"


def test_tflm_disagreement_fails():
    m = measured()
    t = m.tflm.model_copy(
        update={
            "agree": False,
            "max_diff_vs_litert": 4.0,
            "vs_litert": m.tflm.vs_litert.model_copy(update={"max_diff": 4.0, "agree": False}),
        }
    )
    g = one(
        profile_gates(DeviceProfile(name="mcu", runtime="tflm"), m.model_copy(update={"tflm": t})), "tflm_agreement"
    )
    assert g.status is F and g.detail.startswith("vs LiteRT: max difference 4 steps") and g.measured == 4.0


def test_tflm_crash_fails_runs_and_leaves_arena_not_evaluated():
    why = "tflm crashed: killed by SIGSEGV"
    gs = profile_gates(
        DeviceProfile(name="mcu", runtime="tflm", budgets=Budget(arena_bytes=4096)),
        measured(tflm=None),
        {"tflm:tflm_eval": why},
    )
    assert (one(gs, "tflm_runs").status, one(gs, "tflm_runs").detail) == (F, why)
    assert (one(gs, "arena_bytes").status, one(gs, "arena_bytes").detail) == (N, why)


def test_every_detail_reads_well():
    """All gates of a full set of profiles: a detail is never empty, never shows None, never a float's repr."""
    profiles = [
        DeviceProfile(
            name="mcu",
            runtime="tflm",
            input_dtype="int8",
            budgets=Budget(
                model_bytes=10_000, arena_bytes=4096, accuracy_drop_max=1, min_agreement=0.9, latency_p90_ms=1
            ),
        ),
        DeviceProfile(
            name="npu", runtime="tflm", budgets=Budget(latency_p90_ms=1), vela=VelaConfig(sram_bytes=1 << 20)
        ),
        phone(1.0),
    ]
    m = measured(accuracy=0.8812, accuracy_drop_vs_keras=0.9333 - 0.8812)
    gs = gates.judge(m, ValidateConfig(min_accuracy=0.5, max_accuracy_drop=5.0), profiles, CAL, 0.8912)
    assert len(gs) == 2 + 11 + 8 + 4  # config, mcu, npu, phone
    for g in gs:
        assert g.detail and "None" not in g.detail and not re.search(r"\d\.\d{7,}", g.detail), g
    want = "1.00 points below the teacher (float32 baseline) (0.8912 -> 0.8812)"
    assert one(gs, "max_accuracy_drop").detail.startswith(want)


# ---- ValidationResult: verdict, errors, exit codes, dicts ------------------------------------------


def result(gs: list[Gate], crashed: list[str] | None = None, **over) -> ValidationResult:
    return ValidationResult(
        model="m.tflite", seconds=1.5, measurements=measured(**over), gates=gs, crashed=crashed or []
    )


def test_raise_for_status_crash_is_exit_3():
    r = result([], crashed=["tflm crashed: killed by SIGSEGV"])
    assert not r.passed
    with pytest.raises(RuntimeCrash, match="m.tflite: runtime crashed: tflm crashed: killed by SIGSEGV") as e:
        r.raise_for_status()
    assert e.value.exit_code == 3


def test_raise_for_status_failed_gate_is_exit_1():
    gs = gates.judge(
        measured(),
        ValidateConfig(min_accuracy=0.99),
        [DeviceProfile(name="mcu", runtime="tflm", budgets=Budget(arena_bytes=64))],
        None,
        None,
    )
    r = result(gs)
    assert not r.passed and [g.key for g in r.failed_gates] == ["-/min_accuracy", "mcu/arena_bytes"]
    with pytest.raises(GateFailed, match=r"^m.tflite: 2 gate\(s\) failed: -/min_accuracy, mcu/arena_bytes$") as e:
        r.raise_for_status()
    assert e.value.exit_code == 1


def test_non_finite_outputs_fail_without_a_gate():
    r = result([], outputs_finite=False)
    assert not r.passed
    with pytest.raises(GateFailed, match="non-finite outputs"):
        r.raise_for_status()


def test_strict_fails_on_not_evaluated_and_says_how_to_evaluate():
    m = measured(keras_accuracy=None, agreement=None, accuracy_drop_vs_keras=None)
    p = DeviceProfile(name="pixel4-cpu4", runtime="litert", budgets=Budget(latency_p90_ms=5, min_agreement=0.9))
    r = result(gates.judge(m, ValidateConfig(), [p], None, None), **{k: None for k in ("keras_accuracy", "agreement")})
    assert r.passed and [g.key for g in r.not_evaluated] == ["pixel4-cpu4/min_agreement", "pixel4-cpu4/latency_p90_ms"]
    r.raise_for_status()  # not evaluated is not a failure ...
    with pytest.raises(GateFailed) as e:  # ... unless strict
        r.raise_for_status(strict=True)
    msg = str(e.value)
    assert e.value.exit_code == 1 and "2 gate(s) not evaluated (strict)" in msg
    assert (
        "pixel4-cpu4/min_agreement not evaluated: no Keras reference model to compare with; pass one with --keras"
        in msg
    )
    assert (
        "pixel4-cpu4/latency_p90_ms not evaluated: no calibration for pixel4-cpu4 (int8) on this host; "
        "run `edgeopt calibrate`" in msg
    )


def test_strict_passes_when_everything_was_evaluated():
    r = result(gates.judge(measured(), ValidateConfig(min_accuracy=0.5), [phone(1.0)], CAL, None))
    assert r.not_evaluated == [] and r.passed
    r.raise_for_status(strict=True)


def test_to_dict_keeps_the_stage_dict_shape_and_round_trips():
    gs = gates.judge(measured(), ValidateConfig(min_accuracy=0.5), [phone(1.0)], CAL, None)
    r = result(gs)
    d = r.to_dict()
    assert list(d)[:4] == ["schema", "model", "structure", "samples"]
    assert list(d)[-4:] == ["gates", "crashed", "failures", "passed"]
    assert d["schema"] == "edgeopt.validation/1" and d["passed"] is True and "seconds" not in d
    assert d["latency"]["1"]["p90_ms"] == 0.02 and d["tflm"]["vs_litert"]["agree"] is True
    g = d["gates"][0]
    assert list(g) == ["profile", "gate", "status", "measured", "budget", "unit", "detail"]  # no method: not latency
    lat = next(g for g in d["gates"] if g["gate"] == "latency_p90_ms")
    assert lat["method"].startswith("estimate: host p90")
    assert json.loads(json.dumps(d)) == d
    back = ValidationResult.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d and back.gates == r.gates and back.measurements == r.measurements


def test_unmeasured_fields_are_not_written():
    """Without a Keras model the dict has no keras_accuracy key at all, as the stage always wrote it."""
    m = Measurements(structure=STRUCTURE, samples=10, accuracy=None, outputs_finite=None)
    d = ValidationResult(model="x", measurements=m).to_dict()
    assert "keras_accuracy" not in d and "agreement" not in d and d["accuracy"] is None


def test_reports_accept_records_and_dicts(tmp_path):
    r = result(gates.judge(measured(), ValidateConfig(min_accuracy=0.99), [phone(1.0)], None, None))
    for given in (r, r.to_dict()):
        xml = junit_xml([given])
        assert xml.count("<testcase ") == len(r.gates) and 'failures="1"' in xml and 'skipped="1"' in xml
        md = markdown([given])
        assert "## m.tflite: failed" in md and "| - | min_accuracy | ❌ failed |" in md
    out = json.loads(write_json_report(tmp_path / "v.json", [r]).read_text())
    assert (
        out["passed"] is False
        and out["models"][0]["seconds"] == 1.5
        and out["models"][0]["gates"] == r.to_dict()["gates"]
    )


def test_precision_counts_int4_weights_as_integer_compute():
    from edgeopt.gates import precision_of

    assert precision_of({"constant_dtypes": {"int4": 3, "int8": 4, "int32": 4}}) == "int8"
    assert precision_of({"constant_dtypes": {"int4": 3, "int32": 4}}) == "int8"
    assert precision_of({"constant_dtypes": {"int8": 3, "float32": 1}}) == "float32"  # weight-only: float compute
    # int8 weights but float compute (a weight-only model dequantizes before each op): the float32 factor
    assert precision_of({"constant_dtypes": {"int8": 3, "int32": 4}, "float_ops": ["FULLY_CONNECTED"]}) == "float32"
