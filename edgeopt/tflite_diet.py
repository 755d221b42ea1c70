"""A flatbuffer diet for the MCU image: the bytes of a ``.tflite`` that no runtime reads, removed, and
repeated vectors stored once.

On a small model most of a ``.tflite`` is not weights (an int8 Keras 3 MobileNet-style network of 6,432
parameters: 25,544 bytes, of which 7,452 weight bytes). The cuts, each one proven by running the model
before and after in LiteRT and TFLite Micro and comparing every output byte (tests/quant/test_diet.py):

- ``names``: tensor names, the subgraph name and the model description (LiteRT gives an unnamed tensor
  the empty name; TFLite Micro never reads them);
- ``signatures``: the signature defs (only LiteRT's signature runner reads them; the MCU image is run by
  tensor index);
- ``metadata``: metadata entries the runtimes do not read (the converter's ``min_runtime_version`` and
  ``CONVERSION_METADATA``), keeping ``OfflineMemoryAllocation`` (TFLite Micro's offline plan),
  ``reduced_precision_support`` (LiteRT) and any name the caller keeps;
- ``buffers``: every tensor without data points at buffer 0 (the schema's empty sentinel) and the
  buffers nothing uses are dropped;
- ``shared``: equal vectors and tables are written once and referenced many times, which the format
  allows: the per-channel zero points (int64 zeros, 8 bytes a channel, one vector per tensor as the
  converter writes them), scales, shapes and whole quantization tables. The schema still requires as many
  zero points as scales (LiteRT's InterpreterBuilder::ParseQuantization refuses fewer), so they are shared,
  not shortened.

Tensor order, operator order and buffer contents do not change, so the arena plan is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np

from edgeopt.errors import BadInput
from edgeopt.tflite import parse

CUTS = ("names", "signatures", "metadata", "buffers", "shared")
#: metadata entries a runtime reads: never cut
RUNTIME_METADATA = ("OfflineMemoryAllocation", "reduced_precision_support")


@dataclass
class DietReport:
    bytes_before: int
    bytes_after: int
    cuts: list[str]
    saved_by_cut: dict[str, int] = field(default_factory=dict)  # bytes each cut saved, applied in CUTS order
    metadata_removed: list[str] = field(default_factory=list)

    @property
    def saved(self) -> int:
        return self.bytes_before - self.bytes_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "saved": self.saved,
            "cuts": self.cuts,
            "saved_by_cut": self.saved_by_cut,
            "metadata_removed": self.metadata_removed,
        }


def diet(
    content: bytes, cuts: tuple[str, ...] | list[str] = CUTS, keep_metadata: tuple[str, ...] = ()
) -> tuple[bytes, DietReport]:
    """``content`` with ``cuts`` applied (see the module doc), and what each saved. ``keep_metadata``:
    metadata names to keep besides the runtimes' own."""
    unknown = [c for c in cuts if c not in CUTS]
    if unknown:
        raise BadInput(f"unknown diet cut(s) {', '.join(unknown)}; allowed: {', '.join(CUTS)}")
    model = parse(content)
    if any(getattr(b, "offset", 0) for b in model.buffers or []):
        raise BadInput("the diet does not handle models with buffers outside the flatbuffer (over 2 GB)")
    report = DietReport(len(content), len(content), [c for c in CUTS if c in cuts])
    size = len(serialize(model, shared=False))  # the same model re-serialised: what the cuts are measured from
    for cut in report.cuts:
        if cut == "names":
            _cut_names(model)
        elif cut == "signatures":
            model.signatureDefs = None
        elif cut == "metadata":
            report.metadata_removed = _cut_metadata(model, set(RUNTIME_METADATA) | set(keep_metadata))
        elif cut == "buffers":
            _cut_buffers(model)
        new = len(serialize(model, shared="shared" in report.cuts[: report.cuts.index(cut) + 1]))
        report.saved_by_cut[cut] = size - new
        size = new
    out = serialize(model, shared="shared" in report.cuts)
    report.bytes_after = len(out)
    # what re-serialising alone changed (alignment, field order) counts with the first cut
    if report.cuts:
        first = report.cuts[0]
        report.saved_by_cut[first] += report.bytes_before - report.bytes_after - sum(report.saved_by_cut.values())
    return out, report


def _cut_names(model: Any) -> None:
    model.description = None
    for sg in model.subgraphs:
        sg.name = None
        for t in sg.tensors or []:
            t.name = None


