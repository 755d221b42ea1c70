"""Read a .tflite flatbuffer without running it: identifier, ops, MACs, parameters, sizes.

This is checked before any interpreter sees the bytes, so a corrupt file is a clear error, not a crash.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from edgeopt.artifacts import gzip_size, sha256_bytes
from edgeopt.errors import BadInput

_TYPES = {
    "FLOAT32": "float32",
    "FLOAT16": "float16",
    "INT8": "int8",
    "INT4": "int4",
    "UINT8": "uint8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}


def check_bytes(content: bytes, name: str = "model") -> None:
    """Raise BadInput with one line when ``content`` is not a TFLite flatbuffer."""
    if not content:
        raise BadInput(f"{name}: empty file")
    if content.startswith(b"version https://git-lfs"):
        raise BadInput(f"{name}: a Git LFS pointer, not the model (run `git lfs pull`)")
    head = content[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise BadInput(f"{name}: an HTML page, not a TFLite model (a download that went wrong?)")
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise BadInput(f"{name}: not a TFLite model (the flatbuffer identifier TFL3 is missing)")


def parse(content: bytes, name: str = "model") -> Any:
    """The flatbuffer as the schema's object API (``ModelT``); BadInput when it does not parse."""
    check_bytes(content, name)
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
        if not model.subgraphs:
            raise ValueError("no subgraphs")
        return model
    except Exception as e:  # noqa: BLE001 - a truncated buffer fails in many ways inside flatbuffers
        raise BadInput(f"{name}: TFL3 identifier present but the flatbuffer is damaged ({type(e).__name__})") from None


def op_names(model: Any) -> list[str]:
    """Builtin op name for every operator code (custom ops as ``CUSTOM:<code>``)."""
    from ai_edge_litert import schema_py_generated as schema

    by_value = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    for oc in model.operatorCodes or []:
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        name = by_value.get(code, f"OP_{code}")
        if name == "CUSTOM":
            custom = oc.customCode.decode() if isinstance(oc.customCode, bytes) else str(oc.customCode)
            name = f"CUSTOM:{custom}"
        names.append(name)
    return names


def _shape(t: Any) -> list[int]:
    return [int(s) for s in t.shape] if t.shape is not None else []


def _macs(op: str, ins: list[Any], outs: list[Any]) -> int:
    """Multiply-accumulates of one op at batch 1 (the ops that dominate; others count 0)."""
    if not outs:
        return 0
    out = [max(1, d) for d in _shape(outs[0])]
    if op == "CONV_2D" and len(ins) > 1:
        k = _shape(ins[1])  # (out_c, kh, kw, in_c)
        return int(np.prod(out[1:])) * int(np.prod(k[1:]))
    if op == "DEPTHWISE_CONV_2D" and len(ins) > 1:
        k = _shape(ins[1])  # (1, kh, kw, out_c)
        return int(np.prod(out[1:])) * k[1] * k[2]
    if op == "FULLY_CONNECTED" and len(ins) > 1:
        k = _shape(ins[1])  # (units, in_features)
        rows = int(np.prod(out[:-1]))
        return max(1, rows) * k[0] * k[1]
    if op in ("CONV_3D", "TRANSPOSE_CONV") and len(ins) > 1:
        return int(np.prod(out[1:])) * int(np.prod(_shape(ins[1])[1:]))
    if op in ("ADD", "MUL", "SUB", "AVERAGE_POOL_2D", "MEAN"):
        return int(np.prod(out[1:]))
    return 0


# Integer ops that move, select or compare values without computing new ones: two correct kernels give
# them identical outputs from identical inputs, so they cannot round differently.
EXACT_OPS = frozenset(
    {
        "MAX_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "PAD", "PADV2", "MIRROR_PAD", "CONCATENATION",
        "STRIDED_SLICE", "SLICE", "TRANSPOSE", "GATHER", "GATHER_ND", "SPLIT", "SPLIT_V", "PACK", "UNPACK",
        "MAXIMUM", "MINIMUM", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND",
        "TILE", "BROADCAST_TO", "ARG_MAX", "ARG_MIN", "SHAPE", "REDUCE_MAX", "REDUCE_MIN",
    }
)  # fmt: skip


def tensor_names(content: bytes, name: str = "model") -> list[str]:
    """The names of the first subgraph's tensors, by index."""
    model = parse(content, name)
    return [t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in model.subgraphs[0].tensors or []]


def requant_depths(structure: dict[str, Any]) -> dict[int, int]:
    """Tensor index -> how many value-computing (requantizing) ops lie on the longest path from a model input
    to that tensor, from ``inspect``'s op list (operators are stored in execution order)."""
    depth: dict[int, int] = {}
    for op in structure["macs_per_op"]:
        d = max((depth.get(i, 0) for i in op["inputs"] if i >= 0), default=0)
        d += 0 if op["op"] in EXACT_OPS else 1
        for o in op["outputs"]:
            depth[o] = d
    return depth


