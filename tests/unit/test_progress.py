"""edgeopt.progress: no-ops without a reporter, Keras training forwarded to one, and the CLI's rich
reporter with nested tasks."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from edgeopt import progress


class RecordingReporter:
    """A reporter that keeps what it was told, to check what library code reports."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[progress.Advance]:
        self.events.append(("open", description, total))

        def advance(n: int = 1, status: str = "", *, milestone: bool = False) -> None:
            self.events.append(("advance", n, status, milestone))

        try:
            yield advance
        finally:
            self.events.append(("close", description))


@pytest.fixture
def reporter() -> Iterator[RecordingReporter]:
    rec = RecordingReporter()
    previous = progress.set_reporter(rec)
    yield rec
    progress.set_reporter(previous)


def test_without_reporter_task_and_callback_do_nothing() -> None:
    assert progress.get_reporter() is None
    with progress.task("loop", 3) as advance:
        advance()
        advance(2, "done", milestone=True)
    from edgeopt.stages._common import progress_callback

    assert progress_callback("fit", 2, 5) is None


def test_task_forwards_to_the_reporter(reporter: RecordingReporter) -> None:
    with progress.task("validate m.tflite", 2) as advance:
        advance()
        advance(1, "latency")
    assert reporter.events == [
        ("open", "validate m.tflite", 2),
        ("advance", 1, "", False),
        ("advance", 1, "latency", False),
        ("close", "validate m.tflite"),
    ]


def test_keras_callback_reports_every_batch_and_each_epoch_end(reporter: RecordingReporter) -> None:
    from edgeopt._keras import keras, set_seed
    from edgeopt.stages._common import progress_callback

    set_seed(0)
    x = np.random.default_rng(0).normal(size=(30, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    cb = progress_callback("fit", epochs=2, steps=3)
    model.fit(x, y, batch_size=10, epochs=2, validation_data=(x[:6], y[:6]), callbacks=[cb], verbose=0)

    assert reporter.events[0] == ("open", "fit", 6) and reporter.events[-1] == ("close", "fit")
    advances = [e for e in reporter.events if e[0] == "advance"]
    assert sum(e[1] for e in advances) == 6  # the bar ends full
    milestones = [e[2] for e in advances if e[3]]
    assert [m.split()[1] for m in milestones] == ["1/2", "2/2"]
    assert all("loss=" in m and "val_accuracy=" in m for m in milestones)


def test_rich_reporter_draws_nested_tasks_and_stops_when_the_last_ends() -> None:
    from rich.console import Console

    from edgeopt.cli.render import RichReporter

    out = io.StringIO()
    rich = RichReporter(Console(file=out, width=100, force_terminal=False))
    with rich.task("pipeline", 2) as outer:
        with rich.task("validate inner.tflite", 1) as inner:  # a second live display would raise LiveError
            inner(1, "ok", milestone=True)
        outer(2)
    text = out.getvalue()
    assert "validate inner.tflite: ok" in text  # not a terminal: the milestone is its own line
    assert "pipeline" in text and "2/2" in text and "1/1" in text  # both bars, printed when the display stops
    with rich.task("again", 1) as advance:  # a fresh display after the last task ended
        advance()
    assert "again" in out.getvalue()
