"""The content-addressed stage cache on its own: no TensorFlow, plain files and real processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from enum import StrEnum
from pathlib import Path

import pytest

from edgeopt.pipeline.cache import ENTRY_FILE, StageCache, cache_key

BIG = 4 << 20  # big enough that a torn write would be visible


def _write(content: bytes):
    def write(folder: Path) -> dict:
        (folder / "model.bin").write_bytes(content)
        (folder / "metrics.json").write_text(json.dumps({"n": len(content)}))
        return {"output": "model.bin", "content_sha256": "x"}

    return write


def test_key_is_canonical_and_sensitive():
    class Q(StrEnum):
        int8 = "int8"

    a = cache_key({"stage": "convert", "config": {"q": Q.int8, "n": 1}, "seed": 0})
    b = cache_key({"seed": 0, "config": {"n": 1, "q": "int8"}, "stage": "convert"})
    assert a == b and len(a) == 64
    assert cache_key({"stage": "convert", "config": {"q": "int8", "n": 1}, "seed": 1}) != a
    assert cache_key({"stage": "convert", "config": {"q": "int8", "n": 2}, "seed": 0}) != a


def test_miss_put_hit(tmp_path):
    cache = StageCache(tmp_path)
    assert cache.get("ab" * 32) is None
    e = cache.put("ab" * 32, _write(b"hello"), parts={"seed": 3})
    assert e.output.read_bytes() == b"hello"
    again = cache.get("ab" * 32)
    assert again is not None and again.folder == e.folder and again.info["parts"] == {"seed": 3}
    assert [x.key for x in cache.entries()] == ["ab" * 32]


def test_failed_write_leaves_no_entry_and_no_temp(tmp_path):
    cache = StageCache(tmp_path)

    def boom(folder: Path) -> dict:
        (folder / "model.bin").write_bytes(b"half")
        raise RuntimeError("stage crashed")

    with pytest.raises(RuntimeError):
        cache.put("cd" * 32, boom)
    assert cache.get("cd" * 32) is None
    assert [p.name for p in (tmp_path / "cd").iterdir()] == []  # the private temp folder is gone


def test_missing_output_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no output"):
        StageCache(tmp_path).put("ef" * 32, lambda folder: {"output": "nothing.bin"})
    assert StageCache(tmp_path).get("ef" * 32) is None


def test_damaged_or_foreign_entries_are_misses(tmp_path):
    cache = StageCache(tmp_path)
    key = "12" * 32
    e = cache.put(key, _write(b"x"))
    info = json.loads((e.folder / ENTRY_FILE).read_text())
    (e.folder / ENTRY_FILE).write_text(json.dumps({**info, "key": "34" * 32}))
    assert cache.get(key) is None  # entry.json describes another key
    (e.folder / ENTRY_FILE).write_text("{not json")
    assert cache.get(key) is None
    (e.folder / ENTRY_FILE).write_text(json.dumps(info))
    (e.folder / "model.bin").unlink()
    assert cache.get(key) is None  # the output is gone


def test_replace_overwrites(tmp_path):
    cache = StageCache(tmp_path)
    key = "56" * 32
    cache.put(key, _write(b"old"))
    assert cache.put(key, _write(b"new"), replace=True).output.read_bytes() == b"new"
    assert cache.get(key).output.read_bytes() == b"new"
    # without replace, an existing complete entry wins over a second writer
    assert cache.put(key, _write(b"other")).output.read_bytes() == b"new"


def _worker(root: str, key: str, fill: int, barrier, out) -> None:
    barrier.wait()
    e = StageCache(root).put(key, _write(bytes([fill]) * BIG))
    out.put((os.getpid(), e.output.read_bytes()[:1], e.output.stat().st_size))


def _reader(root: str, key: str, stop, out) -> None:
    seen = torn = 0
    cache = StageCache(root)
    while not stop.is_set():
        e = cache.get(key)
        if e is not None:
            seen += 1
            data = e.output.read_bytes()
            if len(data) != BIG or len(set(data)) != 1:
                torn += 1
    out.put((seen, torn))


def test_concurrent_writers_and_a_reader_never_see_a_torn_entry(tmp_path):
    """Four processes make the same entry at once while a fifth reads it in a loop: every writer gets
    one complete entry (the first rename wins), the reader never sees a partial one."""
    ctx = mp.get_context("spawn")
    key = "78" * 32
    barrier, results, reads, stop = ctx.Barrier(4), ctx.Queue(), ctx.Queue(), ctx.Event()
    reader = ctx.Process(target=_reader, args=(str(tmp_path), key, stop, reads))
    reader.start()
    writers = [ctx.Process(target=_worker, args=(str(tmp_path), key, i + 1, barrier, results)) for i in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
        assert w.exitcode == 0
    stop.set()
    reader.join(60)
    got = [results.get(timeout=5) for _ in writers]
    assert len({first for _, first, _ in got}) == 1  # all four use the winner's bytes
    assert all(size == BIG for _, _, size in got)
    seen, torn = reads.get(timeout=5)
    assert seen > 0 and torn == 0
    assert len(StageCache(tmp_path).entries()) == 1
    leftovers = [p.name for p in (tmp_path / key[:2]).iterdir() if p.name != key]
    assert leftovers == []  # the losers removed their temp folders
