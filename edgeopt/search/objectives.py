"""What a trial is scored on: objective values from its validation, and its constraints (feasible <= 0).

No TensorFlow: the figures come from the validate stage's dict (``ValidationResult.to_dict()``) and the
.tflite bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeopt.artifacts import gzip_size
from edgeopt.errors import BadInput
from edgeopt.pipeline import registry
from edgeopt.profiles import load_profile
from edgeopt.search.config import Metric, Objective, SearchConfig
from edgeopt.search.space import profile_names


def with_constraints(pipeline: Any, search: SearchConfig) -> SearchConfig:
    """``search`` with the accuracy constraints it leaves out taken from the pipeline's own gates (its last
    validate step's ``max_accuracy_drop`` and ``min_accuracy``): the pipeline as written, trial 0, is then
    feasible whenever it passes its own gates. Given ones (``null`` included: no limit) stay as given."""
    validating = registry.having("validates")
    checks = [s for s in pipeline.steps if s.stage in validating]
    own = checks[-1] if checks else None
    update = {
        name: getattr(own, name, None) for name in ("max_accuracy_drop", "min_accuracy") if not search.given(name)
    }
    return search.model_copy(update=update) if update else search


def resolve_profiles(pipeline: Any, search: SearchConfig) -> list[Any]:
    """The device profiles a trial is judged against: ``search.profiles``, else every validate step's, plus
    any profile an objective names. BadInput for an unknown profile or an objective it cannot measure."""

    names = list(search.profiles) if search.profiles is not None else profile_names(pipeline)
    for o in search.parsed_objectives + [Objective.parse(search.select)]:
        if o.profile and o.profile not in names:
            names.append(o.profile)
    profiles = []
    for name in dict.fromkeys(names):
        try:
            profiles.append(load_profile(name, extra=pipeline.profiles))
        except BadInput as e:
            raise BadInput(f"search: {e}") from None
    by_name = {p.name: p for p in profiles}
    for o in search.parsed_objectives + [Objective.parse(search.select)]:
        if o.profile:
            why = cannot_measure(o, by_name[o.profile])
            if why:
                raise BadInput(f"search.objectives: {o.key}: {why}")
    return profiles


def cannot_measure(o: Objective, profile: Any) -> str | None:
    """Why ``profile`` cannot give objective ``o`` (None when it can)."""
    if o.metric is Metric.arena_bytes and profile.runtime.value != "tflm":
        return f"profile {profile.name} runs {profile.runtime.value}, not TFLite Micro: it has no tensor arena"
    if o.metric is Metric.latency_ms and profile.vela is None and getattr(profile, "mcu", None) is None:
        if profile.runtime.value != "litert" or profile.reference is None:
            return (
                f"profile {profile.name} has no latency estimate (needs a Vela section, an mcu section or a LiteRT "
                "profile with a published reference latency)"
            )
    if o.metric is Metric.latency_ms and profile.budgets.latency_p90_ms is None:
        return f"profile {profile.name} has no latency budget, so no latency gate measures it"
    return None


@dataclass
class Score:
    """A finished trial's figures, objective values (in the study's order) and constraints."""

    metrics: dict[str, Any]
    values: list[float]
    constraints: dict[str, float]
    failed_gates: list[str]
    not_evaluated: list[str]

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())


def measure(tflite: bytes, validation: dict[str, Any], objective: Objective) -> float | None:
    """One metric of a trial's .tflite; None when the validation has no figure for it."""

    m = objective.metric
    if m is Metric.accuracy:
        return validation.get("accuracy")
    if m is Metric.gzip_bytes:
        return float(gzip_size(tflite))
    if m is Metric.flash_bytes:
        return float(len(tflite))
    if m is Metric.arena_bytes:
        tflm = validation.get("tflm") or {}
        return float(tflm["arena_bytes"]) if tflm.get("arena_bytes") is not None else None
    for g in validation.get("gates", []):  # latency: the figure the profile's latency gate judged
        if g["profile"] == objective.profile and g["gate"] == "latency_p90_ms" and g["status"] != "not evaluated":
            return float(g["measured"])
    return None


def score(
    tflite: bytes,
    validation: dict[str, Any],
    search: SearchConfig,
    teacher_accuracy: float,
) -> Score:
    """Objective values and constraints of a trial: every gate of the profiles (failed gates count), the
    accuracy drop against the teacher (points) and the accuracy floor; all on the validation split."""
    metrics: dict[str, Any] = {}
    wanted = search.parsed_objectives + [Objective.parse(search.select)]
    for o in [Objective(Metric.accuracy), Objective(Metric.gzip_bytes), Objective(Metric.flash_bytes), *wanted]:
        metrics[o.key] = measure(tflite, validation, o)
    missing = [o.key for o in search.parsed_objectives if metrics[o.key] is None]
    if missing:
        why = "; ".join(f"{k}: {f}" for k, f in validation.get("failures", {}).items()) or "not measured"
        raise RuntimeError(f"no figure for objective(s) {', '.join(missing)} ({why})")
    acc = float(metrics["accuracy"])
    failed = [f"{g['profile']}/{g['gate']}" for g in validation.get("gates", []) if g["status"] == "failed"]
    not_eval = [f"{g['profile']}/{g['gate']}" for g in validation.get("gates", []) if g["status"] == "not evaluated"]
    constraints = {"gates_failed": float(len(failed))}
    metrics["teacher_accuracy"] = teacher_accuracy
    metrics["accuracy_drop_points"] = (teacher_accuracy - acc) * 100
    if search.max_accuracy_drop is not None:
        constraints["accuracy_drop"] = metrics["accuracy_drop_points"] - search.max_accuracy_drop
    if search.min_accuracy is not None:
        constraints["min_accuracy"] = (search.min_accuracy - acc) * 100
    values = [float(metrics[o.key]) for o in search.parsed_objectives]
    return Score(metrics, values, constraints, failed, not_eval)


def accuracy_floor(search: SearchConfig, teacher_accuracy: float) -> float | None:
    """The lowest validation accuracy a feasible trial may have (a fraction), or None without a floor."""
    floors = []
    if search.max_accuracy_drop is not None:
        floors.append(teacher_accuracy - search.max_accuracy_drop / 100)
    if search.min_accuracy is not None:
        floors.append(search.min_accuracy)
    return max(floors) if floors else None
