"""One integer codebook per clustered kernel: re-scale the per-channel int8 grids of a converted model so
that every output channel of a clustered kernel uses the same few int8 codes.

A clustered Keras kernel holds K shared values (its centroids), but its int8 tensor in the .tflite holds
many more distinct codes: the converter folds BatchNorm into the kernel (each output channel times its own
factor) and quantizes each channel on its own grid (its QAT range or its own maximum), so each channel
rounds the same centroids to different integers. DS-CNN's 16-centroid pointwise layers came out with 59-75
distinct codes per tensor, which gzip stores at about 6 bits a weight instead of 4.

The weights of channel c are ``f_c * C_k``: one factor per channel times one centroid per cluster, the
assignment of weights to clusters read from the clustered Keras model (equal kernel values, same cluster).
This module fits ``f`` and ``C`` to the int8 tensor (a rank-1 fit with the assignment known), then writes
the codes ``round(C_k / G)`` with ``G = max |C| / 127`` for every channel and the channel scale ``|f_c| G``;
each bias is re-scaled to its channel's new scale (``input scale x weight scale``), so the runtimes compute
the same convolution with weights that move by about one step of the old grid. A kernel is left as it is
when the Keras model has no clustered kernel of its shape whose clusters the int8 codes respect, when the
fit does not explain the codes to within one step, or when it would not reduce the number of codes. What
the model scores after this is what the validate step measures: nothing here is taken on trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.quant.flatbuf import pack
from edgeopt.tflite import parse

# Kernels with at most this many distinct values in Keras count as clustered (clusters plus the zero of
# pruning; tfmot's clustering allows up to 256, the recipes use 8 to 32).
MAX_CENTROIDS = 64
# The rank-1 fit must explain every int8 code to within this many steps of the channel's old grid (the
# converter's own rounding accounts for half a step).
MAX_FIT_STEPS = 1.0
# No weight may move by more than this many steps of its channel's old grid. The shared grid is the
# largest centroid's: a channel that uses only small centroids gets a coarser step than its own range gave
# it (the suite's DS-CNN moved weights by 1.0-1.9 steps of 127, about 1% of a channel's range).
MAX_MOVE_STEPS = 2.0


@dataclass(frozen=True)
class _Kernel:
    """A clustered Keras kernel in the .tflite's layout: ``assign`` holds each weight's cluster index."""

    layer: str
    kind: str  # conv, dense, depthwise
    assign: np.ndarray
    centroids: int


def share_codebooks(content: bytes, keras_model: Any) -> tuple[bytes, list[dict[str, Any]]]:
    """``content`` (an int8 .tflite converted from ``keras_model`` or from its QAT model) with one codebook
    per clustered kernel; a row per kernel rewritten (layer, codes before and after, fit residual in steps).
    The bytes are ``content`` itself when nothing was rewritten."""
    kernels = clustered_kernels(keras_model)
    if not kernels:
        return content, []
    from ai_edge_litert import schema_py_generated as schema

    builtin = schema.BuiltinOperator
    kinds = {builtin.CONV_2D: "conv", builtin.FULLY_CONNECTED: "dense", builtin.DEPTHWISE_CONV_2D: "depthwise"}
    model = parse(content)
    # a buffer behind two tensors, or a tensor two ops read, is left alone: rewriting it for one op would
    # change what the other computes
    users: dict[int, int] = {}
    for graph in model.subgraphs:
        for t in graph.tensors:
            users[t.buffer] = users.get(t.buffer, 0) + 1
    readers = []
    for graph in model.subgraphs:
        reads = [i for op in graph.operators for i in op.inputs if i >= 0]
        readers.append(np.bincount(np.asarray(reads, dtype=np.int64), minlength=len(graph.tensors)))
    rows: list[dict[str, Any]] = []
    used: set[int] = set()
    changed: list[tuple[int, int]] = []  # (subgraph, tensor) whose data and scales were rewritten
    for g, graph in enumerate(model.subgraphs):
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            kind = kinds.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            if kind is None or len(op.inputs) < 2:
                continue
            ids = [op.inputs[1]] + ([op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else [])
            if any(users[graph.tensors[i].buffer] != 1 or readers[g][i] != 1 for i in ids):
                continue
            weight = graph.tensors[ids[0]]
            bias = graph.tensors[ids[1]] if len(ids) > 1 else None
            row = _rewrite(model, weight, bias, kind, kernels, used, schema)
            if row is not None:
                rows.append(row)
                changed += [(g, i) for i in ids]
    if not rows:
        return content, []
    patched = _patch_in_place(content, model, changed, schema)
    return (patched if patched is not None else pack(model, len(content))), rows


def _patch_in_place(content: bytes, model: Any, changed: list[tuple[int, int]], schema: Any) -> bytes | None:
    """``content`` with the new data and scales of the ``changed`` tensors written over the old ones (same
    lengths), every other byte as the converter wrote it; None when a vector is not where it can be
    overwritten alone (then the caller serialises the whole model again)."""
    out = bytearray(content)
    root = schema.Model.GetRootAs(out, 0)
    spans: list[tuple[int, bytes]] = []
    for g, i in changed:
        new = model.subgraphs[g].tensors[i]
        tensor = root.Subgraphs(g).Tensors(i)
        buf = root.Buffers(tensor.Buffer())
        data = bytes(np.asarray(model.buffers[new.buffer].data, dtype=np.uint8))
        scale = np.asarray(new.quantization.scale, dtype="<f4").tobytes()
        for table, slot, payload in ((buf._tab, 4, data), (tensor.Quantization()._tab, 8, scale)):
            o = table.Offset(slot)
            if not o or table.VectorLen(o) * (1 if slot == 4 else 4) != len(payload):
                return None
            spans.append((table.Vector(o), payload))
    ends = sorted((start, start + len(p)) for start, p in spans)
    if any(a_end > b_start for (_, a_end), (b_start, _) in zip(ends, ends[1:], strict=False)):
        return None  # two tensors share a vector
    for start, payload in spans:
        out[start : start + len(payload)] = payload
    return bytes(out) if _same(bytes(out), model) else None


def _same(content: bytes, model: Any) -> bool:
    """Whether every tensor of ``content`` has the scales and buffer data of ``model`` (a vector shared with
    a tensor that was not meant to change would show here)."""
    got = parse(content)
    for graph, want_graph in zip(got.subgraphs, model.subgraphs, strict=True):
        for t, w in zip(graph.tensors, want_graph.tensors, strict=True):
            scales = [np.asarray(x.quantization.scale, dtype=np.float32) if x.quantization is not None
                      and x.quantization.scale is not None else None for x in (t, w)]  # fmt: skip
            if (scales[0] is None) != (scales[1] is None) or (
                scales[0] is not None and not np.array_equal(scales[0], scales[1])
            ):
                return False
    return all(
        np.array_equal(
            np.asarray(a.data if a.data is not None else []), np.asarray(b.data if b.data is not None else [])
        )
        for a, b in zip(got.buffers, model.buffers, strict=True)
    )


def clustered_kernels(keras_model: Any) -> list[_Kernel]:
    """The kernels of ``keras_model`` with at most ``MAX_CENTROIDS`` distinct values, each as cluster indices
    in the layout the .tflite stores it (conv OHWI, dense OI, depthwise 1HW(C*M))."""
    out = []
    for layer in getattr(keras_model, "layers", []):
        for w in layer.weights:
            name = w.name.split("/")[-1].split(":")[0]
            if name not in ("kernel", "depthwise_kernel"):
                continue
            k = np.asarray(w.numpy())
            values, index = np.unique(k, return_inverse=True)
            if values.size > MAX_CENTROIDS or k.ndim not in (2, 4):
                continue
            index = index.reshape(k.shape)
            if name == "depthwise_kernel":
                out.append(
                    _Kernel(layer.name, "depthwise", index.reshape(k.shape[0], k.shape[1], -1)[None], values.size)
                )
            elif k.ndim == 4:
                out.append(_Kernel(layer.name, "conv", np.transpose(index, (3, 0, 1, 2)), values.size))
            else:
                out.append(_Kernel(layer.name, "dense", index.T, values.size))
    return out


def _rewrite(
    model: Any, weight: Any, bias: Any, kind: str, kernels: list[_Kernel], used: set[int], schema: Any
) -> dict[str, Any] | None:
    """Rewrite ``weight`` (and ``bias``) in ``model`` on one codebook; its row, or None when left as it is."""
    q = weight.quantization
    if weight.type != schema.TensorType.INT8 or q is None or q.scale is None or len(q.scale) < 2:
        return None  # per-tensor grids already share one codebook
    if q.zeroPoint is not None and np.any(np.asarray(q.zeroPoint) != 0):
        return None  # symmetric weights only, as the converter writes them
    if model.buffers[weight.buffer].data is None or (bias is not None and model.buffers[bias.buffer].data is None):
        return None  # data stored outside the flatbuffer
    scale = np.asarray(q.scale, dtype=np.float64)
    axis = int(q.quantizedDimension)
    shape = tuple(int(d) for d in weight.shape)
    data = np.frombuffer(bytes(model.buffers[weight.buffer].data), dtype=np.int8).reshape(shape)
    codes = np.moveaxis(data, axis, 0).reshape(scale.size, -1).astype(np.int64)
    match = None
    for i, k in enumerate(kernels):
        if i in used or k.kind != kind or tuple(k.assign.shape) != shape:
            continue
        assign = np.moveaxis(k.assign, axis, 0).reshape(scale.size, -1)
        if _respects(assign, codes):
            match = i, k, assign
            break
    if match is None:
        return None
    i, kernel, assign = match
    values = codes * scale[:, None]
    factor, centroids, residual = _fit(values, assign, kernel.centroids, scale)
    step = np.abs(centroids).max() / 127.0
    if residual > MAX_FIT_STEPS or step == 0:
        return None
    shared = np.round(centroids / step).astype(np.int64)
    live = np.abs(factor) * step > 0  # a channel of zeros keeps its grid
    # the scales as the file stores them (float32), and everything derived from them
    new_scale = np.where(live, np.abs(factor) * step, scale).astype(np.float32).astype(np.float64)
    new_codes = np.where(live[:, None], np.where(factor < 0, -1, 1)[:, None] * shared[assign], codes)
    before, after = int(np.unique(codes).size), int(np.unique(new_codes).size)
    moved_steps = float((np.abs(new_codes * new_scale[:, None] - values) / scale[:, None]).max())
    if after >= before or moved_steps > MAX_MOVE_STEPS:
        return None
    new_bias = None
    if bias is not None:
        bq = bias.quantization
        if bias.type != schema.TensorType.INT32 or bq is None or bq.scale is None or len(bq.scale) != scale.size:
            return None
        b = np.frombuffer(bytes(model.buffers[bias.buffer].data), dtype=np.int32).astype(np.float64)
        new_bias = np.round(b * scale / new_scale)
        if np.abs(new_bias).max(initial=0) > 2**31 - 1:
            return None
    # nothing above changed the model; from here on every change is made
    if bias is not None and new_bias is not None:
        model.buffers[bias.buffer].data = np.frombuffer(new_bias.astype(np.int32).tobytes(), dtype=np.uint8)
        bq.scale = [float(v) for v in (np.asarray(bq.scale, dtype=np.float64) * new_scale / scale).astype(np.float32)]
    moved = np.moveaxis(data, axis, 0).shape
    out = np.moveaxis(new_codes.astype(np.int8).reshape(moved), 0, axis)
    model.buffers[weight.buffer].data = np.frombuffer(np.ascontiguousarray(out).tobytes(), dtype=np.uint8)
    q.scale = [float(v) for v in new_scale]
    used.add(i)
    return {"layer": kernel.layer, "codes_before": before, "codes_after": after,
            "fit_residual_steps": round(residual, 3), "max_change_steps": round(moved_steps, 3)}  # fmt: skip


def _respects(assign: np.ndarray, codes: np.ndarray) -> bool:
    """Whether, in every channel, weights of one cluster share one int8 code."""
    for a, c in zip(assign, codes, strict=True):
        if np.unique(a * 1024 + (c + 128)).size != np.unique(a).size:
            return False
    return True


def _fit(values: np.ndarray, assign: np.ndarray, k: int, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``values[c, j] ~ factor[c] * centroids[assign[c, j]]`` by alternating least squares over the (channel,
    cluster) cells present; the worst cell's error in steps of its channel's grid."""
    n = values.shape[0]
    cell = np.zeros((n, k))
    seen = np.zeros((n, k))
    for c in range(n):
        present = np.unique(assign[c])
        cell[c, present] = [values[c][assign[c] == j][0] for j in present]
        seen[c, present] = 1
    # start from each channel's largest value and the clusters' mean over channels
    factor = np.abs(cell).max(1)
    factor[factor == 0] = 1.0
    centroids = (seen * cell / factor[:, None]).sum(0) / np.maximum(seen.sum(0), 1)
    for _ in range(100):
        factor = (seen * cell * centroids).sum(1) / np.maximum((seen * centroids**2).sum(1), 1e-30)
        centroids = (seen * cell * factor[:, None]).sum(0) / np.maximum((seen * factor[:, None] ** 2).sum(0), 1e-30)
    residual = np.abs(cell - factor[:, None] * centroids[None]) * seen / scale[:, None]
    return factor, centroids, float(residual.max(initial=0.0))
