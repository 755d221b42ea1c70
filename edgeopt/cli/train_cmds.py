"""The training commands: train, prune, cluster, distill, qat. Each reads a model and data, runs one
stage and writes the model and its metrics (``OUT.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli import render
from edgeopt.cli.errors import command
from edgeopt.cli.options import (
    DataOpt,
    KDAlphaOpt,
    KDTemperatureOpt,
    MaxTestOpt,
    MaxTrainOpt,
    ModelArg,
    QuietOpt,
    SeedOpt,
    TeacherOpt,
    UnsafeOpt,
    build_config,
    check_out,
    kd_flags,
    load_data,
    opt,
    write_stage_output,
)
from edgeopt.config import (
    ClusterConfig,
    ClusterInit,
    DistillConfig,
    LRSchedule,
    PruneConfig,
    QATConfig,
    QATPreserve,
    Schedule,
    TrainConfig,
)
from edgeopt.errors import BadInput

KERAS_SUFFIXES = (".keras", ".h5")


@command
def train(
    out: Annotated[Path, typer.Option(help="where to save the trained model (.keras)")],
    zoo: Annotated[str, opt(TrainConfig, "zoo", config_default=False)] = "fashion_cnn",
    data: DataOpt = "fashion_mnist",
    epochs: Annotated[int | None, opt(TrainConfig, "epochs")] = None,
    batch_size: Annotated[int | None, opt(TrainConfig, "batch_size")] = None,
    learning_rate: Annotated[float | None, opt(TrainConfig, "learning_rate")] = None,
    lr_schedule: Annotated[LRSchedule | None, opt(TrainConfig, "lr_schedule")] = None,
    seed: SeedOpt = 0,
    max_train: MaxTrainOpt = None,
    max_test: MaxTestOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a reference model from the zoo (the default teacher: fashion_cnn)."""
    from edgeopt import stages

    check_out(out, KERAS_SUFFIXES)
    cfg = build_config(TrainConfig, locals())
    ds = load_data(data, seed, max_train, max_test)
    result = stages.train(ds, cfg, seed=seed)
    write_stage_output(result, out)
    render.metrics_table("train", result.metrics, ["zoo", "params", "epochs", "accuracy"], out)


@command
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
    epochs: Annotated[int | None, opt(PruneConfig, "epochs")] = None,
    batch_size: Annotated[int | None, opt(PruneConfig, "batch_size")] = None,
    learning_rate: Annotated[float | None, opt(PruneConfig, "learning_rate")] = None,
    lr_schedule: Annotated[LRSchedule | None, opt(PruneConfig, "lr_schedule")] = None,
    teacher: TeacherOpt = None,
    kd_temperature: KDTemperatureOpt = None,
    kd_alpha: KDAlphaOpt = None,
    seed: SeedOpt = 0,
    max_train: MaxTrainOpt = None,
    max_test: MaxTestOpt = None,
    unsafe: UnsafeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Magnitude pruning (tfmot) with a polynomial-decay or constant sparsity schedule."""
    from edgeopt import stages
    from edgeopt.artifacts import load_model

    check_out(out, KERAS_SUFFIXES)
    cfg = build_config(PruneConfig, {**locals(), "kd": kd_flags(teacher, kd_temperature, kd_alpha)})
    m = load_model(model, unsafe=unsafe)
    t = load_model(teacher, unsafe=unsafe) if teacher is not None else None
    result = stages.prune(m, load_data(data, seed, max_train, max_test), cfg, seed=seed, teacher=t)
    write_stage_output(result, out)
    render.metrics_table("prune", result.metrics, ["target_sparsity", "sparsity", "accuracy_before", "accuracy"], out)


@command
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
    epochs: Annotated[int | None, opt(ClusterConfig, "epochs")] = None,
    batch_size: Annotated[int | None, opt(ClusterConfig, "batch_size")] = None,
    learning_rate: Annotated[float | None, opt(ClusterConfig, "learning_rate")] = None,
    lr_schedule: Annotated[LRSchedule | None, opt(ClusterConfig, "lr_schedule")] = None,
    teacher: TeacherOpt = None,
    kd_temperature: KDTemperatureOpt = None,
    kd_alpha: KDAlphaOpt = None,
    seed: SeedOpt = 0,
    max_train: MaxTrainOpt = None,
    max_test: MaxTestOpt = None,
    unsafe: UnsafeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Weight clustering (tfmot) with fine-tuning; keeps the zeros of a pruned model."""
    from edgeopt import stages
    from edgeopt.artifacts import load_model

    check_out(out, KERAS_SUFFIXES)
    cfg = build_config(ClusterConfig, {**locals(), "kd": kd_flags(teacher, kd_temperature, kd_alpha)})
    m = load_model(model, unsafe=unsafe)
    t = load_model(teacher, unsafe=unsafe) if teacher is not None else None
    result = stages.cluster(m, load_data(data, seed, max_train, max_test), cfg, seed=seed, teacher=t)
    write_stage_output(result, out)
    keys = ["clusters", "max_distinct_values", "sparsity", "accuracy_before", "accuracy"]
    render.metrics_table("cluster", result.metrics, keys, out)


