"""What the firmware check does with bad input, as the issue asks: no TFLite Micro tree, a tree without
the needed kernels, no cross compiler, no QEMU: exit 2 and one line. A model with an op TFLite Micro
lacks: the check fails naming the op (exit 1). A firmware that hangs or faults: killed after the
timeout, exit 3 with QEMU's last words. (An altered C array: tests/firmware/test_check.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeopt.firmware import tree as fw_tree_mod
from edgeopt.firmware.build import TEMPLATES
from edgeopt.runtimes.isolate import ChildFailed

EDGEOPT = Path(sys.executable).parent / "edgeopt"


def edgeopt(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "EDGEOPT_DEBUG"} | {"COLUMNS": "120"} | (env or {})
    return subprocess.run([str(EDGEOPT), *map(str, args)], capture_output=True, text=True, timeout=900, env=full)


def one_line(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def float_tflite(tmp_path_factory) -> Path:
    """A float32 .tflite of a 2-layer Dense model (untrained: nothing here looks at its outputs)."""
    from edgeopt import stages
    from edgeopt._keras import keras
    from edgeopt.config import ConvertConfig

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)])
    path = tmp_path_factory.mktemp("fw_bad") / "dense.tflite"
    path.write_bytes(stages.convert(model, ConvertConfig(quantization="float32")).tflite)
    return path


def fake_tree(root: Path, *, cmsis_nn: bool = True) -> Path:
    """Empty files where find_tree looks: enough to pass its check, nothing to build with."""
    needed = dict(fw_tree_mod._NEEDED) | (dict(fw_tree_mod._NEEDED_CMSIS_NN) if cmsis_nn else {})
    for rel, _ in needed.values():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    return root


def test_no_tree_is_exit_2(float_tflite, tmp_path):
    line = one_line(edgeopt("firmware", float_tflite, "--cpu", "cortex-m4", "--tflm-src", tmp_path / "none"), 2)
    assert (
        line == f"error: no TensorFlow Lite Micro tree at {tmp_path / 'none'} (--tflm-src): "
        "give one with --tflm-src DIR or $EDGEOPT_TFLM_SRC"
    )


def test_a_tree_without_cmsis_nn_is_exit_2_naming_what_it_lacks(float_tflite, tmp_path):
    tree = fake_tree(tmp_path / "tflite-micro", cmsis_nn=False)
    line = one_line(edgeopt("firmware", float_tflite, "--cpu", "cortex-m4", "--tflm-src", tree), 2)
    assert "lacks TFLite Micro's CMSIS-NN kernels (tensorflow/lite/micro/kernels/cmsis_nn/conv.cc); CMSIS-NN (" in line
    # the same tree is enough for the reference kernels: the next missing thing is then the compiler or QEMU
    r = edgeopt("firmware", float_tflite, "--cpu", "cortex-m4", "--tflm-src", tree, "--kernels", "reference",
                env={"PATH": str(tmp_path / "empty-bin")})  # fmt: skip
    assert "no arm-none-eabi-gcc/g++ cross compiler on PATH: install Debian's gcc-arm-none-eabi" in one_line(r, 2)


def test_the_env_variable_names_the_tree(float_tflite, tmp_path):
    line = one_line(edgeopt("firmware", float_tflite, "--cpu", "cortex-m4", env={"EDGEOPT_TFLM_SRC": str(tmp_path)}), 2)
    assert f"the TensorFlow Lite Micro tree at {tmp_path} ($EDGEOPT_TFLM_SRC) lacks TFLite Micro's interpreter" in line


def test_no_cross_compiler_is_exit_2(float_tflite, tmp_path):
    tree = fake_tree(tmp_path / "tflite-micro")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    r = edgeopt("firmware", float_tflite, "--cpu", "cortex-m7", "--tflm-src", tree, env={"PATH": str(bin_dir)})
    line = one_line(r, 2)
    assert line == (
        "error: no arm-none-eabi-gcc/g++ cross compiler on PATH: install Debian's gcc-arm-none-eabi "
        "libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib"
    )


def test_no_qemu_is_exit_2(float_tflite, tmp_path):
    gcc, gxx = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-g++")
    if not gcc or not gxx:
        pytest.skip("needs the cross compiler (make firmware-deps) to get as far as looking for QEMU")
    tree = fake_tree(tmp_path / "tflite-micro")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (gcc, gxx):
        (bin_dir / Path(tool).name).symlink_to(tool)
    r = edgeopt("firmware", float_tflite, "--cpu", "cortex-m33", "--tflm-src", tree, env={"PATH": str(bin_dir)})
    assert one_line(r, 2) == "error: no qemu-system-arm on PATH: install Debian's qemu-system-arm"


def test_bad_cpu_is_exit_2(float_tflite):
    r = edgeopt("firmware", float_tflite, "--cpu", "cortex-m0")
    assert r.returncode == 2 and "cortex-m0" in r.stderr and "Traceback" not in r.stderr


def test_an_op_tflite_micro_lacks_fails_naming_it(fw_tree, tmp_path):
    """GELU (transformer blocks) has no TFLite Micro kernel: the check fails (exit 1) naming the op,
    before anything is built."""
    from edgeopt import stages
    from edgeopt._keras import keras, tf
    from edgeopt.config import ConvertConfig
    from edgeopt.firmware.check import check

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation=tf.nn.gelu), keras.layers.Dense(3)])
    path = tmp_path / "gelu.tflite"
    path.write_bytes(stages.convert(model, ConvertConfig(quantization="float32")).tflite)
    r = check(path, cpu="cortex-m4", inputs=2, work_dir=tmp_path / "work")
    assert not r.passed and r.op_counts["GELU"] == 1
    assert r.failures == [f"TFLite Micro ({fw_tree.root}) has no kernel for op GELU: no firmware can run this model"]
    assert r.build_seconds == 0 and not (tmp_path / "work" / "build").exists()
    cli = edgeopt("firmware", path, "--cpu", "cortex-m4", "--work", tmp_path / "work2")
    assert cli.returncode == 1, cli.stderr
    assert cli.stderr.strip().splitlines()[-1] == f"error: firmware check failed: {r.failures[0]}"


# ---- firmware that hangs or faults: the QEMU runner and the example's startup code ----------------


def _elf(tmp_path: Path, main_c: str) -> Path:
    """startup.c (the example's) and ``main_c`` linked for the M4 board, as the example links."""
    (tmp_path / "main.c").write_text(main_c)
    elf = tmp_path / "fw.elf"
    flags = ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-mthumb", "-O1"]
    subprocess.run(
        ["arm-none-eabi-gcc", *flags, "-nostartfiles", "--specs=nano.specs", "--specs=rdimon.specs",
         f"-I{TEMPLATES}", "-T", str(TEMPLATES / "mps2_an386.ld"), f"-L{TEMPLATES}", "-o", str(elf),
         str(TEMPLATES / "startup.c"), str(tmp_path / "main.c")],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return elf


def test_a_hanging_firmware_is_killed_with_its_last_words(fw_tree, tmp_path):
    from edgeopt.runtimes import qemu

    elf = _elf(tmp_path, '#include <stdio.h>\nint main(void) { puts("edgeopt hello"); for (;;) {} }\n')
    with pytest.raises(ChildFailed) as e:
        qemu.run(elf, "mps2-an386", "cortex-m4", timeout=3)
    assert e.value.kind == "hung" and e.value.crashed
    assert "did not finish within 3 s on mps2-an386, killed; last words: edgeopt hello" in str(e.value)


def test_a_faulting_firmware_is_reported_with_the_fault(fw_tree, tmp_path):
    from edgeopt.runtimes import qemu

    elf = _elf(tmp_path, "int main(void) { return *(volatile int *)0xF0000000u; }\n")  # no memory there
    with pytest.raises(ChildFailed) as e:
        qemu.run(elf, "mps2-an386", "cortex-m4", timeout=30)
    assert e.value.kind == "crashed"
    assert "the firmware faulted on mps2-an386: edgeopt fault: exception 0x00000003 pc 0x" in str(e.value)


def test_the_cli_turns_a_hang_into_exit_3(m4_record, tiny_tflite, tmp_path):
    """A timeout shorter than QEMU needs for the tiny model: killed, exit 3, one line with QEMU's last words."""
    r = edgeopt("firmware", tiny_tflite, "--cpu", "cortex-m4", "--data", "digits", "--timeout", "0.01", "--work",
                tmp_path, "-q")  # fmt: skip
    line = one_line(r, 3)
    assert line.startswith(
        "error: tflm-qemu hung: the firmware did not finish within 0.01 s on mps2-an386, killed; last words: "
    )
