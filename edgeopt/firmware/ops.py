"""The op resolver and kernel list of a firmware, generated from the model's operators.

TFLite Micro registers kernels by hand: a firmware creates a ``MicroMutableOpResolver<N>`` and calls one
``AddXxx()`` per op type, and links only the kernels it registered. Both facts come from the TFLite
Micro tree itself, so the generated code matches the tree it is built with:

- the ``AddXxx()`` method of each builtin op, and the ``Register_XXX()`` it installs, are read from
  ``micro_mutable_op_resolver.h`` (an op it has no method for is an op TFLite Micro lacks);
- the kernel sources are the files that define those ``Register_XXX()`` functions, with the CMSIS-NN
  file of the same name in their place for ``cmsis-nn`` (TFLite Micro's own specialisation rule), and
  the helper sources they need: for every header ``kernels/<stem>.h`` they include, directly or not,
  ``kernels/<stem>_common.cc`` and ``kernels/<stem>.cc`` when that file registers no op.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edgeopt.errors import BadInput
from edgeopt.firmware.tree import KERNELS_DIR, RESOLVER_HEADER, Kernels, Tree
from edgeopt.tflite import op_names, parse

_METHOD = re.compile(r"TfLiteStatus\s+(Add\w+)\s*\(")
_BUILTIN = re.compile(r"BuiltinOperator_(\w+)")
_REGISTER = re.compile(r"Register_(\w+)\s*\(\s*\)")
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
_DEFINES_REGISTRATION = re.compile(r"TFLMRegistration\s+Register_\w+\s*\(\s*\)\s*\{")


@dataclass(frozen=True)
class OpEntry:
    """One builtin op as TFLite Micro's op resolver registers it."""

    op: str  # BuiltinOperator name, as edgeopt.tflite.op_names gives it (CONV_2D)
    method: str  # MicroMutableOpResolver method (AddConv2D)
    registration: str  # the kernel's Register_ function, without the prefix (CONV_2D)


@dataclass
class Resolution:
    """The model's op types resolved against a tree: what to register, and what TFLite Micro lacks."""

    entries: list[OpEntry]
    counts: dict[str, int]
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing


def resolver_methods(tree: Tree) -> dict[str, OpEntry]:
    """Every builtin op the tree's ``MicroMutableOpResolver`` can register, by op name."""
    path = tree.root / RESOLVER_HEADER
    text = path.read_text(errors="replace")
    starts = [m.start() for m in _METHOD.finditer(text)] + [len(text)]
    out: dict[str, OpEntry] = {}
    for a, b in zip(starts, starts[1:], strict=False):
        chunk = text[a:b]
        method = _METHOD.match(chunk)
        builtin, register = _BUILTIN.search(chunk), _REGISTER.search(chunk)
        if method and builtin and register and builtin.group(1) not in out:
            out[builtin.group(1)] = OpEntry(builtin.group(1), method.group(1), register.group(1))
    if not out:
        raise BadInput(f"{path} defines no op resolver methods: not a TensorFlow Lite Micro tree this edgeopt reads")
    return out


def model_op_counts(content: bytes) -> dict[str, int]:
    """How many operators of each type the model has, over all its subgraphs, in order of first use."""
    model = parse(content)
    names = op_names(model)
    counts: Counter[str] = Counter()
    for sg in model.subgraphs or []:
        for op in sg.operators or []:
            counts[names[op.opcodeIndex] if op.opcodeIndex < len(names) else "UNKNOWN"] += 1
    return dict(counts)


def resolve(tree: Tree, content: bytes) -> Resolution:
    """The model's op types against the tree's op resolver; custom ops and builtins without a method
    are ``missing`` (TFLite Micro cannot run the model)."""
    methods = resolver_methods(tree)
    counts = model_op_counts(content)
    entries, missing = [], []
    for op in counts:
        if op in methods:
            entries.append(methods[op])
        else:
            missing.append(op)
    return Resolution(entries=entries, counts=counts, missing=missing)


def _registration_files(tree: Tree) -> dict[str, dict[str, Path]]:
    """{folder: {registration: file}} for the generic kernels and the CMSIS-NN ones."""
    out: dict[str, dict[str, Path]] = {}
    for key, folder in (("generic", tree.kernels_dir), ("cmsis_nn", tree.kernels_dir / "cmsis_nn")):
        found: dict[str, Path] = {}
        for path in sorted(folder.glob("*.cc")) if folder.is_dir() else []:
            if path.name.endswith("_test.cc"):
                continue
            for m in re.finditer(r"TFLMRegistration\s+Register_(\w+)\s*\(\s*\)\s*\{", path.read_text(errors="replace")):
                found.setdefault(m.group(1), path)
        out[key] = found
    return out


