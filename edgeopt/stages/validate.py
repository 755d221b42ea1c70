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
from edgeopt.data import Dataset, align_labels, labels_from_tflite
from edgeopt.errors import BadInput
from edgeopt.firmware.check import check_profile
from edgeopt.gates import precision_of
from edgeopt.progress import Timer
from edgeopt.runtimes import litert
from edgeopt.runtimes import vela as vela_rt
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


class _Children:
    """Runs the interpreters' tasks in child processes with the config's timeout; remembers why a check
    could not run (``failures``, "runtime:task" -> why) and which runtimes crashed or hung."""

    def __init__(self, tflite: bytes, timeout: float, name: str) -> None:
        self.tflite, self.timeout, self.name = tflite, timeout, name
        self.failures: dict[str, str] = {}
        self.crashed: list[str] = []

    def __call__(self, task: str, runtime: str, xs: np.ndarray | None, **kw: Any) -> tuple[dict[str, Any], Any] | None:
        try:
            return run_task(task, runtime, self.tflite, xs, timeout=self.timeout, **kw)
        except ChildFailed as e:
            self.fail(f"{runtime}:{task}", e)
            return None

    def fail(self, key: str, e: ChildFailed) -> None:
        log.warning("%s: %s (%s)", self.name, e, key)
        self.failures[key] = str(e)
        if e.crashed:
            self.crashed.append(str(e))


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
    config = config or ValidateConfig()
    profiles = profiles or []
    structure = tfl.inspect(tflite, name)  # a corrupt file stops here, before any interpreter
    data = align_labels(
        data,
        labels if labels is not None else labels_from_tflite(tflite),
        source=f"{name}'s labels" if labels is not None else f"{name}'s embedded manifest",
    )
    x, y = data.x_test, data.y_test
    if config.max_samples is not None:
        x, y = x[: config.max_samples], y[: config.max_samples]
    want = tuple(structure["inputs"][0]["shape"][1:])
    if tuple(x.shape[1:]) != want:
        raise BadInput(f"data {data.name} has examples of shape {tuple(x.shape[1:])} but the .tflite expects {want}")
    children = _Children(tflite, config.timeout_s, name)
    litert_threads = sorted({1, *(p.threads for p in profiles if p.runtime is Runtime.litert)})
    tflm_needed = any(p.runtime is Runtime.tflm for p in profiles)
    vela_cfgs = {p.vela.model_dump_json(): p.vela for p in profiles if p.vela is not None}
    fw_profiles = [p for p in profiles if p.firmware is not None]
    steps = 2 + (len(litert_threads) if config.latency else 0) + int(tflm_needed) + len(vela_cfgs) + len(fw_profiles)
    metrics: dict[str, Any] = {"structure": structure, "samples": int(len(x))}
    with Timer() as t, progress.task(f"validate {name}", steps) as advance:
        raw, raw_logits = _accuracy(metrics, children, x, y, config, keras_model)
        advance()
        metrics["kernel_cross_check"] = _cross_check(children, x, raw, raw_logits, structure, config)
        advance()
        metrics["latency"] = _latency(children, x, litert_threads, advance) if config.latency else {}
        metrics["tflm"] = _tflm(children, x, raw, raw_logits, structure, config.max_step_diff) if tflm_needed else None
        advance(int(tflm_needed))
        metrics["vela"] = _vela(children, vela_cfgs, config.timeout_s, advance)
        if fw_profiles:
            metrics["firmware"] = _firmware(children, fw_profiles, x, data.name, advance)
    measurements = Measurements.model_validate(metrics)
    failures = children.failures
    gates = judging.judge(measurements, config, profiles, calibration, baseline_accuracy, failures=failures)
    result = ValidationResult(
        model=name,
        seconds=t.seconds,
        measurements=measurements,
        gates=gates,
        crashed=children.crashed,
        failures=failures,
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


def _logits_tap(structure: dict[str, Any]) -> int | None:
    """The tensor feeding an integer model's final SOFTMAX (its logits), when there is one."""
    logits, out = structure["logits"], structure["outputs"][0]
    return logits["index"] if logits and np.dtype(out["dtype"]).kind in "iu" else None


def _accuracy(
    metrics: dict[str, Any],
    children: _Children,
    x: np.ndarray,
    y: np.ndarray,
    config: ValidateConfig,
    keras_model: Any | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Accuracy through LiteRT's optimized kernels (XNNPACK), and against the Keras model when given;
    returns the raw outputs and logits for the other checks."""
    out_detail = metrics["structure"]["outputs"][0]
    r = children("litert_eval", "litert", x, batch_size=config.batch_size, tap=_logits_tap(metrics["structure"]))
    metrics["runtime"] = f"ai_edge_litert {litert.version()} (optimized kernels, XNNPACK; child process)"
    if r is None:
        metrics.update(accuracy=None, outputs_finite=None)
        return None, None
    raw = r[1]
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
        # both are k/n fractions: rounding only removes the subtraction's float noise (-0.0099999 is -0.01)
        metrics["accuracy_drop_vs_keras"] = round(metrics["keras_accuracy"] - metrics["accuracy"], 12)
        metrics["max_abs_output_diff"] = float(np.max(np.abs(k_out - out)))
    return raw, r[0].get("tap")


def _cross_check(
    children: _Children,
    x: np.ndarray,
    raw: np.ndarray | None,
    raw_logits: np.ndarray | None,
    structure: dict[str, Any],
    config: ValidateConfig,
) -> dict[str, Any] | None:
    """The same inputs through LiteRT's reference kernels, compared with the optimized kernels' outputs."""
    if not config.cross_check:
        children.failures["litert-reference:litert_eval"] = "disabled (--no-cross-check)"
        return None
    if raw is None:
        return None
    n = min(len(x), CROSS_CHECK_SAMPLES)
    tap = _logits_tap(structure)
    r = children("litert_eval", "litert-reference", x[:n], batch_size=config.batch_size, resolver="reference", tap=tap)
    if r is None:
        return None
    out_detail, logits = structure["outputs"][0], structure["logits"]
    cross = _compare(raw[:n], r[1], _head(raw_logits, n), r[0].get("tap"), out_detail, logits, config.max_step_diff)
    cross["method"] = "optimized (XNNPACK) vs reference kernels (OpResolverType.BUILTIN_REF)"
    return cross


def _latency(children: _Children, x: np.ndarray, threads: list[int], advance: Any) -> dict[str, Any]:
    """Host latency of batch-1 ``invoke()`` per thread count."""
    latency: dict[str, Any] = {}
    for th in threads:
        r = children("litert_bench", "litert", x[:1], threads=th)
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
    return latency


def _tflm(
    children: _Children,
    x: np.ndarray,
    raw: np.ndarray | None,
    raw_logits: np.ndarray | None,
    structure: dict[str, Any],
    tol: int,
) -> dict[str, Any] | None:
    """TFLite Micro: the smallest arena that runs, and its outputs against LiteRT's."""
    m = min(len(x), TFLM_SAMPLES)
    r = children("tflm_eval", "tflm", x[:m], tap=_logits_tap(structure))
    if r is None:
        return None
    tflm: dict[str, Any] = {
        "arena_bytes": r[0]["arena_bytes"],
        "samples": m,
        "method": "smallest arena that allocates and runs (binary search to 16 bytes), tflite-micro",
    }
    if raw is not None:
        out_detail, logits = structure["outputs"][0], structure["logits"]
        c = _compare(r[1], raw[:m], r[0].get("tap"), _head(raw_logits, m), out_detail, logits, tol)
        tflm.update(vs_litert=c, max_diff_vs_litert=c["max_diff"], unit=c["unit"], agree=c["agree"])
    return tflm


def _vela(children: _Children, configs: dict[str, Any], timeout: float, advance: Any) -> dict[str, Any]:
    """Vela's compilation for each Ethos-U configuration, by accelerator."""
    vela: dict[str, Any] = {}
    for key, vc in configs.items():
        try:
            vela[vc.accelerator_config] = vela_rt.compile_model(children.tflite, vc, timeout=timeout)
        except ChildFailed as e:
            children.fail(f"vela:{key}", e)
        advance()
    return vela


def _firmware(children: _Children, profiles: list[DeviceProfile], x: np.ndarray, data: str, advance: Any) -> dict:
    """The firmware check of each profile with ``firmware:`` (edgeopt.firmware): the model built for the
    profile's core, run in QEMU, bit-exact against TFLite Micro's Python interpreter, measured. Missing
    tools or tree: not evaluated (BadInput's line says what to install); a hang or fault: crashed."""
    out: dict[str, Any] = {}
    for p in profiles:
        try:
            out[p.name] = check_profile(children.tflite, children.name, p, x=x, data=data).to_json()
        except BadInput as e:
            log.warning("%s: firmware check on %s: %s", children.name, p.name, e)
            children.failures[f"firmware:{p.name}"] = str(e)
        except ChildFailed as e:
            children.fail(f"firmware:{p.name}", e)
        advance()
    return out
