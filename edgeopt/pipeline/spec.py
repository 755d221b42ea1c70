"""The pipeline file: its schema, built from the step registry, and its loader.

``steps:`` entries are validated by the config class of the stage they name; the union of those
classes is made from ``registry.STEPS``, so adding a stage there is all a pipeline file needs.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from edgeopt.config import (
    ConvertConfig,
    DataConfig,
    DeviceProfile,
    Quantization,
    TrainConfig,
    _Config,
    format_validation_error,
)
from edgeopt.errors import BadInput
from edgeopt.pipeline import registry
from edgeopt.search.config import SearchConfig


class TeacherConfig(_Config):
    path: Path = Field(description="the teacher model (.keras, .h5 or a SavedModel folder)")
    train: TrainConfig | None = Field(None, description="how to train the teacher when `path` does not exist")
    unsafe: bool = Field(False, description="allow Lambda and other code-carrying layers (runs code from the file)")


class OnRegression(StrEnum):
    """What the stage guard does when a training stage lowers validation accuracy beyond the tolerance."""

    keep_best = "keep_best"  # replace the stage's output by its input and go on
    fail = "fail"  # stop the run (exit 1)
    continue_ = "continue"  # record it and go on with the worse model


def _step_model(name: str, step_cls: Any) -> type[BaseModel]:
    """``<Stage>Step``: the stage's config plus its ``stage: <name>`` tag; steps that train a model
    also take the stage guard's per-step ``on_regression`` and ``regression_tolerance``."""
    fields: dict[str, Any] = {"stage": (Literal[name], Field(description="the stage this step runs"))}
    if step_cls.makes_model:
        fields["on_regression"] = (
            OnRegression | None,
            Field(None, description="stage guard for this step (default: the pipeline's on_regression)"),
        )
        fields["regression_tolerance"] = (
            float | None,
            Field(None, ge=0, description="points of validation accuracy this step may lose (default: the pipeline's)"),
        )
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{name.capitalize()}Step", __base__=step_cls.config_cls, __module__=__name__, **fields
    )


STEP_MODELS: dict[str, type[BaseModel]] = {n: _step_model(n, s) for n, s in registry.STEPS.items()}
Step = Annotated[Union[tuple(STEP_MODELS.values())], Field(discriminator="stage")]  # noqa: UP007


def step_config(stage: str, **values: Any) -> BaseModel:
    """A ``steps:`` entry built in code, e.g. ``step_config("prune", final_sparsity=0.8)``."""
    return STEP_MODELS[stage].model_validate({"stage": stage, **values})


class PipelineConfig(_Config):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    data: DataConfig
    teacher: TeacherConfig
    baseline: ConvertConfig | None = Field(
        default_factory=lambda: ConvertConfig(quantization=Quantization.float32),
        description="the teacher converted as the reference artifact",
    )
    steps: list[Step] = Field(min_length=1)  # type: ignore[valid-type]
    profiles: list[DeviceProfile] = Field(default_factory=list, description="extra device profiles")
    search: SearchConfig | None = Field(None, description="`edgeopt search`: the space, objectives and constraints")
    on_regression: OnRegression = Field(
        OnRegression.keep_best,
        description="stage guard: what to do when a training stage lowers validation accuracy by more than "
        "regression_tolerance points (distill is exempt unless its step sets on_regression: a smaller "
        "student is expected to lose some accuracy; the release gates judge it against the teacher)",
    )
    regression_tolerance: float = Field(
        0.5, ge=0, description="points of validation top-1 a training stage may lose before the guard acts"
    )

    @model_validator(mode="before")
    @classmethod
    def _data(cls, raw: Any) -> Any:
        """``data: NAME`` is short for ``data: {name: NAME}``; the split seed is the pipeline's unless given."""
        if isinstance(raw, dict):
            data = raw.get("data")
            data = {"name": data} if isinstance(data, str) else data
            if isinstance(data, dict):
                raw = {**raw, "data": {"seed": raw.get("seed", 0), **data}}
        return raw

    @model_validator(mode="after")
    def _shape(self) -> PipelineConfig:
        makers = registry.having("makes_artifact")
        if not any(s.stage in makers for s in self.steps):
            raise ValueError(f"steps: a pipeline needs at least one {' or '.join(makers)} step")
        return self


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML file; errors name the file, the key and what is allowed."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such pipeline file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BadInput(f"{p}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise BadInput(f"{p}: expected a mapping with name, data, teacher and steps")
    raw.setdefault("name", p.stem)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise BadInput(format_validation_error(e, str(p), tags=registry.names())) from None