def _specialize(tree: Tree, path: Path) -> Path:
    """The CMSIS-NN file of the same name in place of a generic kernel file (for ``cmsis-nn``)."""
    if tree.kernels != Kernels.cmsis_nn or path.parent != tree.kernels_dir:
        return path
    special = tree.kernels_dir / "cmsis_nn" / path.name
    return special if special.is_file() else path


def _includes(tree: Tree, path: Path, seen: set[Path]) -> set[Path]:
    """Every header under the tree that ``path`` includes, directly or through other headers."""
    out: set[Path] = set()
    stack = [path]
    while stack:
        p = stack.pop()
        for inc in _INCLUDE.findall(p.read_text(errors="replace")):
            h = tree.root / inc
            if h in seen or not h.is_file():
                continue
            seen.add(h)
            out.add(h)
            stack.append(h)
    return out


def kernel_sources(tree: Tree, entries: list[OpEntry]) -> list[str]:
    """The kernel and helper sources (paths relative to the tree) that ``entries`` need with the tree's
    kernel set. BadInput when the tree has no source registering one of them."""
    files = _registration_files(tree)
    chosen: list[Path] = []
    for e in entries:
        path = files["generic"].get(e.registration)
        if path is None and tree.kernels == Kernels.cmsis_nn:
            path = files["cmsis_nn"].get(e.registration)
        if path is None:
            raise BadInput(
                f"the TensorFlow Lite Micro tree at {tree.root} has no kernel source defining Register_{e.registration}"
                f" (op {e.op}) in {KERNELS_DIR}"
            )
        path = _specialize(tree, path)
        if path not in chosen:
            chosen.append(path)
    seen: set[Path] = set()
    todo = list(chosen)
    while todo:
        src = todo.pop(0)
        for header in sorted(_includes(tree, src, seen)):
            if header.parent != tree.kernels_dir or header.suffix != ".h":
                continue
            for helper in (header.with_name(header.stem + "_common.cc"), header.with_suffix(".cc")):
                if not helper.is_file() or helper in chosen:
                    continue
                if helper.name == header.stem + ".cc" and _DEFINES_REGISTRATION.search(
                    helper.read_text(errors="replace")
                ):
                    continue  # an op's kernel, not the helper implementing this header
                helper = _specialize(tree, helper)
                if helper not in chosen:
                    chosen.append(helper)
                    todo.append(helper)
    return sorted(str(p.relative_to(tree.root)) for p in chosen)


def ops_header(file_name: str, ident: str, resolution: Resolution) -> str:
    """``<name>_ops.h``: the resolver type sized to the model's op types and the function filling it."""
    n = len(resolution.entries)
    type_name = f"{ident}_op_resolver"
    lines = [
        f"/* {file_name}_ops.h: the TFLite Micro op resolver of the {file_name} model, generated by edgeopt from",
        f"   its operators ({n} op types). Registering only these links only their kernels. */",
        f"#ifndef EDGEOPT_{ident.upper()}_OPS_H",
        f"#define EDGEOPT_{ident.upper()}_OPS_H",
        "",
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
        "",
        f"typedef tflite::MicroMutableOpResolver<{n}> {type_name};",
        "",
        f"static inline TfLiteStatus {ident}_register_ops({type_name}& resolver) {{",
    ]
    for e in resolution.entries:
        count = resolution.counts.get(e.op, 0)
        lines.append(f"  if (resolver.{e.method}() != kTfLiteOk) return kTfLiteError;  /* {e.op} x{count} */")
    lines += ["  return kTfLiteOk;", "}", "", f"#endif /* EDGEOPT_{ident.upper()}_OPS_H */", ""]
    return "\n".join(lines)


def ops_type(ident: str) -> str:
    return f"{ident}_op_resolver"


def ops_makefile(file_name: str, resolution: Resolution, sources: dict[Kernels, list[str]]) -> str:
    """``<name>_ops.mk``: the kernel sources for each kernel set, relative to the TFLite Micro tree."""
    lines = [
        f"# {file_name}_ops.mk: the TFLite Micro kernel sources the {file_name} model's op types need",
        f"# ({', '.join(e.op for e in resolution.entries)}), relative to TFLM_DIR; generated by edgeopt.",
    ]
    for kernels, var in (
        (Kernels.cmsis_nn, "EDGEOPT_KERNELS_CMSIS_NN"),
        (Kernels.reference, "EDGEOPT_KERNELS_REFERENCE"),
    ):
        srcs = sources.get(kernels)
        if srcs is None:
            lines.append(f"# {var}: not generated (the tree lacks this kernel set)")
            continue
        lines.append(f"{var} := \\")
        lines += [f"  {s} \\" for s in srcs]
        lines.append("")
    return "\n".join(lines) + "\n"