@command
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
    compare_scratch: Annotated[bool, opt(DistillConfig, "compare_scratch")] = False,
    epochs: Annotated[int | None, opt(DistillConfig, "epochs")] = None,
    batch_size: Annotated[int | None, opt(DistillConfig, "batch_size")] = None,
    learning_rate: Annotated[float | None, opt(DistillConfig, "learning_rate")] = None,
    lr_schedule: Annotated[LRSchedule | None, opt(DistillConfig, "lr_schedule")] = None,
    seed: SeedOpt = 0,
    max_train: MaxTrainOpt = None,
    max_test: MaxTestOpt = None,
    unsafe: UnsafeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Hinton distillation of a teacher into a compact student."""
    from edgeopt import stages
    from edgeopt.artifacts import load_model

    check_out(out, KERAS_SUFFIXES)
    cfg = build_config(DistillConfig, locals())
    m = load_model(teacher, unsafe=unsafe)
    result = stages.distill(m, load_data(data, seed, max_train, max_test), cfg, seed=seed, unsafe=unsafe)
    write_stage_output(result, out)
    keys = ["teacher_params", "student_params", "teacher_accuracy", "accuracy", "scratch_accuracy"]
    render.metrics_table("distill", result.metrics, keys, out)


@command
def qat(
    model: Annotated[Path, typer.Argument(help="input model (.keras or .h5), typically pruned and clustered")],
    out: Annotated[Path, typer.Option(help="output SavedModel folder (QAT wrappers do not survive .keras)")],
    data: DataOpt = "fashion_mnist",
    preserve: Annotated[QATPreserve | None, opt(QATConfig, "preserve")] = None,
    epochs: Annotated[int | None, opt(QATConfig, "epochs")] = None,
    batch_size: Annotated[int | None, opt(QATConfig, "batch_size")] = None,
    learning_rate: Annotated[float | None, opt(QATConfig, "learning_rate")] = None,
    lr_schedule: Annotated[LRSchedule | None, opt(QATConfig, "lr_schedule")] = None,
    teacher: TeacherOpt = None,
    kd_temperature: KDTemperatureOpt = None,
    kd_alpha: KDAlphaOpt = None,
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
    cfg = build_config(QATConfig, {**locals(), "kd": kd_flags(teacher, kd_temperature, kd_alpha)})
    m = load_model(model, unsafe=unsafe)
    t = load_model(teacher, unsafe=unsafe) if teacher is not None else None
    result = stages.qat(m, load_data(data, seed, max_train, max_test), cfg, seed=seed, teacher=t)
    export_saved_model(result.model, out)
    write_json(metrics_path(out), {"stage": "qat", "seconds": result.seconds, **result.metrics})
    render.metrics_table("qat", result.metrics, ["preserve", "accuracy_before", "accuracy"], out)
