"""Files: atomic writes, sha256 and gzip sizes, loading and saving Keras models with clear errors."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeopt.errors import BadInput


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gzip_size(data: bytes) -> int:
    """Bytes after gzip at level 9 with a fixed mtime (what a download or an APK would carry)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it into place.

    On error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "value"):  # str enums
        return o.value
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def metrics_path(out: str | Path) -> Path:
    """Where a stage's metrics go: ``OUT.json`` next to ``OUT``."""
    out = Path(out)
    return out.with_name(out.name + ".json") if out.suffix in ("", ".") else out.with_suffix(out.suffix + ".json")


# ---- Keras models -------------------------------------------------------------------------------


def load_model(path: str | Path) -> Any:
    """Load a tf-keras model (``.keras`` or ``.h5``) without compiling; one clear error otherwise."""
    from edgeopt._keras import keras

    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file")
    if p.is_dir():
        raise BadInput(f"{p}: is a folder; expected a .keras or .h5 model file")
    if p.suffix not in (".keras", ".h5", ".hdf5"):
        raise BadInput(f"{p}: expected a .keras or .h5 model file")
    if p.suffix == ".keras" and not zipfile.is_zipfile(p):
        raise BadInput(f"{p}: not a Keras model (a .keras file is a zip archive; this one is not)")
    try:
        model = keras.models.load_model(p, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"{p}: cannot load as a tf-keras model: {first[:300]}") from None
    if not isinstance(model, keras.Model):
        raise BadInput(f"{p}: does not hold a Keras model")
    return model


def save_model(model: Any, path: str | Path) -> Path:
    """Save a tf-keras model atomically (the format follows the suffix: .keras or .h5)."""
    p = Path(path)
    if p.suffix not in (".keras", ".h5"):
        raise BadInput(f"{p}: output model must end in .keras or .h5")
    with atomic_path(p) as tmp:
        tmp.unlink()  # Keras refuses some existing targets
        model.save(tmp)
    return p
