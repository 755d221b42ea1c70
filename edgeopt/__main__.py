"""``python -m edgeopt COMMAND ...``: the ``edgeopt`` command line without the console script (what tests and
remote search workers without it run)."""

from edgeopt.cli import main

main()
