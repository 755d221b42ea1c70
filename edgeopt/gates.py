"""Judging: every gate as a pure function of what validate measured, the validate config, the device
profiles, the latency calibration and the baseline accuracy. No interpreter runs here, so every
verdict can be tested on made-up measurements.

A gate is passed, failed or not evaluated. A not-evaluated gate's detail says why and how to
evaluate it (``ValidationResult.raise_for_status(strict=True)`` repeats it). A passed or failed
gate's detail shows the measured value in its unit and the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from edgeopt import mcu_latency
from edgeopt.arm import latency as arm_latency
from edgeopt.config import DeviceProfile, LatencyEstimate, Runtime, ValidateConfig
from edgeopt.runtimes import tflm as tflm_rt
from edgeopt.validation import ArmCheck, CrossCheck, Gate, GateStatus, Measurements

GLOBAL = "-"  # the profile name of gates that come from the validate config, not from a device profile

P, F, N = GateStatus.passed, GateStatus.failed, GateStatus.not_evaluated

NO_KERAS = "no Keras reference model to compare with; pass one with --keras"
NO_BASELINE = (
    "no baseline accuracy to compare with; give the pipeline a `baseline:` conversion "
    "(or pass baseline_accuracy to validate)"
)


# ---- how far two correct runtimes may differ ----------------------------------------------------


def allowed_steps(depth: int) -> int:
    """Quantization steps two correct integer runtimes may differ by in a tensor ``depth`` requantizing ops
    deep. Each requantization may round a value one step apart (XNNPACK rounds the fixed-point multiply
    once, the reference kernels twice; TFLite Micro's CMSIS-NN kernels and LiteRT's differ the same way),
    and those one-step differences enter at every requantizing op on the way and add up like independent
    errors, about sqrt(depth) steps: the bound is twice that, at least one step. Measured with every tensor
    kept: the reference CNN's logits (depth 4) differ by 1 step, a 20-deep MobileNet-style model's by 3."""
    return max(1, math.ceil(2 * math.sqrt(max(depth, 1))))


# ---- formatting --------------------------------------------------------------------------------


def _nz(v: float) -> float:
    """No ``-0.00``: a rounded negative zero reads as zero."""
    return v + 0.0


def fmt(value: float | int, unit: str) -> str:
    """A measured value in its unit: ``2,720 bytes``, ``0.88 points``, ``1.234 ms``, ``1 step``, ``0.9333``."""
    if unit == "bytes":
        return f"{round(value):,} bytes"
    if unit == "points":
        return f"{_nz(round(float(value), 2)):.2f} points"
    if unit == "ms":
        return f"{float(value):.4g} ms"
    if unit == "steps":
        return f"{float(value):.6g} step{'' if value == 1 else 's'}"
    if unit == "abs":
        return f"{float(value):.3g} (absolute)"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):.4f}"


def points(fraction_drop: float) -> float:
    """A drop in top-1 accuracy (a fraction) in points; float noise of the subtraction rounded away,
    so that a drop equal to its budget is not failed by a 1e-15 excess."""
    return _nz(round(fraction_drop * 100, 9))


def _gate(
    profile: str,
    gate: str,
    status: GateStatus,
    detail: str,
    measured: Any = None,
    budget: Any = None,
    unit: str = "",
    method: str | None = None,
) -> Gate:
    return Gate(
        profile=profile,
        gate=gate,
        status=status,
        measured=measured,
        budget=budget,
        unit=unit,
        detail=detail,
        method=method,
    )


def budget_gate(
    profile: str,
    gate: str,
    measured: float | int | None,
    budget: float | int | None,
    unit: str,
    why_missing: str,
    *,
    higher_is_better: bool = False,
    describe: Callable[[float | int], str] | None = None,
) -> Gate | None:
    """A measured value against a budget (None: no budget, no gate). ``describe`` words the measured
    value (default: ``fmt``); the budget follows in parentheses."""
    if budget is None:
        return None
    if measured is None:
        return _gate(profile, gate, N, why_missing, None, budget, unit)
    ok = measured >= budget if higher_is_better else measured <= budget
    rel = ">=" if higher_is_better else "<="
    what = describe(measured) if describe else fmt(measured, unit)
    return _gate(profile, gate, P if ok else F, f"{what} (budget {rel} {fmt(budget, unit)})", measured, budget, unit)


def _drop_words(drop: float, reference: str, ref_acc: float | None, acc: float | None) -> str:
    """``0.28 points below the Keras model (0.9333 -> 0.9306)``; a negative drop reads as "above"."""
    accs = f" ({ref_acc:.4f} -> {acc:.4f})" if ref_acc is not None and acc is not None else ""
    if round(drop, 2) == 0:
        return f"{fmt(0.0, 'points')} below {reference}{accs}"
    return f"{fmt(abs(drop), 'points')} {'below' if drop > 0 else 'above'} {reference}{accs}"


def compare_detail(c: CrossCheck, what: str = "") -> str:
    """How two runtimes' outputs differ, in steps (integer outputs) or absolute (float outputs), against
    the bound, and where they part when they disagree."""
    if c.unit == "steps":
        allowed = f"allowed: {fmt(c.allowed, 'steps')}"
        if c.depth is not None and c.bound:
            allowed += f", {c.bound}"
    else:
        allowed = "allowed: 1e-4 x the largest output, at least 1e-4"
    text = f"{what}max difference {fmt(c.max_diff, c.unit)} in the {c.compared} over {c.samples:,} inputs ({allowed})"
    if c.compared not in ("output", "output and logits"):  # the largest difference is the output's already
        text += f"; probabilities differ by up to {fmt(c.output_max_diff, c.unit)}"
    text += f"; top-1 agreement {c.top1_agreement:.4f}"
    if c.flips:
        text += f" ({c.flips} of {c.samples:,} examples change class"
        text += f", {c.unexplained_flips} of them not near-ties)" if c.unexplained_flips is not None else ")"
    if c.relative_rms is not None:
        text += f"; RMS difference {c.relative_rms:.2%} of the values' spread"
    d = c.first_divergence
    if d is not None:
        text += (
            f"; first divergence at op {d.op_index} {d.op} ({d.tensor}): {fmt(d.steps, 'steps')}, RMS "
            f"{d.relative_rms:.1%} of its spread after {d.input_relative_rms:.1%} in its inputs"
        )
    return text


def precision_of(structure: dict[str, Any]) -> str:
    """The compute precision a latency factor is chosen by: int8 when the model computes in integers
    (int8 or int4 weights, which the kernels unpack to int8; no float weights; no op whose input is
    float), else float32 (weight-only quantization dequantizes to float before each op)."""
    c = structure["constant_dtypes"]
    integer = c.get("int8") or c.get("int4")
    floats = c.get("float32") or c.get("float16") or structure.get("float_ops")
    return "int8" if integer and not floats else "float32"


# ---- gates -------------------------------------------------------------------------------------


def judge(
    m: Measurements,
    config: ValidateConfig,
    profiles: list[DeviceProfile],
    calibration: dict[str, Any] | None,
    baseline_accuracy: float | None,
    *,
    failures: dict[str, str] | None = None,
) -> list[Gate]:
    """Every gate, in order: the validate config's own (min_accuracy, max_accuracy_drop), then each
    profile's. ``failures`` ("runtime:task" -> why) explains measurements that are missing."""
    failures = failures or {}
    gates = accuracy_gates(m, config, baseline_accuracy, failures)
    for p in profiles:
        gates += profile_gates(p, m, failures, calibration)
    return gates


