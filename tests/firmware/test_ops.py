"""The op resolver and kernel list generated from a model with six op types (a small DS-CNN-like
network: CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D, RESHAPE, FULLY_CONNECTED, SOFTMAX), read from
the TFLite Micro tree itself. Only the tree's sources are needed (not its third-party downloads), so
these run wherever the tree is; the compile check needs the cross compiler and the downloads."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from edgeopt.firmware import example, ops
from edgeopt.firmware.tree import ENV_TFLM_SRC, RESOLVER_HEADER, Kernels, Tree, default_tree

SIX = ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
METHODS = ["AddConv2D", "AddDepthwiseConv2D", "AddAveragePool2D", "AddReshape", "AddFullyConnected", "AddSoftmax"]


@pytest.fixture(scope="module")
def source_root() -> Path:
    root = Path(os.environ.get(ENV_TFLM_SRC) or default_tree())
    if not (root / RESOLVER_HEADER).is_file():
        pytest.skip(f"no TensorFlow Lite Micro sources at {root} (set ${ENV_TFLM_SRC})")
    return root


@pytest.fixture(scope="module")
def six_ops(digits) -> bytes:
    from edgeopt import stages
    from edgeopt._keras import keras, set_seed
    from edgeopt.config import ConvertConfig

    set_seed(0)
    L = keras.layers
    model = keras.Sequential(
        [
            L.InputLayer(input_shape=(8, 8, 1)),
            L.Conv2D(8, 3, padding="same", activation="relu"),
            L.DepthwiseConv2D(3, padding="same", activation="relu"),
            L.AveragePooling2D(),
            L.Flatten(),
            L.Dense(10, activation="softmax"),
        ]
    )
    return stages.convert(model, ConvertConfig(quantization="int8", calibration_samples=32), data=digits).tflite


def test_six_op_types_become_six_registrations(source_root, six_ops):
    tree = Tree(source_root, Kernels.cmsis_nn)
    res = ops.resolve(tree, six_ops)
    assert res.ok and list(res.counts) == SIX and all(c == 1 for c in res.counts.values())
    assert [e.method for e in res.entries] == METHODS
    header = ops.ops_header("six", "six", res)
    assert "typedef tflite::MicroMutableOpResolver<6> six_op_resolver;" in header
    calls = re.findall(r"resolver\.(Add\w+)\(\) != kTfLiteOk\) return kTfLiteError;  /\* (\w+) x1 \*/", header)
    assert calls == list(zip(METHODS, SIX, strict=True))


def test_kernel_sources_are_those_of_the_six_ops_only(source_root, six_ops):
    k = "tensorflow/lite/micro/kernels/"
    for kernels, own in ((Kernels.cmsis_nn, k + "cmsis_nn/"), (Kernels.reference, k)):
        tree = Tree(source_root, kernels)
        srcs = ops.kernel_sources(tree, ops.resolve(tree, six_ops).entries)
        # the op kernels: CMSIS-NN's where it has one (not RESHAPE), and the helpers their headers declare
        for name in ("conv", "depthwise_conv", "pooling", "fully_connected", "softmax"):
            assert own + name + ".cc" in srcs, (kernels, name)
            assert k + name + "_common.cc" in srcs, (kernels, name)
        assert k + "reshape.cc" in srcs and k + "kernel_util.cc" in srcs
        if kernels == Kernels.cmsis_nn:
            assert k + "conv.cc" not in srcs  # replaced by CMSIS-NN's, not compiled twice
        for absent in ("add.cc", "lstm_eval.cc", "svdf.cc", "mul.cc", "strided_slice.cc"):
            assert not any(s.endswith("/" + absent) for s in srcs), absent
        assert len(srcs) <= 14, srcs


def test_an_op_tflite_micro_lacks_is_missing(source_root):
    from edgeopt._keras import keras, tf
    from edgeopt.config import ConvertConfig
    from edgeopt.stages import convert

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation=tf.nn.gelu)])
    content = convert(model, ConvertConfig(quantization="float32")).tflite
    res = ops.resolve(Tree(source_root, Kernels.reference), content)
    assert not res.ok and res.missing == ["GELU"]


def test_the_generated_resolver_compiles_against_the_tree(source_root, six_ops, tmp_path):
    """The method names come from the tree's header, so the generated code compiles (cross compiler)."""
    from edgeopt.errors import BadInput
    from edgeopt.firmware.build import toolchain
    from edgeopt.firmware.tree import find_tree

    try:
        toolchain()
        tree = find_tree(source_root, Kernels.cmsis_nn)
    except BadInput as e:
        pytest.skip(f"cannot compile here: {e}")
    names = example.names_for("six")
    files, res = example.op_files(names, {Kernels.cmsis_nn: tree}, six_ops)
    example.write_files(tmp_path, files)
    (tmp_path / "use.cc").write_text(
        '#include "six_ops.h"\nint use() { static six_op_resolver r; return six_register_ops(r) == kTfLiteOk; }\n'
    )
    dl = tree.downloads
    r = subprocess.run(
        ["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb", "-std=c++17", "-fno-rtti", "-fno-exceptions",
         "-DTF_LITE_STATIC_MEMORY", f"-I{tree.root}", f"-I{dl / 'flatbuffers/include'}", f"-I{dl / 'gemmlowp'}",
         f"-I{tmp_path}", "-fsyntax-only", str(tmp_path / "use.cc")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    mk = files["six_ops.mk"].decode()
    assert "EDGEOPT_KERNELS_CMSIS_NN := \\" in mk and "tensorflow/lite/micro/kernels/cmsis_nn/depthwise_conv.cc" in mk
