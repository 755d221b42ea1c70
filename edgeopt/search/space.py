"""The ``search:`` block of a pipeline file: the space, the objectives, the constraints, and how a trial's
parameters turn the pipeline into the pipeline that trial runs.

No TensorFlow and no Optuna here: ``PipelineConfig`` imports this module to validate the block.

A parameter is named ``STAGE.FIELD`` (the last step of that stage, e.g. ``convert.quantization``) or
``STAGE[N].FIELD`` (the N-th step of that stage, from 0), and takes a list of choices or a range
(``{low, high, step, log}``). ``STAGE`` or ``STAGE[N]`` alone with ``[true, false]`` keeps or drops that
step; ``null`` among a field's choices drops the step too (``cluster.clusters: [8, 16, null]``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeopt.errors import BadInput
from edgeopt.pipeline import registry

# Stages that a trial may drop: the model-making ones. A pipeline always needs its convert step, and
# validation is how a trial is judged.
OPTIONAL_STAGES = tuple(n for n, s in registry.STEPS.items() if s.makes_model)
# Stages that fine-tune their input (Step.fine_tunes): each still to come may win back recover_points.
FINE_TUNING = tuple(n for n, s in registry.STEPS.items() if s.fine_tunes)


class Range(BaseModel):
    """A numeric range: a float unless ``low`` and ``high`` are both integers (and ``step`` too, if given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float | int
    high: float | int
    step: float | int | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _nonempty(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"empty range: low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("give step or log, not both")
        return self

    @property
    def is_int(self) -> bool:
        vals = [self.low, self.high] + ([self.step] if self.step is not None else [])
        return all(isinstance(v, int) and not isinstance(v, bool) for v in vals)


class Metric(StrEnum):
    """What a trial measures on the validation split (accuracy) or on its .tflite."""

    accuracy = "accuracy"  # top-1 of the .tflite on the validation split (LiteRT): maximized
    gzip_bytes = "gzip_bytes"  # the .tflite gzipped (what a download or an OTA update costs)
    flash_bytes = "flash_bytes"  # the .tflite's raw bytes (what sits in flash)
    latency_ms = "latency_ms"  # estimated p90 latency on a device profile (its latency gate's figure)
    arena_bytes = "arena_bytes"  # TFLite Micro tensor arena (needs a tflm profile)


PROFILE_METRICS = (Metric.latency_ms, Metric.arena_bytes)


@dataclass(frozen=True)
class Objective:
    """One objective: ``accuracy``, ``gzip_bytes``, ``flash_bytes``, ``latency_ms@PROFILE``, ``arena_bytes@PROFILE``."""

    metric: Metric
    profile: str | None = None

    @classmethod
    def parse(cls, text: str) -> Objective:
        name, _, profile = str(text).partition("@")
        try:
            metric = Metric(name)
        except ValueError:
            allowed = ", ".join(m.value + ("@PROFILE" if m in PROFILE_METRICS else "") for m in Metric)
            raise ValueError(f"unknown objective {text!r}; allowed: {allowed}") from None
        if metric in PROFILE_METRICS and not profile:
            raise ValueError(f"objective {name} needs a device profile: {name}@PROFILE")
        if metric not in PROFILE_METRICS and profile:
            raise ValueError(f"objective {name} does not depend on a profile (got {text!r})")
        return cls(metric, profile or None)

    @property
    def key(self) -> str:
        return f"{self.metric.value}@{self.profile}" if self.profile else self.metric.value

    @property
    def maximize(self) -> bool:
        return self.metric is Metric.accuracy


class SearchConfig(BaseModel):
    """The ``search:`` block of a pipeline file (every key optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    space: dict[str, Any] = Field(
        default_factory=dict,
        description="parameters to search, each a list of choices or a range {low, high, step, log}; "
        "empty: a default space from the pipeline's steps",
    )
    objectives: list[str] = Field(
        default_factory=lambda: ["accuracy", "gzip_bytes"],
        description="accuracy (maximized) and any of gzip_bytes, flash_bytes, latency_ms@PROFILE, arena_bytes@PROFILE",
    )
    profiles: list[str] | None = Field(
        None, description="device profiles whose every gate a trial must pass; default: the validate steps' profiles"
    )
    max_accuracy_drop: float | None = Field(
        1.0, ge=0, description="constraint: points of validation top-1 below the teacher's (None: no limit)"
    )
    min_accuracy: float | None = Field(None, ge=0, le=1, description="constraint: validation top-1 at least this")
    recover_points: float = Field(
        0.5,
        ge=0,
        description="early stop: points of accuracy each remaining fine-tuning stage (prune, cluster, qat) is "
        "assumed able to win back",
    )
    select: str = Field("flash_bytes", description="best.yaml: the feasible trial with the least of this metric")
    trials: int = Field(20, ge=1, description="default for --trials")
    heartbeat_interval: int = Field(10, ge=1, description="seconds between a running trial's heartbeats")
    grace_period: int | None = Field(
        None, ge=1, description="seconds without a heartbeat before a trial is failed and retried (default 3x)"
    )
    max_retry: int = Field(2, ge=0, description="times a trial whose worker died is run again")

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, spec in v.items():
            if isinstance(spec, list | Range):
                out[key] = spec
            elif isinstance(spec, dict):
                try:
                    out[key] = Range.model_validate(spec)
                except ValidationError as e:
                    err = e.errors()[0]
                    where = ".".join(str(p) for p in err["loc"])
                    msg = err["msg"].removeprefix("Value error, ")
                    raise ValueError(f"{key}: {where + ': ' if where else ''}{msg}") from None
            else:
                raise ValueError(f"{key}: expected a list of choices or a range {{low, high, ...}} (got {spec!r})")
        return out

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        parsed = [Objective.parse(o) for o in v]
        if not parsed or parsed[0].metric is not Metric.accuracy:
            raise ValueError("the first objective must be accuracy, then one or more size or speed objectives")
        if len(parsed) < 2:
            raise ValueError("give at least one of gzip_bytes, flash_bytes, latency_ms@PROFILE, arena_bytes@PROFILE")
        keys = [p.key for p in parsed]
        if len(set(keys)) != len(keys):
            raise ValueError(f"an objective is listed twice: {', '.join(keys)}")
        return v

    @field_validator("select")
    @classmethod
    def _select(cls, v: str) -> str:
        Objective.parse(v)
        return v

    @property
    def parsed_objectives(self) -> list[Objective]:
        return [Objective.parse(o) for o in self.objectives]

    @property
    def grace(self) -> int:
        return self.grace_period or 3 * self.heartbeat_interval


# ---- parameters ---------------------------------------------------------------------------------

_NAME = re.compile(r"^(?P<stage>[a-z_]+)(?:\[(?P<n>\d+)\])?(?:\.(?P<field>[a-z_]+))?$")


@dataclass(frozen=True)
class Param:
    """One searched parameter, resolved against the pipeline: which step (index into ``steps``) it sets."""

    name: str  # as written, e.g. "prune.final_sparsity"; also the Optuna parameter name
    stage: str
    step: int  # index into the pipeline's steps
    field: str | None  # None: the step is kept (True) or dropped (False)
    choices: tuple[Any, ...] | None = None
    range: Range | None = None


def default_space(pipeline: Any) -> dict[str, list[Any] | Range]:
    """A space from the steps present: the student's width, sparsity, its pattern and the share left dense,
    the cluster count or no clustering, QAT on or off, and the quantization when no MCU profile needs int8."""
    stages = [s.stage for s in pipeline.steps]
    space: dict[str, list[Any] | Range] = {}
    last = {s.stage: s for s in pipeline.steps}
    if "distill" in last and last["distill"].width is not None:
        space["distill.width"] = sorted({0.25, 0.5, 0.75, last["distill"].width})
    if "prune" in last:
        space["prune.final_sparsity"] = Range(low=0.5, high=0.9, step=0.05)
        space["prune.dense_share"] = [0.0, 0.02, 0.05, 0.1]
        if last["prune"].m_by_n is None:  # runs of zeros in Dense kernels: less gzip at the same sparsity
            space["prune.block"] = sorted({1, 4, last["prune"].block})
    if "cluster" in last:
        space["cluster.clusters"] = [8, 16, 32, None]
    if "qat" in stages:
        space["qat"] = [True, False]
    profiles = [p for s in pipeline.steps if s.stage == "validate" for p in s.profiles]
    if "convert" in last and not any(_is_mcu(p, pipeline) for p in profiles):
        space["convert.quantization"] = sorted({"int8", "dynamic", "float16", last["convert"].quantization.value})
    return space


def _is_mcu(profile: str, pipeline: Any) -> bool:
    from edgeopt.profiles import load_profile

    try:
        return load_profile(profile, extra=pipeline.profiles).runtime.value == "tflm"
    except Exception:  # noqa: BLE001 - an unloadable profile is reported by resolve_profiles
        return False


def resolve_space(pipeline: Any, search: SearchConfig | None = None) -> list[Param]:
    """The space as parameters bound to the pipeline's steps. BadInput (one line) for an unknown stage or
    field, a step the pipeline does not have, an empty list or range, or a choice the stage rejects."""
    from edgeopt.pipeline import registry

    search = search or SearchConfig()
    space = search.space or default_space(pipeline)
    if not space:
        raise BadInput("search.space: empty, and the pipeline has no step the default space could search")
    params = []
    for name, spec in space.items():
        where = f"search.space.{name}"
        m = _NAME.match(name)
        if not m:
            raise BadInput(f"{where}: expected STAGE.FIELD, STAGE[N].FIELD or STAGE (on/off)")
        stage, n, field = m["stage"], m["n"], m["field"]
        if stage not in registry.names():
            raise BadInput(f"{where}: unknown stage {stage!r}; allowed: {', '.join(registry.names())}")
        idx = [i for i, s in enumerate(pipeline.steps) if s.stage == stage]
        if not idx:
            raise BadInput(f"{where}: the pipeline has no {stage} step")
        if n is not None and int(n) >= len(idx):
            raise BadInput(f"{where}: the pipeline has {len(idx)} {stage} step(s); N counts from 0")
        step = idx[int(n)] if n is not None else idx[-1]
        cls = registry.config_class(stage)
        if field is not None and field not in cls.model_fields:
            allowed = ", ".join(sorted(cls.model_fields))
            raise BadInput(f"{where}: unknown step parameter {field!r} of {stage}; allowed: {allowed}")
        if isinstance(spec, list):
            if not spec:
                raise BadInput(f"{where}: empty list of choices")
            if len(set(map(repr, spec))) != len(spec):
                raise BadInput(f"{where}: a choice is listed twice")
            bad = [c for c in spec if not isinstance(c, str | int | float | bool | None)]
            if bad:
                raise BadInput(f"{where}: choices must be numbers, strings, true/false or null (got {bad[0]!r})")
            if field is None and not all(isinstance(c, bool) for c in spec):
                raise BadInput(f"{where}: a stage alone takes [true, false] (keep or drop the step)")
            p = Param(name, stage, step, field, choices=tuple(spec))
        else:
            if field is None:
                raise BadInput(f"{where}: a stage alone takes [true, false], not a range")
            p = Param(name, stage, step, field, range=spec)
        if (field is None or None in (p.choices or ())) and stage not in OPTIONAL_STAGES:
            raise BadInput(f"{where}: a {stage} step cannot be dropped; only {', '.join(OPTIONAL_STAGES)} can")
        for value in _probe_values(p):
            _check_value(pipeline, p, value, where)
        params.append(p)
    return params


def _probe_values(p: Param) -> list[Any]:
    if p.field is None:
        return []
    if p.choices is not None:
        return [c for c in p.choices if c is not None]
    assert p.range is not None
    return [p.range.low, p.range.high]


def _check_value(pipeline: Any, p: Param, value: Any, where: str) -> None:
    """The step with this one value set must validate (other searched values as in the file)."""
    from edgeopt.config import format_validation_error
    from edgeopt.pipeline.spec import STEP_MODELS

    raw = pipeline.steps[p.step].model_dump(mode="json", exclude_unset=True)
    try:
        STEP_MODELS[p.stage].model_validate({**raw, p.field: value})
    except ValidationError as e:
        msg = format_validation_error(e, where).splitlines()[0].split(": ", 2)[-1]
        raise BadInput(f"{where}: {value!r} is not a valid {p.stage}.{p.field}: {msg}") from None


def apply(pipeline: Any, params: list[Param], values: dict[str, Any], *, name: str | None = None) -> Any:
    """The pipeline with a trial's values set and its dropped steps removed (a new ``PipelineConfig``)."""
    from edgeopt.pipeline.spec import PipelineConfig

    raw = pipeline.model_dump(mode="json", exclude_unset=True)
    raw.pop("search", None)
    if name is not None:
        raw["name"] = name
    steps: list[dict[str, Any] | None] = [dict(s) for s in raw["steps"]]
    for p in params:
        value = values[p.name]
        if steps[p.step] is None:
            continue
        if p.field is None:
            if value is False:
                steps[p.step] = None
        elif value is None:
            steps[p.step] = None
        else:
            steps[p.step][p.field] = value  # type: ignore[index]
    raw["steps"] = [s for s in steps if s is not None]
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        from edgeopt.config import format_validation_error

        raise BadInput(format_validation_error(e, "trial").splitlines()[0]) from None


def trial_pipeline(pipeline: Any) -> Any:
    """What a trial runs: the steps up to the last convert, without the other convert steps, the validate
    steps and the baseline (a trial validates its one .tflite itself, on the validation split), with the
    stage guard set to go on."""
    from edgeopt.pipeline.spec import PipelineConfig

    raw = pipeline.model_dump(mode="json", exclude_unset=True)
    steps = raw["steps"]
    last = max(i for i, s in enumerate(steps) if s["stage"] == "convert")
    raw["steps"] = [
        s for i, s in enumerate(steps[: last + 1]) if s["stage"] not in ("convert", "validate") or i == last
    ]
    raw["baseline"] = None
    raw.pop("search", None)
    if "on_regression" in PipelineConfig.model_fields:
        # The stage guard's keep_best would swap a bad stage's output for its input: the trial would then
        # measure other parameters than it reports. A trial keeps what its parameters make; the accuracy
        # floor (early stop) and the constraints judge it.
        raw["on_regression"] = "continue"
        for s in raw["steps"]:
            s.pop("on_regression", None)
    return PipelineConfig.model_validate(raw)


def remaining_fine_tuning(pipeline: Any, stage_index: int) -> int:
    """How many prune, cluster and qat steps come after step ``stage_index`` (1-based, as in StageEvent)."""
    return sum(1 for s in pipeline.steps[stage_index:] if s.stage in FINE_TUNING)


def floor_margin(search: SearchConfig, remaining: int) -> float:
    """The early-stop margin (a fraction): what the remaining fine-tuning stages may win back."""
    return search.recover_points * remaining / 100.0


def distributions(params: list[Param]) -> dict[str, Any]:
    """Optuna distributions for the parameters (imported here lazily: Optuna is not needed to load a file)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for p in params:
        if p.choices is not None:
            out[p.name] = CategoricalDistribution(list(p.choices))
        else:
            r = p.range
            assert r is not None
            if r.is_int:
                out[p.name] = IntDistribution(int(r.low), int(r.high), step=int(r.step or 1), log=r.log)
            else:
                high = r.high
                if r.step is not None:  # Optuna wants high on the grid
                    high = round(r.low + math.floor((r.high - r.low) / r.step + 1e-9) * r.step, 10)
                out[p.name] = FloatDistribution(float(r.low), float(high), step=r.step, log=r.log)
    return out


def round_value(value: Any) -> Any:
    """Floats on a step grid come back as 0.7000000000000001: keep the file readable."""
    return round(value, 10) if isinstance(value, float) else value
