"""``python -m edgeopt.search PIPELINE ...``: the search command on its own (what tests and remote
machines without the console script run); same options and exit codes as ``edgeopt search``."""

from __future__ import annotations

import sys

import typer

from edgeopt.search.cli import register


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)

    @app.callback()
    def _root() -> None:
        """edgeopt search."""

    sys.argv.insert(1, "search")
    app(prog_name="python -m edgeopt.search")


if __name__ == "__main__":
    main()
