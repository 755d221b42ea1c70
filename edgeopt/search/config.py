"""The ``search:`` block of a pipeline file as a validated config: the space's ranges, the objectives and
the constraints. A leaf module (pydantic only), so the pipeline file's schema can import it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


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
        None,
        ge=0,
        description="constraint: points of validation top-1 below the teacher's; when not given, the pipeline's "
        "own (its last validate step's max_accuracy_drop); null: no limit",
    )
    min_accuracy: float | None = Field(
        None,
        ge=0,
        le=1,
        description="constraint: validation top-1 at least this; when not given, the pipeline's own (its last "
        "validate step's min_accuracy)",
    )
    recover_points: float = Field(
        0.5,
        ge=0,
        description="early stop: points of accuracy each remaining fine-tuning stage (prune, cluster, qat) is "
        "assumed able to win back; a trial still at or above the pipeline as written at that stage goes on",
    )
    rungs: int = Field(
        3,
        ge=1,
        le=5,
        description="multi-fidelity: a trial first runs its fine-tuning stages at 1/reduction_factor^(rungs-1) of "
        "their length, and goes on to the next rung only when its validation accuracy there is in the top "
        "1/reduction_factor of the trials at that rung or not below the pipeline as written's beyond chance (or the "
        "pipeline as written has not reached that rung yet); 1: off",
    )
    reduction_factor: int = Field(
        3, ge=2, description="multi-fidelity: length ratio between rungs, and the share promoted"
    )
    tolerance: float | None = Field(
        None,
        ge=0,
        description="points of validation top-1 a smaller (faster) trial may lose beyond chance and still replace "
        "the pipeline as written, as a compressing stage may under the stage guard; default: the pipeline's "
        "regression_tolerance",
    )
    min_difference: float = Field(
        1.0,
        gt=0,
        description="the accuracy difference (points) that matters: a validation split too small to tell it from "
        "chance (paired test) makes the search re-measure its best candidates on k folds of the training data",
    )
    max_folds: int = Field(
        3,
        ge=0,
        description="at most this many validation folds of the training data for the re-measurement, the "
        "validation split that ranked the trials not among them (0: none)",
    )
    recheck: int = Field(
        3, ge=0, description="how many of the best feasible candidates are re-measured before best.yaml is chosen"
    )
    select: str = Field(
        "flash_bytes",
        description="best.yaml: the feasible trial with the least of this metric (the most, for accuracy) that beats "
        "the pipeline as written by more than chance; the pipeline as written when none does",
    )
    trials: int = Field(20, ge=1, description="default for --trials")
    minutes: float | None = Field(
        None,
        gt=0,
        description="default for --minutes: a time budget for the trials of one search command; no trial starts "
        "once it is spent (the ones running finish, then the selection and the test split are measured); "
        "null: no limit (and --minutes 0 lifts it)",
    )
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

    def given(self, name: str) -> bool:
        """Whether the file set ``name`` (a constraint left out comes from the pipeline's own gates)."""
        return name in self.model_fields_set

    @property
    def grace(self) -> int:
        return self.grace_period or 3 * self.heartbeat_interval