def _name(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _cut_metadata(model: Any, keep: set[str]) -> list[str]:
    removed = [_name(m.name) for m in model.metadata or [] if _name(m.name) not in keep]
    model.metadata = [m for m in model.metadata or [] if _name(m.name) in keep] or None
    return removed


def _has_data(buf: Any) -> bool:
    return buf is not None and buf.data is not None and len(buf.data) > 0


def _cut_buffers(model: Any) -> None:
    """Tensors without data to buffer 0; drop the buffers nothing references; renumber."""
    bufs = model.buffers or []
    used = {0}
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            if t.buffer >= len(bufs) or not _has_data(bufs[t.buffer]):
                t.buffer = 0
            used.add(t.buffer)
    for m in model.metadata or []:
        used.add(m.buffer)
    order = sorted(used)
    new_index = {old: i for i, old in enumerate(order)}
    model.buffers = [bufs[i] for i in order]
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            t.buffer = new_index[t.buffer]
    for m in model.metadata or []:
        m.buffer = new_index[m.buffer]


# ---- writing ------------------------------------------------------------------------------------


def serialize(model: Any, *, shared: bool) -> bytes:
    """Serialise ``model``: buffer data 16-byte aligned (the converter's ``force_align``), other vectors at
    their natural alignment; with ``shared``, equal vectors and quantization tables written once."""
    from ai_edge_litert import schema_py_generated as schema

    cache: dict[Any, int] | None = {} if shared else None
    saved_tensors = [list(sg.tensors or []) for sg in model.subgraphs]
    saved_buffers = list(model.buffers or [])
    try:
        for sg in model.subgraphs:
            sg.tensors = [_TensorPack(t, cache, schema) for t in sg.tensors or []] or None
        model.buffers = [_BufferPack(b, cache, schema) for b in saved_buffers]
        builder = flatbuffers.Builder(1 << 16)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
    finally:
        for sg, ts in zip(model.subgraphs, saved_tensors, strict=True):
            sg.tensors = ts or None
        model.buffers = saved_buffers


def _vector(builder: Any, values: Any, dtype: Any, cache: dict[Any, int] | None) -> int:
    arr = np.asarray(values, dtype=dtype)
    key = (arr.dtype.str, arr.tobytes())
    if cache is not None and key in cache:
        return cache[key]
    off = builder.CreateNumpyVector(arr)
    if cache is not None:
        cache[key] = off
    return off


class _BufferPack:
    """A buffer written with its data on a 16-byte boundary (empty buffers shared when ``cache``)."""

    def __init__(self, buf: Any, cache: dict[Any, int] | None, schema: Any) -> None:
        self.buf, self.cache, self.s = buf, cache, schema

    def Pack(self, builder: Any) -> int:  # noqa: N802 - the object API's name
        s, buf = self.s, self.buf
        if not _has_data(buf):
            if self.cache is not None and "empty-buffer" in self.cache:
                return self.cache["empty-buffer"]
            s.BufferStart(builder)
            off = s.BufferEnd(builder)
            if self.cache is not None:
                self.cache["empty-buffer"] = off
            return off
        data = np.asarray(buf.data, dtype=np.uint8)
        builder.StartVector(1, len(data), 16)
        builder.head = builder.head - len(data)
        builder.Bytes[builder.head : builder.head + len(data)] = data.tobytes()
        vec = builder.EndVector()
        s.BufferStart(builder)
        s.BufferAddData(builder, vec)
        return s.BufferEnd(builder)


class _TensorPack:
    """A tensor written like ``TensorT.Pack``, its shape, quantization and shape signature shared when
    ``cache`` is given."""

    def __init__(self, t: Any, cache: dict[Any, int] | None, schema: Any) -> None:
        self.t, self.cache, self.s = t, cache, schema

    def _quant(self, builder: Any) -> int | None:
        q, s, cache = self.t.quantization, self.s, self.cache
        if q is None:
            return None
        if q.details is not None or q.detailsType:  # rare (custom quantization): the object API's own
            return q.Pack(builder)
        parts = {
            "scale": None if q.scale is None else np.asarray(q.scale, np.float32),
            "zeroPoint": None if q.zeroPoint is None else np.asarray(q.zeroPoint, np.int64),
            "min": None if q.min is None else np.asarray(q.min, np.float32),
            "max": None if q.max is None else np.asarray(q.max, np.float32),
        }
        key = ("quant", q.quantizedDimension) + tuple(
            None if v is None else (v.dtype.str, v.tobytes()) for v in parts.values()
        )
        if cache is not None and key in cache:
            return cache[key]
        offs = {k: (None if v is None else _vector(builder, v, v.dtype, cache)) for k, v in parts.items()}
        s.QuantizationParametersStart(builder)
        if offs["min"] is not None:
            s.QuantizationParametersAddMin(builder, offs["min"])
        if offs["max"] is not None:
            s.QuantizationParametersAddMax(builder, offs["max"])
        if offs["scale"] is not None:
            s.QuantizationParametersAddScale(builder, offs["scale"])
        if offs["zeroPoint"] is not None:
            s.QuantizationParametersAddZeroPoint(builder, offs["zeroPoint"])
        s.QuantizationParametersAddQuantizedDimension(builder, q.quantizedDimension)
        off = s.QuantizationParametersEnd(builder)
        if cache is not None:
            cache[key] = off
        return off

    def Pack(self, builder: Any) -> int:  # noqa: N802 - the object API's name
        t, s, cache = self.t, self.s, self.cache
        if t.sparsity is not None or t.variantTensors:
            return t.Pack(builder)  # not in edgeopt's models; the object API writes them as they are
        shape = None if t.shape is None else _vector(builder, t.shape, np.int32, cache)
        name = None if t.name is None else builder.CreateString(t.name)
        quant = self._quant(builder)
        sig = None if t.shapeSignature is None else _vector(builder, t.shapeSignature, np.int32, cache)
        s.TensorStart(builder)
        if shape is not None:
            s.TensorAddShape(builder, shape)
        s.TensorAddType(builder, t.type)
        s.TensorAddBuffer(builder, t.buffer)
        if name is not None:
            s.TensorAddName(builder, name)
        if quant is not None:
            s.TensorAddQuantization(builder, quant)
        s.TensorAddIsVariable(builder, t.isVariable)
        if sig is not None:
            s.TensorAddShapeSignature(builder, sig)
        s.TensorAddHasRank(builder, t.hasRank)
        s.TensorAddExternalBuffer(builder, t.externalBuffer)
        return s.TensorEnd(builder)


# ---- where the bytes go ---------------------------------------------------------------------------


def anatomy(content: bytes) -> dict[str, int]:
    """Bytes of a .tflite by what they hold: weight (and bias) buffers, metadata buffers, tensor names,
    quantization parameter values, and the rest (flatbuffer structure, shapes, options, signatures)."""
    model = parse(content)
    bufs = model.buffers or []
    meta = {m.buffer for m in model.metadata or []}
    weights = sum(len(b.data) for i, b in enumerate(bufs) if _has_data(b) and i not in meta)
    metadata = sum(len(bufs[i].data) for i in meta if i < len(bufs) and _has_data(bufs[i]))
    names = quant = 0
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            names += len(t.name) + 5 if t.name is not None else 0  # length prefix and terminator
            q = t.quantization
            if q is not None:
                for v, size in ((q.scale, 4), (q.zeroPoint, 8), (q.min, 4), (q.max, 4)):
                    quant += 0 if v is None else 4 + size * len(v)
    rest = len(content) - weights - metadata - names - quant
    return {"bytes": len(content), "weights": weights, "metadata": metadata, "names": names,
            "quantization": quant, "structure": rest}  # fmt: skip


def weights_zeroed(content: bytes) -> bytes:
    """``content`` with every byte of its weight and bias buffers set to zero, everything else as it is: its
    gzipped size is the floor that compressing the weights (pruning, clustering, fewer distinct values)
    can bring this image to, whatever the weights are, since the scales, zero points and tables stay."""
    from ai_edge_litert import schema_py_generated as schema

    out = bytearray(content)
    root = schema.Model.GetRootAs(out, 0)
    meta = {root.Metadata(i).Buffer() for i in range(root.MetadataLength())}
    for i in range(root.BuffersLength()):
        if i in meta:
            continue
        buf = root.Buffers(i)
        if buf.Offset() > 1:  # stored after the flatbuffer (models over 2 GB)
            out[buf.Offset() : buf.Offset() + buf.Size()] = bytes(buf.Size())
            continue
        o = buf._tab.Offset(4)  # Buffer.data
        if o:
            start, n = buf._tab.Vector(o), buf._tab.VectorLen(o)
            out[start : start + n] = bytes(n)
    return bytes(out)
