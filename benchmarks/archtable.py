"""The architecture table: which well-known architectures edgeopt takes to int8 and through every gate.

``python -m benchmarks.archtable --out bench/architectures`` builds each architecture with random weights
(nothing is downloaded): Keras 3 ``keras.applications`` models (MobileNetV2 1.0/224 and 0.35/96,
MobileNetV3Small/96, EfficientNetB0/96) saved as Keras 3 ``.keras`` files and read back through
edgeopt's Keras 3 bridge (``edgeopt.artifacts.load_model``), and the MLPerf Tiny reference
architectures of ``edgeopt.zoo``. Each is converted to int8 (calibrated on random inputs of its input
shape) and validated in strict mode on ``pixel4-cpu4`` and ``cortex-m7-512k``.

The data is synthetic: random inputs in the range the model expects, labelled by the Keras model's own
argmax. Top-1 "accuracy" is therefore the int8 model's agreement with its float original (conversion
fidelity), not task accuracy, and the accuracy / agreement gates judge the conversion.

Every model runs in its own child process, one at a time (MobileNetV2 1.0/224 takes gigabytes and
minutes to convert); ``results.json`` and ``results.md`` are written when all are done.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt import zoo
from edgeopt.artifacts import load_model, write_bytes, write_json
from edgeopt.config import ConvertConfig, ValidateConfig
from edgeopt.data import Dataset
from edgeopt.errors import BadInput, EdgeoptError
from edgeopt.hostinfo import describe
from edgeopt.pipeline.hashing import versions
from edgeopt.profiles import load_profile
from edgeopt.progress import captured_stderr
from edgeopt.runtimes import diagnose
from edgeopt.runtimes.isolate import ChildFailed, run_task

log = logging.getLogger(__name__)

SCHEMA = "edgeopt.archtable/1"
PROFILES = ("pixel4-cpu4", "cortex-m7-512k")
SAMPLES = 32  # validation inputs per model (few: the reference kernels and TFLite Micro are slow)
CALIBRATION_SAMPLES = 32  # random inputs for the int8 calibration
REPRO = "bench/repro/softmax_scale_abort.py"
REPRO_LINK = "../repro/softmax_scale_abort.py"  # from bench/architectures/results.md
REPRO_SUM = "bench/repro/softmax_sum_abort.py"
REPRO_SUM_LINK = "../repro/softmax_sum_abort.py"
SOFTMAX_SUM_LIMIT = 512  # the reference int8 Softmax aborts once the sum of exp(logit - max) reaches this


@dataclass(frozen=True)
class Arch:
    """One row of the table: how to build the model and what inputs it expects."""

    name: str
    title: str
    source: str  # "keras3" (keras.applications, through the Keras 3 bridge) or "zoo" (edgeopt.zoo, tf-keras)
    input_shape: tuple[int, ...]
    classes: int
    input_range: tuple[float, float]  # random inputs are uniform in this range
    build: Callable[[Any], Any]  # Keras 3 module -> Keras 3 model (keras3), or None -> tf-keras model (zoo)
    note: str = ""


def _k3(factory: str, shape: tuple[int, ...], **kw: Any) -> Callable[[Any], Any]:
    return lambda keras: getattr(keras.applications, factory)(input_shape=shape, weights=None, **kw)


def _zoo(name: str, shape: tuple[int, ...], classes: int) -> Callable[[Any], Any]:
    def build(_: Any) -> Any:

        return zoo.build(name, shape, classes)

    return build


_IMG96, _IMG224 = (96, 96, 3), (224, 224, 3)
_TANH, _PIXELS = (-1.0, 1.0), (0.0, 255.0)  # MobileNetV2 takes [-1, 1]; V3 and EfficientNet rescale 0..255 inside

# Small models first: a failure shows before the heavy ones run.
ARCHS: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("ds_cnn", "DS-CNN (MLPerf Tiny KWS)", "zoo", (49, 10, 1), 12, _TANH, _zoo("ds_cnn", (49, 10, 1), 12)),
        Arch(
            "fc_autoencoder",
            "FC autoencoder (MLPerf Tiny AD)",
            "zoo",
            (640,),
            640,
            _TANH,
            _zoo("fc_autoencoder", (640,), 640),
            "a reconstruction, not a classifier: its 'label' is the argmax of the 640 outputs",
        ),
        Arch("resnet8", "ResNet-8 (MLPerf Tiny IC)", "zoo", (32, 32, 3), 10, _TANH, _zoo("resnet8", (32, 32, 3), 10)),
        Arch(
            "mobilenet_v1_025",
            "MobileNetV1 0.25/96 (MLPerf Tiny VWW)",
            "zoo",
            _IMG96,
            2,
            _TANH,
            _zoo("mobilenet_v1_025", _IMG96, 2),
        ),
        Arch(
            "mobilenet_v3_small_96",
            "MobileNetV3Small 1.0/96",
            "keras3",
            _IMG96,
            1000,
            _PIXELS,
            _k3("MobileNetV3Small", _IMG96),
        ),
        Arch(
            "mobilenet_v2_035_96",
            "MobileNetV2 0.35/96",
            "keras3",
            _IMG96,
            1000,
            _TANH,
            _k3("MobileNetV2", _IMG96, alpha=0.35),
        ),
        Arch(
            "mobilenet_v2_035_96_logits",
            "MobileNetV2 0.35/96 without its final softmax",
            "keras3",
            _IMG96,
            1000,
            _TANH,
            _k3("MobileNetV2", _IMG96, alpha=0.35, classifier_activation=None),
            "workaround: classifier_activation=None (outputs logits; argmax is the same class)",
        ),
        Arch("efficientnet_b0_96", "EfficientNetB0/96", "keras3", _IMG96, 1000, _PIXELS, _k3("EfficientNetB0", _IMG96)),
        Arch(
            "efficientnet_b0_96_logits",
            "EfficientNetB0/96 without its final softmax",
            "keras3",
            _IMG96,
            1000,
            _PIXELS,
            _k3("EfficientNetB0", _IMG96, classifier_activation=None),
            "workaround: classifier_activation=None (outputs logits; argmax is the same class)",
        ),
        Arch(
            "mobilenet_v2_100_224", "MobileNetV2 1.0/224", "keras3", _IMG224, 1000, _TANH, _k3("MobileNetV2", _IMG224)
        ),
    )
}


# ---- one model (runs in a child process) ---------------------------------------------------------


def build_model(arch: Arch, work: Path) -> Any:
    """The tf-keras model of ``arch`` (random weights, seed 0). Keras 3 models are saved to
    ``work/<name>.keras`` and loaded through edgeopt's Keras 3 bridge, as a user's file would be."""
    from edgeopt._keras import set_seed  # lazy: imports TensorFlow (its environment set before Keras 3)

    set_seed(0)
    if arch.source == "zoo":
        return arch.build(None)

    with captured_stderr():
        keras3 = importlib.import_module("keras")
    keras3.utils.set_random_seed(0)
    path = work / f"{arch.name}.keras"
    arch.build(keras3).save(path)
    return load_model(path)


def synthetic_data(model: Any, arch: Arch, samples: int, calibration: int, seed: int = 0) -> Any:
    """Random inputs uniform in ``arch.input_range``: ``calibration`` for the int8 converter (train
    split) and ``samples`` to validate on (test split), labelled by the Keras model's own argmax."""
    import numpy as np

    from edgeopt.stages._common import predict  # lazy: imports TensorFlow

    lo, hi = arch.input_range
    x = np.random.default_rng(seed).uniform(lo, hi, (calibration + samples, *arch.input_shape)).astype(np.float32)
    y = np.argmax(predict(model, x), axis=-1).astype(np.int64)
    names = [str(c) for c in range(arch.classes)]
    tr, te = slice(0, calibration), slice(calibration, None)
    return Dataset(
        name=f"random-{arch.name}",
        source=f"uniform random inputs in [{lo:g}, {hi:g}], labels: the Keras model's argmax (seed {seed})",
        seed=seed,
        x_train=x[tr],
        y_train=y[tr],
        x_val=x[:0],
        y_val=y[:0],
        x_test=x[te],
        y_test=y[te],
        class_names=names,
        named_classes=False,
    )


