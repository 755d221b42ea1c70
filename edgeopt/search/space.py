"""The search space of a pipeline: the parameters of ``search.space`` bound to the pipeline's steps, the
default space, and how a trial's values turn the pipeline into the pipeline that trial runs.

No TensorFlow and no Optuna here (Optuna's distributions are imported when asked for).

A parameter is named ``STAGE.FIELD`` (the last step of that stage, e.g. ``convert.quantization``) or
``STAGE[N].FIELD`` (the N-th step of that stage, from 0), and takes a list of choices or a range
(``{low, high, step, log}``). ``STAGE`` or ``STAGE[N]`` alone with ``[true, false]`` keeps or drops that
step; ``null`` among a field's choices drops the step too (``cluster.clusters: [8, 16, null]``).

Every space holds the pipeline as written: the file's value of each parameter is added to its choices (or
its range widened to it) when missing, so that trial 0, the reference, is a point of the space.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from edgeopt.config import format_validation_error
from edgeopt.errors import BadInput
from edgeopt.pipeline import registry
from edgeopt.pipeline.guard import ACTIONS
from edgeopt.pipeline.spec import STEP_MODELS, PipelineConfig
from edgeopt.profiles import load_profile
from edgeopt.search.config import Range, SearchConfig

# Stages that a trial may drop: the model-making ones. A pipeline always needs its convert step, and
# validation is how a trial is judged.
OPTIONAL_STAGES = registry.having("makes_model")
# Stages that fine-tune their input (Step.fine_tunes): each still to come may win back recover_points.
FINE_TUNING = registry.having("fine_tunes")


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


def default_space(pipeline: Any, n_train: int | None = None) -> dict[str, list[Any] | Range]:
    """A space from the steps present, around their own values: each stage's step class says what it varies
    of its last step (``Step.search_space``: sparsity +-10 points, half and twice the clusters, longer
    training...); the quantization stays integer when a validated device runs integer models only.
    ``n_train`` (training examples) says whether epochs or the step floor decides a training length."""
    last = {s.stage: s for s in pipeline.steps}
    integer_only = any(p.runtime.value == "tflm" for p in validated_profiles(pipeline))
    space: dict[str, list[Any] | Range] = {}
    for stage, config in last.items():
        cls = registry.step_class(stage)
        for field, spec in cls.search_space(config, integer_only=integer_only, n_train=n_train).items():
            space[stage if field is None else f"{stage}.{field}"] = spec
    return space


def validated_profiles(pipeline: Any) -> list[Any]:
    """The device profiles the pipeline's validation steps name (those that load: a profile that does not
    is reported by ``objectives.resolve_profiles``)."""
    out = []
    for spec in profile_names(pipeline):
        try:
            out.append(load_profile(spec, extra=pipeline.profiles))
        except BadInput:
            continue
    return out


def profile_names(pipeline: Any) -> list[str]:
    """The profiles named by the pipeline's validation steps, in order, once each."""
    validating = registry.having("validates")
    return list(dict.fromkeys(p for s in pipeline.steps if s.stage in validating for p in s.profiles))


def resolve_space(pipeline: Any, search: SearchConfig | None = None, *, n_train: int | None = None) -> list[Param]:
    """The space as parameters bound to the pipeline's steps, each holding the file's own value. BadInput
    (one line) for an unknown stage or field, a step the pipeline does not have, an empty list or range, or
    a choice the stage rejects."""
    search = search or SearchConfig()
    space = search.space or default_space(pipeline, n_train)
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
        p = with_value(p, file_value(pipeline, p))
        for value in _probe_values(p):
            _check_value(pipeline, p, value, where)
        params.append(p)
    return params


def file_value(pipeline: Any, p: Param) -> Any:
    """The value the pipeline as written gives parameter ``p`` (True for a step that is there)."""
    if p.field is None:
        return True
    value = getattr(pipeline.steps[p.step], p.field)
    return round_value(getattr(value, "value", value))  # a str enum as its string


def reference_values(pipeline: Any, params: list[Param]) -> dict[str, Any]:
    """Trial 0's parameters: the pipeline as written."""
    return {p.name: file_value(pipeline, p) for p in params}


def with_value(p: Param, value: Any) -> Param:
    """``p`` with ``value`` among its choices (appended) or inside its range (widened, on its grid)."""
    if p.choices is not None:
        return p if value in p.choices else replace(p, choices=(*p.choices, value))
    r = p.range
    assert r is not None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return p
    low, high = min(r.low, value), max(r.high, value)
    if r.step is not None and abs((value - low) / r.step - round((value - low) / r.step)) > 1e-6:
        low = round(value - math.floor((value - low) / r.step) * r.step, 10)  # the grid through the file's value
    if r.is_int:
        low, high = int(low), int(high)
    if (low, high) == (r.low, r.high):
        return p
    return replace(p, range=r.model_copy(update={"low": low, "high": high}))


def _probe_values(p: Param) -> list[Any]:
    if p.field is None:
        return []
    if p.choices is not None:
        return [c for c in p.choices if c is not None]
    assert p.range is not None
    return [p.range.low, p.range.high]


def _check_value(pipeline: Any, p: Param, value: Any, where: str) -> None:
    """The step with this one value set must validate (other searched values as in the file)."""
    raw = pipeline.steps[p.step].model_dump(mode="json", exclude_unset=True)
    try:
        STEP_MODELS[p.stage].model_validate({**raw, p.field: value})
    except ValidationError as e:
        msg = format_validation_error(e, where, tags=registry.names()).splitlines()[0].split(": ", 2)[-1]
        raise BadInput(f"{where}: {value!r} is not a valid {p.stage}.{p.field}: {msg}") from None


