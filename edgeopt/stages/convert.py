"""Keras -> .tflite with post-training quantization (float32, dynamic, float16, int8, int16x8; weight-int8,
int8-aeq and int4 through litert-quantizer on the float32 .tflite, edgeopt.stages.aeq). The post-training
methods of edgeopt.quant run first on the Keras model (equalisation, AdaRound, bias correction) and inside
the int8 conversion (activation ranges); after an int8 conversion, one codebook per clustered kernel
(edgeopt.quant.codebook)."""

from __future__ import annotations

import re
from typing import Any

from edgeopt import tflite as tfl
from edgeopt._keras import set_seed, tf
from edgeopt.artifacts import SavedModelDir, gzip_size, sha256_bytes
from edgeopt.config import ConvertConfig, IOType, Quantization, RangeEstimator
from edgeopt.data import Dataset
from edgeopt.errors import BadInput, EdgeoptError
from edgeopt.progress import Timer, captured_stderr
from edgeopt.quant import codebook, ptq
from edgeopt.stages import aeq
from edgeopt.stages._common import StageResult, count_params

_IO_DTYPES = {IOType.int8: "int8", IOType.uint8: "uint8", IOType.int16: "int16", IOType.float32: "float32"}


class ConversionError(EdgeoptError):
    """The converter refused the model (exit 2: the model does not fit the requested conversion)."""

    exit_code = 2


def convert(
    model: Any,
    config: ConvertConfig | None = None,
    *,
    data: Dataset | None = None,
    seed: int = 0,
    clusters_from: Any = None,
) -> StageResult:
    """Convert ``model`` (a tf-keras model or an ``artifacts.SavedModelDir``) to .tflite bytes. int8 and
    int16x8 need ``data`` for calibration. ``clusters_from``: the clustered Keras model whose kernels give
    ``shared_codebook`` its clusters when ``model`` is a SavedModel (a QAT model); default ``model`` itself."""
    config = config or ConvertConfig()
    q = config.quantization

    if q in aeq.AEQ_QUANTIZATIONS:  # float32 .tflite first, then litert-quantizer's recipe on its bytes
        if q is not Quantization.weight_int8 and data is None:
            raise BadInput(f"{q.value} quantization needs calibration data (--data)")
        rep = data.representative(config.calibration_samples) if data is not None else None
        model, methods = ptq.prepare(model, rep, config, seed=seed)
        f32 = convert(model, ConvertConfig(quantization=Quantization.float32), data=data, seed=seed)
        r = aeq.quantize(
            f32.tflite, q, data=data, calibration_samples=config.calibration_samples, seed=seed,
            algorithm=config.weight_algorithm,
        )  # fmt: skip
        r.metrics.update(keras_params=f32.metrics["keras_params"], allow_float_fallback=config.allow_float_fallback)
        if methods:
            r.metrics["ptq"] = methods
        r.seconds += f32.seconds
        return r
    needs_data = q in (Quantization.int8, Quantization.int16x8)
    if needs_data and data is None:
        raise BadInput(f"{q.value} quantization needs calibration data (--data)")
    if data is not None:
        data.check_fits(model)
    with Timer() as t:
        set_seed(seed)
        rep = data.representative(config.calibration_samples) if data is not None and needs_data else None
        model, methods = ptq.prepare(model, rep, config, seed=seed)
        converter = _converter(model)
        if q is not Quantization.float32:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if q is Quantization.float16:
            converter.target_spec.supported_types = [tf.float16]
        calibration = 0
        if needs_data:
            assert rep is not None
            calibration = len(rep)

            def representative_dataset() -> Any:
                for i in range(len(rep)):
                    yield [rep[i : i + 1]]

            converter.representative_dataset = representative_dataset
            base = (
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8
                if q is Quantization.int8
                else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            )
            ops = [base]
            if config.allow_float_fallback:
                ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
            converter.target_spec.supported_ops = ops
            io = config.resolved_io_type
            if io is not IOType.float32:
                converter.inference_input_type = getattr(tf, _IO_DTYPES[io])
                converter.inference_output_type = getattr(tf, _IO_DTYPES[io])
        ranges = None
        try:
            with captured_stderr() as log:
                if config.activation_ranges is RangeEstimator.minmax:
                    content = converter.convert()
                else:
                    io = getattr(tf, _IO_DTYPES[config.resolved_io_type])
                    content, ranges = ptq.convert_with_ranges(converter, rep, config, io, seed=seed)
        except Exception as e:  # noqa: BLE001 - the converter raises several types
            raise ConversionError(_explain(e, log, config)) from None
        shared: list[dict[str, Any]] | None = None
        if config.shared_codebook and q is Quantization.int8:
            source = clusters_from if clusters_from is not None or isinstance(model, SavedModelDir) else model
            if source is not None:
                content, shared = codebook.share_codebooks(content, source)
    info = tfl.inspect(content)
    desc = {k: info[k] for k in ("ops", "op_counts", "float_ops", "inputs", "outputs", "constant_dtypes")}
    if needs_data and desc["float_ops"] and not config.allow_float_fallback:
        # The converter keeps ops without integer kernels in float even when only int8 ops are
        # allowed; a release must not ship that by surprise.
        ops = ", ".join(sorted(set(desc["float_ops"])))
        raise ConversionError(
            f"{q.value} conversion left op(s) {ops} in float (no integer kernel); "
            "pass --allow-float-fallback to accept float ops in the model"
        )
    metrics = {
        "kernels": kernel_stats(content),
        "quantization": q.value,
        "io_type": config.resolved_io_type.value,
        "calibration_samples": calibration,
        "allow_float_fallback": config.allow_float_fallback,
        "keras_params": count_params(model),
        "bytes": len(content),
        "gzip_bytes": gzip_size(content),
        "sha256": sha256_bytes(content),
        **desc,
        "seed": seed,
    }
    if shared is not None:
        metrics["shared_codebook"] = shared
    if methods or ranges:
        metrics["ptq"] = {**methods, **({"activation_ranges": ranges} if ranges else {})}
    if needs_data and config.allow_float_fallback and desc["float_ops"]:
        metrics["float_fallback_ops"] = sorted(set(desc["float_ops"]))
    return StageResult("convert", metrics=metrics, tflite=content, seconds=t.seconds)


