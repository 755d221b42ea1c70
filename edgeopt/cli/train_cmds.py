"""The training commands: train, prune, cluster, distill, qat. Each reads a model and data, runs one
stage and writes the model and its metrics (``OUT.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeopt.artifacts import export_saved_model, load_model, metrics_path, write_json
from edgeopt.cli import render
from edgeopt.cli.errors import command
from edgeopt.cli.options import (
    DATA_OPTIONS,
    KD_OPTIONS,
    QUIET_OPTION,
    UNSAFE_OPTION,
    DataOpt,
    ModelArg,
    build_config,
    check_out,
    kd_flags,
    load_data,
    opt,
    training_options,
    with_options,
    write_stage_output,
)
from edgeopt.config import (
    ClusterConfig,
    ClusterInit,
    DistillConfig,
    PruneConfig,
    QATConfig,
    QATPreserve,
    Schedule,
    TrainConfig,
    WeightFormat,
)
from edgeopt.errors import BadInput

KERAS_SUFFIXES = (".keras", ".h5")


@command
@with_options(training_options(TrainConfig), DATA_OPTIONS, QUIET_OPTION)
def train(
    out: Annotated[Path, typer.Option(help="where to save the trained model (.keras)")],
    zoo: Annotated[str, opt(TrainConfig, "zoo", config_default=False)] = "fashion_cnn",
    data: DataOpt = "fashion_mnist",
    **shared: Any,
) -> None:
    """Train a reference model from the zoo (the default teacher: fashion_cnn)."""
    from edgeopt import stages  # lazy: imports TensorFlow

    check_out(out, KERAS_SUFFIXES)
    cfg = build_config(TrainConfig, {**locals(), **shared})
    ds = load_data(data, shared["seed"], shared["max_train"], shared["max_test"])
    result = stages.train(ds, cfg, seed=shared["seed"])
    write_stage_output(result, out)
    render.metrics_table("train", result.metrics, ["zoo", "params", "epochs", "accuracy"], out)


FINE_TUNING = (KD_OPTIONS, DATA_OPTIONS, UNSAFE_OPTION, QUIET_OPTION)


def _fine_tune(stage: str, cls: type, model: Path, out: Path, data: str, flags: dict[str, Any]) -> Any:
    """The body every fine-tuning command shares: the config from the flags, the model (and --teacher),
    the stage, its output and metrics."""
    cfg = build_config(cls, {**flags, "kd": kd_flags(flags["teacher"], flags["kd_temperature"], flags["kd_alpha"])})
    unsafe = flags["unsafe"]
    m = load_model(model, unsafe=unsafe)
    t = load_model(flags["teacher"], unsafe=unsafe) if flags["teacher"] is not None else None
    ds = load_data(data, flags["seed"], flags["max_train"], flags["max_test"])
    from edgeopt import stages  # lazy: imports TensorFlow

    return getattr(stages, stage)(m, ds, cfg, seed=flags["seed"], teacher=t)


@command
@with_options(training_options(PruneConfig), *FINE_TUNING)
def prune(
    model: ModelArg,
    out: Annotated[Path, typer.Option(help="pruned model (.keras)")],
    data: DataOpt = "fashion_mnist",
    final_sparsity: Annotated[float | None, opt(PruneConfig, "final_sparsity")] = None,
    initial_sparsity: Annotated[float | None, opt(PruneConfig, "initial_sparsity")] = None,
    schedule: Annotated[Schedule | None, opt(PruneConfig, "schedule")] = None,
    begin_step: Annotated[int | None, opt(PruneConfig, "begin_step")] = None,
    end_step: Annotated[int | None, opt(PruneConfig, "end_step")] = None,
    frequency: Annotated[int | None, opt(PruneConfig, "frequency")] = None,
    m_by_n: Annotated[str | None, opt(PruneConfig, "m_by_n", "--m-by-n")] = None,
    skip_layer: Annotated[list[str] | None, opt(PruneConfig, "skip_layers", "--skip-layer")] = None,
    block: Annotated[int | None, opt(PruneConfig, "block")] = None,
    dense_share: Annotated[float | None, opt(PruneConfig, "dense_share")] = None,
    depthwise: Annotated[bool | None, opt(PruneConfig, "depthwise", "--depthwise/--no-depthwise")] = None,
    min_inputs: Annotated[int | None, opt(PruneConfig, "min_inputs")] = None,
    **shared: Any,
) -> None:
    """Magnitude pruning (tfmot) with a polynomial-decay or constant sparsity schedule."""
    check_out(out, KERAS_SUFFIXES)
    flags = {**locals(), **shared}
    result = _fine_tune("prune", PruneConfig, model, out, data, flags)
    write_stage_output(result, out)
    render.metrics_table("prune", result.metrics, ["target_sparsity", "sparsity", "accuracy_before", "accuracy"], out)


@command
@with_options(training_options(ClusterConfig), *FINE_TUNING)
def cluster(
    model: ModelArg,
    out: Annotated[Path, typer.Option(help="clustered model (.keras)")],
    data: DataOpt = "fashion_mnist",
    clusters: Annotated[int | None, opt(ClusterConfig, "clusters")] = None,
    init: Annotated[ClusterInit | None, opt(ClusterConfig, "init")] = None,
    preserve_sparsity: Annotated[
        bool | None, opt(ClusterConfig, "preserve_sparsity", "--preserve-sparsity/--no-preserve-sparsity")
    ] = None,
    skip_layer: Annotated[list[str] | None, opt(ClusterConfig, "skip_layers", "--skip-layer")] = None,
    dense_share: Annotated[float | None, opt(ClusterConfig, "dense_share")] = None,
    depthwise: Annotated[bool | None, opt(ClusterConfig, "depthwise", "--depthwise/--no-depthwise")] = None,
    **shared: Any,
) -> None:
    """Weight clustering (tfmot) with fine-tuning; keeps the zeros of a pruned model."""
    check_out(out, KERAS_SUFFIXES)
    flags = {**locals(), **shared}
    result = _fine_tune("cluster", ClusterConfig, model, out, data, flags)
    write_stage_output(result, out)
    keys = ["clusters", "max_distinct_values", "sparsity", "accuracy_before", "accuracy"]
    render.metrics_table("cluster", result.metrics, keys, out)


@command
@with_options(training_options(DistillConfig), DATA_OPTIONS, UNSAFE_OPTION, QUIET_OPTION)
def distill(
    teacher: Annotated[Path, typer.Argument(help="teacher model (.keras or .h5)")],
    out: Annotated[Path, typer.Option(help="trained student (.keras)")],
    data: DataOpt = "fashion_mnist",
    student: Annotated[str | None, opt(DistillConfig, "student")] = None,
    student_file: Annotated[Path | None, opt(DistillConfig, "student_file")] = None,
    width: Annotated[float | None, opt(DistillConfig, "width")] = None,
    temperature: Annotated[float | None, opt(DistillConfig, "temperature")] = None,
    alpha: Annotated[float | None, opt(DistillConfig, "alpha")] = None,
    dropout: Annotated[float | None, opt(DistillConfig, "dropout")] = None,
    min_steps_per_layer: Annotated[int | None, opt(DistillConfig, "min_steps_per_layer")] = None,
    compare_scratch: Annotated[bool, opt(DistillConfig, "compare_scratch")] = False,
    hint_layer: Annotated[str | None, opt(DistillConfig, "hint_layer")] = None,
    student_hint_layer: Annotated[str | None, opt(DistillConfig, "student_hint_layer")] = None,
    hint_weight: Annotated[float | None, opt(DistillConfig, "hint_weight")] = None,
    **shared: Any,
) -> None:
    """Hinton distillation of a teacher into a compact student."""
    from edgeopt import stages  # lazy: imports TensorFlow

    check_out(out, KERAS_SUFFIXES)
    cfg = build_config(DistillConfig, {**locals(), **shared})
    m = load_model(teacher, unsafe=shared["unsafe"])
    ds = load_data(data, shared["seed"], shared["max_train"], shared["max_test"])
    result = stages.distill(m, ds, cfg, seed=shared["seed"], unsafe=shared["unsafe"])
    write_stage_output(result, out)
    keys = ["teacher_params", "student_params", "teacher_accuracy", "accuracy", "scratch_accuracy"]
    render.metrics_table("distill", result.metrics, keys, out)


@command
@with_options(training_options(QATConfig), *FINE_TUNING)
def qat(
    model: Annotated[Path, typer.Argument(help="input model (.keras or .h5), typically pruned and clustered")],
    out: Annotated[Path, typer.Option(help="output SavedModel folder (QAT wrappers do not survive .keras)")],
    data: DataOpt = "fashion_mnist",
    preserve: Annotated[QATPreserve | None, opt(QATConfig, "preserve")] = None,
    calibrate_ranges: Annotated[
        bool | None, opt(QATConfig, "calibrate_ranges", "--calibrate-ranges/--no-calibrate-ranges")
    ] = None,
    weights: Annotated[WeightFormat | None, opt(QATConfig, "weights")] = None,
    int8_share: Annotated[float | None, opt(QATConfig, "int8_share")] = None,
    **shared: Any,
) -> None:
    """Quantization-aware training that keeps clusters and zeros (then `edgeopt convert OUT`)."""
    if out.suffix:
        raise BadInput(f"--out {out}: a folder name (the QAT model is written as a SavedModel folder)")
    flags = {**locals(), **shared}
    result = _fine_tune("qat", QATConfig, model, out, data, flags)
    export_saved_model(result.model, out)
    write_json(metrics_path(out), {"stage": "qat", "seconds": result.seconds, **result.metrics})
    render.metrics_table("qat", result.metrics, ["preserve", "accuracy_before", "accuracy"], out)
