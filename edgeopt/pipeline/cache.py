"""A content-addressed stage cache that several processes may read and write at once.

An entry is a folder named by the sha256 of everything a stage's output depends on (its config, the
content hashes of its inputs, the seed, the data, the versions: the *key parts*). A stage writes its
outputs into a private temporary folder inside the cache root; ``entry.json`` is written last and the
folder is renamed into place in one ``os.rename``. A reader therefore sees a complete entry or none,
and two workers that make the same entry at once both succeed: the first rename wins, the second
finds the entry there and throws its own copy away (same key, so the same content).

No TensorFlow here: the cache is plain files, tested on its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.artifacts import sha256_bytes

log = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
ENTRY_SCHEMA = "edgeopt.cache-entry/1"


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the key parts as canonical JSON (sorted keys, no spaces; enums and paths as strings)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_plain)
    return sha256_bytes(blob.encode())


def _plain(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if hasattr(o, "value"):
        return o.value
    return str(o)


@dataclass(frozen=True)
class CacheEntry:
    """A complete entry: its folder, and what ``entry.json`` says about the stage that made it."""

    key: str
    folder: Path
    info: dict[str, Any]

    @property
    def output(self) -> Path:
        """The stage's main output (a model file, a SavedModel folder, a .tflite or metrics.json)."""
        return self.folder / self.info["output"]

    @property
    def seconds(self) -> float:
        return float(self.info.get("seconds", 0.0))


class StageCache:
    """``get(key)`` a complete entry or None; ``put(key, write)`` makes one atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> CacheEntry | None:
        folder = self.path(key)
        try:
            info = json.loads((folder / ENTRY_FILE).read_text())
        except (OSError, ValueError):
            return None
        if info.get("key") != key or not (folder / info.get("output", "\0")).exists():
            return None  # a foreign or damaged folder is never a hit
        return CacheEntry(key, folder, info)

    def put(
        self,
        key: str,
        write: Callable[[Path], dict[str, Any]],
        *,
        parts: dict[str, Any] | None = None,
        replace: bool = False,
    ) -> CacheEntry:
        """Make the entry for ``key``: ``write(folder)`` writes the outputs into an empty private folder
        and returns at least ``{"output": <name of the main output in folder>}``; anything else it
        returns is kept in ``entry.json``. ``replace`` overwrites an existing entry (``--force``).

        If another process completed the same entry meanwhile, that entry is kept and returned."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=final.parent))
        try:
            info = dict(write(tmp))
            if "output" not in info or not (tmp / info["output"]).exists():
                raise ValueError(f"cache entry {key[:12]}: the stage wrote no output named {info.get('output')!r}")
            info = {"schema": ENTRY_SCHEMA, "key": key, "created": time.time(), "pid": os.getpid(), **info}
            if parts is not None:
                info["parts"] = parts
            _write_synced(tmp / ENTRY_FILE, json.dumps(info, indent=2, default=_plain).encode())
            _fsync_tree(tmp)
            if replace and final.exists():
                _discard(final)
            try:
                os.rename(tmp, final)
            except OSError:
                # Another writer won the race (the target exists and is not empty): same key, same content.
                existing = self.get(key)
                if existing is None:
                    raise
                log.debug("cache entry %s was completed by another process; keeping that one", key[:12])
                shutil.rmtree(tmp, ignore_errors=True)
                return existing
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        entry = self.get(key)
        assert entry is not None
        return entry

    def entries(self) -> list[CacheEntry]:
        out = []
        for folder in sorted(self.root.glob("??/*")):
            if not folder.name.startswith(".") and (e := self.get(folder.name)) is not None:
                out.append(e)
        return out


def _discard(folder: Path) -> None:
    """Move a folder out of the way in one rename, then delete it: readers never see it half deleted."""
    trash = folder.with_name(f".old-{folder.name[:12]}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder below ``folder`` so a rename never publishes unwritten data."""
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    for d in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
