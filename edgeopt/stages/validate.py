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
from edgeopt.arm import check as phone_check
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
from edgeopt.validation import SCHEMA, Measurements, ValidationResult, pack_outcomes

log = logging.getLogger(__name__)

__all__ = ["SCHEMA", "ValidationResult", "precision_of", "validate"]

CROSS_CHECK_SAMPLES = 200
TFLM_SAMPLES = 100
# A tensor "diverges" when its RMS difference exceeds this share of its spread and is at least three times
# the share its inputs arrived with: rounding differences grow a few percent over a 20-deep network
# (measured on a MobileNet-style model), a wrong kernel makes them jump at its op.
DIVERGED_RMS = 0.10


def _deq(raw: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    return litert.dequantize_values(raw, detail["scale"], detail["zero_point"])


@np.errstate(invalid="ignore")
def _max_diff(a: np.ndarray, b: np.ndarray, integer: bool) -> float:
    """Largest difference: in quantization steps for integer tensors, absolute for float (NaN stays NaN)."""
    if not a.size:
        return 0.0
    if integer:
        return float(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def relative_rms(a: np.ndarray, b: np.ndarray) -> float:
    """RMS of ``a - b`` over the standard deviation of ``b`` (the reference): what share of the values'
    spread the two differ by; 0 for identical tensors, about 1.4 for unrelated ones."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    spread = float(b64.std())
    rms = float(np.sqrt(np.mean((a64 - b64) ** 2))) if a.size else 0.0
    return rms / spread if spread > 0 else (0.0 if rms == 0 else float("inf"))


def _head(a: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if a is None else a[:n]


def _compare(
    a: np.ndarray,
    b: np.ndarray,
    a_logits: np.ndarray | None,
    b_logits: np.ndarray | None,
    structure: dict[str, Any],
    fixed_steps: int | None = None,
) -> dict[str, Any]:
    """Compare two runtimes' raw outputs (``b`` is the reference). When both give the logits (the input of a
    final integer SOFTMAX) the verdict is on the logits, since int8 softmax kernels approximate exp
    differently and differ by several steps on the probabilities alone. Integer tensors agree when they
    differ by at most ``gates.allowed_steps`` of the compared tensor's requantizing depth (or
    ``fixed_steps``) and at most ``gates.allowed_flips`` examples change class."""
    out_detail, logits_detail = structure["outputs"][0], structure["logits"]
    integer = np.dtype(out_detail["dtype"]).kind in "iu"
    use_logits = a_logits is not None and b_logits is not None and logits_detail is not None
    ta, tb = (a_logits, b_logits) if use_logits else (a, b)
    assert ta is not None and tb is not None
    index = logits_detail["index"] if use_logits else structure.get("output_index", -1)
    depth, allowed = _bound(structure, index, fixed_steps)
    d_out = _max_diff(a, b, integer)
    d = _max_diff(ta, tb, integer)
    flips, unexplained = _flips(ta, tb, allowed)
    if integer:
        ok = d <= allowed and unexplained == 0
    else:  # float kernels differ in summation order only
        with np.errstate(invalid="ignore"):
            ok = bool(d <= 1e-4 * max(1.0, float(np.max(np.abs(tb))) if tb.size else 1.0))
    with np.errstate(invalid="ignore"):
        beyond = int((np.abs(a.astype(np.float64) - b.astype(np.float64)) > (allowed if integer else 0)).sum())
    c: dict[str, Any] = {
        "samples": int(len(a)),
        "output_max_diff": d_out,
        "output_values_beyond_tolerance": beyond,
        "values": int(a.size),
        "top1_agreement": float(np.mean(np.argmax(a, -1) == np.argmax(b, -1))),
        "unit": "steps" if integer else "abs",
        "allowed": allowed,
        "compared": "logits (input of the final SOFTMAX)" if use_logits else "output",
        "max_diff": d,
        "agree": bool(ok),
        "depth": depth,
        "flips": flips,
        "unexplained_flips": unexplained,
        "relative_rms": relative_rms(ta, tb),
        "bound": "set by max_step_diff" if fixed_steps is not None else f"2 sqrt(depth {depth})",
    }
    if use_logits:
        c["logits_max_diff"] = d
    return c


def _bound(structure: dict[str, Any], index: int, fixed_steps: int | None) -> tuple[int, int]:
    """(the requantizing depth of tensor ``index``, the steps two runtimes may differ by there):
    ``gates.allowed_steps`` of that depth, or ``fixed_steps``."""
    depth = tfl.requant_depths(structure).get(index, len(structure["ops"]))
    return depth, fixed_steps if fixed_steps is not None else judging.allowed_steps(depth)


def _flips(a: np.ndarray, b: np.ndarray, allowed: float) -> tuple[int, int]:
    """(examples whose top-1 class differs, those of them the bound does not explain): a class can change
    only where the reference's two classes are within ``allowed`` steps of each other."""
    ta, tb = np.argmax(a, -1), np.argmax(b, -1)
    changed = np.flatnonzero(ta != tb)
    b64 = b.astype(np.float64)
    margins = b64[changed, tb[changed]] - b64[changed, ta[changed]]
    return int(len(changed)), int(np.sum(margins > allowed))