def accuracy_gates(
    m: Measurements, config: ValidateConfig, baseline_accuracy: float | None, failures: dict[str, str]
) -> list[Gate]:
    """min_accuracy (top-1 in LiteRT) and max_accuracy_drop (points below the baseline, e.g. the
    teacher's float model), when the config sets them."""
    litert_fail = failures.get("litert:litert_eval") or "LiteRT gave no outputs"
    gates: list[Gate | None] = []
    gates.append(
        budget_gate(
            GLOBAL,
            "min_accuracy",
            m.accuracy,
            config.min_accuracy,
            "",
            litert_fail,
            higher_is_better=True,
            describe=lambda a: f"top-1 accuracy {a:.4f} on {m.samples:,} test examples",
        )
    )
    drop = None
    if baseline_accuracy is not None and m.accuracy is not None:
        drop = points(baseline_accuracy - m.accuracy)
    gates.append(
        budget_gate(
            GLOBAL,
            "max_accuracy_drop",
            drop,
            config.max_accuracy_drop,
            "points",
            litert_fail if m.accuracy is None else NO_BASELINE,
            describe=lambda d: _drop_words(d, "the teacher (float32 baseline)", baseline_accuracy, m.accuracy),
        )
    )
    return [g for g in gates if g is not None]


def profile_gates(
    p: DeviceProfile, m: Measurements, failures: dict[str, str], calibration: dict[str, Any] | None
) -> list[Gate]:
    """The gates of one device profile: size, dtypes, ops, finite outputs, accuracy vs Keras, kernel
    cross-check, latency, TFLite Micro and Vela."""
    s, b, name = m.structure, p.budgets, p.name
    gates: list[Gate | None] = [budget_gate(name, "model_bytes", s["bytes"], b.model_bytes, "bytes", "")]
    for which, want in (("input_dtype", p.input_dtype), ("output_dtype", p.output_dtype)):
        if want is not None:
            got = s["inputs" if which == "input_dtype" else "outputs"][0]["dtype"]
            ok = got == want.value
            gates.append(_gate(name, which, P if ok else F, f"{got} (required {want.value})", got, want.value))
    if p.builtin_ops_only:
        bad = s["custom_ops"]
        detail = f"custom/Flex ops: {', '.join(bad)}" if bad else "only builtin ops"
        gates.append(_gate(name, "builtin_ops_only", F if bad else P, detail, len(bad), 0))
    lit_fail = failures.get("litert:litert_eval")
    if m.outputs_finite is None:
        gates.append(_gate(name, "outputs_finite", N, lit_fail or "LiteRT gave no outputs"))
    else:
        ok = m.outputs_finite
        gates.append(
            _gate(name, "outputs_finite", P if ok else F, "all outputs finite" if ok else "NaN or Inf in the outputs")
        )
    no_keras = lit_fail or NO_KERAS
    drop = points(m.accuracy_drop_vs_keras) if m.accuracy_drop_vs_keras is not None else None
    gates.append(
        budget_gate(
            name,
            "accuracy_drop_max",
            drop,
            b.accuracy_drop_max,
            "points",
            no_keras,
            describe=lambda d: _drop_words(d, "the Keras model", m.keras_accuracy, m.accuracy),
        )
    )
    gates.append(
        budget_gate(
            name,
            "min_agreement",
            m.agreement,
            b.min_agreement,
            "",
            no_keras,
            higher_is_better=True,
            describe=lambda a: f"top-1 agreement with the Keras model {a:.4f}",
        )
    )
    gates.append(cross_check_gate(name, m.kernel_cross_check, failures))
    if p.arm is not None and p.runtime is Runtime.litert:
        gates += arm_gates(p, m, failures)
    gates.append(latency_gate(p, m, failures, calibration))
    if p.runtime is Runtime.tflm:
        gates += tflm_gates(p, m, failures)
    if p.vela is not None:
        gates += vela_gates(p, m, failures)
    if p.firmware is not None:
        gates += firmware_gates(p, m, failures)
    return [g for g in gates if g is not None]


