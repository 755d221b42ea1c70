"""Validate a .tflite: structure, accuracy in LiteRT, kernel cross-check, host latency, device
budgets (LiteRT phones, TFLite Micro MCUs, Ethos-U NPUs). This module measures; ``edgeopt.gates``
judges the measurements (every gate passed, failed or not evaluated with a reason), and the result is
an ``edgeopt.validation.ValidationResult``. Every number says how it was obtained.

All interpreters and compilers run in child processes with a timeout (edgeopt.runtimes.isolate): a
crash or hang becomes a failed gate naming the runtime and the signal, and the other checks go on.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeopt import gates as judging
from edgeopt import progress
from edgeopt import tflite as tfl
from edgeopt.config import DeviceProfile, Runtime, ValidateConfig
from edgeopt.data import Dataset
from edgeopt.gates import precision_of
from edgeopt.progress import Timer
from edgeopt.runtimes import litert
from edgeopt.runtimes.isolate import ChildFailed, run_task
from edgeopt.stages._common import predict
from edgeopt.validation import SCHEMA, Measurements, ValidationResult

log = logging.getLogger(__name__)

__all__ = ["SCHEMA", "ValidationResult", "precision_of", "validate"]

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
    labels: list[str] | None = None,
) -> ValidationResult:
    """Check ``tflite`` against ``data``'s test split and the budgets of ``profiles``.

    The model's outputs follow its labels (``labels``, else the ``labels`` of its embedded edgeopt
    manifest): data whose class names are the same set in another order is mapped by name, and a
    different set is BadInput naming both lists; nothing is scored against another order in silence.

    The result lists every gate; ``passed`` is False when one failed, ``crashed`` names runtimes that
    crashed or hung. The caller decides what a failure means (``result.raise_for_status()``).
    BadInput when the bytes are not a .tflite or the data does not fit its input.
    """
    from edgeopt.data import align_labels, labels_from_tflite

    config = config or ValidateConfig()
    profiles = profiles or []
    structure = tfl.inspect(tflite, name)  # a corrupt file stops here, before any interpreter
    data = align_labels(
        data,
        labels if labels is not None else labels_from_tflite(tflite),
        source=f"{name}'s labels" if labels is not None else f"{name}'s embedded manifest",
    )
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
    # the measurements, in the order the JSON dict has always had them
    metrics: dict[str, Any] = {"structure": structure, "samples": int(len(x))}
    crashed: list[str] = []
    failures: dict[str, str] = {}  # runtime -> why its checks could not run

    def child(task: str, runtime: str, xs: np.ndarray | None, **kw: Any) -> tuple[dict[str, Any], Any] | None:
        try:
            return run_task(task, runtime, tflite, xs, timeout=t_out, **kw)
        except ChildFailed as e:
            log.warning("%s: %s (%s)", name, e, task)
            failures[f"{runtime}:{task}"] = str(e)
            if e.crashed:
                crashed.append(str(e))
            return None

    litert_threads = sorted({1, *(p.threads for p in profiles if p.runtime is Runtime.litert)})
    tflm_needed = any(p.runtime is Runtime.tflm for p in profiles)
    vela_cfgs = {p.vela.model_dump_json(): p.vela for p in profiles if p.vela is not None}
    steps = 2 + (len(litert_threads) if config.latency else 0) + int(tflm_needed) + len(vela_cfgs)

    with Timer() as t, progress.task(f"validate {name}", steps) as advance:
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
                # both are k/n fractions: rounding only removes the subtraction's float noise
                # (-0.009999999999998899 is -0.01)
                metrics["accuracy_drop_vs_keras"] = round(metrics["keras_accuracy"] - metrics["accuracy"], 12)
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
                log.warning("%s: %s", name, e)
                failures[f"vela:{key}"] = str(e)
                if e.crashed:
                    crashed.append(str(e))
            advance()
        metrics["vela"] = {vela_cfgs[k].accelerator_config: v for k, v in vela.items()}

    measurements = Measurements.model_validate(metrics)
    gates = judging.judge(measurements, config, profiles, calibration, baseline_accuracy, failures=failures)
    result = ValidationResult(
        model=name, seconds=t.seconds, measurements=measurements, gates=gates, crashed=crashed, failures=failures
    )
    log.info(
        "%s: %s (%d gates, %d failed, %d not evaluated) in %.1f s",
        name,
        "passed" if result.passed else "FAILED",
        len(gates),
        len(result.failed_gates),
        len(result.not_evaluated),
        t.seconds,
    )
    return result
