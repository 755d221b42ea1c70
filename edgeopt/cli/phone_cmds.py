"""``edgeopt phone``: the phone check's arm64 guest (setup) and its latency fit (fit)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt import calibrate as cal
from edgeopt import phone
from edgeopt.arm import guest, latency
from edgeopt.artifacts import write_bytes, write_json
from edgeopt.cli import render
from edgeopt.cli.errors import command
from edgeopt.cli.options import QuietOpt

app = typer.Typer(
    name="phone",
    help="The phone check: LiteRT's own Arm kernels under QEMU, and the latency estimate from their work.",
    no_args_is_help=True,
)

CacheOpt = Annotated[
    Path | None, typer.Option(help="guest cache folder (default ~/.cache/edgeopt/arm64, or EDGEOPT_ARM_CACHE)")
]


@app.command("setup")
@command
def setup(
    cache: CacheOpt = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            help="Debian mirror URL for debootstrap (default: this machine's apt sources, or EDGEOPT_ARM_MIRROR)"
        ),
    ] = None,
    rebuild: Annotated[bool, typer.Option(help="build the root and the wheel folder again")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Build the arm64 guest once per machine: a Debian 12 arm64 root and LiteRT's aarch64 wheels.

    Needs qemu-user and debootstrap (`make arm-root` installs them as root). Exit 2 naming what is
    missing when the guest cannot be built here.
    """
    g = guest.setup(cache, mirror_uri=mirror, rebuild=rebuild)
    render.table(
        "arm64 guest",
        [
            ("cache", str(g.cache)),
            ("emulator", f"{g.emulator.path} ({g.emulator.describe()})"),
            ("root", str(g.root)),
            ("wheels", str(g.wheels)),
            ("instruction counting", str(g.plugin) if g.plugin else f"unavailable: {g.no_count}"),
        ],
    )


@app.command("fit")
@command
def fit(
    out: Annotated[Path, typer.Option(help="folder for fit.md, fit.json (and, with --measure, counts.json)")] = Path(
        "bench/phone"
    ),
    measure: Annotated[
        bool,
        typer.Option(
            help="count MobileNet's instructions on each phone core now (about 10 minutes) instead of "
            "using the shipped counts"
        ),
    ] = False,
    counts: Annotated[
        Path | None, typer.Option(help="instruction counts to fit on (default: the shipped ones)")
    ] = None,
    calibration: Annotated[
        list[Path] | None,
        typer.Option(
            "--calibration",
            help="host calibration(s) for the host-factor comparison, repeatable (default: this host's)",
        ),
    ] = None,
    cache: CacheOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fit the CPI of the Arm-work latency estimate on the published phone figures, hold each figure out
    in turn, and compare the held-out errors with the host-factor estimate's."""
    if measure:
        data = phone.measure_counts(cache=cache, out=out / "counts.json")
    else:
        data = latency.load_counts(counts)
    calibs = [cal.load(c) for c in calibration] if calibration else [cal.ensure(phone.phone_profiles())]
    report = phone.fit_report(counts=data, calibrations=[c for c in calibs if c])
    write_json(out / "fit.json", report)
    write_bytes(out / "fit.md", phone.fit_markdown(report).encode())
    render.text_file(out / "fit.md")