def first_divergence(
    structure: dict[str, Any],
    mine: dict[int, np.ndarray],
    reference: dict[int, np.ndarray],
    names: list[str] | None = None,
) -> dict[str, Any] | None:
    """The first op (in execution order) whose output differs from the reference's by more than
    ``DIVERGED_RMS`` of its spread and by at least three times what its inputs arrived with; None when no
    op does (the difference built up gradually, as rounding differences do)."""
    names = names or []
    rel: dict[int, float] = {}
    for k, op in enumerate(structure["macs_per_op"]):
        inputs = [rel.get(i, 0.0) for i in op["inputs"] if i in rel]
        before = max(inputs, default=0.0)
        for o in op["outputs"]:
            if o not in mine or o not in reference:
                continue
            rel[o] = relative_rms(mine[o], reference[o])
            if rel[o] > DIVERGED_RMS and rel[o] >= 3 * before:
                return {
                    "op_index": k,
                    "op": op["op"],
                    "tensor": names[o] if o < len(names) else f"tensor {o}",
                    "steps": _max_diff(mine[o], reference[o], mine[o].dtype.kind in "iu"),
                    "relative_rms": rel[o],
                    "input_relative_rms": before,
                }
    return None


def _op_outputs(structure: dict[str, Any]) -> list[int]:
    return [o for op in structure["macs_per_op"] for o in op["outputs"] if o >= 0]


