"""The commands that run a pipeline file (run, export) and the data command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli import render
from edgeopt.cli.errors import command
from edgeopt.cli.options import QuietOpt, StrictOpt, load_data
from edgeopt.data import fetch_fashion_mnist
from edgeopt.export import export as export_bundle
from edgeopt.pipeline import run as run_pipeline
from edgeopt.pipeline.spec import load_pipeline

PipelineArg = Annotated[Path, typer.Argument(help="pipeline file (YAML)")]


@command
def run(
    pipeline: PipelineArg,
    out: Annotated[Path | None, typer.Option(help="output folder (default build/<pipeline name>)")] = None,
    strict: StrictOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run a pipeline file: every stage, then manifest.json."""

    cfg = load_pipeline(pipeline)
    report = run_pipeline(cfg, out, strict=strict, on_stage=render.stage_summary)
    render.run(render.as_dict(report.manifest), report.out_dir)


@command
def export(
    pipeline: PipelineArg,
    out: Annotated[Path | None, typer.Option(help="bundle folder (default dist/<pipeline name>)")] = None,
    build: Annotated[Path | None, typer.Option(help="stage outputs and cache (default build/<pipeline name>)")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="run every stage again instead of reusing cached ones")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict/--no-strict", help="a gate that could not be evaluated fails the release (default: strict)"
        ),
    ] = True,
    diet: Annotated[
        bool,
        typer.Option(
            "--diet/--no-diet",
            help="cut from the MCU image what no runtime reads (tensor names, signatures, unused metadata and "
            "buffers) and store repeated vectors once; outputs stay identical (default: on)",
        ),
    ] = True,
    quiet: QuietOpt = False,
) -> None:
    """Run a pipeline and write a release bundle: Android assets, MCU C sources, manifest, model card, report."""

    cfg = load_pipeline(pipeline)
    result = export_bundle(
        cfg, out, build_dir=build, force=force, strict=strict, on_stage=render.stage_summary, diet=diet
    )
    render.bundle(result)


@command
def data(
    name: Annotated[str, typer.Argument(help="fashion_mnist, digits, npz:PATH or image_dir:PATH")] = "fashion_mnist",
    fetch: Annotated[bool, typer.Option(help="get Fashion-MNIST when it is missing (apt or Keras download)")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Show where a dataset comes from and its split sizes; --fetch gets Fashion-MNIST if missing."""

    if fetch and name == "fashion_mnist":
        fetch_fashion_mnist()  # logs what it tries through the library logger
    ds = load_data(name, 0)
    render.table(f"dataset {name}", list(ds.summary().items()))
