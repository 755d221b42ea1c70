"""litert-quantizer recipes applied to a float32 .tflite: weight-only int8, static int8, and int4 weights
with int8 activations, with its weight algorithms (min/max, MSE, OCTAV, GPTQ).

litert-quantizer is ai-edge-quantizer (AEQ) continued under a new name (0.11; AEQ 0.10 is frozen): the
same recipes and API, more weight algorithms. It pins ai-edge-litert 2.3.0, the LiteRT edgeopt pins. It
rewrites the float flatbuffer directly (no TensorFlow graph), so it quantizes any float .tflite,
including one converted from a SavedModel. Static recipes are calibrated on training images drawn with
the dataset seed, as convert's int8 is. Its algorithms set weight scales only; activation ranges stay
(moving-average) min/max.

Why the int4 recipe is not "int4 everywhere": TFLite Micro runs int4 weights only where it unpacks
them into int8 before the int8 kernel. CONV_2D (and DEPTHWISE_CONV_2D) accept per-channel int4 filters,
but FULLY_CONNECTED accepts int4 only per tensor (tflite-micro kernels/fully_connected_common.cc:
``(input->type == kTfLiteInt8 && filter->type != kTfLiteInt4)`` for per-channel filters), so a model
with per-channel int4 Dense kernels fails to allocate ("Node FULLY_CONNECTED failed to prepare") with
any arena. Our int4 recipe quantizes convolutions per channel and Dense kernels per tensor, and so
runs in TFLite Micro as well as LiteRT.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np

from edgeopt import tflite as tfl
from edgeopt.artifacts import gzip_size, sha256_bytes
from edgeopt.config import IOType, Quantization, WeightAlgorithm
from edgeopt.data import Dataset
from edgeopt.errors import BadInput, EdgeoptError
from edgeopt.progress import Timer, captured_stderr
from edgeopt.stages._common import StageResult

log = logging.getLogger(__name__)

#: The quantizations convert hands to AEQ (the others go through the TFLite converter).
AEQ_QUANTIZATIONS = (Quantization.weight_int8, Quantization.int8_aeq, Quantization.int4)
#: ops that get int4 weights per output channel (TFLite Micro and LiteRT both run them). AEQ 0.10's
#: policy refuses static int4 for DEPTHWISE_CONV_2D, whose weights stay int8 (they are few anyway).
INT4_CHANNELWISE_OPS = ("CONV_2D",)
#: ops that get int4 weights per tensor (TFLite Micro's int8 FULLY_CONNECTED refuses per-channel int4)
INT4_TENSORWISE_OPS = ("FULLY_CONNECTED",)


#: the package's name on PyPI and its module
PACKAGE, MODULE = "litert-quantizer", "litert_quantizer"
#: edgeopt's weight algorithm names -> litert-quantizer's algorithm keys
ALGORITHM_KEYS = {
    WeightAlgorithm.min_max: "min_max_uniform_quantize",
    WeightAlgorithm.mse: "MSE",
    WeightAlgorithm.octav: "OCTAV",
    WeightAlgorithm.gptq: "GPTQ",
}
#: the weighted ops each algorithm is applied to (it supports them: ``algorithm_manager.get_supported_ops``;
#: its other supported ops have no weights, so they keep min/max, which is what the algorithm does there)
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


class AEQError(EdgeoptError):
    """litert-quantizer refused the model (exit 2: the model does not fit the recipe)."""

    exit_code = 2


def version() -> str:
    from importlib.metadata import version as v

    return v(PACKAGE)


def algorithm_ops(algorithm: WeightAlgorithm) -> list[str]:
    """The weighted ops ``algorithm`` quantizes (litert-quantizer's registry)."""
    from litert_quantizer import algorithm_manager

    supported = {getattr(o, "value", o) for o in algorithm_manager.get_supported_ops(ALGORITHM_KEYS[algorithm])}
    return [op for op in WEIGHTED_OPS if op in supported]


def recipe(quantization: Quantization, algorithm: WeightAlgorithm = WeightAlgorithm.min_max) -> list[dict[str, Any]]:
    """The recipe (a JSON-able list of op configs, later entries win) for an AEQ quantization: the base
    recipe for every op, then one entry per op that gets int4 weights or the weight ``algorithm``."""
    from litert_quantizer import recipe as aeq_recipe

    if quantization is Quantization.weight_int8:
        rec = aeq_recipe.weight_only_wi8_afp32()
    elif quantization in (Quantization.int8_aeq, Quantization.int4):
        rec = aeq_recipe.static_wi8_ai8()
    else:
        raise BadInput(f"{quantization.value} is not a litert-quantizer quantization")
    rec = _plain(rec)
    base = rec[0]
    int4 = {}
    if quantization is Quantization.int4:
        int4 = {op: "CHANNELWISE" for op in INT4_CHANNELWISE_OPS} | {op: "TENSORWISE" for op in INT4_TENSORWISE_OPS}
    algo = algorithm_ops(algorithm) if algorithm is not WeightAlgorithm.min_max else []
    for op in [o for o in WEIGHTED_OPS if o in int4 or o in algo]:
        entry = copy.deepcopy(base)
        entry["operation"] = op
        if op in int4:
            entry["op_config"]["weight_tensor_config"].update(num_bits=4, granularity=int4[op])
        if op in algo:
            entry["algorithm_key"] = ALGORITHM_KEYS[algorithm]
        rec.append(entry)
    return rec


def _plain(obj: Any) -> Any:
    """AEQ's recipes hold str enums; plain strings keep the metrics JSON (and cache keys) stable."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "value") and isinstance(obj.value, str | int):
        return obj.value
    return obj


def quantize(
    float_tflite: bytes,
    quantization: Quantization,
    *,
    data: Dataset | None = None,
    calibration_samples: int = 200,
    seed: int = 0,
    algorithm: WeightAlgorithm = WeightAlgorithm.min_max,
) -> StageResult:
    """Apply the recipe for ``quantization`` to ``float_tflite`` (a float32 .tflite), weights by
    ``algorithm``. Static recipes (``int8-aeq``, ``int4``) and GPTQ need ``data``: ``calibration_samples``
    training images calibrate them."""
    from litert_quantizer import quantizer

    rec = recipe(quantization, algorithm)
    info = tfl.inspect(float_tflite, "float model")
    if info["constant_dtypes"].get("int8") or info["inputs"][0]["dtype"] != "float32":
        raise BadInput(f"{PACKAGE} needs a float32 .tflite (this one is already quantized)")
    with Timer() as t:
        try:
            with captured_stderr() as err:  # AEQ's calibration prints a progress bar on stderr
                q = quantizer.Quantizer(bytearray(float_tflite), rec)
                calibration = 0
                result = None
                if q.need_calibration:
                    if data is None:
                        raise BadInput(f"{quantization.value} quantization needs calibration data (--data)")
                    rep = data.representative(calibration_samples)
                    calibration = len(rep)
                    sig, name = _signature(float_tflite)
                    # One thread: the calibration runs beside other work on small machines, and one
                    # thread gives the same ranges every time.
                    result = q.calibrate({sig: [{name: rep[i : i + 1]} for i in range(len(rep))]}, num_threads=1)
                content = bytes(q.quantize(result, enable_progress_report=False).quantized_model)
        except EdgeoptError:
            raise
        except Exception as e:  # noqa: BLE001 - AEQ raises ValueError, RuntimeError, KeyError ...
            detail = next((ln for ln in err if "error" in ln.lower()), "") if err else ""
            raise AEQError(f"{PACKAGE} {quantization.value} failed: {e or detail}".strip()[:400]) from None
    info = tfl.inspect(content)
    desc = {k: info[k] for k in ("ops", "op_counts", "float_ops", "inputs", "outputs", "constant_dtypes")}
    kernels = weight_stats(content)
    if quantization is not Quantization.weight_int8 and desc["float_ops"]:
        ops = ", ".join(sorted(set(desc["float_ops"])))
        raise AEQError(f"{PACKAGE} {quantization.value} left op(s) {ops} in float")
    metrics = {
        "kernels": kernels,
        "weight_dtypes": dict(sorted({k: v["dtype"] for k, v in kernels.items()}.items())),
        "quantization": quantization.value,
        "quantizer": f"{PACKAGE} {version()}",
        "weight_algorithm": algorithm.value,
        "recipe": rec,
        "io_type": desc["inputs"][0]["dtype"],
        "calibration_samples": calibration,
        "float_bytes": len(float_tflite),
        "bytes": len(content),
        "gzip_bytes": gzip_size(content),
        "sha256": sha256_bytes(content),
        **desc,
        "seed": seed,
    }
    return StageResult("convert", metrics=metrics, tflite=content, seconds=t.seconds)


def io_type(quantization: Quantization) -> IOType:
    """What AEQ gives the model's inputs and outputs: static recipes quantize them to int8."""
    return IOType.float32 if quantization is Quantization.weight_int8 else IOType.int8


def _signature(content: bytes) -> tuple[str, str]:
    """The model's first signature key and its single input's name (AEQ calibrates by signature)."""
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_content=content).get_signature_list()
    if not sigs:
        raise BadInput("the float .tflite has no signature to calibrate through")
    key = next(iter(sigs))
    inputs = sigs[key]["inputs"]
    if len(inputs) != 1:
        raise BadInput(f"calibration supports one model input; signature {key} has {len(inputs)}")
    return key, inputs[0]


