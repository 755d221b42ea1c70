"""The commands around a .tflite: convert, validate, inspect, and calibrate (latency factors)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeopt import calibrate as cal
from edgeopt import metadata
from edgeopt.artifacts import load_inference_model, load_model
from edgeopt.cli import render
from edgeopt.cli.errors import command
from edgeopt.cli.options import (
    DataOpt,
    MaxTestOpt,
    QuietOpt,
    SeedOpt,
    StrictOpt,
    UnsafeOpt,
    build_config,
    check_out,
    load_data,
    opt,
    read_tflite,
    write_stage_output,
)
from edgeopt.config import (
    ConvertConfig,
    IOType,
    Quantization,
    RangeEstimator,
    Split,
    ValidateConfig,
    WeightAlgorithm,
)
from edgeopt.data import read_labels_file
from edgeopt.profiles import load_profile, shipped
from edgeopt.tflite import inspect as inspect_tflite


@command
def convert(
    model: Annotated[Path, typer.Argument(help="input model (.keras, .h5 or a SavedModel folder)")],
    out: Annotated[Path, typer.Option(help="output .tflite")],
    quantization: Annotated[Quantization, opt(ConvertConfig, "quantization", config_default=False)] = Quantization.int8,
    data: Annotated[str | None, typer.Option(help="calibration data for int8/int16x8")] = None,
    calibration_samples: Annotated[int | None, opt(ConvertConfig, "calibration_samples")] = None,
    io_type: Annotated[IOType | None, opt(ConvertConfig, "io_type")] = None,
    allow_float_fallback: Annotated[bool, opt(ConvertConfig, "allow_float_fallback")] = False,
    equalize: Annotated[bool, opt(ConvertConfig, "equalize")] = False,
    equalize_relu6: Annotated[bool, opt(ConvertConfig, "equalize_relu6")] = False,
    bias_correction: Annotated[bool, opt(ConvertConfig, "bias_correction")] = False,
    adaround: Annotated[bool, opt(ConvertConfig, "adaround")] = False,
    adaround_iterations: Annotated[int | None, opt(ConvertConfig, "adaround_iterations")] = None,
    activation_ranges: Annotated[RangeEstimator | None, opt(ConvertConfig, "activation_ranges")] = None,
    percentile: Annotated[float | None, opt(ConvertConfig, "percentile")] = None,
    weight_algorithm: Annotated[WeightAlgorithm | None, opt(ConvertConfig, "weight_algorithm")] = None,
    shared_codebook: Annotated[bool, opt(ConvertConfig, "shared_codebook")] = True,
    clusters_from: Annotated[
        Path | None,
        typer.Option(
            help="the clustered Keras model (edgeopt cluster's output) whose clusters give --shared-codebook its "
            "codebooks when MODEL is a QAT SavedModel (default: MODEL itself, when it is a Keras file)"
        ),
    ] = None,
    seed: SeedOpt = 0,
    unsafe: UnsafeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert to .tflite with post-training quantization."""
    from edgeopt import stages  # lazy: imports TensorFlow

    check_out(out, (".tflite",))
    cfg = build_config(ConvertConfig, locals())
    m = load_inference_model(model, unsafe=unsafe)
    ds = load_data(data, seed) if data else None
    clusters = load_model(clusters_from, unsafe=unsafe) if clusters_from is not None else None
    result = stages.convert(m, cfg, data=ds, seed=seed, clusters_from=clusters)
    write_stage_output(result, out)
    io = result.metrics["inputs"][0]
    render.metrics_table("convert", result.metrics, ["quantization", "bytes", "gzip_bytes", "op_counts"], out)
    render.info(f"input {io['dtype']} {io['shape']} scale={io['scale']:.6g} zero_point={io['zero_point']}")
    for row in result.metrics.get("shared_codebook") or []:
        render.info(f"shared codebook: {row['layer']} {row['codes_before']} -> {row['codes_after']} int8 codes")


