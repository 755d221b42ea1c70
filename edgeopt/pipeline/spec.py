"""The pipeline file: its schema, built from the step registry, and its loader.

``steps:`` entries are validated by the config class of the stage they name; the union of those
classes is made from ``registry.STEPS``, so adding a stage there is all a pipeline file needs.
"""

from __future__ import annotations

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


class TeacherConfig(_Config):
    path: Path = Field(description="the teacher model (.keras, .h5 or a SavedModel folder)")
    train: TrainConfig | None = Field(None, description="how to train the teacher when `path` does not exist")
    unsafe: bool = Field(False, description="allow Lambda and other code-carrying layers (runs code from the file)")


def _step_model(name: str, config_cls: type[BaseModel]) -> type[BaseModel]:
    """``<Stage>Step``: the stage's config plus its ``stage: <name>`` tag."""
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{name.capitalize()}Step",
        __base__=config_cls,
        __module__=__name__,
        stage=(Literal[name], Field(description="the stage this step runs")),
    )


STEP_MODELS: dict[str, type[BaseModel]] = {n: _step_model(n, s.config_cls) for n, s in registry.STEPS.items()}
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
        if not any(s.stage == "convert" for s in self.steps):
            raise ValueError("steps: a pipeline needs at least one convert step")
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
        raise BadInput(format_validation_error(e, str(p))) from None