def firmware_gates(p: DeviceProfile, m: Measurements, failures: dict[str, str]) -> list[Gate | None]:
    """The firmware check (edgeopt.firmware): the model in TFLite Micro firmware for the profile's core,
    bit-exact in QEMU against TFLite Micro's Python interpreter; its flash and RAM against the budgets."""
    name, b = p.name, p.budgets
    r = m.firmware.get(name)
    if r is None:
        why = failures.get(f"firmware:{name}", "the firmware check did not run")
        return [
            _gate(name, "firmware", N, why),
            budget_gate(name, "flash_bytes", None, b.flash_bytes, "bytes", why),
            budget_gate(name, "ram_bytes", None, b.ram_bytes, "bytes", why),
        ]
    ins = (r.get("instructions") or {}).get("median")
    ok = bool(r["passed"])
    detail = (
        f"bit-exact on {r['inputs']} inputs in QEMU ({r['board']}, {r['kernels']}), {ins:,} instructions per Invoke()"
        if ok
        else "; ".join(r["failures"])
    )
    fp = r.get("footprint") or {}
    why = "; ".join(r["failures"]) or "not measured"
    return [
        _gate(name, "firmware", P if ok else F, detail, ins, unit="instructions"),
        budget_gate(name, "flash_bytes", fp.get("flash_bytes"), b.flash_bytes, "bytes", why,
                    describe=lambda v: f"{fmt(v, 'bytes')} of firmware flash (runtime + model)"),
        budget_gate(name, "ram_bytes", fp.get("ram_bytes"), b.ram_bytes, "bytes", why,
                    describe=lambda v: f"{fmt(v, 'bytes')} of RAM (arena, stack, .bss, .data, heap)"),
    ]  # fmt: skip


