"""The firmware check: a model built into TFLite Micro firmware for a Cortex-M core, run in QEMU on test
inputs, its outputs compared byte for byte with TFLite Micro's Python interpreter, and what the board
will spend measured (instructions per ``Invoke()``, flash, RAM) and estimated (latency, energy).

``check(source, cpu=...)`` takes a bundle folder (``edgeopt export``: its ``mcu/`` C array as it is,
and its example when it has one) or a ``.tflite`` file, and returns a ``FirmwareRecord``. Bad input
(no tree, compiler or QEMU) raises BadInput; a firmware that hangs or faults raises ChildFailed (the
QEMU runner's, exit 3); everything else (an op TFLite Micro lacks, an output byte that differs, an
arena that does not fit) is a failure in the record.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import metadata
from edgeopt.artifacts import sha256_bytes, write_bytes
from edgeopt.errors import BadInput
from edgeopt.firmware import build as fw_build
from edgeopt.firmware import estimate, example, sizes
from edgeopt.firmware.inputs import REFERENCE_TIMEOUT, reference_outputs, sample_inputs, split_rows
from edgeopt.firmware.tree import Kernels, Tree, find_tree, fingerprint
from edgeopt.manifest import FirmwareFootprint, FirmwareRecord
from edgeopt.runtimes import qemu
from edgeopt.runtimes.isolate import ChildFailed, run_task
from edgeopt.tflite import check_bytes, inspect

log = logging.getLogger(__name__)

# The arena the check falls back to when the model's own does not fit, to learn what it needs: most of
# the boards' 4 MiB of data RAM, less the stack and what the runtime keeps.
MEASURING_ARENA = 3 << 20
DEFAULT_INPUTS = 10
DEFAULT_TIMEOUT = 300.0  # QEMU's, for the firmware


@dataclass
class Source:
    """What the check builds: the C array files (a bundle's, unchanged) and the bytes they hold, and the
    bytes the reference interpreter runs."""

    label: str
    names: example.Names
    content: bytes  # the model bytes of the C array
    array_files: dict[str, bytes]  # <file>_model.h and .c
    reference: bytes
    reference_label: str
    arena_bytes: int | None
    arena_label: str
    data: str | None
    example_dir: Path | None  # a bundle's mcu/ when it holds the example
    expected_sha256: str | None  # what the header or manifest says the array's bytes hash to


_ARRAY = re.compile(r"_model\[\]\s*=\s*\{(.*?)\};", re.DOTALL)


def array_bytes(c_source: str) -> bytes:
    """The bytes of the ``<ident>_model[]`` array in a ``<name>_model.c``."""
    m = _ARRAY.search(c_source)
    if not m:
        raise BadInput("no `<name>_model[] = { ... };` array in the model's C file")
    return bytes(int(v, 16) for v in re.findall(r"0x([0-9a-fA-F]{1,2})", m.group(1)))


def _define(header: str, name: str) -> str | None:
    m = re.search(rf"#define\s+{re.escape(name)}\s+(\S+)", header)
    return m.group(1) if m else None


def load_source(path: Path) -> Source:
    """A bundle folder or a ``.tflite`` file; BadInput with one line when it is neither."""
    path = Path(path)
    if path.is_dir():
        return _bundle_source(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such bundle folder or .tflite file")
    content = path.read_bytes()
    check_bytes(content, str(path))
    names = example.names_for(example.names_for(path.stem).ident)
    return Source(
        label=str(path),
        names=names,
        content=content,
        array_files={},
        reference=content,
        reference_label=f"{path.name} (the same bytes as the C array)",
        arena_bytes=None,
        arena_label="",
        data=_embedded_data(content),
        example_dir=None,
        expected_sha256=None,
    )


def _embedded_data(content: bytes) -> str | None:
    """The dataset named by an edgeopt manifest embedded in the model, if any."""
    try:
        raw = metadata.read_all(content).get(metadata.MANIFEST_ENTRY)
        return json.loads(raw)["data"]["name"] if raw else None
    except Exception:  # noqa: BLE001 - a model without a readable manifest simply names no data
        return None


def _bundle_source(folder: Path) -> Source:
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise BadInput(f"{folder}: not a bundle (no manifest.json) and not a .tflite file")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"{manifest_path}: not valid JSON: {e}") from None
    mcu = next((m for m in manifest.get("models", []) if m.get("role") == "mcu"), None)
    if mcu is None:
        raise BadInput(f"{folder}: the bundle has no MCU model (mcu/<name>_model.c): it has no int8 model")
    c_path = folder / mcu["path"]
    h_path = c_path.with_suffix(".h")
    if not c_path.is_file() or not h_path.is_file():
        raise BadInput(f"{folder}: {mcu['path']} or its header is missing")
    file_name = c_path.name.removesuffix("_model.c")
    names = example.names_for(file_name)
    header = h_path.read_text()
    content = array_bytes(c_path.read_text())
    arena = _define(header, f"{names.upper}_ARENA_BYTES")
    sha = _define(header, f"{names.upper}_MODEL_SHA256")
    android = next((m for m in manifest.get("models", []) if m.get("role") == "android"), None)
    ref_path = folder / android["path"] if android else None
    if ref_path is not None and ref_path.is_file():
        reference = ref_path.read_bytes()
        ref_label = f"{android['path']} (the bundle's Android model: the same weights, not read from the C array)"
    else:
        reference = content
        ref_label = f"{mcu['path']}'s own bytes (the bundle has no Android model to compare with)"
    example_dir = c_path.parent if (c_path.parent / "main.cc").is_file() else None
    return Source(
        label=str(folder),
        names=names,
        content=content,
        array_files={h_path.name: h_path.read_bytes(), c_path.name: c_path.read_bytes()},
        reference=reference,
        reference_label=ref_label,
        arena_bytes=int(arena.rstrip("uU")) if arena else None,
        arena_label=f"the header's {names.upper}_ARENA_BYTES" if arena else "",
        data=(manifest.get("data") or {}).get("name"),
        example_dir=example_dir,
        expected_sha256=(sha or "").strip('"') or mcu.get("sha256"),
    )


def first_difference(fw: dict[tuple[int, int], bytes], ref: np.ndarray, info: dict[str, Any]) -> tuple[int, str | None]:
    """Output bytes that differ over every example, and the first difference in words (example, output
    tensor, element index, both values)."""
    count, first = 0, None
    for i, row in enumerate(ref):
        off = 0
        for o, t in enumerate(info["outputs"]):
            dt = np.dtype(t["dtype"])
            n = int(np.prod([d if d > 0 else 1 for d in t["shape"]])) * dt.itemsize
            want = row[off : off + n].tobytes()
            off += n
            got = fw.get((i, o))
            if got is None:
                count += n
                first = first or f"input {i}, output {o}: the firmware printed no output"
                continue
            if got == want:
                continue
            a, b = np.frombuffer(got, dt), np.frombuffer(want, dt)
            if len(a) != len(b):
                count += n
                first = first or f"input {i}, output {o}: {len(got)} bytes from the firmware, {n} expected"
                continue
            bad = np.flatnonzero(a != b)
            count += int(sum(x != y for x, y in zip(got, want, strict=True)))
            if first is None:
                k = int(bad[0])
                first = (
                    f"input {i}, output {o}, element {k}: firmware {a[k]}, TFLite Micro's Python interpreter {b[k]} "
                    f"({len(bad)} of {len(a)} elements differ)"
                )
    return count, first


def check(
    source_path: Path,
    *,
    cpu: fw_build.Cpu | str,
    tflm_src: str | Path | None = None,
    kernels: Kernels | str = Kernels.cmsis_nn,
    inputs: int = DEFAULT_INPUTS,
    data: str | None = None,
    profiles: list[Any] | None = None,
    work_dir: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    x: np.ndarray | None = None,
) -> FirmwareRecord:
    """Build, run and measure; see the module docstring. ``x``: float test examples to use instead of
    loading ``data`` (validate passes its own split)."""
    cpu = fw_build.Cpu(cpu)
    kernels = Kernels(kernels)
    if inputs < 1:
        raise BadInput(f"--inputs must be at least 1 (got {inputs})")
    # Bad input first, each in one line: the tree, the compiler, QEMU, the model.
    tree = find_tree(tflm_src, kernels)
    tc = fw_build.toolchain()
    qemu.binary()
    src = load_source(Path(source_path))
    info = inspect(src.content)
    work = (
        Path(work_dir) if work_dir else fw_build.cache_root() / "runs" / f"{src.names.file}-{cpu.value}-{kernels.value}"
    ).resolve()  # make runs in the example folder: every path it gets must be absolute
    failures: list[str] = []
    base = {
        "model": src.label,
        "model_sha256": sha256_bytes(src.content),
        "reference": src.reference_label,
        "cpu": cpu.value,
        "board": cpu.board,
        "kernels": kernels.value,
        "tflm_src": str(tree.root),
        "tflm_fingerprint": fingerprint(tree),
        "toolchain": tc.version,
        "qemu": qemu.version(),
    }
    if src.expected_sha256 and src.expected_sha256 != base["model_sha256"]:
        failures.append(
            f"the C array's bytes hash to {base['model_sha256'][:12]}…, the bundle says {src.expected_sha256[:12]}…:"
            " the array was altered"
        )

    files, resolution = example.op_files(src.names, {kernels: tree}, src.content)
    base["op_counts"] = resolution.counts
    if not resolution.ok:
        failures.append(
            f"TFLite Micro ({tree.root}) has no kernel for op{'s' if len(resolution.missing) > 1 else ''} "
            f"{', '.join(resolution.missing)}: no firmware can run this model"
        )
        return FirmwareRecord(
            passed=False, failures=failures, inputs=0, inputs_source="", bit_exact=False,
            build_seconds=0.0, compiled_sources=0, run_seconds=0.0, **base,
        )  # fmt: skip
    base["kernel_sources"] = _kernel_list(files, src.names, kernels)

    rows, how = sample_inputs(info, inputs, data or src.data, x=x)
    ref = reference_outputs(src.reference, info, rows, REFERENCE_TIMEOUT)
    example_dir = _write_example(work / "example", src, files, info, rows, ref, how)

    arena = src.arena_bytes or _measured_arena(src.content)
    result, built = _build_and_run(example_dir, tree, cpu, work, arena, timeout)
    if result.errors and any("AllocateTensors failed" in e for e in result.errors):
        result, built = _build_and_run(example_dir, tree, cpu, work, MEASURING_ARENA, timeout)
        needed = result.arena_used
        failures.append(
            f"the arena ({arena:,} bytes, {src.arena_label or 'measured by the Python interpreter'}) is too small "
            f"for TFLite Micro on {cpu.value} with {kernels.value}: AllocateTensors needs {needed:,} bytes"
            if needed
            else f"AllocateTensors failed with {arena:,} bytes and with {MEASURING_ARENA:,}"
        )
    if result.errors:
        failures.extend(e for e in result.errors if "AllocateTensors failed" not in e)
    differences, first = first_difference(result.outputs, ref, info)
    if first:
        failures.append(f"not bit-exact: {first}")

    ipt = result.instructions_per_tick
    per_invoke = sorted(int(round(t * ipt)) for t in result.ticks.values())
    instructions = None
    if per_invoke:
        instructions = {
            "median": int(np.median(per_invoke)),
            "min": per_invoke[0],
            "max": per_invoke[-1],
            "method": (
                f"{base['qemu']}, -icount {qemu.ICOUNT} (one guest instruction per virtual nanosecond): "
                f"SysTick ticks around each Invoke() x {ipt:g} instructions per tick, from a calibration loop of "
                f"{result.calibration[0]:,} instructions that took {result.calibration[1]:,} ticks"
            ),
        }
    fp = _footprint(built, src, result, tc)
    profiles = estimate.profiles_for(cpu, None) if profiles is None else profiles
    latency = estimate.latencies(instructions["median"], cpu, profiles, info, kernels.value) if instructions else []
    energy = estimate.energies(latency, profiles)
    return FirmwareRecord(
        passed=not failures,
        failures=failures,
        inputs=len(rows),
        inputs_source=how,
        bit_exact=differences == 0 and not any(e for e in result.errors),
        differences=differences,
        first_difference=first,
        instructions=instructions,
        footprint=fp,
        latency=latency,
        energy=energy,
        build_seconds=round(built.seconds, 2),
        compiled_sources=built.compiled,
        run_seconds=round(result.seconds, 3),
        **base,
    )


def _kernel_list(files: dict[str, bytes], names: example.Names, kernels: Kernels) -> list[str]:
    var = "EDGEOPT_KERNELS_CMSIS_NN" if kernels == Kernels.cmsis_nn else "EDGEOPT_KERNELS_REFERENCE"
    text = files[f"{names.file}_ops.mk"].decode()
    block = text.split(f"{var} := \\", 1)[1].split("\n\n", 1)[0]
    return [ln.strip().rstrip("\\").strip() for ln in block.splitlines() if ln.strip().rstrip("\\").strip()]


def _measured_arena(content: bytes) -> int | None:
    """The smallest arena TFLite Micro's Python interpreter allocates and runs with (one zero input), as
    export measures it for the header."""
    shape = [d if d > 0 else 1 for d in inspect(content)["inputs"][0]["shape"]]
    try:
        r, _ = run_task("tflm_eval", "tflm", content, np.zeros(shape, np.float32), timeout=REFERENCE_TIMEOUT)
    except ChildFailed:
        return None
    return int(r["arena_bytes"])


def _write_example(
    folder: Path,
    src: Source,
    op_files: dict[str, bytes],
    info: dict[str, Any],
    rows: np.ndarray,
    ref: np.ndarray,
    how: str,
) -> Path:
    """The example folder the check builds: the bundle's own example when it has one (its op files
    regenerated against the tree being used), else the templates; the C array as the bundle has it."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if src.example_dir is not None:
        for p in src.example_dir.iterdir():
            if p.is_file():
                write_bytes(folder / p.name, p.read_bytes())
        for name, data in op_files.items():
            bundled = folder / name
            if not bundled.exists() or bundled.read_bytes() != data:
                log.info("%s: generated again for the TFLite Micro tree at hand (the bundle's differs)", name)
    else:
        example.write_files(folder, example.example_files(src.names))
        arrays = src.array_files or example.model_sources(src.names, src.content, None, src.label)
        example.write_files(folder, arrays)
    example.write_files(folder, op_files)
    outs = [[r] for r in ref]  # one blob per example: every output tensor's bytes in order
    write_bytes(folder / example.INPUTS_FILE, example.inputs_source(split_rows(rows, info["inputs"]), outs, how))
    return folder


