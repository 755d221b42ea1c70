"""``python -m edgeopt.cli``: the same as the ``edgeopt`` command."""

from edgeopt.cli import main

main()