def cross_check_gate(profile: str, cross: CrossCheck | None, failures: dict[str, str]) -> Gate:
    """LiteRT's optimized kernels against its reference kernels on the same inputs."""
    if cross is None:
        why = failures.get("litert-reference:litert_eval") or failures.get("litert:litert_eval") or "not run"
        crashed = "crashed" in why or "hung" in why
        if why.startswith("disabled"):
            why += "; run without --no-cross-check to compare the kernels"
        return _gate(profile, "kernel_cross_check", F if crashed else N, why)
    return _gate(
        profile,
        "kernel_cross_check",
        P if cross.agree else F,
        compare_detail(cross),
        cross.max_diff,
        cross.allowed,
        cross.unit,
    )


def latency_gate(
    p: DeviceProfile, m: Measurements, failures: dict[str, str], calibration: dict[str, Any] | None
) -> Gate | None:
    """p90 latency on the device: Vela's cycle estimate for Ethos-U, the MAC-based estimate for a
    Cortex-M CPU (``mcu:``), the host p90 scaled by the calibration factor for LiteRT phones; never a
    host figure passed off as a device one."""
    budget = p.budgets.latency_p90_ms
    if budget is None:
        return None
    gate = "latency_p90_ms"
    if p.vela is not None:
        v = m.vela.get(p.vela.accelerator_config)
        if v is None:
            return _gate(p.name, gate, N, "Vela did not run (see the vela_compile gate)", budget=budget, unit="ms")
        g = budget_gate(p.name, gate, v["estimated_ms"], budget, "ms", "")
        assert g is not None
        return g.model_copy(update={"detail": g.detail + f"; estimate: {v['method']}", "method": v["method"]})
    if p.mcu is not None:
        return mcu_latency_gate(p, m)
    if p.runtime is not Runtime.litert:
        return _gate(
            p.name,
            gate,
            N,
            "no published reference latency for this device to scale host figures with; "
            "only Ethos-U profiles (vela:), Cortex-M profiles (mcu: core and clock) and LiteRT profiles "
            "with a reference can be estimated",
            budget=budget,
            unit="ms",
        )
    if p.arm is not None and p.arm.latency is LatencyEstimate.arm:
        return arm_latency_gate(p, m, failures, calibration)
    g = host_factor_gate(p, m, failures, calibration)
    return g if p.arm is None else _arm_beside(g, p, m)


