"""Errors that carry the CLI exit code they map to (0 ok, 1 gate, 2 bad input, 3 runtime)."""

from __future__ import annotations


class EdgeoptError(Exception):
    """Base class. ``str(err)`` is the one line a user sees."""

    exit_code = 2


class BadInput(EdgeoptError):
    """A missing or unreadable file, data that does not fit, a value out of range."""

    exit_code = 2


class GateFailed(EdgeoptError):
    """A budget or quality gate was not met."""

    exit_code = 1


class RuntimeCrash(EdgeoptError):
    """An interpreter, converter or compiler crashed."""

    exit_code = 3
