"""The ``edgeopt`` command line: thin commands that parse flags, call one library function, write files.

Exit codes: 0 ok, 1 a gate failed, 2 bad input or usage, 3 a runtime crashed.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from edgeopt import ui
from edgeopt.config import (
    ClusterConfig,
    ClusterInit,
    ConvertConfig,
    DataConfig,
    DistillConfig,
    IOType,
    LRSchedule,
    PruneConfig,
    QATConfig,
    QATPreserve,
    Quantization,
    Schedule,
    TrainConfig,
    ValidateConfig,
    format_validation_error,
)
from edgeopt.errors import BadInput, EdgeoptError

app = typer.Typer(
    name="edgeopt",
    help="Prune, cluster, distill, convert and validate Keras models for phones and microcontrollers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])

# ---- shared options -----------------------------------------------------------------------------
DataOpt = Annotated[str, typer.Option("--data", help="fashion_mnist, digits, npz:PATH or image_dir:PATH")]
SeedOpt = Annotated[int, typer.Option(help="seed for splits, initialisation and shuffling")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or summary tables")]
MaxTrainOpt = Annotated[int | None, typer.Option(help="use at most this many training examples")]
MaxTestOpt = Annotated[int | None, typer.Option(help="use at most this many test examples")]
EpochsOpt = Annotated[int | None, typer.Option(help="training epochs")]
BatchOpt = Annotated[int | None, typer.Option(help="batch size")]
LrOpt = Annotated[float | None, typer.Option(help="Adam learning rate")]
LrSchedOpt = Annotated[LRSchedule | None, typer.Option(help="constant, or cosine decay over all steps")]
UnsafeOpt = Annotated[
    bool, typer.Option("--unsafe", help="allow layers that carry Python code (Lambda); loading them runs that code")
]
SkipOpt = Annotated[list[str] | None, typer.Option("--skip-layer", help="leave this layer alone (repeatable)")]


def _cli(fn: F) -> F:
    """Turn library errors into one line on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ui.set_quiet(bool(kwargs.get("quiet", False)))
        try:
            return fn(*args, **kwargs)
        except EdgeoptError as e:
            ui.console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            ui.console.print("[red]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as e:  # a crash inside TensorFlow or a runtime, not a usage error
            if os.environ.get("EDGEOPT_DEBUG"):
                raise
            ui.console.print(
                f"[red]error:[/] {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                " (set EDGEOPT_DEBUG=1 for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(3) from None

    return wrapper  # type: ignore[return-value]


# Options whose name differs from the config field they fill (a repeatable --skip-layer fills skip_layers).
_OPTION_FIELDS = {"skip_layer": "skip_layers", "profile": "profiles", "timeout": "timeout_s"}


def _config(cls: type[BaseModel], flags: dict[str, Any]) -> Any:
    """Let pydantic build a config from a command's parameters (``locals()``): every one that names a
    field of ``cls`` and was given, so no option is copied into a config by hand."""
    values = {}
    for name, value in flags.items():
        field = _OPTION_FIELDS.get(name, name)
        if field in cls.model_fields and value is not None:
            values[field] = value
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        names = {f: o for o, f in _OPTION_FIELDS.items()}
        raise BadInput(
            format_validation_error(e, "options", flags=True, flag_names=names).replace("options: ", "")
        ) from None


def _data(name: str, seed: int, max_train: int | None = None, max_test: int | None = None) -> Any:
    from edgeopt.data import load_dataset

    return load_dataset(_config(DataConfig, {"name": name, "seed": seed, "max_train": max_train, "max_test": max_test}))


def _check_out(out: Path, suffixes: tuple[str, ...]) -> None:
    if out.suffix not in suffixes:
        raise BadInput(f"--out {out}: must end in {' or '.join(suffixes)}")


def _write_stage_output(result: Any, out: Path) -> None:
    from edgeopt.artifacts import metrics_path, save_model, write_bytes, write_json

    if result.tflite is not None:
        write_bytes(out, result.tflite)
    else:
        save_model(result.model, out)
    write_json(metrics_path(out), {"stage": result.stage, "seconds": result.seconds, **result.metrics})


def _show(title: str, metrics: dict[str, Any], keys: list[str], out: Path | None = None) -> None:
    rows = [(k, metrics[k]) for k in keys if k in metrics and metrics[k] is not None]
    if out is not None:
        rows.append(("output", str(out)))
    ui.table(title, rows)


# ---- commands -----------------------------------------------------------------------------------


@app.command()
@_cli
def train(
    out: Annotated[Path, typer.Option(help="where to save the trained model (.keras)")],
    zoo: Annotated[str, typer.Option(help="zoo model name (edgeopt.zoo)")] = "fashion_cnn",
    data: DataOpt = "fashion_mnist",
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    learning_rate: LrOpt = None,
    lr_schedule: LrSchedOpt = None,
    seed: SeedOpt = 0,
    max_train: MaxTrainOpt = None,
    max_test: MaxTestOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a reference model from the zoo (the default teacher: fashion_cnn)."""
    from edgeopt import stages

    _check_out(out, (".keras", ".h5"))
    cfg = _config(TrainConfig, locals())
    ds = _data(data, seed, max_train, max_test)
    result = stages.train(ds, cfg, seed=seed)
    _write_stage_output(result, out)
    _show("train", result.metrics, ["zoo", "params", "epochs", "accuracy"], out)


@app.command()
@_cli
def prune(
    model: Annotated[Path, typer.Argument(help="input model (.keras or .h5; Keras 3 files are translated)")],
    out: Annotated[Path, typer.Option(help="pruned model (.keras)")],
    data: DataOpt = "fashion_mnist",
    final_sparsity: Annotated[float | None, typer.Option(help="fraction of kernel weights set to zero")] = None,
    initial_sparsity: Annotated[float | None, typer.Option(help="sparsity at the begin step")] = None,
    schedule: Annotated[Schedule | None, typer.Option(help="polynomial (decay) or constant")] = None,
    begin_step: Annotated[int | None, typer.Option(help="first pruning step")] = None,
    end_step: Annotated[int | None, typer.Option(help="last pruning step (default: 3/4 of training)")] = None,
    frequency: Annotated[int | None, typer.Option(help="steps between mask updates")] = None,
    m_by_n: Annotated[str | None, typer.Option("--m-by-n", help="structured sparsity, e.g. 2:4")] = None,
    skip_layer: SkipOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    learning_rate: LrOpt = None,
    lr_schedule: LrSchedOpt = None,
    seed: SeedOpt = 0,
    max_train: MaxTrainOpt = None,
    max_test: MaxTestOpt = None,
    unsafe: UnsafeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Magnitude pruning (tfmot) with a polynomial-decay or constant sparsity schedule."""
    from edgeopt import stages
    from edgeopt.artifacts import load_model

    _check_out(out, (".keras", ".h5"))
    cfg = _config(PruneConfig, locals())
    m = load_model(model, unsafe=unsafe)
    result = stages.prune(m, _data(data, seed, max_train, max_test), cfg, seed=seed)
    _write_stage_output(result, out)
    _show("prune", result.metrics, ["target_sparsity", "sparsity", "accuracy_before", "accuracy"], out)


@app.command()
@_cli
def cluster(
    model: Annotated[Path, typer.Argument(help="input model (.keras or .h5; Keras 3 files are translated)")],
    out: Annotated[Path, typer.Option(help="clustered model (.keras)")],
    data: DataOpt = "fashion_mnist",
    clusters: Annotated[int | None, typer.Option(help="distinct values per kernel")] = None,
    init: Annotated[ClusterInit | None, typer.Option(help="centroid initialisation")] = None,
    preserve_sparsity: Annotated[
        bool | None, typer.Option("--preserve-sparsity/--no-preserve-sparsity", help="default: on for sparse input")
    ] = None,
    skip_layer: SkipOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    learning_rate: LrOpt = None,
    lr_schedule: LrSchedOpt = None,
    seed: SeedOpt = 0,
    max_train: MaxTrainOpt = None,
    max_test: MaxTestOpt = None,
    unsafe: UnsafeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Weight clustering (tfmot) with fine-tuning; keeps the zeros of a pruned model."""
    from edgeopt import stages
    from edgeopt.artifacts import load_model

    _check_out(out, (".keras", ".h5"))
    cfg = _config(ClusterConfig, locals())
    m = load_model(model, unsafe=unsafe)
    result = stages.cluster(m, _data(data, seed, max_train, max_test), cfg, seed=seed)
    _write_stage_output(result, out)
    _show(
        "cluster", result.metrics, ["clusters", "max_distinct_values", "sparsity", "accuracy_before", "accuracy"], out
    )


@app.command()
@_cli
def distill(
    teacher: Annotated[Path, typer.Argument(help="teacher model (.keras or .h5)")],
    out: Annotated[Path, typer.Option(help="trained student (.keras)")],
    data: DataOpt = "fashion_mnist",
    student: Annotated[str | None, typer.Option(help="student from the zoo")] = None,
    student_file: Annotated[Path | None, typer.Option(help="student architecture from a model file")] = None,
    width: Annotated[float | None, typer.Option(help="student = teacher with this fraction of filters/units")] = None,
    temperature: Annotated[float | None, typer.Option(help="softmax temperature T")] = None,
    alpha: Annotated[float | None, typer.Option(help="weight of the hard-label loss")] = None,
    compare_scratch: Annotated[bool, typer.Option(help="also train the student without the teacher")] = False,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    learning_rate: LrOpt = None,
    lr_schedule: LrSchedOpt = None,
    seed: SeedOpt = 0,
    max_train: MaxTrainOpt = None,
    max_test: MaxTestOpt = None,
    unsafe: UnsafeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Hinton distillation of a teacher into a compact student."""
    from edgeopt import stages
    from edgeopt.artifacts import load_model

    _check_out(out, (".keras", ".h5"))
    cfg = _config(DistillConfig, locals())
    m = load_model(teacher, unsafe=unsafe)
    result = stages.distill(m, _data(data, seed, max_train, max_test), cfg, seed=seed, unsafe=unsafe)
    _write_stage_output(result, out)
    keys = ["teacher_params", "student_params", "teacher_accuracy", "accuracy", "scratch_accuracy"]
    _show("distill", result.metrics, keys, out)


@app.command()
@_cli
def qat(
    model: Annotated[Path, typer.Argument(help="input model (.keras or .h5), typically pruned and clustered")],
    out: Annotated[Path, typer.Option(help="output SavedModel folder (QAT wrappers do not survive .keras)")],
    data: DataOpt = "fashion_mnist",
    preserve: Annotated[QATPreserve | None, typer.Option(help="what to keep: auto, cluster, sparsity, none")] = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    learning_rate: LrOpt = None,
    lr_schedule: LrSchedOpt = None,
    seed: SeedOpt = 0,
    max_train: MaxTrainOpt = None,
    max_test: MaxTestOpt = None,
    unsafe: UnsafeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Quantization-aware training that keeps clusters and zeros (then `edgeopt convert OUT`)."""
    from edgeopt import stages
    from edgeopt.artifacts import export_saved_model, load_model, metrics_path, write_json

    if out.suffix:
        raise BadInput(f"--out {out}: a folder name (the QAT model is written as a SavedModel folder)")
    cfg = _config(QATConfig, locals())
    m = load_model(model, unsafe=unsafe)
    result = stages.qat(m, _data(data, seed, max_train, max_test), cfg, seed=seed)
    export_saved_model(result.model, out)
    write_json(metrics_path(out), {"stage": "qat", "seconds": result.seconds, **result.metrics})
    _show("qat", result.metrics, ["preserve", "accuracy_before", "accuracy"], out)


@app.command()
@_cli
def convert(
    model: Annotated[Path, typer.Argument(help="input model (.keras, .h5 or a SavedModel folder)")],
    out: Annotated[Path, typer.Option(help="output .tflite")],
    quantization: Annotated[Quantization, typer.Option(help="post-training quantization")] = Quantization.int8,
    data: Annotated[str | None, typer.Option(help="calibration data for int8/int16x8")] = None,
    calibration_samples: Annotated[int | None, typer.Option(help="representative examples")] = None,
    io_type: Annotated[IOType | None, typer.Option(help="input/output dtype")] = None,
    allow_float_fallback: Annotated[bool, typer.Option(help="keep ops that cannot be quantized in float")] = False,
    seed: SeedOpt = 0,
    unsafe: UnsafeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert to .tflite with post-training quantization."""
    from edgeopt import stages
    from edgeopt.artifacts import load_inference_model

    _check_out(out, (".tflite",))
    cfg = _config(ConvertConfig, locals())
    m = load_inference_model(model, unsafe=unsafe)
    ds = _data(data, seed) if data else None
    result = stages.convert(m, cfg, data=ds, seed=seed)
    _write_stage_output(result, out)
    io = result.metrics["inputs"][0]
    _show("convert", result.metrics, ["quantization", "bytes", "gzip_bytes", "op_counts"], out)
    ui.info(f"input {io['dtype']} {io['shape']} scale={io['scale']:.6g} zero_point={io['zero_point']}")


@app.command()
@_cli
def validate(
    model: Annotated[Path, typer.Argument(help="the .tflite to check")],
    data: DataOpt = "fashion_mnist",
    keras: Annotated[
        Path | None, typer.Option("--keras", help="Keras reference model (or SavedModel folder) for agreement")
    ] = None,
    profile: Annotated[
        list[str] | None, typer.Option("--profile", help="device profile: shipped name or YAML path (repeatable)")
    ] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="gate: minimum top-1 accuracy (0-1)")] = None,
    max_samples: Annotated[int | None, typer.Option(help="evaluate at most this many test examples")] = None,
    latency: Annotated[bool, typer.Option(help="measure host latency")] = True,
    cross_check: Annotated[bool, typer.Option(help="also run LiteRT's reference kernels and compare")] = True,
    max_step_diff: Annotated[
        int | None, typer.Option(help="steps two runtimes' integer outputs may differ by (default 1)")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds each runtime may take in its child process")] = None,
    calibration: Annotated[Path | None, typer.Option(help="calibration file (default: edgeopt calibrate's)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    junit: Annotated[Path | None, typer.Option(help="write JUnit XML: one testcase per gate and profile")] = None,
    markdown: Annotated[Path | None, typer.Option(help="write a Markdown summary")] = None,
    seed: SeedOpt = 0,
    max_test: MaxTestOpt = None,
    unsafe: UnsafeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check a .tflite: structure, accuracy in LiteRT, kernel cross-check, latency, device budgets.

    Exit 0 when every gate of every profile passed, 1 when one failed, 2 for bad input, 3 when a runtime crashed.
    """
    from edgeopt import calibrate as cal
    from edgeopt import report, stages
    from edgeopt.artifacts import load_inference_model
    from edgeopt.errors import GateFailed, RuntimeCrash
    from edgeopt.profiles import load_profile

    cfg = _config(ValidateConfig, locals())
    profiles = [load_profile(p) for p in cfg.profiles]
    content = _read_tflite(model)
    ref = load_inference_model(keras, unsafe=unsafe) if keras else None
    ds = _data(data, seed, max_test=max_test)
    result = stages.validate(
        content, ds, cfg, keras_model=ref, profiles=profiles, calibration=cal.load(calibration), name=model.name
    )
    m = {"path": str(model), "seconds": result.seconds, **result.metrics}
    if json_out:
        report.write_json_report(json_out, [m])
    if junit:
        report.write_junit(junit, [m])
    if markdown:
        report.write_markdown(markdown, [m])
    _print_gates(m)
    if m["crashed"]:
        raise RuntimeCrash("runtime crashed: " + "; ".join(m["crashed"]))
    if not m["passed"]:
        failed = [f"{g['profile']}/{g['gate']}" for g in m["gates"] if g["status"] == "failed"]
        raise GateFailed(f"{len(failed)} gate(s) failed: " + (", ".join(failed) or "non-finite outputs"))


def _print_gates(m: dict[str, Any]) -> None:
    from rich.table import Table

    s = m["structure"]
    acc = f"{m['accuracy']:.4f}" if m.get("accuracy") is not None else "n/a"
    rows = [
        ("bytes / gzip", f"{s['bytes']:,} / {s['gzip_bytes']:,}"),
        ("params / MACs", f"{s['params']:,} / {s['macs']:,}"),
        ("accuracy", acc),
        ("samples", m["samples"]),
    ]
    if m.get("agreement") is not None:
        rows += [("keras accuracy", m["keras_accuracy"]), ("agreement", m["agreement"])]
    for th, lat in m.get("latency", {}).items():
        rows.append((f"host p50/p90, {th} thr", f"{lat['p50_ms']:.4g} / {lat['p90_ms']:.4g} ms"))
    ui.table(f"validate {m['model']}", rows)
    if ui.is_quiet() or not m["gates"]:
        return
    t = Table(title="gates", title_justify="left")
    for c in ("profile", "gate", "result", "detail"):
        t.add_column(c)
    colour = {"passed": "green", "failed": "red", "not evaluated": "yellow"}
    for g in m["gates"]:
        t.add_row(g["profile"], g["gate"], f"[{colour[g['status']]}]{g['status']}[/]", g["detail"])
    ui.console.print(t)


@app.command()
@_cli
def calibrate(
    profile: Annotated[
        list[str] | None, typer.Option("--profile", help="profiles to calibrate (default: every shipped phone profile)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="where to store the factors (default ~/.cache/edgeopt/)")] = None,
    seconds: Annotated[float, typer.Option(help="timed seconds per measurement")] = 3.0,
    quiet: QuietOpt = False,
) -> None:
    """Measure MobileNet 1.0 224 on this host and store host-to-device latency factors per profile."""
    from edgeopt import calibrate as cal
    from edgeopt.profiles import load_profile, shipped

    profiles = [load_profile(p) for p in (profile or shipped())]
    result = cal.calibrate(profiles, out=out, seconds=seconds)
    rows = []
    for name, e in result["profiles"].items():
        for prec in ("float32", "int8"):
            if prec in e:
                f = e[prec]
                rows.append(
                    (
                        f"{name} {prec}",
                        f"x{f['factor']:.3g} ({f['device_ms']} ms device / {f['host_p50_ms']:.4g} ms host)",
                    )
                )
    rows.append(("stored in", result["path"]))
    ui.table("calibration", rows)


def _read_tflite(path: Path) -> bytes:
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    content = path.read_bytes()
    if not content:
        raise BadInput(f"{path}: empty file")
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise BadInput(f"{path}: not a TFLite model (the flatbuffer identifier TFL3 is missing)")
    return content


@app.command()
@_cli
def run(
    pipeline: Annotated[Path, typer.Argument(help="pipeline file (YAML)")],
    out: Annotated[Path | None, typer.Option(help="output folder (default build/<pipeline name>)")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run a pipeline file: every stage, then manifest.json."""
    from edgeopt.config import load_pipeline
    from edgeopt.pipeline import run as run_pipeline

    cfg = load_pipeline(pipeline)
    report = run_pipeline(cfg, out)
    _print_run(report.manifest, report.out_dir)


@app.command()
@_cli
def export(
    pipeline: Annotated[Path, typer.Argument(help="pipeline file (YAML)")],
    out: Annotated[Path | None, typer.Option(help="bundle folder (default dist/<pipeline name>)")] = None,
    build: Annotated[Path | None, typer.Option(help="stage outputs and cache (default build/<pipeline name>)")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="run every stage again instead of reusing cached ones")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run a pipeline and write a release bundle: Android assets, MCU C sources, manifest, model card, report."""
    from edgeopt.config import load_pipeline
    from edgeopt.export import export as export_bundle

    cfg = load_pipeline(pipeline)
    result = export_bundle(cfg, out, build_dir=build, force=force)
    m = result.manifest
    if m["reused"]:
        ui.info(f"reused from the cache: {', '.join(m['reused'])}")
    rows = [(mm["path"], f"{mm['bytes']:,} bytes, sha256 {mm['sha256'][:16]}...") for mm in m["models"]]
    ui.table(f"bundle {result.bundle} ({m['status']})", rows + [("files", len(m["files"]) + 1)])


@app.command()
@_cli
def inspect(
    model: Annotated[Path, typer.Argument(help=".tflite file (any, not only edgeopt's)")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    quiet: QuietOpt = False,
) -> None:
    """What is inside a .tflite: sizes, sha256, ops, MACs, parameters, inputs/outputs, embedded edgeopt manifest."""
    import json

    from edgeopt import metadata
    from edgeopt.tflite import inspect as inspect_tflite

    content = _read_tflite(model)
    info = inspect_tflite(content, str(model))
    entries = metadata.read_all(content)
    emb = entries.get(metadata.MANIFEST_ENTRY)
    out = {
        "path": str(model),
        **{k: v for k, v in info.items() if k not in ("macs_per_op", "logits")},
        "metadata_entries": {k: len(v) for k, v in entries.items()},
        "edgeopt_manifest": json.loads(emb.decode()) if emb is not None else None,
    }
    if as_json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    ui.set_quiet(False)  # inspect's output is its tables
    ui.table(
        str(model),
        [
            ("bytes", f"{info['bytes']:,}"),
            ("gzip bytes", f"{info['gzip_bytes']:,}"),
            ("sha256", info["sha256"]),
            ("params", f"{info['params']:,}"),
            ("MACs", f"{info['macs']:,}"),
            ("ops", ", ".join(f"{k} x{v}" for k, v in info["op_counts"].items())),
            ("custom ops", ", ".join(info["custom_ops"]) or "none"),
            ("metadata", ", ".join(f"{k} ({v} bytes)" for k, v in out["metadata_entries"].items()) or "none"),
        ]
        + [
            (f"{kind} {t['name']}", f"{t['dtype']} {t['shape']} scale {t['scale']:.6g} zero point {t['zero_point']}")
            for kind, ts in (("input", info["inputs"]), ("output", info["outputs"]))
            for t in ts
        ],
    )
    if out["edgeopt_manifest"] is None:
        ui.console.print("no edgeopt manifest embedded")
    else:
        em = out["edgeopt_manifest"]
        ui.table(
            "embedded edgeopt manifest",
            [
                ("schema", em.get("schema")),
                ("pipeline", em.get("pipeline")),
                ("seed", em.get("seed")),
                ("config sha256", em.get("config_sha256")),
                ("model sha256 before embedding", em.get("model", {}).get("sha256_before_embedding")),
                ("accuracy", em.get("model", {}).get("accuracy")),
                ("versions", ", ".join(f"{k} {v}" for k, v in em.get("versions", {}).items())),
                ("stages", ", ".join(s["name"] for s in em.get("stages", []))),
            ],
        )


def _print_run(manifest: dict[str, Any], out_dir: Path) -> None:
    from rich.table import Table

    if ui.is_quiet():
        return
    t = Table(title=f"{manifest['pipeline']}: artifacts in {out_dir}", title_justify="left")
    for col in ("artifact", "quantization", "bytes", "gzip bytes", "x smaller (gzip)", "accuracy"):
        t.add_column(col, justify="left" if col in ("artifact", "quantization") else "right")
    base = manifest.get("baseline")
    rows = ([{**base, "gzip_ratio_vs_baseline": 1.0}] if base else []) + manifest["artifacts"]
    for a in rows:
        acc = f"{a['accuracy']:.4f}" if a.get("accuracy") is not None else "-"
        t.add_row(
            Path(a["path"]).name,
            a["quantization"],
            f"{a['bytes']:,}",
            f"{a['gzip_bytes']:,}",
            f"{a.get('gzip_ratio_vs_baseline', 0):.1f}",
            acc,
        )
    ui.console.print(t)
    ui.info(f"manifest: {out_dir / 'manifest.json'} ({manifest['seconds']:.0f} s)")


@app.command()
@_cli
def bench(
    pipeline: Annotated[Path, typer.Argument(help="pipeline file")] = Path("pipelines/fashion_mnist.yaml"),
    out: Annotated[Path, typer.Option(help="where results.md and results.json go")] = Path("bench"),
    quiet: QuietOpt = False,
) -> None:
    """The pipeline vs the float32 teacher, int8 PTQ and the tfmot pruning tutorial, in one table."""
    from edgeopt.bench import run_bench

    run_bench(pipeline, out)
    if not ui.is_quiet():
        ui.console.print((out / "results.md").read_text(), markup=False, highlight=False)


@app.command("data")
@_cli
def data_cmd(
    name: Annotated[str, typer.Argument(help="fashion_mnist, digits, npz:PATH or image_dir:PATH")] = "fashion_mnist",
    fetch: Annotated[bool, typer.Option(help="get Fashion-MNIST when it is missing (apt or Keras download)")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Show where a dataset comes from and its split sizes; --fetch gets Fashion-MNIST if missing."""
    from edgeopt.data import fetch_fashion_mnist

    if fetch and name == "fashion_mnist":
        fetch_fashion_mnist(log=ui.info)
    ds = _data(name, 0)
    ui.table(f"dataset {name}", list(ds.summary().items()))


def main() -> None:  # console script entry point
    app(prog_name="edgeopt")


if __name__ == "__main__":
    sys.exit(main())