def host_factor_gate(
    p: DeviceProfile, m: Measurements, failures: dict[str, str], calibration: dict[str, Any] | None
) -> Gate:
    """A LiteRT phone's latency: the host p90 at the profile's threads x the calibration factor."""
    budget, gate = p.budgets.latency_p90_ms, "latency_p90_ms"
    host = m.latency.get(str(p.threads))
    if host is None:
        why = failures.get("litert:litert_bench") or "host latency not measured; run without --no-latency"
        return _gate(p.name, gate, N, why, budget=budget, unit="ms")
    prec = precision_of(m.structure)
    cal = (calibration or {}).get("profiles", {}).get(p.name, {})
    if prec not in cal:
        return _gate(
            p.name,
            gate,
            N,
            f"no calibration for {p.name} ({prec}) on this host; run `edgeopt calibrate` "
            f"(host p90 {host.p90_ms:.3f} ms at {p.threads} thread(s) is measured, the device figure is not)",
            budget=budget,
            unit="ms",
        )
    c = cal[prec]
    est = host.p90_ms * c["factor"]
    g = budget_gate(p.name, gate, est, budget, "ms", "")
    assert g is not None
    method = (
        f"estimate: host p90 {host.p90_ms:.4g} ms x factor {c['factor']:.3g} ({cal['reference']} {prec}: "
        f"{c['device_ms']} ms on device / {c['host_p50_ms']:.4g} ms on this host, {cal['threads']} thread(s); "
        f"{cal['source']})"
    )
    return g.model_copy(update={"detail": g.detail + f"; {method}", "method": method})


def _arm_beside(g: Gate, p: DeviceProfile, m: Measurements) -> Gate:
    """The Arm-work estimate added to a host-factor latency gate's detail, when the phone check counted."""
    est, _ = arm_latency.for_profile(m.arm, p, precision_of(m.structure))
    if est is None:
        return g
    return g.model_copy(
        update={"detail": g.detail + f"; the Arm-work estimate would be {fmt(est.ms, 'ms')} ({est.method})"}
    )


def host_factor_estimate(p: DeviceProfile, m: Measurements, calibration: dict[str, Any] | None) -> float | None:
    """The host-factor estimate (host p90 x the calibration factor), or None when either is missing."""
    host = m.latency.get(str(p.threads))
    entry = (calibration or {}).get("profiles", {}).get(p.name, {}).get(precision_of(m.structure))
    return None if host is None or entry is None else host.p90_ms * entry["factor"]


def arm_latency_gate(
    p: DeviceProfile, m: Measurements, failures: dict[str, str], calibration: dict[str, Any] | None
) -> Gate:
    """A phone's latency from the work its kernels do: instructions per Invoke() counted on the core
    model at the profile's threads x the fitted CPI / the core's clock (edgeopt.arm.latency); the
    host-factor estimate is shown beside it when there is a calibration."""
    assert p.arm is not None and p.budgets.latency_p90_ms is not None
    budget, core = p.budgets.latency_p90_ms, p.arm.core
    est, why = arm_latency.for_profile(m.arm, p, precision_of(m.structure))
    if est is None:
        why = failures.get(f"litert-arm ({core}):litert_count") or failures.get(f"litert-arm:{core}") or why
        crashed = "crashed" in why or "hung" in why
        return _gate(p.name, "latency_p90_ms", F if crashed else N, why, budget=budget, unit="ms")
    g = budget_gate(p.name, "latency_p90_ms", est.ms, budget, "ms", "")
    assert g is not None
    other = host_factor_estimate(p, m, calibration)
    beside = "" if other is None else f"; the host-factor estimate would be {fmt(other, 'ms')}"
    return g.model_copy(update={"detail": g.detail + f"; {est.method}{beside}", "method": est.method})


