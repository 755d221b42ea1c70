"""Fixtures of the firmware check's tests. They need the Arm cross compiler, QEMU and a TensorFlow Lite
Micro tree with its third-party downloads (``make firmware-deps`` installs the first two; the tree is
``$EDGEOPT_TFLM_SRC`` or ../shared/third_party/tflm/tflite-micro); without them they skip and say why.

The compiled TFLite Micro library is cached by content (``~/.cache/edgeopt/firmware`` unless
``$EDGEOPT_CACHE_DIR``): the first session builds it (a few minutes on two cores), later ones reuse
it, and every test here shares the one build of the session's M4 check.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeopt.errors import BadInput


@pytest.fixture(scope="session")
def fw_tree():
    """The TFLite Micro tree the tests build with; skips (saying why) when a tool or the tree is missing."""
    from edgeopt.firmware.build import toolchain
    from edgeopt.firmware.tree import find_tree
    from edgeopt.runtimes import qemu

    try:
        toolchain()
        qemu.binary()
        return find_tree(None, "cmsis-nn")
    except BadInput as e:
        pytest.skip(f"the firmware check cannot run here: {e}")


@pytest.fixture(scope="session")
def tiny_int8(tiny_model, digits) -> bytes:
    from edgeopt import stages
    from edgeopt.config import ConvertConfig

    return stages.convert(tiny_model, ConvertConfig(quantization="int8", calibration_samples=64), data=digits).tflite


@pytest.fixture(scope="session")
def tiny_tflite(tiny_int8, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fw_model") / "tiny_digits.tflite"
    path.write_bytes(tiny_int8)
    return path


@pytest.fixture(scope="session")
def m4_work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fw_m4")


@pytest.fixture(scope="session")
def m4_record(fw_tree, tiny_tflite, m4_work):
    """The tiny digits CNN through the whole check on the Cortex-M4 (CMSIS-NN), 8 test inputs."""
    from edgeopt.firmware.check import check

    return check(tiny_tflite, cpu="cortex-m4", inputs=8, data="digits", work_dir=m4_work)