def measure(name: str, work: Path, *, samples: int = SAMPLES, calibration_path: Path | None = None) -> dict[str, Any]:
    """Build, convert to int8 and validate (strict) one architecture; the row of the table as JSON."""
    import numpy as np

    from edgeopt import calibrate, stages  # lazy: imports TensorFlow

    arch = ARCHS[name]
    row: dict[str, Any] = {
        "model": name,
        "title": arch.title,
        "source": arch.source,
        "input_shape": list(arch.input_shape),
        "input_range": list(arch.input_range),
        "classes": arch.classes,
        "note": arch.note,
    }
    t0 = time.perf_counter()
    try:
        model = build_model(arch, work)
        row["keras_params"] = int(model.count_params())
        row["build_s"] = round(time.perf_counter() - t0, 1)
        data = synthetic_data(model, arch, samples, CALIBRATION_SAMPLES)
        t1 = time.perf_counter()
        cfg = ConvertConfig(quantization="int8", calibration_samples=CALIBRATION_SAMPLES)
        content = stages.convert(model, cfg, data=data).tflite
        row["convert_s"] = round(time.perf_counter() - t1, 1)
        (work / f"{name}.tflite").write_bytes(content)
        row["known_aborts"] = diagnose.known_aborts(content)
        profiles = [load_profile(p) for p in PROFILES]
        cal = calibrate.ensure(profiles, calibration_path)
        t2 = time.perf_counter()
        result = stages.validate(
            content,
            data,
            ValidateConfig(max_samples=samples),
            keras_model=model,
            profiles=profiles,
            calibration=cal,
            name=name,
        )
        row["validate_s"] = round(time.perf_counter() - t2, 1)
    except EdgeoptError as e:  # the bridge refused the file, the converter failed: the row says so
        row.update(error=str(e), exit_code=e.exit_code, seconds=round(time.perf_counter() - t0, 1))
        return row
    row["logits"] = logits_agreement(content, result.measurements.structure, data)
    v = result.to_dict()
    for lat in v.get("latency", {}).values():
        lat.pop("times_ms", None)  # thousands of figures per model: the percentiles are kept
    row["validation"] = v
    row["distinct_labels"] = int(len(np.unique(data.y_test)))  # 1: every input looks alike to the model
    try:
        result.raise_for_status(strict=True)
        row.update(exit_code=0, verdict="passed")
    except EdgeoptError as e:
        row.update(exit_code=e.exit_code, verdict=str(e))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def logits_agreement(content: bytes, structure: dict[str, Any], data: Any) -> dict[str, Any] | None:
    """Top-1 agreement with the Keras labels read on the int8 logits (the input of a final SOFTMAX).

    An untrained model's logits span ~1e-5: its int8 probabilities are all equal, their argmax is
    always class 0, and the agreement gates fail on ties alone. The logits keep their order in int8,
    so the agreement on them shows whether the conversion kept the class the float model picks."""
    import numpy as np

    lg = structure.get("logits")
    if not lg:
        return None
    try:
        r, _ = run_task("litert_eval", "litert", content, data.x_test, tap=lg["index"])
    except ChildFailed as e:
        return {"scale": lg["scale"], "error": str(e)}
    q = r["tap"].reshape(len(data.x_test), -1).astype(np.float64)
    pred = np.argmax(q, axis=-1)
    # what the reference int8 Softmax accumulates (beta 1, Keras' default): it aborts at 512 or more
    sums = np.exp(lg["scale"] * (q - q.max(axis=-1, keepdims=True))).sum(axis=-1)
    return {
        "scale": lg["scale"],
        "span": lg["scale"] * 255,
        "top1_agreement": float(np.mean(pred == data.y_test)),
        "max_sum_of_exps": float(sums.max()),
        "method": "argmax of the int8 logits (LiteRT, optimized kernels) vs the Keras model's argmax",
    }