def arm_gates(p: DeviceProfile, m: Measurements, failures: dict[str, str]) -> list[Gate | None]:
    """The phone check (edgeopt.arm): LiteRT's own aarch64 kernels on the profile's core model, against
    x86 XNNPACK and against the reference kernels (at 1 thread and the profile's), and their top-1 on
    the test split. Every detail starts with the kernels that ran."""
    assert p.arm is not None
    core, name = p.arm.core, p.name
    c: ArmCheck | None = m.arm.get(core)
    eval_failure = failures.get(f"litert-arm ({core}):litert_eval") or failures.get(f"litert-arm:{core}")
    why = eval_failure or "the phone check did not run"
    status = F if ("crashed" in why or "hung" in why) else N
    if c is None or not c.runs:
        gates = [_gate(name, g, status, why) for g in ("arm_vs_x86", "arm_vs_reference")]
        if p.budgets.accuracy_drop_max is not None:
            gates.append(
                _gate(name, "arm_accuracy_drop_max", status, why, budget=p.budgets.accuracy_drop_max, unit="points")
            )
        return list(gates)
    kernels = (
        f"LiteRT {c.litert} aarch64 XNNPACK on {core} (QEMU {c.qemu_cpu}, shown as {c.uarch}): "
        f"{c.kernels + ' kernels' if c.kernels else 'kernels not counted'}"
    )
    if eval_failure:
        kernels += f" ({eval_failure})"

    def compared(gate: str, attr: str, what: str) -> Gate:
        runs = [(r.threads, getattr(r, attr)) for r in c.runs if getattr(r, attr) is not None]
        if not runs:
            missing = (
                failures.get("litert:litert_eval") if attr == "vs_x86" else failures.get("litert-reference:litert_eval")
            )
            return _gate(name, gate, N, f"{kernels}; {missing or what + ' did not run'}")
        parts = []
        for threads, x in runs:
            extra = getattr(x, "output_values_differing", None)
            deq = getattr(x, "output_max_abs_diff_dequantized", None)
            text = f"{threads} thread(s): {compare_detail(x)}"
            if getattr(x, "output_allowed", None) is not None:  # judged on the outputs too, at their own bound
                unexplained = getattr(x, "output_unexplained_max_diff", None)
                if unexplained is not None:
                    text += (
                        f"; outputs differ by up to {fmt(x.output_max_diff, 'steps')}, "
                        f"{fmt(unexplained, 'steps')} beyond what the logits' difference explains through the softmax"
                    )
                text += f"; outputs allowed {fmt(x.output_allowed, 'steps')}"
            if extra is not None:
                text += f"; {extra:,} of {x.values:,} output values differ" + (
                    f" (dequantized by up to {deq:.3g})" if extra and deq is not None else ""
                )
            parts.append(text)
        worst = max((x for _, x in runs), key=lambda x: x.max_diff)
        ok = all(x.agree for _, x in runs)
        return _gate(
            name, gate, P if ok else F, f"{kernels}; vs {what}: " + "; ".join(parts), worst.max_diff, worst.allowed,
            worst.unit, c.method,
        )  # fmt: skip

    gates: list[Gate | None] = [
        compared("arm_vs_x86", "vs_x86", "x86 XNNPACK on this host"),
        compared("arm_vs_reference", "vs_reference", "the reference kernels"),
    ]
    run = c.run(p.threads)
    if p.budgets.accuracy_drop_max is not None:
        if run is None or run.accuracy is None:
            gates.append(
                _gate(name, "arm_accuracy_drop_max", status, why, budget=p.budgets.accuracy_drop_max, unit="points")
            )
        else:
            ref, ref_name = (
                (m.keras_accuracy, "the Keras model") if m.keras_accuracy is not None else (m.accuracy, "x86 LiteRT")
            )
            drop = points(ref - run.accuracy) if ref is not None else None
            gates.append(
                budget_gate(
                    name,
                    "arm_accuracy_drop_max",
                    drop,
                    p.budgets.accuracy_drop_max,
                    "points",
                    "no accuracy to compare with",
                    describe=lambda d: (
                        f"{kernels}, {p.threads} thread(s), "
                        f"{run.samples:,} test examples: " + _drop_words(d, ref_name, ref, run.accuracy)
                    ),
                )  # fmt: skip
            )
    return gates


