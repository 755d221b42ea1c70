"""Everything the CLI draws, all on stderr (stdout stays clean for ``inspect --json``): the logging
handler for library messages, the progress reporter, summary tables, the gates table and the run table.

Library code only logs and reports progress (``edgeopt.progress``); ``session`` decides how that looks
for one command: a rich handler and rich bars, or with ``--quiet`` warnings only and no bars.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.highlighter import NullHighlighter
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from edgeopt import progress

console = Console(stderr=True)  # writes to whatever sys.stderr is at the time (CliRunner swaps it)
_quiet = False

# The logger every library module's ``logging.getLogger(__name__)`` hangs under.
LIBRARY_LOGGER = "edgeopt"
_LEVEL_STYLE = {logging.WARNING: ("warning:", "yellow"), logging.ERROR: ("error:", "red")}


class _Handler(RichHandler):
    """Library messages as plain lines (no time, level column or path), warnings and errors prefixed
    like the CLI's own ``error:`` line. Markup is off: library messages are plain text and may hold
    brackets (``steps[0]``)."""

    def __init__(self) -> None:
        super().__init__(
            console=console,
            show_time=False,
            show_level=False,
            show_path=False,
            markup=False,
            highlighter=NullHighlighter(),
            rich_tracebacks=False,
        )

    def render(self, *, record: logging.LogRecord, traceback: Any, message_renderable: Any) -> Any:
        # The message alone: RichHandler's grid of time/level/path columns pads every line to the
        # console's width, which leaves trailing blanks in log files and CI output.
        return message_renderable if traceback is None else Group(message_renderable, traceback)

    def render_message(self, record: logging.LogRecord, message: str) -> Any:
        text = super().render_message(record, message)
        level = max((lv for lv in _LEVEL_STYLE if record.levelno >= lv), default=None)
        if level is None:
            return text
        word, style = _LEVEL_STYLE[level]
        return Text.assemble((word, style), " ", text)


class RichReporter:
    """An ``edgeopt.progress.Reporter`` drawing rich bars. Tasks share one live display, so a task
    opened inside another (a validation inside a pipeline step) adds a bar instead of failing; the
    display stops when the last open task ends, leaving the finished bars printed."""

    def __init__(self, out: Console) -> None:
        self._console = out
        self._progress: Progress | None = None
        self._open = 0

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[progress.Advance]:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}", style="bold", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}", markup=False),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._progress.start()
        bars = self._progress
        self._open += 1
        tid = bars.add_task(description, total=total, status="")

        def advance(n: int = 1, status: str = "", *, milestone: bool = False) -> None:
            bars.update(tid, advance=n, status=status)
            if milestone and not self._console.is_terminal:  # a log file or CI: no live bar, so one line
                self._console.print(f"{description}: {status}", markup=False, highlight=False)

        try:
            yield advance
        finally:
            self._open -= 1
            if self._open <= 0 and bars is self._progress:
                self.close()

    def close(self) -> None:
        """Stop the live display (also when a task never ended, e.g. training interrupted by an error)."""
        bars, self._progress, self._open = self._progress, None, 0
        if bars is not None:
            bars.stop()


@contextlib.contextmanager
def session(quiet: bool) -> Iterator[None]:
    """Logging and progress for one command: INFO and bars, or WARNING and no bars when ``quiet``.
    Restores what was there before, so library code called afterwards in the same process (tests)
    draws nothing."""
    global _quiet
    logger = logging.getLogger(LIBRARY_LOGGER)
    handler = _Handler()
    saved_level, saved_propagate, saved_quiet = logger.level, logger.propagate, _quiet
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    # A library that calls logging.info() gives the root logger a plain handler (basicConfig), which
    # would print every edgeopt line a second time.
    logger.propagate = False
    reporter = None if quiet else RichReporter(console)
    saved_reporter = progress.set_reporter(reporter)
    _quiet = quiet
    try:
        yield
    finally:
        if reporter is not None:
            reporter.close()
        progress.set_reporter(saved_reporter)
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        logger.propagate = saved_propagate
        _quiet = saved_quiet


def is_quiet() -> bool:
    return _quiet


def set_quiet(quiet: bool) -> None:
    """For a command whose output is its tables (``inspect``): draw them even with ``--quiet``."""
    global _quiet
    _quiet = quiet


def error(message: str) -> None:
    """The one line a failed command leaves on stderr: ``error: <message>``."""
    console.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True, highlight=False)


def usage_error(message: str, command_path: str) -> None:
    """A usage error (unknown option, bad choice) as the same one line as any other bad input."""
    message = " ".join(message.replace("Value error, ", "").split())
    error(f"{message} (see {command_path} --help)")


def interrupted() -> None:
    """The line a command stopped by Ctrl-C leaves."""
    console.print(Text("interrupted", style="red"))


def info(message: str) -> None:
    """A line of the command's own output (markup allowed), unless quiet."""
    if not _quiet:
        console.print(message, highlight=False)


