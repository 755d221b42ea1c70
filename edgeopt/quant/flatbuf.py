"""Writing a parsed .tflite (the schema's object API, ``ModelT``) back to bytes."""

from __future__ import annotations

from typing import Any

from edgeopt.metadata import _AlignedBuilder


def pack(model: Any, size_hint: int = 1 << 16) -> bytes:
    """``model`` serialised with the TFL3 identifier, byte vectors (tensor data) 16-byte aligned as the
    converter writes them."""
    builder = _AlignedBuilder(size_hint + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