def unpack_int4(raw: bytes, n: int) -> np.ndarray:
    """``n`` signed int4 values packed two a byte, low nibble first (TFLite's INT4 layout)."""
    b = np.frombuffer(raw, dtype=np.uint8)
    nib = np.stack([b & 0x0F, b >> 4], axis=1).reshape(-1)[:n].astype(np.int8)
    return np.where(nib > 7, nib - 16, nib).astype(np.int8)


def weight_stats(content: bytes) -> dict[str, dict[str, Any]]:
    """Each weight tensor (rank >= 2) of the .tflite: dtype (``int4`` for packed INT4), shape, bytes
    stored, distinct values, largest distinct count of an output channel, and zeros."""
    from ai_edge_litert import schema_py_generated as schema

    model = tfl.parse(content)
    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    np_types = {"int8": np.int8, "float32": np.float32, "float16": np.float16}
    out: dict[str, dict[str, Any]] = {}
    for t in model.subgraphs[0].tensors or []:
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        shape = [int(s) for s in (t.shape if t.shape is not None else [])]
        if buf is None or buf.data is None or len(buf.data) == 0 or len(shape) < 2:
            continue
        dtype = names.get(t.type, str(t.type))
        raw = bytes(buf.data)
        if dtype == "int4":
            v = unpack_int4(raw, int(np.prod(shape)))
        elif dtype in np_types:
            v = np.frombuffer(raw, dtype=np_types[dtype])
        else:
            continue
        v = v.reshape(shape)
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        out[name] = {
            "dtype": dtype,
            "shape": shape,
            "stored_bytes": len(raw),
            "distinct_values": int(np.unique(v).size),
            "max_distinct_per_channel": max(int(np.unique(v[i]).size) for i in range(v.shape[0])),
            "sparsity": float((v == 0).mean()),
            "per_channel_scales": int(len(t.quantization.scale))
            if t.quantization is not None and t.quantization.scale is not None
            else 0,
        }
    return out