def num(v: Any) -> str:
    """A table cell: floats to 4 decimals, ints with thousands separators."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(title: str, rows: list[tuple[str, Any]]) -> None:
    """A two-column summary table printed at the end of a command, unless quiet."""
    if _quiet:
        return
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value")
    for k, v in rows:
        t.add_row(k, v if isinstance(v, str) else num(v))
    console.print(t)


def metrics_table(title: str, metrics: dict[str, Any], keys: list[str], out: Path | None = None) -> None:
    """The listed metrics that are present and not None, and the output path."""
    rows = [(k, metrics[k]) for k in keys if k in metrics and metrics[k] is not None]
    if out is not None:
        rows.append(("output", str(out)))
    table(title, rows)


def validation(m: dict[str, Any]) -> None:
    """A validation's summary table and its gates: one line per gate, coloured by status."""
    s = m["structure"]
    acc = f"{m['accuracy']:.4f}" if m.get("accuracy") is not None else "n/a"
    rows: list[tuple[str, Any]] = [
        ("bytes / gzip", f"{s['bytes']:,} / {s['gzip_bytes']:,}"),
        ("params / MACs", f"{s['params']:,} / {s['macs']:,}"),
        ("accuracy", acc),
        ("samples", m["samples"]),
    ]
    if m.get("agreement") is not None:
        rows += [("keras accuracy", m["keras_accuracy"]), ("agreement", m["agreement"])]
    for th, lat in (m.get("latency") or {}).items():
        rows.append((f"host p50/p90, {th} thr", f"{lat['p50_ms']:.4g} / {lat['p90_ms']:.4g} ms"))
    table(f"validate {m['model']}", rows)
    if _quiet or not m["gates"]:
        return
    t = Table(title="gates", title_justify="left")
    for c in ("profile", "gate", "result", "detail"):
        t.add_column(c)
    colour = {"passed": "green", "failed": "red", "not evaluated": "yellow"}
    for g in m["gates"]:
        status = str(g["status"])
        t.add_row(g["profile"], g["gate"], Text(status, style=colour.get(status, "")), g.get("detail", ""))
    console.print(t)


def stage_summary(event: Any) -> None:
    """``on_stage`` callback of ``edgeopt.pipeline.run``: a small table after every step (run or
    reused), with the figures the step names (``StageEvent.summary``)."""
    if _quiet:
        return
    table(event.stage, list(event.summary))


def as_dict(record: Any) -> dict[str, Any]:
    """A manifest as a plain dict, whether typed (pydantic) or already a dict."""
    return record.model_dump(mode="json") if hasattr(record, "model_dump") else record


def run(manifest: dict[str, Any], out_dir: Path) -> None:
    """The artifacts of a pipeline run: sizes, gzip ratio vs the baseline, accuracy."""
    if _quiet:
        return
    t = Table(title=f"{manifest['pipeline']}: artifacts in {out_dir}", title_justify="left")
    for col in ("artifact", "quantization", "bytes", "gzip bytes", "x smaller (gzip)", "accuracy"):
        t.add_column(col, justify="left" if col in ("artifact", "quantization") else "right")
    base = manifest.get("baseline")
    rows = ([{**base, "gzip_ratio_vs_baseline": 1.0}] if base else []) + manifest["artifacts"]
    for a in rows:
        acc = f"{a['accuracy']:.4f}" if a.get("accuracy") is not None else "-"
        t.add_row(
            Path(a["path"]).name,
            a["quantization"],
            f"{a['bytes']:,}",
            f"{a['gzip_bytes']:,}",
            f"{a.get('gzip_ratio_vs_baseline') or 0:.1f}",
            acc,
        )
    console.print(t)
    info(f"manifest: {out_dir / 'manifest.json'} ({manifest['seconds']:.0f} s)")


def bundle(result: Any) -> None:
    """What ``export`` wrote: the shipped models and the number of files."""
    m = as_dict(result.manifest)
    if m["reused"]:
        info(f"reused from the cache: {', '.join(m['reused'])}")
    rows: list[tuple[str, Any]] = [
        (mm["path"], f"{mm['bytes']:,} bytes, sha256 {mm['sha256'][:16]}...") for mm in m["models"]
    ]
    table(f"bundle {result.bundle} ({m['status']})", [*rows, ("files", len(m["files"]) + 1)])