def _worst(a: np.ndarray, b: np.ndarray) -> int:
    """The example the two differ most on (class changes first)."""
    flips = np.argmax(a, -1) != np.argmax(b, -1)
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64)).reshape(len(a), -1).max(axis=1)
    return int(np.argmax(diff + flips * (diff.max() + 1)))


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
    """Check ``tflite`` against ``data``'s test split (``config.split``: or its validation split) and the
    budgets of ``profiles``.

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
        data.scored_on(config.split.value),
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
    arm_cores = {p.arm.core for p in profiles if p.arm is not None and p.runtime is Runtime.litert}
    steps = 2 + (len(litert_threads) if config.latency else 0) + int(tflm_needed) + len(vela_cfgs) + len(fw_profiles)
    steps += len(arm_cores) if config.phone_check else 0
    metrics: dict[str, Any] = {"structure": structure, "samples": int(len(x))}
    with Timer() as t, progress.task(f"validate {name}", steps) as advance:
        raw, raw_logits = _accuracy(metrics, children, x, y, config, keras_model)
        advance()
        metrics["kernel_cross_check"], reference = _cross_check(children, x, raw, raw_logits, structure, config)
        advance()
        metrics["latency"] = _latency(children, x, litert_threads, advance) if config.latency else {}
        metrics["tflm"] = _tflm(children, x, raw, raw_logits, structure, config.max_step_diff) if tflm_needed else None
        advance(int(tflm_needed))
        metrics["vela"] = _vela(children, vela_cfgs, config.timeout_s, advance)
        if fw_profiles:
            metrics["firmware"] = _firmware(children, fw_profiles, x, data.name, advance)
        if arm_cores:
            metrics["arm"] = _phone(children, profiles, x, y, raw, raw_logits, reference, structure, config, advance)
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
    if config.outcomes:
        metrics["correct"] = pack_outcomes(pred == y)
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
) -> tuple[dict[str, Any] | None, tuple[np.ndarray, np.ndarray | None] | None]:
    """The same inputs through LiteRT's reference kernels, compared with the optimized kernels' outputs;
    also the reference outputs and logits (the phone check compares the Arm kernels with them too)."""
    if not config.cross_check:
        children.failures["litert-reference:litert_eval"] = "disabled (--no-cross-check)"
        return None, None
    if raw is None:
        return None, None
    n = min(len(x), CROSS_CHECK_SAMPLES)
    tap = _logits_tap(structure)
    r = children("litert_eval", "litert-reference", x[:n], batch_size=config.batch_size, resolver="reference", tap=tap)
    if r is None:
        return None, None
    cross = _compare(raw[:n], r[1], _head(raw_logits, n), r[0].get("tap"), structure, config.max_step_diff)
    cross["method"] = "optimized (XNNPACK) vs reference kernels (OpResolverType.BUILTIN_REF)"
    if not cross["agree"] and np.dtype(structure["outputs"][0]["dtype"]).kind in "iu":
        k = _worst(raw[:n], r[1])
        mine = children("litert_tensors", "litert", x[k : k + 1], indices=_op_outputs(structure))
        ref = children(
            "litert_tensors", "litert-reference", x[k : k + 1], indices=_op_outputs(structure), resolver="reference"
        )
        cross["first_divergence"] = _locate(children.tflite, structure, mine, ref, k, "XNNPACK vs reference kernels")
    return cross, (r[1], r[0].get("tap"))


def _locate(
    tflite: bytes,
    structure: dict[str, Any],
    mine: tuple[dict[str, Any], Any] | None,
    ref: tuple[dict[str, Any], Any] | None,
    example: int,
    what: str,
) -> dict[str, Any] | None:
    """Where two runtimes that disagree part, from every op's output on their worst example."""
    if mine is None or ref is None:
        return None
    found = first_divergence(structure, mine[0]["tensors"], ref[0]["tensors"], tfl.tensor_names(tflite))
    if found is not None:
        found.update(example=example, method=f"every op's output tensor kept and compared, {what}, on that example")
    return found


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
    tol: int | None,
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
        c = _compare(r[1], raw[:m], r[0].get("tap"), _head(raw_logits, m), structure, tol)
        if not c["agree"] and np.dtype(structure["outputs"][0]["dtype"]).kind in "iu":
            k = _worst(r[1], raw[:m])
            indices = _op_outputs(structure)
            mine = children("tflm_tensors", "tflm", x[k : k + 1], indices=indices, arena=r[0]["arena_bytes"])
            ref = children("litert_tensors", "litert", x[k : k + 1], indices=indices)
            c["first_divergence"] = _locate(children.tflite, structure, mine, ref, k, "TFLite Micro vs LiteRT")
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


