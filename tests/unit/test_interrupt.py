"""A Ctrl-C is never lost: a KeyboardInterrupt that Python drops inside a finalizer is raised again at the
next check, and a command whose work ended after such a Ctrl-C still exits 130."""

from __future__ import annotations

import gc
import os
import signal
import sys

import pytest
import typer

from edgeopt import interrupt
from edgeopt.cli.errors import INTERRUPTED, command


class _CtrlCInFinalizer:
    """Delivers SIGINT while Python runs its ``__del__``: the KeyboardInterrupt is raised there and dropped
    ("Exception ignored in ..."), as when TensorFlow's finalizers run during training."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(10))  # the handler runs here, inside the finalizer


def _swallowed_ctrl_c() -> None:
    obj = _CtrlCInFinalizer()
    del obj
    gc.collect()


@pytest.fixture(autouse=True)
def _sigint_as_python_sets_it():
    """These tests need Python's own SIGINT handler, also when pytest runs where SIGINT is ignored (a
    background job of a non-interactive shell)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _remember_a_swallowed_ctrl_c() -> None:
    try:
        _swallowed_ctrl_c()
    except KeyboardInterrupt:  # pragma: no cover - then Python did not drop it, and nothing here is tested
        pytest.fail("the Ctrl-C was not swallowed by the finalizer: the premise of these tests does not hold")


def test_check_raises_a_swallowed_ctrl_c_again():
    with interrupt.catching():
        interrupt.check()  # nothing pending
        _remember_a_swallowed_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        interrupt.forget()  # handled on purpose: not raised again
        interrupt.check()


def test_a_swallowed_ctrl_c_prints_no_traceback(monkeypatch):
    """The Ctrl-C dropped in a finalizer is remembered, not printed ("Exception ignored in ... Traceback" from
    inside TensorFlow once made a CI run's Ctrl-C test fail); other unraisable errors still reach the hook
    (Python's prints them), and the hook is the previous one again after the block."""
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: seen.append(args.exc_value))

    class _Broken:
        def __del__(self) -> None:
            raise ValueError("a finalizer's own error")

    with interrupt.catching():
        _remember_a_swallowed_ctrl_c()
        assert seen == []
        obj = _Broken()
        del obj
        gc.collect()
        assert [type(e) for e in seen] == [ValueError]
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
    _swallowed_ctrl_c()  # outside catching(): the previous hook sees it
    assert [type(e) for e in seen] == [ValueError, KeyboardInterrupt]


def test_a_block_inside_another_keeps_the_outer_ctrl_c():
    with interrupt.catching():
        _remember_a_swallowed_ctrl_c()
        with interrupt.catching():
            pass
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()


def test_catching_restores_the_previous_handler_and_forgets():
    before = signal.getsignal(signal.SIGINT)
    with interrupt.catching():
        assert signal.getsignal(signal.SIGINT) is not before
        _remember_a_swallowed_ctrl_c()
    assert signal.getsignal(signal.SIGINT) is before
    interrupt.check()  # the next command starts clean


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupt.catching():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_command_that_finished_after_a_swallowed_ctrl_c_exits_130():
    ran = []

    @command
    def work(quiet: bool = True) -> None:
        _remember_a_swallowed_ctrl_c()
        ran.append(True)

    with pytest.raises(typer.Exit) as e:
        work(quiet=True)
    assert ran and e.value.exit_code == INTERRUPTED


def test_a_command_without_ctrl_c_returns_its_value():
    @command
    def work(quiet: bool = True) -> int:
        return 7

    assert work(quiet=True) == 7


def test_a_run_stops_at_the_next_stage_and_an_export_writes_no_bundle(tmp_path, tiny_model_path):
    """After a swallowed Ctrl-C, the pipeline runs no further stage and the export puts no bundle in place."""
    from edgeopt.export import export
    from edgeopt.pipeline.spec import PipelineConfig

    cfg = PipelineConfig.model_validate(
        {
            "name": "tiny",
            "data": {"name": "digits", "max_train": 300},
            "teacher": {"path": str(tiny_model_path)},
            "steps": [{"stage": "convert", "quantization": "float32"}],
        }
    )
    with interrupt.catching():
        _remember_a_swallowed_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            export(cfg, tmp_path / "dist", build_dir=tmp_path / "build")
    assert not (tmp_path / "dist").exists()
    assert not list((tmp_path / "build").glob("[0-9][0-9]_*"))  # not even the first stage ran
