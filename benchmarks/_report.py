"""What the benchmark harnesses share: writing a results.md whose hand-written notes survive a rerun."""

from __future__ import annotations

from pathlib import Path

from edgeopt.artifacts import write_bytes

NOTES_MARK = "<!-- Everything below this line is kept when the benchmark rewrites this file. -->"


def write_results_md(path: Path, generated: str) -> None:
    """``path`` = the generated text, then ``NOTES_MARK`` and whatever followed it in the file already there
    (the experiment notes people write by hand), kept as it was."""
    kept = ""
    if path.is_file() and NOTES_MARK in (old := path.read_text()):
        kept = old.split(NOTES_MARK, 1)[1]
    write_bytes(path, (generated.rstrip("\n") + "\n\n" + NOTES_MARK + (kept or "\n")).encode())