def calibration(result: dict[str, Any]) -> None:
    """Host-to-device latency factors per profile and precision."""
    rows: list[tuple[str, Any]] = []
    for name, e in result["profiles"].items():
        for prec in ("float32", "int8"):
            if prec in e:
                f = e[prec]
                rows.append(
                    (
                        f"{name} {prec}",
                        f"x{f['factor']:.3g} ({f['device_ms']} ms device / {f['host_p50_ms']:.4g} ms host)",
                    )
                )
    rows.append(("stored in", result["path"]))
    table("calibration", rows)


def tflite_info(path: Path, info_: dict[str, Any], entries: dict[str, int], manifest: dict[str, Any] | None) -> None:
    """``inspect``'s tables: the model, then its embedded edgeopt manifest (shown even when quiet)."""
    table(
        str(path),
        [
            ("bytes", f"{info_['bytes']:,}"),
            ("gzip bytes", f"{info_['gzip_bytes']:,}"),
            ("sha256", info_["sha256"]),
            ("params", f"{info_['params']:,}"),
            ("MACs", f"{info_['macs']:,}"),
            ("ops", ", ".join(f"{k} x{v}" for k, v in info_["op_counts"].items())),
            ("custom ops", ", ".join(info_["custom_ops"]) or "none"),
            ("metadata", ", ".join(f"{k} ({v} bytes)" for k, v in entries.items()) or "none"),
        ]
        + [
            (f"{kind} {t['name']}", f"{t['dtype']} {t['shape']} scale {t['scale']:.6g} zero point {t['zero_point']}")
            for kind, ts in (("input", info_["inputs"]), ("output", info_["outputs"]))
            for t in ts
        ],
    )
    if manifest is None:
        console.print("no edgeopt manifest embedded")
        return
    table(
        "embedded edgeopt manifest",
        [
            ("schema", manifest.get("schema")),
            ("pipeline", manifest.get("pipeline")),
            ("seed", manifest.get("seed")),
            ("config sha256", manifest.get("config_sha256")),
            ("model sha256 before embedding", manifest.get("model", {}).get("sha256_before_embedding")),
            ("accuracy", manifest.get("model", {}).get("accuracy")),
            ("versions", ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())),
            ("stages", ", ".join(s["name"] for s in manifest.get("stages", []))),
        ],
    )


def text_file(path: Path) -> None:
    """A file's text as it is (``bench``'s results.md), unless quiet."""
    if not _quiet:
        console.print(path.read_text(), markup=False, highlight=False)


def firmware(record: Any) -> None:
    """The firmware check's summary: what ran, bit-exactness, instructions, flash, RAM and estimates."""
    r = as_dict(record)
    rows: list[tuple[str, Any]] = [
        ("model", r["model"]),
        ("core / board / kernels", f"{r['cpu']} / {r['board']} / {r['kernels']}"),
    ]
    if r["inputs"]:
        rows += [
            ("inputs", f"{r['inputs']}: {r['inputs_source']}"),
            ("bit-exact", "yes" if r["bit_exact"] else f"no: {r.get('first_difference') or 'see the result'}"),
        ]
    else:
        rows.append(("inputs", "not run (nothing was built)"))
    ins = r.get("instructions")
    if ins:
        rows.append(("instructions / Invoke()", f"{ins['median']:,} (min {ins['min']:,}, max {ins['max']:,})"))
    fp = r.get("footprint")
    if fp:
        parts = ", ".join(f"{k} {v:,}" for k, v in fp["flash_parts"].items())
        rows += [
            ("flash", f"{fp['flash_bytes']:,} B ({parts})"),
            (
                "RAM",
                f"{fp['ram_bytes']:,} B (arena {fp['arena_bytes']:,}, used {fp['arena_used_bytes']:,}; stack "
                f"{fp['stack_bytes']:,}; bss {fp['bss_bytes']:,}; data {fp['data_bytes']:,}; "
                f"heap {fp['heap_bytes']:,})",
            ),
        ]
    for lat in r.get("latency", []):
        rows.append(
            (
                f"latency on {lat['profile']}",
                f"estimate: {lat['ms']:.3g} ms from instructions, {lat['macs_ms']:.3g} ms from MACs ({lat['method']})",
            )
        )
    for en in r.get("energy", []):
        rows.append((f"energy on {en['profile']}", f"estimate: {en['microjoules']:,.0f} uJ ({en['method']})"))
    if r["inputs"]:
        compiled = f"{r['compiled_sources']} sources compiled" if r["compiled_sources"] else "library from the cache"
        rows.append(("build / run", f"{r['build_seconds']:.1f} s ({compiled}) / {r['run_seconds']:.2f} s in QEMU"))
    rows.append(("result", "passed" if r["passed"] else "FAILED: " + "; ".join(r["failures"])))
    table("firmware check", rows)
