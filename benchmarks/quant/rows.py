"""``make bench``'s rows of the quantization frontier (issue 21), called by ``benchmarks.compression``:

- the flash-first 4-bit pipeline (``pipelines/flash_first_int4.yaml``), one run per seed, sharing the
  flash-first pipeline's stage cache (the same distilled student: only QAT, convert and validation run);
- PTQ only: the default pipeline's model before QAT converted with bias correction (the best post-training
  method on it; every method in bench/quant.md), per seed, judged against that model's own top-1;
- the Keras 3 MobileNet-style model of the model-family suite (trained once, in Keras 3, when its file is
  missing: ``benchmarks.quant.mobilenet_style``; read through the Keras 3 bridge): float32, plain int8 PTQ,
  and int8 with equalisation across ReLU6 + bias correction;
- the default student (the default pipeline's distilled model) binarized: binary kernels, conv1 and the
  classifier int8, six QAT epochs (first seed only).

Every row is measured by the bench's own ``measure`` (the same validation as every other row).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeopt import stages
from edgeopt.artifacts import load_model
from edgeopt.config import ConvertConfig, QATConfig
from edgeopt.stages._common import accuracy

log = logging.getLogger(__name__)

FLASH_FIRST_INT4 = "pipelines/flash_first_int4.yaml"
MOBILENET_STYLE = Path("models/mobilenet_style_fashion.keras")
#: the post-training method of the PTQ-only row (best on the default student's model before QAT)
PTQ_METHOD = {"bias_correction": True}
#: Nagel et al.'s data-free recipe on the MobileNet-style model: equalisation across ReLU6, bias correction
DFQ = {"equalize": True, "equalize_relu6": True, "bias_correction": True}
#: the binarized default student's QAT
BINARY_QAT = {"weights": "binary", "int8_share": 0.01, "epochs": 6, "learning_rate": 1e-3, "lr_schedule": "cosine"}


def mobilenet_style(path: Path = MOBILENET_STYLE, *, seed: int = 42) -> Path:
    """The Keras 3 MobileNet-style model file, trained (Keras 3, Fashion-MNIST, ``seed``) when missing, in a
    child process: Keras 3 and tf-keras do not share one."""
    if path.is_file():
        return path
    log.info("bench: training the Keras 3 MobileNet-style model")
    root = Path(__file__).resolve().parents[2]
    args = [sys.executable, "-m", "benchmarks.quant.mobilenet_style", "--out", str(path), "--seed", str(seed)]
    subprocess.run(args, cwd=root, check=True)
    return path


def ptq_row(
    measure: Callable[..., dict[str, Any]], model_path: Path, data: Any, seed: int, *, method: dict[str, Any]
) -> dict[str, Any]:
    """The PTQ-only row of one seed: ``model_path`` (a Keras model before QAT) converted with ``method``."""
    model = load_model(model_path)
    float_acc = accuracy(model, data.x_test, data.y_test)
    t = time.time()
    content = stages.convert(model, ConvertConfig(quantization="int8", **method), data=data, seed=seed).tflite
    name = " + ".join(method) if method else "plain int8"
    r = measure(
        f"PTQ only: default model before QAT ({model_path.parent.name}), {name}",
        "ptq_default",
        content,
        time.time() - t,
        f"{model_path.parent.name}/{model_path.name} -> int8 PTQ ({json.dumps(method) if method else 'min/max'}), "
        f"its float top-1 {100 * float_acc:.2f}%",
        keras=model,
    )
    r["seed"] = seed
    r["float_accuracy"] = float_acc
    r["drop_vs_float_points"] = (float_acc - r["accuracy"]) * 100
    return r


def mobilenet_rows(measure: Callable[..., dict[str, Any]], data: Any, seed: int) -> None:
    """float32, plain int8 and equalise-ReLU6 + bias correction of the Keras 3 MobileNet-style model."""
    path = mobilenet_style()
    model = load_model(path)
    acc = accuracy(model, data.x_test, data.y_test)
    for q, method, label in (
        ("float32", {}, "float32"),
        ("int8", {}, "int8 PTQ"),
        (
            "int8",
            {"equalize": True, "equalize_relu6": True, "bias_correction": True},
            "int8 + equalize (ReLU6) + bias correction",
        ),
    ):
        t = time.time()
        content = stages.convert(model, ConvertConfig(quantization=q, **method), data=data, seed=seed).tflite
        r = measure(
            f"MobileNet-style Keras 3 model: {label}",
            "mobilenet_style",
            content,
            time.time() - t,
            f"{path} (edgeopt.zoo.mobilenet_style in Keras 3, its Keras top-1 {100 * acc:.2f}%) -> {q}"
            + (f" {json.dumps(method)}" if method else ""),
            keras=model,
        )
        r["float_accuracy"] = acc
        r["drop_vs_float_points"] = (acc - r["accuracy"]) * 100


def binary_row(measure: Callable[..., dict[str, Any]], student_path: Path, data: Any, seed: int) -> None:
    """The default student binarized (QAT with binary kernels), int8 activations, INT4 storage."""
    t = time.time()
    q = stages.qat(load_model(student_path), data, QATConfig(**BINARY_QAT), seed=seed)
    content = stages.convert(q.model, ConvertConfig(quantization="int8"), data=data, seed=seed).tflite
    r = measure(
        "default student binarized (binary kernels, conv1 and logits int8)",
        "binary",
        content,
        time.time() - t,
        f"{student_path.parent.name}/{student_path.name} -> qat {json.dumps(BINARY_QAT)} -> int8 (kernels INT4)",
        keras=q.model,
    )
    r["seed"] = seed


def flash_first_int4_cache(flash_first_root: Path) -> Path:
    """The stage cache the 4-bit flash-first run shares with the flash-first run of the same seed."""
    return flash_first_root / ".cache"
