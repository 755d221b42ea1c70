"""A Ctrl-C is never lost: a KeyboardInterrupt that Python drops inside a finalizer is raised again at the
next check, and a command whose work ended after such a Ctrl-C still exits 130."""

from __future__ import annotations

import gc
import os
import signal

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


def test_python_drops_a_ctrl_c_inside_a_finalizer():
    """The premise: without the check, the interrupt is gone."""
    _swallowed_ctrl_c()  # no exception reaches here


def test_check_raises_a_swallowed_ctrl_c_again():
    with interrupt.catching():
        interrupt.check()  # nothing pending
        _swallowed_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()


def test_catching_restores_the_previous_handler_and_forgets():
    before = signal.getsignal(signal.SIGINT)
    with interrupt.catching():
        assert signal.getsignal(signal.SIGINT) is not before
        _swallowed_ctrl_c()
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
        _swallowed_ctrl_c()
        ran.append(True)

    with pytest.raises(typer.Exit) as e:
        work(quiet=True)
    assert ran and e.value.exit_code == INTERRUPTED


def test_a_command_without_ctrl_c_returns_its_value():
    @command
    def work(quiet: bool = True) -> int:
        return 7

    assert work(quiet=True) == 7