def inspect(content: bytes, name: str = "model") -> dict[str, Any]:
    """Structure of a .tflite: sizes, sha256, op list and counts, MACs per op and in total,
    parameter count, constant dtypes, custom ops, inputs and outputs."""
    from ai_edge_litert import schema_py_generated as schema

    model = parse(content, name)
    codes = op_names(model)
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    sg = model.subgraphs[0]
    tensors = sg.tensors or []
    buffers = model.buffers or []

    def is_const(t: Any) -> bool:
        b = buffers[t.buffer] if 0 <= t.buffer < len(buffers) else None
        return b is not None and ((b.data is not None and len(b.data) > 0) or bool(getattr(b, "offset", 0)))

    ops = []
    for op in sg.operators or []:
        opname = codes[op.opcodeIndex] if op.opcodeIndex < len(codes) else "UNKNOWN"
        ins = [tensors[i] for i in (op.inputs if op.inputs is not None else []) if i >= 0]
        outs = [tensors[i] for i in (op.outputs if op.outputs is not None else []) if i >= 0]
        ops.append(
            {
                "op": opname,
                "macs": _macs(opname, ins, outs),
                "inputs": [int(i) for i in (op.inputs if op.inputs is not None else [])],
                "outputs": [int(i) for i in (op.outputs if op.outputs is not None else [])],
            }
        )
    params = sum(int(np.prod(_shape(t))) for t in tensors if is_const(t) and _shape(t))
    const_dtypes = Counter(_TYPES.get(type_names.get(t.type, ""), str(t.type)) for t in tensors if is_const(t))

    def io(indices: Any) -> list[dict[str, Any]]:
        out = []
        for i in indices if indices is not None else []:
            t = tensors[i]
            q = t.quantization
            scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else 0.0
            zp = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
            out.append(
                {
                    "name": t.name.decode() if isinstance(t.name, bytes) else str(t.name),
                    "dtype": _TYPES.get(type_names.get(t.type, ""), str(t.type)),
                    "shape": _shape(t),
                    "scale": scale,
                    "zero_point": zp,
                }
            )
        return out

    names = [o["op"] for o in ops]
    # Ops whose first input is float in a quantized model: what the converter kept in float.
    dtype_of = lambda i: _TYPES.get(type_names.get(tensors[i].type, ""), "")  # noqa: E731
    float_ops = [
        o["op"]
        for o in ops
        if o["op"] not in ("QUANTIZE", "DEQUANTIZE")
        and o["inputs"]
        and o["inputs"][0] >= 0
        and dtype_of(o["inputs"][0]).startswith("float")
    ]
    # Integer SOFTMAX kernels approximate exp differently (optimized LUT vs reference), so comparisons
    # between kernel sets also look at the softmax input: the logits.
    logits = None
    out_idx = int(sg.outputs[0]) if sg.outputs is not None and len(sg.outputs) else -1
    last = next((o for o in ops if out_idx in o["outputs"]), None)
    if last is not None and last["op"] == "SOFTMAX" and last["inputs"]:
        idx = last["inputs"][0]
        logits = io([idx])[0] | {"index": idx}
    return {
        "logits": logits,
        "output_index": out_idx,
        "bytes": len(content),
        "gzip_bytes": gzip_size(content),
        "sha256": sha256_bytes(content),
        "subgraphs": len(model.subgraphs),
        "ops": names,
        "op_counts": dict(Counter(names)),
        "custom_ops": sorted({n for n in names if n.startswith("CUSTOM:")}),
        "float_ops": float_ops,
        "macs_per_op": ops,
        "macs": int(sum(o["macs"] for o in ops)),
        "params": int(params),
        "constant_dtypes": dict(const_dtypes),
        "inputs": io(sg.inputs),
        "outputs": io(sg.outputs),
    }


_NP_TYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
}


def constant_tensors(content: bytes, name: str = "model") -> list[dict[str, Any]]:
    """Every constant tensor (weights, biases) of the first subgraph with its values, from the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    model = parse(content, name)
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out = []
    for t in model.subgraphs[0].tensors or []:
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        if buf is None or buf.data is None or len(buf.data) == 0:
            continue
        dtype = _TYPES.get(type_names.get(t.type, ""), str(t.type))
        values = None
        if dtype in _NP_TYPES and t.sparsity is None:
            values = np.frombuffer(bytes(buf.data), dtype=_NP_TYPES[dtype])
        out.append(
            {
                "name": t.name.decode() if isinstance(t.name, bytes) else str(t.name),
                "dtype": dtype,
                "shape": _shape(t),
                "values": values,
                "sparse": t.sparsity is not None,
            }
        )
    return out
