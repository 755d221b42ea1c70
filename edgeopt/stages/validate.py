"""Validate a .tflite: structure, accuracy in LiteRT, kernel cross-check, host latency, device
budgets (LiteRT phones, TFLite Micro MCUs, Ethos-U NPUs). Every gate is passed, failed or not
evaluated with a reason; every number says how it was obtained.

All interpreters and compilers run in child processes with a timeout (edgeopt.runtimes.isolate): a
crash or hang becomes a failed gate naming the runtime and the signal, and the other checks go on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt import tflite as tfl
from edgeopt import ui
from edgeopt.config import DeviceProfile, Runtime, ValidateConfig
from edgeopt.data import Dataset
from edgeopt.runtimes import litert
from edgeopt.runtimes.isolate import ChildFailed, run_task
from edgeopt.stages._common import StageResult, predict
from edgeopt.ui import Timer

SCHEMA = "edgeopt.validation/1"
CROSS_CHECK_SAMPLES = 200
TFLM_SAMPLES = 100
MAX_STEP_DIFF = 1  # default: integer outputs may differ by one quantization step between kernel sets


def _deq(raw: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    return litert.dequantize_values(raw, detail["scale"], detail["zero_point"])


@np.errstate(invalid="ignore")
def _diff(a: np.ndarray, b: np.ndarray, detail: dict[str, Any], tol: int = MAX_STEP_DIFF) -> tuple[float, str, bool]:
    """Largest difference: in quantization steps for integer outputs, absolute for float (NaN: no agreement)."""
    if np.dtype(detail["dtype"]).kind in "iu":
        d = float(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))) if a.size else 0.0
        return d, "steps", d <= tol
    d = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
    return d, "abs", d <= 1e-4 * max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)


def _gate(
    profile: str, gate: str, status: str, detail: str, measured: Any = None, budget: Any = None, unit: str = ""
) -> dict[str, Any]:
    return {
        "profile": profile,
        "gate": gate,
        "status": status,
        "measured": measured,
        "budget": budget,
        "unit": unit,
        "detail": detail,
    }


def _budget_gate(
    profile: str,
    gate: str,
    measured: float | None,
    budget: float | None,
    unit: str,
    why_missing: str,
    higher_is_better: bool = False,
    fmt: str = "{:,.4g}",
) -> dict[str, Any] | None:
    if budget is None:
        return None
    if measured is None:
        return _gate(profile, gate, "not evaluated", why_missing, None, budget, unit)
    ok = measured >= budget if higher_is_better else measured <= budget
    if unit == "bytes":
        fmt = "{:,.0f}"
    rel = ">=" if higher_is_better else "<="
    detail = f"{fmt.format(measured)} {unit} (budget {rel} {fmt.format(budget)} {unit})".replace("  ", " ")
    return _gate(profile, gate, "passed" if ok else "failed", detail, measured, budget, unit)


def _head(a: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if a is None else a[:n]


def _compare(
    a: np.ndarray,
    b: np.ndarray,
    a_logits: np.ndarray | None,
    b_logits: np.ndarray | None,
    out_detail: dict[str, Any],
    logits_detail: dict[str, Any] | None,
    tol: int = MAX_STEP_DIFF,
) -> dict[str, Any]:
    """Compare two runtimes' raw outputs; when both give the logits (the input of a final integer
    SOFTMAX), the verdict is on the logits, since int8 softmax kernels use different exp
    approximations and differ by several steps on the probabilities alone."""
    d_out, unit, ok_out = _diff(a, b, out_detail, tol)
    with np.errstate(invalid="ignore"):
        beyond = int((np.abs(a.astype(np.float64) - b.astype(np.float64)) > (tol if unit == "steps" else 0)).sum())
    c: dict[str, Any] = {
        "samples": int(len(a)),
        "output_max_diff": d_out,
        "output_values_beyond_tolerance": beyond,
        "values": int(a.size),
        "top1_agreement": float(np.mean(np.argmax(a, -1) == np.argmax(b, -1))),
        "unit": unit,
        "allowed": tol,
        "compared": "output",
        "max_diff": d_out,
        "agree": ok_out,
    }
    if a_logits is not None and b_logits is not None and logits_detail is not None:
        d_log, _, ok_log = _diff(a_logits, b_logits, logits_detail, tol)
        c.update(compared="logits (input of the final SOFTMAX)", logits_max_diff=d_log, max_diff=d_log, agree=ok_log)
    return c


def precision_of(structure: dict[str, Any]) -> str:
    """int8 when the model computes in integers (int8 weights, no float32 weights), else float32."""
    c = structure["constant_dtypes"]
    return "int8" if c.get("int8") and not c.get("float32") and not c.get("float16") else "float32"


def validate(
    tflite: bytes,
    data: Dataset,
    config: ValidateConfig | None = None,
    *,
    keras_model: Any | None = None,
    baseline_accuracy: float | None = None,
    profiles: list[DeviceProfile] | None = None,
    calibration: dict[str, Any] | None = None,
    name: str = "model",
) -> StageResult:
    """Check ``tflite`` against ``data``'s test split and the budgets of ``profiles``.

    ``metrics["gates"]`` lists every gate; ``metrics["passed"]`` is False when any failed and
    ``metrics["crashed"]`` names runtimes that crashed or hung. The caller decides what a failure means.
    """
    config = config or ValidateConfig()
    profiles = profiles or []
    structure = tfl.inspect(tflite, name)  # a corrupt file stops here, before any interpreter
    out_detail = structure["outputs"][0]
    x, y = data.x_test, data.y_test
    if config.max_samples is not None:
        x, y = x[: config.max_samples], y[: config.max_samples]
    want = tuple(structure["inputs"][0]["shape"][1:])
    if tuple(x.shape[1:]) != want:
        from edgeopt.errors import BadInput

        raise BadInput(f"data {data.name} has examples of shape {tuple(x.shape[1:])} but the .tflite expects {want}")
    t_out = config.timeout_s
    tol = config.max_step_diff
    metrics: dict[str, Any] = {"schema": SCHEMA, "model": name, "structure": structure, "samples": int(len(x))}
    crashed: list[str] = []
    failures: dict[str, str] = {}  # runtime -> why its checks could not run

    def child(task: str, runtime: str, xs: np.ndarray | None, **kw: Any) -> tuple[dict[str, Any], Any] | None:
        try:
            return run_task(task, runtime, tflite, xs, timeout=t_out, **kw)
        except ChildFailed as e:
            failures[f"{runtime}:{task}"] = str(e)
            if e.crashed:
                crashed.append(str(e))
            return None

    litert_threads = sorted({1, *(p.threads for p in profiles if p.runtime is Runtime.litert)})
    tflm_needed = any(p.runtime is Runtime.tflm for p in profiles)
    vela_cfgs = {p.vela.model_dump_json(): p.vela for p in profiles if p.vela is not None}
    steps = 2 + (len(litert_threads) if config.latency else 0) + int(tflm_needed) + len(vela_cfgs)

    with Timer() as t, ui.task(f"validate {name}", steps) as advance:
        # 1. accuracy through LiteRT's optimized kernels (XNNPACK)
        logits = structure["logits"]
        tap = logits["index"] if logits and np.dtype(out_detail["dtype"]).kind in "iu" else None
        r = child("litert_eval", "litert", x, batch_size=config.batch_size, tap=tap)
        raw = r[1] if r else None
        raw_logits = r[0].get("tap") if r else None
        metrics["runtime"] = f"ai_edge_litert {litert.version()} (optimized kernels, XNNPACK; child process)"
        if raw is not None:
            out = _deq(raw, out_detail)
            pred = np.argmax(out, axis=-1)
            metrics.update(
                accuracy=float(np.mean(pred == y)),
                outputs_finite=bool(np.isfinite(out).all()),
                predicted_classes=int(len(np.unique(pred))),
            )
            if keras_model is not None:
                k_out = predict(keras_model, x)
                k_pred = np.argmax(k_out, axis=-1)
                metrics["keras_accuracy"] = float(np.mean(k_pred == y))
                metrics["agreement"] = float(np.mean(k_pred == pred))
                metrics["accuracy_drop_vs_keras"] = metrics["keras_accuracy"] - metrics["accuracy"]
                metrics["max_abs_output_diff"] = float(np.max(np.abs(k_out - out)))
        else:
            metrics.update(accuracy=None, outputs_finite=None)
        advance()

        # 2. the same inputs through the reference kernels
        n = min(len(x), CROSS_CHECK_SAMPLES)
        cross: dict[str, Any] | None = None
        if not config.cross_check:
            failures["litert-reference:litert_eval"] = "disabled (--no-cross-check)"
        elif raw is not None:
            r = child(
                "litert_eval", "litert-reference", x[:n], batch_size=config.batch_size, resolver="reference", tap=tap
            )
            if r is not None:
                cross = _compare(raw[:n], r[1], _head(raw_logits, n), r[0].get("tap"), out_detail, logits, tol)
                cross["method"] = "optimized (XNNPACK) vs reference kernels (OpResolverType.BUILTIN_REF)"
        metrics["kernel_cross_check"] = cross
        advance()

        # 3. host latency per thread count
        latency: dict[str, Any] = {}
        if config.latency:
            for th in litert_threads:
                r = child("litert_bench", "litert", x[:1], threads=th)
                if r is not None:
                    ts = np.asarray(r[0]["times_ms"])
                    latency[str(th)] = {
                        "threads": th,
                        "runs": int(len(ts)),
                        "init_ms": r[0]["init_ms"],
                        "p50_ms": float(np.percentile(ts, 50)),
                        "p90_ms": float(np.percentile(ts, 90)),
                        "p99_ms": float(np.percentile(ts, 99)),
                        "mean_ms": float(ts.mean()),
                        "std_ms": float(ts.std()),
                        "times_ms": [round(float(v), 4) for v in ts],
                        "method": f"measured on this host: ai_edge_litert {litert.version()}, XNNPACK, {th} thread(s),"
                        " batch 1, 10 warm-up runs, invoke() only",
                    }
                advance()
        metrics["latency"] = latency

        # 4. TFLite Micro
        tflm: dict[str, Any] | None = None
        if tflm_needed:
            m = min(len(x), TFLM_SAMPLES)
            r = child("tflm_eval", "tflm", x[:m], tap=tap)
            if r is not None:
                tflm = {
                    "arena_bytes": r[0]["arena_bytes"],
                    "samples": m,
                    "method": "smallest arena that allocates and runs (binary search to 16 bytes), tflite-micro",
                }
                if raw is not None:
                    c = _compare(r[1], raw[:m], r[0].get("tap"), _head(raw_logits, m), out_detail, logits, tol)
                    tflm.update(vs_litert=c, max_diff_vs_litert=c["max_diff"], unit=c["unit"], agree=c["agree"])
            advance()
        metrics["tflm"] = tflm

        # 5. Vela
        vela: dict[str, Any] = {}
        for key, vc in vela_cfgs.items():
            from edgeopt.runtimes import vela as vela_rt

            try:
                vela[key] = vela_rt.compile_model(tflite, vc, timeout=t_out)
            except ChildFailed as e:
                failures[f"vela:{key}"] = str(e)
                if e.crashed:
                    crashed.append(str(e))
            advance()
        metrics["vela"] = {vela_cfgs[k].accelerator_config: v for k, v in vela.items()}

    # ---- gates ----
    gates: list[dict[str, Any]] = []
    litert_fail = failures.get("litert:litert_eval")
    if config.min_accuracy is not None:
        g = _budget_gate(
            "-",
            "min_accuracy",
            metrics.get("accuracy"),
            config.min_accuracy,
            "",
            litert_fail or "",
            higher_is_better=True,
        )
        gates.append(g)  # type: ignore[arg-type]
    if config.max_accuracy_drop is not None:
        drop = None
        if baseline_accuracy is not None and metrics.get("accuracy") is not None:
            drop = (baseline_accuracy - metrics["accuracy"]) * 100
        why = litert_fail or "no baseline accuracy to compare with"
        gates.append(_budget_gate("-", "max_accuracy_drop", drop, config.max_accuracy_drop, "points", why))  # type: ignore[arg-type]
    for p in profiles:
        gates += _profile_gates(p, metrics, failures, calibration)
    metrics["gates"] = gates
    metrics["crashed"] = crashed
    metrics["failures"] = failures
    finite = metrics.get("outputs_finite")
    metrics["passed"] = not crashed and finite is not False and all(g["status"] != "failed" for g in gates)
    return StageResult("validate", metrics=metrics, seconds=t.seconds)


def _profile_gates(
    p: DeviceProfile, m: dict[str, Any], failures: dict[str, str], calibration: dict[str, Any] | None
) -> list[dict[str, Any]]:
    s, b, name = m["structure"], p.budgets, p.name
    gates: list[dict[str, Any] | None] = []
    gates.append(_budget_gate(name, "model_bytes", s["bytes"], b.model_bytes, "bytes", ""))
    for which, want in (("input_dtype", p.input_dtype), ("output_dtype", p.output_dtype)):
        if want is not None:
            got = s["inputs" if which == "input_dtype" else "outputs"][0]["dtype"]
            gates.append(
                _gate(
                    name,
                    which,
                    "passed" if got == want.value else "failed",
                    f"{got} (required {want.value})",
                    got,
                    want.value,
                )
            )
    if p.builtin_ops_only:
        bad = s["custom_ops"]
        gates.append(
            _gate(
                name,
                "builtin_ops_only",
                "failed" if bad else "passed",
                f"custom/Flex ops: {', '.join(bad)}" if bad else "only builtin ops",
                len(bad),
                0,
            )
        )
    lit_fail = failures.get("litert:litert_eval")
    if m.get("outputs_finite") is None:
        gates.append(_gate(name, "outputs_finite", "not evaluated", lit_fail or "no outputs"))
    else:
        ok = m["outputs_finite"]
        gates.append(
            _gate(
                name,
                "outputs_finite",
                "passed" if ok else "failed",
                "all outputs finite" if ok else "NaN or Inf in the outputs",
            )
        )
    no_keras = lit_fail or "no Keras reference model given (--keras)"
    drop = m["accuracy_drop_vs_keras"] * 100 if "accuracy_drop_vs_keras" in m else None
    gates.append(_budget_gate(name, "accuracy_drop_max", drop, b.accuracy_drop_max, "points", no_keras, fmt="{:.2f}"))
    gates.append(
        _budget_gate(
            name,
            "min_agreement",
            m.get("agreement"),
            b.min_agreement,
            "",
            no_keras,
            higher_is_better=True,
            fmt="{:.4f}",
        )
    )
    cross = m.get("kernel_cross_check")
    if cross is None:
        why = failures.get("litert-reference:litert_eval") or lit_fail or "not run"
        gates.append(
            _gate(name, "kernel_cross_check", "failed" if "crashed" in why or "hung" in why else "not evaluated", why)
        )
    else:
        gates.append(
            _gate(
                name,
                "kernel_cross_check",
                "passed" if cross["agree"] else "failed",
                _compare_detail(cross),
                cross["max_diff"],
                cross["allowed"],
                cross["unit"],
            )
        )
    gates.append(_latency_gate(p, m, failures, calibration))
    if p.runtime is Runtime.tflm:
        gates += _tflm_gates(p, m, failures)
    if p.vela is not None:
        v = m["vela"].get(p.vela.accelerator_config)
        if v is None:
            why = next((f for k, f in failures.items() if k.startswith("vela:")), "vela did not run")
            gates.append(_gate(name, "vela_compile", "failed", why))
        else:
            gates.append(
                _gate(
                    name,
                    "vela_compile",
                    "passed",
                    f"{v['npu_ops']} NPU / {v['cpu_ops']} CPU ops, SRAM {v['sram_bytes']:,} B, "
                    f"flash {v['flash_bytes']:,} B",
                )
            )
            gates.append(_budget_gate(name, "npu_sram_bytes", v["sram_bytes"], p.vela.sram_bytes, "bytes", ""))
    return [g for g in gates if g is not None]


def _compare_detail(c: dict[str, Any], what: str = "") -> str:
    text = f"{what}max difference {c['max_diff']:.6g} {c['unit']} in the {c['compared']} over {c['samples']} inputs "
    text += f"(allowed: {c.get('allowed', MAX_STEP_DIFF)} step{'s' if c.get('allowed', 1) != 1 else ''})"
    if c["compared"] != "output":
        text += f"; probabilities differ by up to {c['output_max_diff']:.6g} steps"
    return text + f"; top-1 agreement {c['top1_agreement']:.4f}"


def _latency_gate(
    p: DeviceProfile, m: dict[str, Any], failures: dict[str, str], calibration: dict[str, Any] | None
) -> dict[str, Any] | None:
    budget = p.budgets.latency_p90_ms
    if budget is None:
        return None
    if p.vela is not None:
        v = m["vela"].get(p.vela.accelerator_config)
        if v is None:
            return _gate(p.name, "latency_p90_ms", "not evaluated", "Vela did not run")
        g = _budget_gate(p.name, "latency_p90_ms", v["estimated_ms"], budget, "ms", "", fmt="{:.4g}")
        assert g is not None
        g["detail"] += f"; estimate: {v['method']}"
        g["method"] = v["method"]
        return g
    if p.runtime is not Runtime.litert:
        return _gate(
            p.name,
            "latency_p90_ms",
            "not evaluated",
            "no published reference latency for this device to scale host figures with",
        )
    host = m["latency"].get(str(p.threads))
    if host is None:
        return _gate(
            p.name, "latency_p90_ms", "not evaluated", failures.get("litert:litert_bench", "latency not measured")
        )
    prec = precision_of(m["structure"])
    cal = (calibration or {}).get("profiles", {}).get(p.name, {})
    if prec not in cal:
        return _gate(
            p.name,
            "latency_p90_ms",
            "not evaluated",
            f"no calibration for {p.name} ({prec}); run `edgeopt calibrate` "
            f"(host p90 {host['p90_ms']:.3f} ms at {p.threads} thread(s) is measured, the device figure is not)",
        )
    c = cal[prec]
    est = host["p90_ms"] * c["factor"]
    g = _budget_gate(p.name, "latency_p90_ms", est, budget, "ms", "", fmt="{:.4g}")
    assert g is not None
    method = (
        f"estimate: host p90 {host['p90_ms']:.4g} ms x factor {c['factor']:.3g} ({cal['reference']} {prec}: "
        f"{c['device_ms']} ms on device / {c['host_p50_ms']:.4g} ms on this host, {cal['threads']} thread(s); "
        f"{cal['source']})"
    )
    g["detail"] += f"; {method}"
    g["method"] = method
    return g


def _tflm_gates(p: DeviceProfile, m: dict[str, Any], failures: dict[str, str]) -> list[dict[str, Any] | None]:
    t, name = m.get("tflm"), p.name
    if t is None:
        why = failures.get("tflm:tflm_eval", "TFLite Micro did not run")
        return [
            _gate(name, "tflm_runs", "failed", why),
            _gate(name, "arena_bytes", "not evaluated", why) if p.budgets.arena_bytes else None,
        ]
    gates: list[dict[str, Any] | None] = [_gate(name, "tflm_runs", "passed", "every op supported by TFLite Micro")]
    if "agree" in t:
        gates.append(
            _gate(
                name,
                "tflm_agreement",
                "passed" if t["agree"] else "failed",
                _compare_detail(t["vs_litert"], "vs LiteRT: "),
                t["max_diff_vs_litert"],
                t["vs_litert"]["allowed"],
                t["unit"],
            )
        )
    gates.append(_budget_gate(name, "arena_bytes", t["arena_bytes"], p.budgets.arena_bytes, "bytes", ""))
    return gates