def _build_and_run(example_dir: Path, tree: Tree, cpu: fw_build.Cpu, work: Path, arena: int | None, timeout: float):
    built = fw_build.build(example_dir, tree, cpu, out=work / "build", arena_bytes=arena)
    log.info(
        "built %s for %s in %.1f s (%s)", built.elf, cpu.value, built.seconds,
        f"{built.compiled} sources compiled" if built.compiled else "library from the cache",
    )  # fmt: skip
    return qemu.run(built.elf, cpu.board, cpu.value, timeout=timeout), built


def _footprint(built: fw_build.BuildResult, src: Source, result: Any, tc: fw_build.Toolchain) -> FirmwareFootprint:
    size_tool = str(tc.gcc.parent / f"{fw_build.CROSS}size")
    fp = sizes.footprint(built.elf, built.map, f"{src.names.file}_model.o", built.lib_dir, size_tool)
    arena = fp.ram_parts.get(sizes.PART_ARENA, 0)
    data = fp.sections.get(".data", 0)
    bss = fp.sections.get(".bss", 0)
    stack = int(result.stack_used or 0)
    heap = int(result.heap or 0)
    return FirmwareFootprint(
        flash_bytes=fp.flash_bytes,
        flash_parts={k: v for k, v in sorted(fp.flash_parts.items()) if k != sizes.PART_TEST}
        | ({"unattributed": fp.flash_unattributed} if fp.flash_unattributed else {}),
        test_inputs_bytes=fp.flash_parts.get(sizes.PART_TEST, 0),
        ram_bytes=data + bss + stack + heap,
        arena_bytes=arena,
        arena_used_bytes=int(result.arena_used or 0),
        stack_bytes=stack,
        stack_reserved_bytes=int(result.stack_size or 0),
        bss_bytes=bss - arena,
        data_bytes=data,
        heap_bytes=heap,
        sections={k: v for k, v in fp.sections.items() if k in sizes.FLASH_SECTIONS + sizes.RAM_SECTIONS},
    )


def check_profile(
    tflite: bytes, name: str, profile: Any, *, x: np.ndarray | None = None, data: str | None = None
) -> FirmwareRecord:
    """The check a profile's ``firmware:`` block asks for, on ``tflite`` (validate's gate)."""
    import tempfile

    fw = profile.firmware
    stem = example.names_for(Path(name).stem).ident
    with tempfile.TemporaryDirectory(prefix="edgeopt-fw-") as tmp:
        path = Path(tmp) / f"{stem}.tflite"
        path.write_bytes(tflite)
        return check(
            path, cpu=profile.mcu.core.value, tflm_src=fw.tflm_src, kernels=fw.kernels.value, inputs=fw.inputs,
            data=data, profiles=[profile], timeout=fw.timeout_s, x=x,
            work_dir=fw_build.cache_root() / "runs" / f"{stem}-{profile.name}",
        )  # fmt: skip
