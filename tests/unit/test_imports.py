"""The package's import structure: one direction, no module-level cycle, no TensorFlow at ``import edgeopt``,
and a function-local import of an edgeopt module only where it keeps a heavy dependency out of start-up."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "edgeopt"
# Third-party packages whose import costs seconds or pulls in native runtimes: TensorFlow and what needs it,
# the interpreters and compilers, Optuna and its database layer, the plotting and learning libraries.
HEAVY = {
    "tensorflow",
    "tf_keras",
    "tensorflow_model_optimization",
    "tflite_micro",
    "ai_edge_litert",
    "ai_edge_quantizer",
    "litert_quantizer",
    "ethosu",
    "optuna",
    "sqlalchemy",
    "psycopg",
    "matplotlib",
    "sklearn",
    "scipy",
    "PIL",
    "keras",
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in ROOT.rglob("*.py")}


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_pkg: bool) -> list[str]:
    """What an import statement loads: ``from P import S`` of a submodule S is an edge to ``P.S`` (its
    package is its parent, not a dependency of the importer); any other name is an edge to ``P``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module.split(".") if is_pkg else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    return subs if len(subs) == len(node.names) else [base, *subs]


def _scan() -> tuple[dict[str, set[str]], dict[str, list[tuple[ast.stmt, list[str]]]]]:
    """(module-level imports, function-local imports with their targets) of every module."""
    top: dict[str, set[str]] = {}
    local: dict[str, list[tuple[ast.stmt, list[str]]]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top[name], local[name] = set(), []

        def visit(node: ast.AST, in_function: bool, name: str = name, path: Path = path) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    visit(child, True)
                elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                elif isinstance(child, ast.Import | ast.ImportFrom):
                    targets = _targets(name, child, path.name == "__init__.py")
                    if in_function:
                        local[name].append((child, targets))
                    else:
                        top[name].update(targets)
                else:
                    visit(child, in_function)

        visit(tree, False)
    return top, local


TOP, LOCAL = _scan()


def _closure(module: str) -> set[str]:
    """Every edgeopt module that importing ``module`` loads (its packages included)."""
    parts = module.split(".")
    todo = [".".join(parts[: i + 1]) for i in range(len(parts))]
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m in seen or m not in MODULES:
            continue
        seen.add(m)
        for t in TOP[m]:
            tp = t.split(".")
            todo += [".".join(tp[: i + 1]) for i in range(len(tp))]
    return seen


def _heavy(module: str) -> set[str]:
    """The heavy third-party packages that importing ``module`` loads at module level."""
    return {t.split(".")[0] for m in _closure(module) for t in TOP[m] if t.split(".")[0] in HEAVY}


def test_no_module_level_import_cycle() -> None:
    graph = {m: {t for t in ts if t in MODULES} for m, ts in TOP.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    assert cycles == []


def test_the_scan_sees_a_cycle_and_a_heavy_chain() -> None:
    """The helpers above can fail: the stages package really loads TensorFlow at module level."""
    assert "tensorflow" in _heavy("edgeopt.stages.prune")
    assert "edgeopt._keras" in _closure("edgeopt.stages.prune")
    assert not _heavy("edgeopt.config")


def test_function_local_imports_keep_a_heavy_dependency_out_and_say_which() -> None:
    """A function-local import of an edgeopt module is allowed only when the module it loads brings a heavy
    package the importer does not already load, and its line says so (``# lazy: ...``)."""
    offenders = []
    for module, imports in LOCAL.items():
        lines = MODULES[module].read_text().splitlines()
        own = _heavy(module)
        for node, targets in imports:
            if not all(t.startswith("edgeopt") for t in targets):
                continue
            extra = set().union(*(_heavy(t) for t in targets if t in MODULES)) - own
            where = f"{MODULES[module].relative_to(ROOT.parent)}:{node.lineno}"
            if not extra:
                offenders.append(f"{where}: {ast.unparse(node)} (nothing heavy: import it at module level)")
            elif not re.search(r"#.*\blazy: ", lines[node.end_lineno - 1]):
                offenders.append(f"{where}: {ast.unparse(node)} (say why: '# lazy: imports ...')")
    assert offenders == []


@pytest.mark.parametrize("module", ["edgeopt", "edgeopt.config", "edgeopt.pipeline.spec", "edgeopt.search.config"])
def test_importing_the_package_and_its_configs_loads_no_tensorflow(module: str) -> None:
    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(HEAVY)!r})))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
