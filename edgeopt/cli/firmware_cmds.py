"""``edgeopt firmware``: the model built into TFLite Micro firmware for a Cortex-M, run in QEMU, checked
bit for bit and measured (edgeopt.firmware.check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgeopt.artifacts import write_bytes
from edgeopt.cli import render
from edgeopt.cli.errors import command
from edgeopt.cli.options import QuietOpt
from edgeopt.errors import GateFailed, RuntimeCrash
from edgeopt.firmware import check, estimate
from edgeopt.firmware.build import Cpu
from edgeopt.firmware.tree import Kernels
from edgeopt.runtimes.isolate import ChildFailed


@command
def firmware(
    model: Annotated[Path, typer.Argument(help="a bundle folder (edgeopt export: its mcu/ C array) or a .tflite")],
    cpu: Annotated[Cpu, typer.Option(help="the core: QEMU's MPS2 board an386 (M4), an500 (M7) or an505 (M33)")],
    tflm_src: Annotated[
        Path | None,
        typer.Option(
            help="a TensorFlow Lite Micro tree after its download scripts ran (default: $EDGEOPT_TFLM_SRC, "
            "else ../shared/third_party/tflm/tflite-micro beside the repository); read only"
        ),
    ] = None,
    kernels: Annotated[Kernels, typer.Option(help="CMSIS-NN (Arm's optimized kernels) or the reference ones")] = (
        Kernels.cmsis_nn
    ),
    inputs: Annotated[int, typer.Option(help="test inputs run through the firmware and compared byte for byte")] = 10,
    data: Annotated[
        str | None, typer.Option(help="where the inputs come from (default: the bundle's or model's data)")
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(
            "--profile", help="device profiles to estimate latency and energy for (default: those of the core)"
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds QEMU may run before the firmware counts as hung")] = 300.0,
    work: Annotated[
        Path | None, typer.Option(help="folder for the example, build and logs (default: the cache)")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the record as JSON")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Build the model into TFLite Micro firmware for a Cortex-M, run it in QEMU on test inputs, check its
    outputs byte for byte against TFLite Micro's Python interpreter, and measure instructions per
    Invoke(), flash and RAM, with latency and energy estimates. Exit 1 when a check fails."""
    profiles = estimate.profiles_for(cpu, profile)
    try:
        record = check.check(
            model, cpu=cpu, tflm_src=tflm_src, kernels=kernels, inputs=inputs, data=data, profiles=profiles,
            work_dir=work, timeout=timeout,
        )  # fmt: skip
    except ChildFailed as e:
        raise RuntimeCrash(str(e)) from None
    if json_out is not None:
        write_bytes(json_out, (json.dumps(record.to_json(), indent=2) + "\n").encode())
    render.firmware(record)
    if not record.passed:
        raise GateFailed(f"firmware check failed: {'; '.join(record.failures)}")