def mcu_latency_gate(p: DeviceProfile, m: Measurements) -> Gate:
    """A Cortex-M CPU's latency, estimated from the model's MACs per op class for CMSIS-NN int8 kernels
    (edgeopt.mcu_latency); the estimate covers int8 models only."""
    assert p.mcu is not None and p.budgets.latency_p90_ms is not None
    budget, s = p.budgets.latency_p90_ms, m.structure
    # int16x8 models have int8 weights too; their int64 biases tell them apart (16-bit kernels are slower).
    prec = "int16x8" if "int64" in s["constant_dtypes"] else precision_of(s)
    if prec != "int8":
        return _gate(
            p.name,
            "latency_p90_ms",
            N,
            f"the {p.mcu.core.value} estimate covers int8 models (CMSIS-NN int8 kernels); this one is {prec}",
            budget=budget,
            unit="ms",
        )
    fw = next((x for x in (m.firmware.get(p.name) or {}).get("latency", []) if x["profile"] == p.name), None)
    if fw is not None and fw.get("used") == "instructions":  # the firmware check's estimate is the better one here
        g = budget_gate(p.name, "latency_p90_ms", fw["ms"], budget, "ms", "")
        assert g is not None
        method = f"estimate from the firmware check: {fw['method']} ({fw['source']})"
        return g.model_copy(update={"detail": g.detail + f"; {method}", "method": method})
    est = mcu_latency.estimate(s, p.mcu.core.value, p.mcu.clock_hz)
    g = budget_gate(p.name, "latency_p90_ms", est.ms, budget, "ms", "")
    assert g is not None
    return g.model_copy(update={"detail": g.detail + f"; {est.method}", "method": est.method})


def tflm_gates(p: DeviceProfile, m: Measurements, failures: dict[str, str]) -> list[Gate | None]:
    """TFLite Micro runs the model, agrees with LiteRT, and fits the arena budget."""
    t, name = m.tflm, p.name
    if t is None:
        why = failures.get("tflm:tflm_eval", "TFLite Micro did not run")
        budget = p.budgets.arena_bytes
        # the arena search gave up at its largest arena: a lower bound that already fails any MCU budget
        over = tflm_rt.arena_exceeded(why)
        arena = (
            _gate(name, "arena_bytes", N, why, budget=budget, unit="bytes")
            if over is None or budget is None or over < budget
            else _gate(
                name,
                "arena_bytes",
                F,
                f"needs more than {fmt(over, 'bytes')} of tensor arena (budget <= {fmt(budget, 'bytes')})",
                over,
                budget,
                "bytes",
            )
        )
        return [_gate(name, "tflm_runs", F, why), arena if budget else None]
    gates: list[Gate | None] = [_gate(name, "tflm_runs", P, "every op supported by TFLite Micro")]
    if t.agree is not None and t.vs_litert is not None:
        gates.append(
            _gate(
                name,
                "tflm_agreement",
                P if t.agree else F,
                compare_detail(t.vs_litert, "vs LiteRT: "),
                t.max_diff_vs_litert,
                t.vs_litert.allowed,
                t.unit or "",
            )
        )
    gates.append(
        budget_gate(
            name,
            "arena_bytes",
            t.arena_bytes,
            p.budgets.arena_bytes,
            "bytes",
            "",
            describe=lambda a: f"{fmt(a, 'bytes')} of tensor arena",
        )
    )
    return gates


def vela_gates(p: DeviceProfile, m: Measurements, failures: dict[str, str]) -> list[Gate | None]:
    """Vela compiles the model for the NPU, and its SRAM plan fits the budget."""
    assert p.vela is not None
    v = m.vela.get(p.vela.accelerator_config)
    if v is None:
        why = next((f for k, f in failures.items() if k.startswith("vela:")), "vela did not run")
        return [_gate(p.name, "vela_compile", F, why)]
    detail = (
        f"{v['npu_ops']} NPU / {v['cpu_ops']} CPU ops, SRAM {fmt(v['sram_bytes'], 'bytes')}, "
        f"flash {fmt(v['flash_bytes'], 'bytes')}"
    )
    return [
        _gate(p.name, "vela_compile", P, detail),
        budget_gate(p.name, "npu_sram_bytes", v["sram_bytes"], p.vela.sram_bytes, "bytes", ""),
    ]