def kernel_stats(content: bytes) -> dict[str, dict[str, Any]]:
    """Distinct values (per kernel and at most per output channel) and zeros of each weight tensor
    in the .tflite: what clustering and pruning left after quantization."""
    import numpy as np

    out = {}
    for t in tfl.constant_tensors(content):
        if t["values"] is None or len(t["shape"]) < 2 or t["dtype"] not in ("int8", "float32", "float16"):
            continue
        v = t["values"].reshape(t["shape"])
        per_channel = max(int(np.unique(v[i]).size) for i in range(v.shape[0]))
        out[t["name"]] = {"dtype": t["dtype"], "shape": t["shape"], "distinct_values": int(np.unique(v).size),
                          "max_distinct_per_channel": per_channel, "sparsity": float((v == 0).mean())}  # fmt: skip
    return out


def _converter(model: Any) -> Any:
    """A converter over a concrete function whose inputs have fixed names.

    ``from_keras_model`` names the input after the Keras input layer (``input_1``, ``input_2``, ...
    as models are built in one process), so the same weights could give different bytes.
    """

    if isinstance(model, SavedModelDir):
        return tf.lite.TFLiteConverter.from_saved_model(str(model.path))
    n = len(model.inputs)
    specs = [
        tf.TensorSpec([None, *t.shape[1:]], t.dtype, name="input" if n == 1 else f"input_{i}")
        for i, t in enumerate(model.inputs)
    ]

    @tf.function
    def serve(*args: Any) -> Any:
        return model(args[0] if n == 1 else list(args), training=False)

    return tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function(*specs)], model)


def _explain(err: Exception, log: list[str], config: ConvertConfig) -> str:
    """One line naming what failed, from the converter's diagnostics where it names an op."""
    text = "\n".join([str(err), *log])
    ops = sorted(set(re.findall(r"'(tfl\.[a-z_0-9]+|tf\.[A-Za-z0-9_]+)' op", text)))
    q = config.quantization.value
    if ops:
        hint = "" if config.allow_float_fallback else " (--allow-float-fallback keeps such ops in float)"
        return f"{q} conversion failed: op(s) {', '.join(ops)} cannot be converted as asked{hint}"
    first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()), str(err).splitlines()[0])
    return f"{q} conversion failed: {first[:400]}"
