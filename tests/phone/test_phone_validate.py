"""The phone check inside validate: its gates on made-up measurements, a real validation against the
shipped phone profiles, strict mode without an emulator, and a hang in the guest through the CLI."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgeopt import gates, stages
from edgeopt.arm import latency
from edgeopt.cli import app
from edgeopt.config import Budget, ConvertConfig, DeviceProfile, LatencyEstimate, ValidateConfig
from edgeopt.errors import GateFailed
from edgeopt.profiles import load_profile
from edgeopt.validation import ArmCheck, ArmCount, ArmRun, CrossCheck, GateStatus, Measurements, ValidationResult
from tests.faultinject import fault_env, fired

P, F, N = GateStatus.passed, GateStatus.failed, GateStatus.not_evaluated
runner = CliRunner()


def cross(max_diff: float, tol: int = 1, differing: int = 0) -> CrossCheck:
    return CrossCheck.model_validate(
        {
            "samples": 100, "output_max_diff": max_diff, "output_values_beyond_tolerance": 0, "values": 1000,
            "top1_agreement": 1.0, "unit": "steps", "allowed": tol, "compared": "output and logits",
            "max_diff": max_diff, "agree": max_diff <= tol, "output_values_differing": differing,
            "output_max_abs_diff_dequantized": max_diff / 256,
        }
    )  # fmt: skip


def measurements(diff: float, accuracy: float = 0.9, critical: int = 1_000_000) -> Measurements:
    run = ArmRun(threads=4, samples=100, accuracy=accuracy, vs_x86=cross(diff, differing=3), vs_reference=cross(0))
    count = ArmCount(
        threads=4, windows=5, critical_path=critical, total=3 * critical, spin=0, per_thread=[critical],
        kernels="dot product (SDOT)", top={"sdot": 10},
    )  # fmt: skip
    check = ArmCheck(
        core="kryo-485-gold", qemu_cpu="cortex-a76", midr="m", uarch="Cortex-A76", isa="i", emulator="qemu 7.2",
        litert="2.3.0", kernels="dot product (SDOT)", method="how", runs=[run], counts=[count],
    )  # fmt: skip
    structure = {"bytes": 100, "constant_dtypes": {"int8": 3}, "custom_ops": [], "float_ops": []}
    return Measurements(
        structure=structure, samples=100, accuracy=0.9, keras_accuracy=0.91, arm={"kryo-485-gold": check}
    )


def gate_of(gs, name):
    return next(g for g in gs if g is not None and g.gate == name)


def test_arm_gates_judge_the_difference_and_name_the_kernels():
    p = load_profile("pixel4-cpu4")
    ok = gates.arm_gates(p, measurements(1.0), {})
    g = gate_of(ok, "arm_vs_x86")
    assert g.status is P and g.measured == 1.0 and g.budget == 1 and g.method == "how"
    assert g.detail.startswith("LiteRT 2.3.0 aarch64 XNNPACK on kryo-485-gold (QEMU cortex-a76, shown as Cortex-A76)")
    assert "dot product (SDOT) kernels" in g.detail and "3 of 1,000 output values differ" in g.detail
    assert gate_of(gates.arm_gates(p, measurements(2.0), {}), "arm_vs_x86").status is F
    acc = gate_of(ok, "arm_accuracy_drop_max")
    assert acc.status is P and acc.measured == pytest.approx(1.0) and "below the Keras model" in acc.detail
    assert gate_of(gates.arm_gates(p, measurements(0, accuracy=0.88), {}), "arm_accuracy_drop_max").status is F


def test_without_the_guest_the_arm_gates_say_why_and_a_hang_fails_them():
    p = load_profile("pixel4-cpu4")
    m = Measurements(structure={"bytes": 1}, samples=1)
    why = {"litert-arm:kryo-485-gold": "the phone check could not run: no qemu-aarch64 on PATH"}
    for g in gates.arm_gates(p, m, why):
        assert g.status is N and "no qemu-aarch64 on PATH" in g.detail
    hung = {"litert-arm (kryo-485-gold):litert_eval": "litert-arm (kryo-485-gold) hung: no answer within 5 s, killed"}
    assert {g.status for g in gates.arm_gates(p, m, hung)} == {F}


def test_arm_latency_gate_is_the_fitted_estimate_and_only_where_the_profile_says():
    shipped = load_profile("pixel4-cpu4")
    assert shipped.arm.latency is LatencyEstimate.host_factor  # bench/phone: it does not beat the host factor
    p = shipped.model_copy(update={"arm": shipped.arm.model_copy(update={"latency": LatencyEstimate.arm})})
    m = measurements(0, critical=2_000_000)
    g = gates.latency_gate(p, m, {}, None)
    fit = latency.fitted()
    cpi = fit.cpis[latency.FORMS[fit.form]("kryo-485-gold", "int8")]
    assert g.measured == pytest.approx(cpi * 2_000_000 / 2.42e9 * 1e3)
    assert "estimate from Arm work: 2,000,000 instructions per Invoke() on the busiest of 4 thread(s)" in g.detail
    tight = p.model_copy(update={"budgets": Budget(latency_p90_ms=g.measured / 2)})
    assert gates.latency_gate(tight, m, {}, None).status is F
    # a profile whose gate keeps the host factor shows the Arm-work estimate beside its own
    hf = gates.latency_gate(shipped, m, {}, None)
    assert hf.status is N and "host latency not measured" in hf.detail
    assert f"the Arm-work estimate would be {gates.fmt(g.measured, 'ms')}" in hf.detail
    # a core no published figure was measured on
    other = p.model_copy(update={"arm": p.arm.model_copy(update={"core": "armv9-i8mm"})})
    m.arm["armv9-i8mm"] = m.arm["kryo-485-gold"]
    g = gates.latency_gate(other, m, {}, None)
    assert g.status is N and "no published figure was measured on armv9-i8mm" in g.detail


def test_validate_runs_the_phone_check_on_each_profiles_core(arm_guest, tiny_model, digits):
    int8 = stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits).tflite
    profiles = [load_profile("pixel4-cpu4"), load_profile("pixel2-cpu1")]
    r = stages.validate(int8, digits, ValidateConfig(max_samples=120), keras_model=tiny_model, profiles=profiles)
    assert set(r.measurements.arm) == {"kryo-485-gold", "kryo-280-gold"} and not r.crashed, r.failures
    assert [x.threads for x in r.measurements.arm["kryo-485-gold"].runs] == [4, 1]
    assert r.measurements.arm["kryo-485-gold"].run(4).samples == 120
    assert r.measurements.arm["kryo-280-gold"].kernels == "plain NEON integer (SMLAL/SMULL)"
    for profile in ("pixel4-cpu4", "pixel2-cpu1"):
        for name in ("arm_vs_x86", "arm_vs_reference", "arm_accuracy_drop_max"):
            assert r.gate(profile, name).status is P, r.gate(profile, name)
    lat = r.gate("pixel4-cpu4", "latency_p90_ms")  # the host factor, and no calibration is stored in tests
    count = r.measurements.arm["kryo-485-gold"].count(4)
    assert lat.status is N and "no calibration for pixel4-cpu4" in lat.detail
    assert "the Arm-work estimate would be" in lat.detail and f"{count.critical_path:,} instructions" in lat.detail
    d = r.to_dict()  # what manifests and reports keep, and read back
    assert d["arm"]["kryo-485-gold"]["kernels"] == "dot product (SDOT)"
    assert [x["threads"] for x in d["arm"]["kryo-485-gold"]["runs"]] == [4, 1]
    assert [x["threads"] for x in d["arm"]["kryo-485-gold"]["counts"]] == [1, 4]
    back = ValidationResult.from_dict(d)
    assert back.measurements.arm == r.measurements.arm and back.gates == r.gates


def test_strict_fails_when_there_is_no_emulator(tiny_model, digits, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEOPT_QEMU", str(tmp_path / "no-qemu"))
    int8 = stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits).tflite
    p = DeviceProfile.model_validate(
        {"name": "phone", "runtime": "litert", "threads": 4, "arm": {"core": "kryo-485-gold", "clock_hz": 2e9,
                                                                     "source": "test"}}
    )  # fmt: skip
    r = stages.validate(int8, digits, ValidateConfig(max_samples=50, latency=False), profiles=[p])
    g = r.gate("phone", "arm_vs_x86")
    assert g.status is N and f"EDGEOPT_QEMU={tmp_path / 'no-qemu'} is not an executable file" in g.detail
    r.raise_for_status()  # not strict: passes
    with pytest.raises(GateFailed, match="phone/arm_vs_x86 not evaluated: the phone check could not run"):
        r.raise_for_status(strict=True)
    off = stages.validate(int8, digits, ValidateConfig(max_samples=50, latency=False, phone_check=False), profiles=[p])
    assert "disabled (--no-phone-check)" in off.gate("phone", "arm_vs_x86").detail


def test_cli_a_hang_in_the_guest_is_exit_3_naming_the_core(arm_guest, tiny_model_path, tmp_path, monkeypatch):
    tfl = tmp_path / "tiny.tflite"
    assert (
        runner.invoke(app, ["convert", str(tiny_model_path), "--out", str(tfl), "--data", "digits", "-q"]).exit_code
        == 0
    )
    log = tmp_path / "faults"
    log.mkdir()
    for k, v in fault_env("litert_eval@aarch64:hang", log).items():
        monkeypatch.setenv(k, v)
    r = runner.invoke(
        app, ["validate", str(tfl), "--data", "digits", "--profile", "pixel4-cpu4", "--timeout", "30",
              "--max-samples", "40", "--calibration", str(tmp_path / "none.json"), "-q"],
    )  # fmt: skip
    assert r.exit_code == 3, r.output
    assert "litert-arm (kryo-485-gold) hung: no answer within 30 s, killed" in r.output
    assert [f["target"] for f in fired(log)] == ["litert_eval@aarch64"]  # the guest's worker only, once


def test_a_validation_cached_without_the_emulator_is_not_reused_once_it_can_run(
    arm_guest, tiny_model, digits, tmp_path
):
    """The phone check's environment is part of a cached validation's key: made where QEMU was missing,
    the result is not taken from the cache once QEMU is there; with the same emulator it is."""
    from edgeopt.pipeline.cache import StageCache
    from edgeopt.pipeline.validating import validate_artifact

    int8 = stages.convert(tiny_model, ConvertConfig(quantization="int8"), data=digits).tflite
    cache = StageCache(tmp_path / "cache")
    cfg = ValidateConfig(max_samples=40, latency=False, cross_check=False)
    profiles = [load_profile("pixel4-cpu4")]
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEOPT_QEMU", str(tmp_path / "no-qemu"))
    first, reused = validate_artifact(int8, digits, cfg, name="t", profiles=profiles, cache=cache)
    mp.undo()
    assert (
        not reused
        and "not an executable file" in next(g for g in first["gates"] if g["gate"] == "arm_vs_x86")["detail"]
    )
    second, reused = validate_artifact(int8, digits, cfg, name="t", profiles=profiles, cache=cache)
    assert not reused and next(g for g in second["gates"] if g["gate"] == "arm_vs_x86")["status"] == "passed"
    third, reused = validate_artifact(int8, digits, cfg, name="t", profiles=profiles, cache=cache)
    assert reused and third["arm"] == second["arm"]