# ---- the table (parent process) -----------------------------------------------------------------


def run_child(name: str, work: Path, *, samples: int, calibration_path: Path | None, timeout: float) -> dict[str, Any]:
    """``measure(name)`` in a child process; a child that dies gives a row that says how."""
    cmd = [sys.executable, "-m", "benchmarks.archtable", "--one", name, "--work", str(work), "--samples", str(samples)]
    if calibration_path is not None:
        cmd += ["--calibration", str(calibration_path)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"model": name, "error": f"no result within {timeout:.0f} s, killed", "exit_code": 3}
    out = work / f"{name}.json"
    if proc.returncode == 0 and out.exists():
        return json.loads(out.read_text())
    tail = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()][-1:] or ["no output"]
    how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    return {
        "model": name,
        "title": ARCHS[name].title,
        "error": f"the child process failed ({how}): {tail[0][:300]}",
        "exit_code": 3,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def build_table(
    names: list[str],
    out: Path,
    *,
    samples: int = SAMPLES,
    calibration_path: Path | None = None,
    timeout: float = 3600.0,
    command: str = "",
    work: Path | None = None,
) -> dict[str, Any]:
    """Measure ``names`` one at a time in child processes; write ``out/results.json`` and
    ``out/results.md``; return the table. ``work`` keeps each model's .keras and .tflite (default: a
    temporary folder)."""

    unknown = [n for n in names if n not in ARCHS]
    if unknown:
        raise BadInput(f"unknown architecture(s) {', '.join(unknown)}; allowed: {', '.join(ARCHS)}")
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-archtable-") as tmp:
        folder = Path(work) if work is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            log.info("%s: building, converting to int8, validating (child process)", name)
            row = run_child(name, folder, samples=samples, calibration_path=calibration_path, timeout=timeout)
            log.info("%s: %s in %.0f s", name, _verdict_words(row), row.get("seconds", 0.0))
            rows.append(row)
    table = {
        "schema": SCHEMA,
        "command": command,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "host": describe(),
        "versions": _versions(),
        "profiles": list(PROFILES),
        "samples": samples,
        "calibration_samples": CALIBRATION_SAMPLES,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", table)
    write_bytes(out / "results.md", render(table).encode())
    return table


def _versions() -> dict[str, str]:
    return versions(
        ("tensorflow", "tf-keras", "keras", "ai-edge-litert", "tflite-micro", "ethos-u-vela"), "not installed"
    )


# ---- rendering (pure: made-up results are enough to test it) -------------------------------------

_SOFTMAX_BUG = "PreprocessSoftmaxScaling"


def sum_abort(row: dict[str, Any] | None) -> bool:
    """Whether the row's int8 logits, on its own inputs, reach the sum of exps that aborts the reference
    int8 Softmax in Eval (bench/repro/softmax_sum_abort.py)."""
    lg = (row or {}).get("logits") or {}
    return (lg.get("max_sum_of_exps") or 0) >= SOFTMAX_SUM_LIMIT


def crash_cause(detail: str, row: dict[str, Any] | None = None) -> str:
    """The named runtime bug behind a crash message (and the row's measurements), with its
    reproduction; else says it is unknown."""
    if _SOFTMAX_BUG in detail:
        return f"int8 SOFTMAX input scale below 2^-26/beta aborts the reference Softmax ([repro]({REPRO_LINK}))"
    if "SIGABRT" in detail and sum_abort(row):
        return (
            f"int8 SOFTMAX over >= {SOFTMAX_SUM_LIMIT} tied logits aborts the reference Softmax "
            f"([repro]({REPRO_SUM_LINK}))"
        )
    sig = re.search(r"killed by (SIG\w+)|hung", detail)
    return f"{sig.group(0) if sig else 'crash'}, cause not identified"


def _value(g: dict[str, Any]) -> str:
    m, unit, gate = g.get("measured"), g.get("unit", ""), g["gate"]
    if m is None:
        return {"outputs_finite": "finite", "tflm_runs": "runs"}.get(gate, "") if g["status"] == "passed" else ""
    if gate == "builtin_ops_only":
        return f"{m} custom"
    if isinstance(m, str):
        return m
    if unit == "bytes":
        return f"{round(m):,} B"
    if unit == "ms":
        return f"{m:.3g} ms"
    if unit == "points":
        return f"{m + 0.0:.2f} pts"
    if unit == "steps":
        return f"{m:g} step{'' if m == 1 else 's'}"
    if unit == "abs":
        return f"{m:.3g} abs"
    return f"{m:.3f}" if isinstance(m, float) else f"{m:,}"


def cell(g: dict[str, Any], row: dict[str, Any] | None = None) -> str:
    """One gate in a table cell: its status and measured value, the op that cannot run, or the crash
    with its named cause (``row``: the model's row, whose logits can name it)."""
    status, detail = g["status"], g.get("detail", "")
    if status == "failed" and (" crashed:" in detail or " hung:" in detail):
        return f"**crashed**: {crash_cause(detail, row)}"
    if g["gate"] == "tflm_runs" and status == "failed":
        op = re.search(r"builtin opcode '(\w+)'", detail)
        if op:
            return f"**cannot run**: {op.group(1)}"
    if g["gate"] == "arena_bytes" and status == "failed" and "needs more than" in detail:
        return f"**failed** > {round(g['measured']):,} B"
    word = {"passed": "passed", "failed": "**failed**"}.get(status, "not evaluated")
    value = _value(g)
    return f"{word} {value}" if value else word


def _verdict_words(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"not measured: {row['error']}"
    return {0: "passed (strict)", 1: "gate(s) failed (exit 1)", 3: "runtime crash (exit 3)"}.get(
        row.get("exit_code", -1), f"exit {row.get('exit_code')}"
    )


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(table: dict[str, Any]) -> str:
    """``results.md``: how the figures were obtained, the models, one table of gates per profile (status
    and measured value per cell), what was not passed in words, crashes with their cause, the workaround."""
    rows = table["rows"]
    lines = [
        "# Architecture table: int8 conversion and validation of well-known architectures",
        "",
        f"Command: `{table.get('command') or 'python -m benchmarks.archtable --out bench/architectures'}`; "
        f"wall time {table.get('wall_seconds', 0):.0f} s on {table.get('host', 'this host')}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in table.get("versions", {}).items()) + ".",
        *([table["note"]] if table.get("note") else []),
        "",
        "How the figures were obtained:",
        "- Weights are random (`weights=None`, nothing downloaded). `keras3` models are Keras 3 "
        "`keras.applications` models saved as Keras 3 `.keras` files and read through edgeopt's Keras 3 "
        "bridge (`edgeopt.artifacts.load_model`); `zoo` models are edgeopt's MLPerf Tiny reference "
        "architectures (tf-keras).",
        f"- int8 conversion (`edgeopt.stages.convert`, int8 inputs and outputs) calibrated on "
        f"{table.get('calibration_samples', CALIBRATION_SAMPLES)} **random inputs** uniform in the model's "
        "input range (not real data).",
        f"- Validation data is synthetic: {table.get('samples', SAMPLES)} random inputs of the same distribution, "
        "**labelled by the Keras model's own argmax**. Accuracy is therefore the int8 model's top-1 "
        "agreement with its float original (conversion fidelity), not task accuracy; the accuracy and "
        "agreement gates judge the conversion. With random weights most classifiers' logits span ~1e-5 "
        "(`logits span`: the int8 range of the final SOFTMAX's input), so their int8 probabilities are all "
        "equal and the argmax is class 0: the agreement gates fail on ties. `agreement: logits` reads the "
        "argmax on the int8 logits instead (LiteRT), which shows whether the conversion kept the float model's class. "
        "Either agreement is informative only when the Keras model picks more than one class on the random inputs "
        "(`Keras classes`): an untrained model often picks one class for every input (or its float32 "
        "probabilities tie too), and then 1.000 only says that both sides pick that class.",
        f"- `edgeopt.stages.validate` in strict mode (`raise_for_status(strict=True)`) on "
        f"{', '.join(f'`{p}`' for p in table.get('profiles', PROFILES))}; each model in its own child process, "
        "every runtime in a child of that. Latency on `pixel4-cpu4` is the host p90 (LiteRT, XNNPACK, 4 threads) "
        "x the calibrated host-to-device factor; on `cortex-m7-512k` an estimate from the model's MACs for "
        "CMSIS-NN int8 kernels at 216 MHz; the arena is the smallest that allocates and runs in TFLite Micro "
        "(binary search to 16 bytes, searched up to 64 MiB).",
        "",
        "## Models",
        "",
        "| model | source | input | params | MACs | .tflite | Keras classes | agreement: outputs | agreement: logits "
        "| logits span | convert | validate | strict verdict |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        v = r.get("validation") or {}
        s = v.get("structure") or {}
        shape = "x".join(str(d) for d in r.get("input_shape", [])) or "?"
        acc, lg = v.get("accuracy"), r.get("logits") or {}
        on_logits = "" if lg.get("top1_agreement") is None else f"{lg['top1_agreement']:.3f}"
        span = "" if lg.get("span") is None else f"{lg['span']:.2g}"
        lines.append(
            f"| {r['model']} | {r.get('source', '?')} | {shape} | {s.get('params', r.get('keras_params', 0)):,} | "
            f"{s.get('macs', 0):,} | {s.get('bytes', 0):,} B | {r.get('distinct_labels', '')} | "
            f"{'' if acc is None else f'{acc:.3f}'} | "
            f"{on_logits} | {span} | {r.get('convert_s', '')} s | {r.get('validate_s', '')} s | "
            f"{_esc(_verdict_words(r))} |"
        )
    notes = [r for r in rows if r.get("note")]
    if notes:
        lines += ["", *(f"- {r['model']}: {r['note']}." for r in notes)]

    for profile in table.get("profiles", PROFILES):
        gate_names: list[str] = []
        for r in rows:
            for g in (r.get("validation") or {}).get("gates", []):
                if g["profile"] in (profile, "-") and g["gate"] not in gate_names:
                    gate_names.append(g["gate"])
        lines += ["", f"## {profile}", "", "| model | " + " | ".join(gate_names) + " |"]
        lines.append("|---|" + "---|" * len(gate_names))
        explain: list[str] = []
        for r in rows:
            if "validation" not in r:
                lines.append(
                    f"| {r['model']} | " + _esc(f"not measured: {r.get('error', '?')}") + " |" * len(gate_names)
                )
                continue
            by = {g["gate"]: g for g in r["validation"]["gates"] if g["profile"] in (profile, "-")}
            lines.append(
                f"| {r['model']} | " + " | ".join(_esc(cell(by[n], r)) if n in by else "" for n in gate_names) + " |"
            )
            explain += [
                f"- {r['model']} / {n}: {by[n]['status']}: {_esc(by[n].get('detail', ''))}"
                for n in gate_names
                if n in by and by[n]["status"] != "passed"
            ]
        if explain:
            lines += ["", "Not passed, in words:", "", *explain]

    crashes = [(r["model"], c) for r in rows for c in (r.get("validation") or {}).get("crashed", [])]
    lines += ["", "## Crashes", ""]
    if not crashes:
        lines.append("No runtime crashed.")
    by_model = {r["model"]: r for r in rows}
    for model, c in crashes:
        lines.append(f"- {model}: {_esc(c)}")
        if "SIGABRT" in c and _SOFTMAX_BUG not in c and sum_abort(by_model[model]):
            total = by_model[model]["logits"]["max_sum_of_exps"]
            lines.append(
                f"  - Named cause: on these inputs the int8 logits give a Softmax sum of exp(logit - max) up to "
                f"{total:.0f} (>= {SOFTMAX_SUM_LIMIT}: near-uniform logits over many classes); the reference int8 "
                "Softmax (LiteRT BUILTIN_REF, TFLite Micro) aborts in Eval once the sum reaches 512 (511 equal "
                f"logits run, 512 abort). Reproduction: `python {REPRO_SUM}` (about 20 s, a Dense+softmax)."
            )
        if _SOFTMAX_BUG in c:
            lines.append(
                f"  - Named cause: the int8 SOFTMAX's input scale is at or below 2^-26/beta, so "
                "`PreprocessSoftmaxScaling` hands `QuantizeMultiplierGreaterThanOne` a multiplier <= 1 and its "
                "`TFLITE_CHECK_GT` aborts (LiteRT's reference kernels and TFLite Micro; LiteRT's optimized kernels "
                f"use a lookup table and run). Reproduction: `python {REPRO}` (about 20 s, a Dense+softmax pair)."
            )
    lines += _workaround(rows)
    return "\n".join(lines) + "\n"


# (with softmax, without) pairs of the same untrained architecture: the workaround verdicts
WORKAROUNDS = (
    ("mobilenet_v2_035_96", "mobilenet_v2_035_96_logits", "MobileNetV2 0.35/96"),
    ("efficientnet_b0_96", "efficientnet_b0_96_logits", "EfficientNetB0/96"),
)


def _workaround(rows: list[dict[str, Any]]) -> list[str]:
    """Each untrained architecture with and without its final softmax, on TFLite Micro."""
    by = {r["model"]: r for r in rows}
    out: list[str] = []
    for with_sm, without, title in WORKAROUNDS:
        pair = [by.get(with_sm), by.get(without)]
        if any(r is None or "validation" not in r for r in pair):
            continue
        out += [
            "",
            f"## Workaround verdict: {title} without its final softmax",
            "",
            "| model | cortex-m7-512k tflm_runs | tflm_agreement | arena_bytes | pixel4-cpu4 kernel_cross_check |",
            "|---|---|---|---|---|",
        ]
        runs = []
        for r in pair:
            assert r is not None
            g = {(x["profile"], x["gate"]): x for x in r["validation"]["gates"]}
            keys = (
                ("cortex-m7-512k", "tflm_runs"),
                ("cortex-m7-512k", "tflm_agreement"),
                ("cortex-m7-512k", "arena_bytes"),
                ("pixel4-cpu4", "kernel_cross_check"),
            )
            cells = [cell(g[k], r) if k in g else "-" for k in keys]
            out.append(f"| {r['model']} | " + " | ".join(_esc(c) for c in cells) + " |")
            runs.append(g[keys[0]]["status"] if keys[0] in g else None)
        if runs == ["failed", "passed"]:
            out += [
                "",
                "Verdict: without the softmax (`classifier_activation=None`, argmax of the logits) TFLite Micro "
                "runs it.",
            ]
        else:
            out += ["", f"Verdict: not confirmed (tflm_runs with softmax: {runs[0]}, without: {runs[1]})."]
    return out


# ---- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.archtable", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench/architectures"), help="folder for results.{md,json}")
    ap.add_argument("--models", default=",".join(ARCHS), help=f"comma-separated, of: {', '.join(ARCHS)}")
    ap.add_argument("--samples", type=int, default=SAMPLES, help="validation inputs per model")
    ap.add_argument("--calibration", type=Path, default=None, help="latency calibration file (default: the host's)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per model")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child: measure this model
    ap.add_argument("--work", type=Path, default=None, help="keep each model's .keras and .tflite in this folder")
    ap.add_argument("--render-only", action="store_true", help="rewrite results.md from the results.json in --out")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if a.one:
        write_json(a.work / f"{a.one}.json", measure(a.one, a.work, samples=a.samples, calibration_path=a.calibration))
        return 0
    if a.render_only:
        write_bytes(a.out / "results.md", render(json.loads((a.out / "results.json").read_text())).encode())
        return 0

    command = "python -m benchmarks.archtable " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        table = build_table(
            [n for n in a.models.split(",") if n],
            a.out,
            samples=a.samples,
            calibration_path=a.calibration,
            timeout=a.timeout,
            command=command.strip(),
            work=a.work,
        )
    except EdgeoptError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"wrote {a.out / 'results.md'} and results.json; wall time {table['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
