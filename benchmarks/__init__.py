"""edgeopt's benchmarks, outside the library: the harnesses behind ``make bench`` (``compression``),
``make search-bench`` (``search_bench``) and ``make arch-table`` (``archtable``). Their targets and
reference figures are data (``targets.yaml``); their results and experiment notes go to ``bench/``.
Run them from the repository root (``python -m benchmarks.<name>``), as the make targets do."""
