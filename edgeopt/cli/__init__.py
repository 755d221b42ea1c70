"""The ``edgeopt`` command line: thin commands that parse flags, call one library function, write files.

Exit codes: 0 ok, 1 a gate failed, 2 bad input or usage, 3 a runtime crashed, 130 interrupted.

Layout: ``options`` (shared flags; help taken from the config fields), ``errors`` (errors to exit
codes), ``render`` (all rich output: logging handler, progress bars, tables), and the commands by
role: ``train_cmds``, ``model_cmds``, ``pipeline_cmds``, ``search_cmds``, ``firmware_cmds``, ``phone_cmds``
(``edgeopt phone ...``).
"""

from __future__ import annotations

import sys

import typer

from edgeopt.cli import errors, firmware_cmds, model_cmds, phone_cmds, pipeline_cmds, render, search_cmds, train_cmds

try:  # Typer >= 0.2x carries its own copy of Click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older Typer on top of Click
    from click.exceptions import ClickException

app = typer.Typer(
    name="edgeopt",
    help="Prune, cluster, distill, convert and validate Keras models for phones and microcontrollers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# The order of `edgeopt --help`: the stages as a model goes through them, then the pipeline commands.
for _fn, _name in (
    (train_cmds.train, "train"),
    (train_cmds.prune, "prune"),
    (train_cmds.cluster, "cluster"),
    (train_cmds.distill, "distill"),
    (train_cmds.qat, "qat"),
    (model_cmds.convert, "convert"),
    (model_cmds.validate, "validate"),
    (model_cmds.calibrate, "calibrate"),
    (pipeline_cmds.run, "run"),
    (pipeline_cmds.export, "export"),
    (model_cmds.inspect, "inspect"),
    (firmware_cmds.firmware, "firmware"),
    (pipeline_cmds.data, "data"),
    (search_cmds.search, "search"),
):
    app.command(_name)(_fn)
app.add_typer(phone_cmds.app, name="phone")


def main() -> None:
    """Console script entry point (``edgeopt = "edgeopt.cli:main"``).

    Usage errors (an unknown option, a value not among the choices) are one ``error:`` line on stderr
    and exit 2, like every other bad input, instead of Typer's usage panel."""
    try:
        code = app(prog_name="edgeopt", standalone_mode=False)
    except ClickException as e:
        if type(e).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
            ctx = getattr(e, "ctx", None)
            render.usage_error(e.format_message(), ctx.command_path if ctx is not None else "edgeopt")
        sys.exit(e.exit_code)
    except typer.Abort:
        render.interrupted()
        sys.exit(errors.INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main"]