def apply(pipeline: Any, params: list[Param], values: dict[str, Any], *, name: str | None = None) -> Any:
    """The pipeline with a trial's values set and its dropped steps removed (a new ``PipelineConfig``)."""
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
        raise BadInput(format_validation_error(e, "trial", tags=registry.names()).splitlines()[0]) from None


def as_shipped(pipeline: Any, guard: dict[str, str]) -> Any:
    """A trial's pipeline as the model it shipped was made: the steps whose output the stage guard replaced
    by their input (``guard``: the trial's ``{stage: action}``) left out, and the guard told to go on
    (``continue``) at every other step. Run on another validation fold, it measures the recipe that made
    the candidate; with the guard at work there, a stage that collapsed on that fold would be skipped
    and the fold would score a less compressed model than the one the trial ships (on digits, a 75%-sparse
    student scored 98.4% on two folds where the guard had undone its pruning, and 94.4% on the test split).
    Stages are matched by name: a pipeline trains with each stage once."""
    raw = pipeline.model_dump(mode="json", exclude_unset=True)
    trains = registry.having("makes_model")
    steps = [s for s in raw["steps"] if guard.get(s["stage"]) != ACTIONS["keep_best"]]
    raw["steps"] = [{**s, "on_regression": "continue"} if s["stage"] in trains else s for s in steps]
    raw["on_regression"] = "continue"
    return PipelineConfig.model_validate(raw)


def trial_pipeline(pipeline: Any, profiles: list[Any], *, light: bool = False) -> Any:
    """What a trial runs: the steps up to the last .tflite, without the other .tflite-making and validation
    steps and the baseline, then one validation of that .tflite on the *validation* split against
    ``profiles`` (the search's resolved device profiles; the test split is kept for the models the search
    chooses), keeping which examples it got right (for the paired tests). ``light``: accuracy only (a cheap
    rung, a re-measurement fold): no profiles, no host latency, no cross-check.

    The stage guard keeps the file's policy: a trial is what ``edgeopt run`` (and ``edgeopt export`` of its
    ``best.yaml``) makes of its values, trial 0 exactly the pipeline as written, and every trial is compared
    with trial 0 on equal terms. A stage the guard reverted is recorded with the trial (its ``guard``)."""
    makers, validating = registry.having("makes_artifact"), registry.having("validates")
    raw = pipeline.model_dump(mode="json", exclude_unset=True)
    steps = raw["steps"]
    last = max(i for i, s in enumerate(steps) if s["stage"] in makers)
    raw["steps"] = [
        s
        for i, s in enumerate(steps[: last + 1])
        if (s["stage"] not in makers or i == last) and s["stage"] not in validating
    ]
    validations = [s for s in steps if s["stage"] in validating]
    check = {k: v for k, v in (validations[-1] if validations else {}).items() if k not in ("profiles", "profiles_for")}
    # Host latency only when a LiteRT profile needs it (Vela and the Cortex-M model estimate their own); the
    # accuracy gates of the file's validation compare with the test-split baseline, which a trial never sees.
    # The phone check (Arm kernels under QEMU, about a minute a model) is a release check: the exported
    # best.yaml runs it, a trial does not.
    check.update(
        stage=validating[0],
        split="val",
        profiles=[] if light else [p.name for p in profiles],
        latency=not light and any(p.runtime.value == "litert" for p in profiles),
        max_accuracy_drop=None,
        min_accuracy=None,
        max_samples=None,
        phone_check=False,
        outcomes=True,
    )
    if light:
        check["cross_check"] = False
    raw["steps"].append(check)
    if not light:
        known = {p["name"] for p in raw.get("profiles", [])}
        raw["profiles"] = raw.get("profiles", []) + [p.model_dump(mode="json") for p in profiles if p.name not in known]
    raw["baseline"] = None
    raw.pop("search", None)
    return PipelineConfig.model_validate(raw)


def at_fidelity(pipeline: Any, fraction: float) -> Any:
    """The pipeline with each step doing ``fraction`` of its work where its step class says how
    (``Step.at_fidelity``: the fine-tuning stages' epochs and step floors); 1 leaves it as it is."""
    if fraction >= 1:
        return pipeline
    raw = pipeline.model_dump(mode="json", exclude_unset=True)
    for step, s in zip(pipeline.steps, raw["steps"], strict=True):
        s.update(registry.step_class(step.stage).at_fidelity(step, fraction))
    return PipelineConfig.model_validate(raw)


def rung_fractions(search: SearchConfig, pipeline: Any) -> list[float]:
    """The fine-tuning length of each rung, cheapest first and 1 last (``1/eta^(rungs-1)`` ... ``1/eta``,
    1); just [1] when no step of the pipeline shrinks with its length (nothing to halve)."""
    if not any(registry.step_class(s.stage).at_fidelity(s, 0.5) for s in pipeline.steps):
        return [1.0]
    eta = search.reduction_factor
    return [eta ** -(search.rungs - 1 - k) for k in range(search.rungs)]


def stage_keys(pipeline: Any) -> list[str]:
    """A name for each step that is the same in every trial however many steps it dropped: the stage, and
    ``[N]`` for its N-th occurrence after the first (``prune``, ``convert``, ``convert[1]``)."""
    seen: dict[str, int] = {}
    keys = []
    for s in pipeline.steps:
        n = seen.get(s.stage, 0)
        seen[s.stage] = n + 1
        keys.append(s.stage if n == 0 else f"{s.stage}[{n}]")
    return keys


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
