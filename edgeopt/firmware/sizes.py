"""Flash and RAM of a linked firmware, from its ELF section headers and its linker map.

Totals come from the ELF's section headers (``arm-none-eabi-size -A``); the parts (the model's C
array, TFLite Micro, its kernels, CMSIS-NN, the C/C++ runtime, startup and main, alignment padding)
from the input sections the linker map lists under each output section. Both are read independently,
so ``unattributed`` (total minus the parts) is a check on the attribution: it is 0 when they add up.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Sections stored in the device's flash (.data's initial values are copied from flash to RAM at reset).
FLASH_SECTIONS = (".vectors", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".init_array", ".data")
RAM_SECTIONS = (".data", ".bss")

PART_MODEL = "model"
PART_TFLM = "tflite-micro"
PART_KERNELS = "kernels"
PART_CMSIS_NN = "cmsis-nn"
PART_RUNTIME = "c-runtime"
PART_APP = "startup-main"
PART_TEST = "test-inputs"
PART_PADDING = "padding"
PART_ARENA = "arena"


def section_sizes(elf: Path, size_tool: str = "arm-none-eabi-size") -> dict[str, int]:
    """Every section of the ELF with its size in bytes (``size -A``)."""
    out = subprocess.run([size_tool, "-A", str(elf)], capture_output=True, text=True, timeout=60, check=True).stdout
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


_OUT = re.compile(r"^(\.[\w.]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)")
_OUT_NAME = re.compile(r"^(\.[\w.]+)\s*$")
_IN = re.compile(r"^ (\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")
_IN_NAME = re.compile(r"^ (\.\S+)\s*$")
_IN_REST = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")
_FILL = re.compile(r"^ \*fill\*\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)")


@dataclass
class InputSection:
    output: str  # the output section (.text)
    name: str  # the input section (.text._ZN6tflite...), or *fill*
    address: int
    size: int
    file: str  # the object or archive member, empty for fill


def map_sections(text: str) -> list[InputSection]:
    """The input sections of every output section in a GNU ld map file (``-Wl,-Map``)."""
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.startswith("Linker script and memory map"))
    except StopIteration:
        return []
    out: list[InputSection] = []
    current: str | None = None
    pending_out: str | None = None
    pending_in: str | None = None
    for line in lines[start + 1 :]:
        if pending_out is not None:
            if re.match(r"^\s+0x[0-9a-f]+\s+0x[0-9a-f]+", line):
                current = pending_out
            pending_out = None
            continue
        if pending_in is not None:
            m = _IN_REST.match(line)
            if m and current:
                out.append(
                    InputSection(current, pending_in, int(m.group(1), 16), int(m.group(2), 16), m.group(3).strip())
                )
            pending_in = None
            if m:
                continue
        if m := _OUT.match(line):
            current = m.group(1)
            continue
        if m := _OUT_NAME.match(line):
            pending_out = m.group(1)
            continue
        if current is None:
            continue
        if m := _FILL.match(line):
            out.append(InputSection(current, "*fill*", int(m.group(1), 16), int(m.group(2), 16), ""))
        elif m := _IN.match(line):
            out.append(InputSection(current, m.group(1), int(m.group(2), 16), int(m.group(3), 16), m.group(4).strip()))
        elif m := _IN_NAME.match(line):
            pending_in = m.group(1)
    return _merged(out)


def _merged(sections: list[InputSection]) -> list[InputSection]:
    """Mergeable constants (``.rodata.str*``, ``.rodata.cst*``) are listed with their size before the
    linker dropped duplicates: each keeps only the bytes up to the next section's address."""
    for a, b in zip(sections, sections[1:], strict=False):
        if a.output == b.output and re.search(r"\.(str|cst)\d", a.name) and b.address >= a.address:
            a.size = min(a.size, b.address - a.address)
    return sections


def part_of(section: InputSection, model_object: str, lib_dir: str) -> str:
    """Which part of the firmware an input section belongs to."""
    f = section.file
    if section.name == "*fill*":
        return PART_PADDING
    if f.endswith("/" + model_object) or f == model_object:
        return PART_MODEL
    if f.endswith("/example_inputs.o"):
        return PART_TEST
    if f.endswith("/main.o") or f.endswith("/startup.o"):
        return PART_ARENA if "tensor_arena" in section.name else PART_APP
    if "libcmsis-nn.a(" in f:
        return PART_CMSIS_NN
    if "libtflm-core.a(" in f:
        return PART_TFLM
    if f.startswith(lib_dir) and "/kernels/" in f:
        return PART_KERNELS
    return PART_RUNTIME


@dataclass
class Footprint:
    """Flash and static RAM of a firmware: totals from the ELF, parts from the map."""

    sections: dict[str, int]
    flash_parts: dict[str, int] = field(default_factory=dict)
    ram_parts: dict[str, int] = field(default_factory=dict)

    @property
    def flash_total(self) -> int:
        """Every flash section of the ELF, the test inputs included."""
        return sum(self.sections.get(s, 0) for s in FLASH_SECTIONS)

    @property
    def ram_total(self) -> int:
        return sum(self.sections.get(s, 0) for s in RAM_SECTIONS)

    @property
    def flash_unattributed(self) -> int:
        return self.flash_total - sum(self.flash_parts.values())

    @property
    def ram_unattributed(self) -> int:
        return self.ram_total - sum(self.ram_parts.values())

    @property
    def flash_bytes(self) -> int:
        """The firmware's flash without the check's test inputs: what the device stores."""
        return self.flash_total - self.flash_parts.get(PART_TEST, 0)


def footprint(elf: Path, map_file: Path, model_object: str, lib_dir: Path, size_tool: str) -> Footprint:
    fp = Footprint(sections=section_sizes(elf, size_tool))
    for s in map_sections(map_file.read_text(errors="replace")):
        part = part_of(s, model_object, str(lib_dir))
        if s.output in FLASH_SECTIONS and s.size:
            fp.flash_parts[part] = fp.flash_parts.get(part, 0) + s.size
        if s.output in RAM_SECTIONS and s.size:
            fp.ram_parts[part] = fp.ram_parts.get(part, 0) + s.size
    return fp
