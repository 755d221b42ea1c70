"""The whole firmware check on the Cortex-M4 with the tiny digits CNN: built, run in QEMU, bit-exact
against TFLite Micro's Python interpreter, an instruction count in a stated range, and flash and RAM
figures that add up against the ELF's own section headers (read here with readelf, not with the
code under test); a rerun takes its library from the cache; an altered C array fails the check."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeopt.firmware import example
from edgeopt.firmware.check import array_bytes, check, reference_outputs, sample_inputs
from edgeopt.tflite import constant_tensors, inspect

# The tiny CNN (conv 3x3x8 on 8x8, pool, dense 128x32 and 32x10: 9,024 MACs) takes about 90k
# instructions per Invoke() with CMSIS-NN on the M4 (measured: 89,560 for seed 1); most of it is the
# interpreter's per-op work, not MACs. The range admits another TFLite Micro tree or compiler without admitting a
# count that is not an instruction count (ticks, or nanoseconds on the host).
INSTRUCTIONS_RANGE = (30_000, 200_000)


def test_bit_exact_on_the_m4(m4_record):
    r = m4_record
    assert r.passed, r.failures
    assert r.bit_exact and r.differences == 0 and r.first_difference is None
    assert r.inputs == 8 and "test examples of digits" in r.inputs_source
    assert (r.cpu, r.board, r.kernels) == ("cortex-m4", "mps2-an386", "cmsis-nn")
    assert r.op_counts == {"CONV_2D": 1, "MAX_POOL_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 2, "SOFTMAX": 1}


def test_instructions_per_invoke_in_range(m4_record):
    ins = m4_record.instructions
    lo, hi = INSTRUCTIONS_RANGE
    assert lo <= ins["min"] <= ins["median"] <= ins["max"] <= hi, ins
    # The same graph on every input: the count varies by less than 1% (data-dependent branches only).
    assert ins["max"] - ins["min"] < 0.01 * ins["median"], ins
    assert "-icount shift=0" in ins["method"]


def _readelf_sections(elf: Path) -> dict[str, int]:
    out = subprocess.run(["arm-none-eabi-readelf", "-S", "-W", str(elf)], capture_output=True, text=True, check=True)
    sizes = {}
    for line in out.stdout.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m:
            sizes[m.group(1)] = int(m.group(2), 16)
    return sizes


def test_flash_and_ram_add_up_against_the_elf(m4_record, m4_work):
    fp = m4_record.footprint
    elf = _readelf_sections(m4_work / "build" / "firmware.elf")
    flash_sections = [".vectors", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".init_array", ".data"]
    in_flash = sum(elf.get(s, 0) for s in flash_sections)
    # The parts (from the linker map) add up to the ELF's flash sections, test inputs aside.
    assert "unattributed" not in fp.flash_parts
    assert sum(fp.flash_parts.values()) + fp.test_inputs_bytes == in_flash
    assert fp.flash_bytes == in_flash - fp.test_inputs_bytes
    # The model part is the C array, byte for byte.
    content = Path(m4_record.model).read_bytes()
    assert fp.flash_parts["model"] == len(content)
    for part in ("tflite-micro", "kernels", "cmsis-nn", "c-runtime", "startup-main"):
        assert fp.flash_parts[part] > 0, part
    assert fp.test_inputs_bytes >= 8 * 64  # eight 8x8 int8 inputs, and their expected outputs
    # RAM: .data and .bss from the ELF, the arena inside .bss, stack and heap measured on the device.
    assert fp.data_bytes == elf[".data"]
    assert fp.bss_bytes + fp.arena_bytes == elf[".bss"]
    assert fp.ram_bytes == elf[".data"] + elf[".bss"] + fp.stack_bytes + fp.heap_bytes
    assert 0 < fp.arena_used_bytes <= fp.arena_bytes
    assert 256 < fp.stack_bytes < fp.stack_reserved_bytes == 0x10000


def test_latency_and_energy_estimates_on_the_m4_board(m4_record):
    lat = {x.profile: x for x in m4_record.latency}
    en = {x.profile: x for x in m4_record.energy}
    nucleo = lat["nucleo-l4r5zi"]
    ins = m4_record.instructions["median"]
    assert nucleo.ms == pytest.approx(ins * nucleo.cycles_per_instruction / 120e6 * 1e3)
    assert (
        nucleo.used == "macs" and nucleo.gate_ms == nucleo.macs_ms > 0
    )  # the better one on the M4 (bench/firmware.md)
    assert "MLPerf Tiny" in nucleo.source
    e = en["nucleo-l4r5zi"]
    assert e.microjoules == pytest.approx(e.milliwatts * nucleo.gate_ms)
    assert 30 < e.milliwatts < 50 and "NUCLEO-L4R5ZI" in e.source


def test_the_example_is_what_was_built(m4_record, m4_work):
    """main.cc, the Makefile, startup and linker scripts in the work folder are the templates a bundle
    ships; the op resolver registers the model's five op types."""
    folder = m4_work / "example"
    names = example.names_for("tiny_digits")
    for name, data in example.example_files(names).items():
        assert (folder / name).read_bytes() == data, name
    ops_h = (folder / "tiny_digits_ops.h").read_text()
    assert "MicroMutableOpResolver<5>" in ops_h
    log = (m4_work / "build" / "build.log").read_text()
    assert "main.cc" in log and "tiny_digits_model.c" in log


