"""The step registry: the one place where stage names live.

A new stage is its function in ``edgeopt/stages/``, a ``Step`` adapter in ``steps.py`` and one line
here. The pipeline file's ``steps:`` schema, the runner and ``edgeopt search`` all read this table.
"""

from __future__ import annotations

from typing import Any

from edgeopt.pipeline.steps import (
    BaselineStep,
    ClusterStep,
    ConvertStep,
    DistillStep,
    PruneStep,
    QATStep,
    Step,
    ValidateStep,
)

# Stages a pipeline file may list under `steps:`, in the order the documentation gives them.
STEPS: dict[str, type[Step]] = {
    s.name: s for s in (DistillStep, PruneStep, ClusterStep, QATStep, ConvertStep, ValidateStep)
}

# The reference conversion of the teacher (the pipeline file's `baseline:` key), run before the steps.
BASELINE: type[Step] = BaselineStep


def names() -> list[str]:
    return list(STEPS)


def having(role: str) -> tuple[str, ...]:
    """The stages whose step class has ``role`` (``makes_model``, ``fine_tunes``, ``makes_artifact``,
    ``validates``), in registry order."""
    return tuple(n for n, s in STEPS.items() if getattr(s, role))


def step_class(name: str) -> type[Step]:
    try:
        return STEPS[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; allowed: {', '.join(STEPS)}") from None


def config_class(name: str) -> type[Any]:
    """The config class of a stage (its fields are the step keys of a pipeline file)."""
    return step_class(name).config_cls


def make_step(config: Any, index: int) -> Step:
    """The step for one ``steps:`` entry (a config carrying its ``stage`` name)."""
    return step_class(config.stage)(config, index)