@command
def validate(
    model: Annotated[Path, typer.Argument(help="the .tflite to check")],
    data: DataOpt = "fashion_mnist",
    keras: Annotated[
        Path | None, typer.Option("--keras", help="Keras reference model (or SavedModel folder) for agreement")
    ] = None,
    profile: Annotated[list[str] | None, opt(ValidateConfig, "profiles", "--profile")] = None,
    min_accuracy: Annotated[float | None, opt(ValidateConfig, "min_accuracy")] = None,
    max_samples: Annotated[int | None, opt(ValidateConfig, "max_samples")] = None,
    split: Annotated[Split | None, opt(ValidateConfig, "split")] = None,
    latency: Annotated[bool, opt(ValidateConfig, "latency")] = True,
    cross_check: Annotated[bool, opt(ValidateConfig, "cross_check")] = True,
    phone_check: Annotated[bool, opt(ValidateConfig, "phone_check")] = True,
    max_step_diff: Annotated[int | None, opt(ValidateConfig, "max_step_diff")] = None,
    timeout: Annotated[float | None, opt(ValidateConfig, "timeout_s", "--timeout")] = None,
    calibration: Annotated[Path | None, typer.Option(help="calibration file (default: edgeopt calibrate's)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    junit: Annotated[Path | None, typer.Option(help="write JUnit XML: one testcase per gate and profile")] = None,
    markdown: Annotated[Path | None, typer.Option(help="write a Markdown summary")] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="the model's class names in output order, one a line (default: the .tflite's embedded manifest); "
            "the data's classes are mapped to them by name"
        ),
    ] = None,
    strict: StrictOpt = False,
    seed: SeedOpt = 0,
    max_test: MaxTestOpt = None,
    unsafe: UnsafeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check a .tflite: structure, accuracy in LiteRT, kernel cross-check, latency, device budgets.

    Exit 0 when every gate of every profile passed, 1 when one failed (or, with --strict, could not be
    evaluated), 2 for bad input, 3 when a runtime crashed. A phone profile's latency calibration is
    measured once per host when none is stored.
    """
    from edgeopt import report, stages  # lazy: imports TensorFlow

    cfg = build_config(ValidateConfig, locals())
    profiles = [load_profile(p) for p in cfg.profiles]
    content = read_tflite(model)
    ref = load_inference_model(keras, unsafe=unsafe) if keras else None
    ds = load_data(data, seed, max_test=max_test)
    names = read_labels_file(labels) if labels else None
    calib = cal.load(calibration) if calibration else cal.ensure(profiles)
    result = stages.validate(
        content, ds, cfg, keras_model=ref, profiles=profiles, calibration=calib, name=model.name, labels=names
    )
    m = {"path": str(model), "seconds": result.seconds, **result.to_dict()}
    if json_out:
        report.write_json_report(json_out, [m])
    if junit:
        report.write_junit(junit, [m])
    if markdown:
        report.write_markdown(markdown, [m])
    render.validation(m)
    result.raise_for_status(strict=strict)


@command
def calibrate(
    profile: Annotated[
        list[str] | None, typer.Option("--profile", help="profiles to calibrate (default: every shipped phone profile)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="where to store the factors (default ~/.cache/edgeopt/)")] = None,
    seconds: Annotated[float, typer.Option(help="timed seconds per measurement")] = 3.0,
    quiet: QuietOpt = False,
) -> None:
    """Measure MobileNet 1.0 224 on this host and store host-to-device latency factors per profile."""

    profiles = [load_profile(p) for p in (profile or shipped())]
    render.calibration(cal.calibrate(profiles, out=out, seconds=seconds))


@command
def inspect(
    model: Annotated[Path, typer.Argument(help=".tflite file (any, not only edgeopt's)")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    quiet: QuietOpt = False,
) -> None:
    """What is inside a .tflite: sizes, sha256, ops, MACs, parameters, inputs/outputs, embedded edgeopt manifest."""

    content = read_tflite(model)
    info = inspect_tflite(content, str(model))
    entries = metadata.read_all(content)
    emb = entries.get(metadata.MANIFEST_ENTRY)
    out = {
        "path": str(model),
        **{k: v for k, v in info.items() if k not in ("macs_per_op", "logits")},
        "metadata_entries": {k: len(v) for k, v in entries.items()},
        "edgeopt_manifest": json.loads(emb.decode()) if emb is not None else None,
    }
    if as_json:  # the one command that writes to stdout
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    render.set_quiet(False)  # inspect's output is its tables
    render.tflite_info(model, info, out["metadata_entries"], out["edgeopt_manifest"])