def compare_arm(
    a: np.ndarray,
    b: np.ndarray,
    a_logits: np.ndarray | None,
    b_logits: np.ndarray | None,
    structure: dict[str, Any],
    fixed_steps: int | None,
    *,
    same_kernels: bool,
) -> dict[str, Any]:
    """The phone check's comparison of the Arm run (``a``) with x86's or the reference kernels' (``b``):
    ``_compare``'s verdict and bound, the values that differ and by how much dequantized. Against the same
    kernels on another instruction set (``same_kernels``: XNNPACK on x86) the outputs are judged too, not
    the logits alone: they are what an app reads, and no kernel family's softmax excuses a difference.
    What is judged there is the part of the outputs' difference that the logits' own difference (already
    judged at its bound) does not explain: one logit step moves a probability by up to a quarter of the
    logits' scale, which on a 1/256 output scale can be many output steps."""
    c = _compare(a, b, a_logits, b_logits, structure, fixed_steps)
    c.update(phone_check.differences(a, b, a_logits, b_logits, structure["outputs"][0]))
    if same_kernels and c["compared"] != "output":
        _, output_allowed = _bound(structure, structure.get("output_index", -1), fixed_steps)
        assert a_logits is not None and b_logits is not None  # compared on the logits
        unexplained = softmax_unexplained(a, b, a_logits, b_logits, structure["logits"], structure["outputs"][0])
        c.update(
            compared="output and logits",
            agree=c["agree"] and unexplained <= output_allowed,
            max_diff=max(c["max_diff"], unexplained),
            output_allowed=output_allowed,
            output_unexplained_max_diff=unexplained,
        )
    return c


def softmax_unexplained(
    a: np.ndarray,
    b: np.ndarray,
    a_logits: np.ndarray,
    b_logits: np.ndarray,
    logits_detail: dict[str, Any],
    out_detail: dict[str, Any],
) -> float:
    """The largest difference between two runs' SOFTMAX outputs, in output steps, beyond what their logits'
    difference implies: each run's logits dequantized and put through a float softmax give the change in
    the probabilities the logits alone cause; what is left is the softmax kernels' own (rounding, their
    approximation of exp), 0 when both runs computed the same logits the same way but for rounding."""
    scale = out_detail.get("scale") or 0.0
    d = a.astype(np.float64) - b.astype(np.float64)
    if not scale:  # float outputs: nothing to take away in steps
        return float(np.abs(d).max()) if d.size else 0.0
    za, zb = (
        litert.dequantize_values(t, logits_detail.get("scale", 0.0), logits_detail.get("zero_point", 0)).astype(
            np.float64
        )
        for t in (a_logits, b_logits)
    )

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    implied = (softmax(za) - softmax(zb)) / scale
    residual = np.abs(d.reshape(implied.shape) - implied)
    return round(float(residual.max()), 2) if residual.size else 0.0


def _phone(
    children: _Children,
    profiles: list[DeviceProfile],
    x: np.ndarray,
    y: np.ndarray,
    raw: np.ndarray | None,
    raw_logits: np.ndarray | None,
    reference: tuple[np.ndarray, np.ndarray | None] | None,
    structure: dict[str, Any],
    config: ValidateConfig,
    advance: Any,
) -> dict[str, Any]:
    """The phone check (edgeopt.arm.check): LiteRT's own aarch64 build under QEMU on each phone profile's
    core model, compared with the x86 run and the reference kernels above like the other cross-checks."""
    litert_profiles = [p for p in profiles if p.runtime is Runtime.litert]
    if not config.phone_check:
        for p in litert_profiles:
            if p.arm is not None:
                children.failures[f"litert-arm:{p.arm.core}"] = "disabled (--no-phone-check)"
        return {}

    def compare(a: np.ndarray, b: np.ndarray, at: Any, bt: Any, same_kernels: bool) -> dict[str, Any]:
        return compare_arm(a, b, at, bt, structure, config.max_step_diff, same_kernels=same_kernels)

    return phone_check.measure_profiles(
        litert_profiles, children.tflite, x, y, structure=structure, compare=compare,
        x86=(raw, raw_logits) if raw is not None else None, reference=reference, timeout=config.timeout_s,
        batch_size=config.batch_size, failures=children.failures, crashed=children.crashed, advance=advance,
    )  # fmt: skip


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