def test_rerun_takes_the_library_from_the_cache(m4_record, tiny_tflite, tmp_path):
    r = check(tiny_tflite, cpu="cortex-m4", inputs=2, data="digits", work_dir=tmp_path)
    assert r.passed and r.compiled_sources == 0
    assert r.build_seconds < 60  # the app's four files and the link, not the library
    assert r.instructions["median"] == pytest.approx(m4_record.instructions["median"], rel=0.01)


def _bundle(folder: Path, content: bytes, name: str = "tiny") -> Path:
    """A minimal bundle: manifest.json, the C array (as export writes it) and the Android model."""
    names = example.names_for(name)
    for fname, data in example.model_sources(names, content, None, "test").items():
        (folder / "mcu").mkdir(parents=True, exist_ok=True)
        (folder / "mcu" / fname).write_bytes(data)
    (folder / "android" / "assets").mkdir(parents=True)
    (folder / "android" / "assets" / f"{name}.tflite").write_bytes(content)
    manifest = {
        "schema": "edgeopt.bundle/1",
        "data": {"name": "digits"},
        "models": [
            {"role": "android", "path": f"android/assets/{name}.tflite"},
            {"role": "mcu", "path": f"mcu/{name}_model.c"},
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _flip_weight_that_matters(content: bytes, digits) -> tuple[int, bytes]:
    """A byte of the last FULLY_CONNECTED kernel whose flip changes TFLite Micro's outputs on the test
    inputs (a weight behind an input that is always zero would change nothing)."""
    kernel = next(t for t in reversed(constant_tensors(content)) if t["dtype"] == "int8" and len(t["shape"]) == 2)
    raw = np.asarray(kernel["values"], np.int8).tobytes()
    at = content.find(raw)
    assert at > 0 and content.find(raw, at + 1) == -1
    info = inspect(content)
    rows, _ = sample_inputs(info, 4, "digits")
    ref = reference_outputs(content, info, rows, timeout=120)
    for k in range(0, len(raw), max(1, len(raw) // 40)):
        flipped = bytearray(content)
        flipped[at + k] ^= 0x80
        if not np.array_equal(reference_outputs(bytes(flipped), info, rows, timeout=120), ref):
            return at + k, bytes(flipped)
    pytest.fail("no single weight flip in the last kernel changes the outputs")


def test_a_byte_flipped_in_a_weight_of_the_array_fails(m4_record, tiny_int8, digits, tmp_path):
    bundle = _bundle(tmp_path / "bundle", tiny_int8)
    c_file = bundle / "mcu" / "tiny_model.c"
    at, flipped = _flip_weight_that_matters(tiny_int8, digits)
    text = c_file.read_text()
    body = text[text.index("{") + 1 : text.index("};")]
    values = body.split(",")
    assert int(values[at], 16) == tiny_int8[at]
    values[at] = values[at].replace(f"0x{tiny_int8[at]:02x}", f"0x{flipped[at]:02x}")
    c_file.write_text(text[: text.index("{") + 1] + ",".join(values) + text[text.index("};") :])
    assert array_bytes(c_file.read_text()) == flipped

    r = check(bundle, cpu="cortex-m4", inputs=4, work_dir=tmp_path / "work")
    assert not r.passed and not r.bit_exact and r.differences > 0
    assert re.match(r"input \d+, output 0, element \d+: firmware -?\d+, TFLite Micro's Python interpreter -?\d+",
                    r.first_difference)  # fmt: skip
    assert any(f.startswith("not bit-exact: input ") for f in r.failures)
    assert any("the array was altered" in f for f in r.failures)  # its sha256 no longer matches the header's
    assert "Android model" in r.reference


def test_the_unaltered_bundle_passes(m4_record, tiny_int8, tmp_path):
    bundle = _bundle(tmp_path / "bundle", tiny_int8)
    r = check(bundle, cpu="cortex-m4", inputs=4, work_dir=tmp_path / "work")
    assert r.passed and r.bit_exact, r.failures
    assert r.compiled_sources == 0


def test_the_check_leaves_the_tree_alone(m4_record, fw_tree):
    """Nothing is written into the TFLite Micro tree: no object, no gen/ folder."""
    written = [p for p in fw_tree.root.rglob("*") if p.suffix in (".o", ".d", ".a") or p.name == "gen"]
    assert written == []
    assert shutil.which("arm-none-eabi-readelf")
