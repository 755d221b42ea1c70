"""``python -m edgeopt.search PIPELINE ...``: ``edgeopt search PIPELINE ...`` without the console script
(what tests and remote machines without it run); the same command, options and exit codes."""

from __future__ import annotations

import sys


def main() -> None:
    from edgeopt.cli import main as cli_main  # the CLI registers the search command itself

    sys.argv.insert(1, "search")
    cli_main()


if __name__ == "__main__":
    main()
