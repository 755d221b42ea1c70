"""Known reasons for an interpreter to abort on a model, read from the .tflite alone.

Native kernels stop with ``abort()`` and no message when a ``TFLITE_CHECK`` fails; the child process
then dies by SIGABRT and says nothing. The checks below recognise the causes we have traced, so a
crash report can say which op and which value, and what to do.
"""

from __future__ import annotations

from typing import Any

from edgeopt.tflite import op_names, parse

# LiteRT's reference int8/uint8 Softmax (kernels/activations.cc, SoftmaxPrepare for kReference) and
# TFLite Micro's (kernels/softmax_common.cc, CalculateSoftmaxParams) call
# PreprocessSoftmaxScaling(beta, input_scale, kScaledDiffIntegerBits = 5), which hands
# beta * input_scale * 2**(31 - 5) to QuantizeMultiplierGreaterThanOne: TFLITE_CHECK_GT(multiplier, 1)
# aborts when the input scale is at most 2**-26 / beta (1.49e-8 for beta 1). LiteRT's optimized kernel
# builds a lookup table instead and runs the same model.
SOFTMAX_SCALED_DIFF_INTEGER_BITS = 5
# Runtimes that compute the Softmax multiplier (the optimized LiteRT kernels do not).
SOFTMAX_MULTIPLIER_RUNTIMES = ("litert-reference", "tflm")


def softmax_multiplier(beta: float, input_scale: float) -> float:
    """The real multiplier the reference int8 Softmax quantizes; it must be above 1."""
    return beta * input_scale * 2.0 ** (31 - SOFTMAX_SCALED_DIFF_INTEGER_BITS)


def known_aborts(content: bytes) -> list[str]:
    """One line per op of the model that makes LiteRT's reference kernels and TFLite Micro abort."""
    from ai_edge_litert import schema_py_generated as schema

    model = parse(content)
    names = op_names(model)
    out: list[str] = []
    for sg in model.subgraphs or []:
        for op in sg.operators or []:
            if names[op.opcodeIndex] != "SOFTMAX" or not op.inputs:
                continue
            t = sg.tensors[op.inputs[0]]
            if t.type not in (schema.TensorType.INT8, schema.TensorType.UINT8):
                continue
            scale = _first(getattr(t.quantization, "scale", None))
            beta = float(getattr(op.builtinOptions, "beta", 1.0) or 1.0)
            if scale is None or softmax_multiplier(beta, scale) > 1.0:
                continue
            name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
            out.append(
                f"SOFTMAX input {name!r} has scale {scale:.3g} (its int8 range spans only {scale * 255:.3g}), "
                f"at or below 2^-26/beta = {2.0**-26 / beta:.3g}: the reference int8 Softmax "
                "(PreprocessSoftmaxScaling) aborts; the logits are near zero, as in an untrained model"
            )
    return out


def _first(v: Any) -> float | None:
    try:
        return float(v[0]) if v is not None and len(v) else None
    except (TypeError, IndexError):
        return None
