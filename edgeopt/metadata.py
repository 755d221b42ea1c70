"""Metadata entries inside a .tflite: the flatbuffer's ``Model.metadata`` list, each a name and a buffer.

edgeopt embeds its manifest as the entry ``edgeopt_manifest`` (UTF-8 JSON) in the Android asset and
only a reference to the bundle manifest, ``edgeopt_manifest_ref``, in the MCU image. Interpreters
ignore metadata entries, so the model loads and computes exactly as before; only the bytes change.
"""

from __future__ import annotations

import json
from typing import Any

import flatbuffers
import numpy as np

from edgeopt.tflite import parse
from edgeopt.tflite_diet import serialize

MANIFEST_ENTRY = "edgeopt_manifest"
MANIFEST_REF_ENTRY = "edgeopt_manifest_ref"


class _AlignedBuilder(flatbuffers.Builder):
    """Byte vectors (tensor data) start on 16-byte boundaries, as the TFLite converter writes them:
    re-packing with the default 1-byte alignment could leave int32 biases or SIMD loads misaligned."""

    def StartVector(self, elemSize: int, numElems: int, alignment: int) -> int:  # noqa: N802, N803 - flatbuffers API
        if elemSize == 1:
            alignment = max(alignment, 16)
        return super().StartVector(elemSize, numElems, alignment)


def _name(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_all(content: bytes) -> dict[str, bytes]:
    """Every metadata entry of a .tflite: name -> the bytes of its buffer."""
    model = parse(content)
    out = {}
    for m in model.metadata or []:
        buf = model.buffers[m.buffer] if 0 <= m.buffer < len(model.buffers or []) else None
        data = b""
        if buf is not None and buf.data is not None:
            data = bytes(np.asarray(buf.data, dtype=np.uint8))
        elif buf is not None and getattr(buf, "offset", 0):  # models over 2 GB keep buffers after the flatbuffer
            data = content[buf.offset : buf.offset + buf.size]
        out[_name(m.name)] = data
    return out


def read_manifest(content: bytes) -> dict[str, Any] | None:
    """The embedded edgeopt manifest, or None when the model has none."""
    raw = read_all(content).get(MANIFEST_ENTRY)
    return json.loads(raw.decode()) if raw is not None else None


def read_manifest_ref(content: bytes) -> dict[str, Any] | None:
    """The embedded reference to a bundle manifest (MCU images), or None when the model has none."""
    raw = read_all(content).get(MANIFEST_REF_ENTRY)
    return json.loads(raw.decode()) if raw is not None else None


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, so the same manifest always gives the same bytes."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def embed(content: bytes, name: str, payload: bytes, *, shared: bool = False) -> bytes:
    """A copy of the .tflite with metadata entry ``name`` set to ``payload`` (replaced if present).
    ``shared``: equal vectors written once, as the flatbuffer diet writes them (``content`` came out of
    the diet; re-packing it the plain way would store its shared vectors once per use again).

    Deterministic: the same model and payload give the same bytes."""
    from ai_edge_litert import schema_py_generated as schema

    model = parse(content)
    if any(getattr(b, "offset", 0) for b in model.buffers or []):
        raise ValueError("models with buffers stored outside the flatbuffer (over 2 GB) are not supported")
    model.metadata = [m for m in model.metadata or [] if _name(m.name) != name]
    buf = schema.BufferT()
    buf.data = np.frombuffer(payload, dtype=np.uint8).copy()
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    if shared:
        return serialize(model, shared=True)
    builder = _AlignedBuilder(len(content) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
