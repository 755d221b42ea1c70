"""The ``edgeopt search`` command (``python -m edgeopt search`` where the console script is not installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli.errors import command
from edgeopt.cli.options import QuietOpt
from edgeopt.search.study import search as run_search


@command
def search(
    pipeline: Annotated[Path, typer.Argument(help="pipeline file (YAML) with an optional search: block")],
    trials: Annotated[
        int | None,
        typer.Option(help="trials this command adds to the study (Optuna's n_trials); default: search.trials"),
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(
            help="time budget for this command's trials: no trial starts once it is spent (the running ones "
            "finish); default: search.minutes, none when not set; 0: no limit"
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="local worker processes, one TensorFlow each, cores shared out")] = 1,
    storage: Annotated[
        str | None,
        typer.Option(
            help="study database shared by machines, e.g. postgresql+psycopg://USER:PASSWORD@HOST:5432/DB "
            "(default: a SQLite file in build/search/<name>/)"
        ),
    ] = None,
    study: Annotated[str | None, typer.Option(help="study name (default: the pipeline's name)")] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="stage cache folder, may be shared storage (default build/search/<name>/cache)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="results folder (default search/<name>)")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Search the pipeline's parameters for the best model under the device budgets (multi-objective Optuna).

    Trial 0 is the pipeline as written; best.yaml, a complete pipeline file for `edgeopt export`, is that
    pipeline unless a trial beats it by more than chance. Writes every trial (trials.csv, trials.json) and
    the Pareto front (pareto.png, pareto.html). Exit 1 when no trial met every constraint."""
    result = run_search(
        pipeline,
        trials=trials,
        minutes=minutes,
        workers=workers,
        storage=storage,
        study_name=study,
        cache=cache,
        out=out,
    )
    s = result.summary
    typer.echo(f"best: {result.best}: trial {s.get('chosen')}, {s.get('why', '')}")
    typer.echo(f"  all trials: {result.out_dir / 'trials.csv'}, front: {result.out_dir / 'pareto.html'}")
    spent = s.get("budget") or {}
    if spent.get("stopped_by_time"):
        typer.echo(f"  time budget: {spent['minutes']:g} min spent after {spent['ran']} of {spent['trials']} trial(s)")
