"""The step protocol and one adapter per stage: what a stage's cache key depends on, how it runs,
how its outputs are written to and read back from a folder, and what it changes in the run.

A step knows its stage function (``edgeopt.stages``) and its config class; the runner
(``edgeopt.pipeline.runner``) knows no stage by name and only loops over steps. Stage modules import
TensorFlow, so they are imported inside the methods: the registry stays cheap to import.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgeopt import calibrate, report
from edgeopt.artifacts import (
    SavedModelDir,
    export_saved_model,
    load_model,
    save_model,
    sha256_bytes,
    write_bytes,
    write_json,
)
from edgeopt.config import (
    ClusterConfig,
    ConvertConfig,
    DistillConfig,
    PruneConfig,
    QATConfig,
    ValidateConfig,
)
from edgeopt.pipeline.hashing import model_hash
from edgeopt.pipeline.validating import validate_artifact
from edgeopt.profiles import load_profile
from edgeopt.progress import Timer
from edgeopt.search.config import Range
from edgeopt.validation import ValidationResult

METRICS_FILE = "metrics.json"


@dataclass
class Artifact:
    """A .tflite made in the run (by a convert step, or the baseline) and what is known about it."""

    path: Path
    quantization: str
    tflite: bytes
    keras_model: Any
    source_stage: str
    metrics: dict[str, Any]
    validation: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class RunState:
    """What the steps read and change as the run goes: the current model and the artifacts so far."""

    config: Any  # PipelineConfig
    root: Path
    data: Any  # Dataset
    teacher: Any
    teacher_hash: str
    model: Any = None
    model_hash: str = ""
    model_stage: str = "teacher"
    # the last Keras model of the run (a QAT step's SavedModel does not replace it): its clustered kernels
    # give an int8 conversion its shared codebooks
    keras_model: Any = None
    keras_model_hash: str = ""
    baseline: Artifact | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    failed_gates: list[str] = field(default_factory=list)
    not_evaluated: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    calibration: dict[str, Any] | None = None  # loaded (or measured) once per run
    cache: Any = None  # StageCache: the run's (or a search's shared) stage cache
    context: dict[str, Any] = field(default_factory=dict)  # seed, data hash, versions: in every cache key

    @property
    def seed(self) -> int:
        return self.config.seed

    def validated(self) -> list[Artifact]:
        return ([self.baseline] if self.baseline is not None else []) + self.artifacts


class Step:
    """One stage of a pipeline. Subclasses set ``name`` and ``config_cls`` and implement ``execute``;
    the defaults suit a stage that turns the current Keras model into a new one."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    output: ClassVar[str] = "model.keras"
    makes_model: ClassVar[bool] = True  # its output becomes the current model (a trial may drop such a step)
    # It fine-tunes its input rather than training a new model: the stage guard judges it by default, and
    # a search assumes it can win back some accuracy.
    fine_tunes: ClassVar[bool] = True
    makes_artifact: ClassVar[bool] = False  # it adds a .tflite to the run's artifacts (a pipeline needs one)
    validates: ClassVar[bool] = False  # it validates the artifacts against device profiles

    def __init__(self, config: Any, index: int) -> None:
        self.config = config
        self.index = index

    @property
    def folder_name(self) -> str:
        return f"{self.index:02d}_{self.name}"

    def key_inputs(self, state: RunState) -> dict[str, Any]:
        """The content hashes this step's output depends on, besides its config, the seed, the data and
        the versions (which the runner adds to every key)."""
        return {"model": state.model_hash}

    def execute(self, state: RunState) -> Any:
        raise NotImplementedError

    def cacheable(self, result: Any) -> bool:
        return True

    def persist(self, result: Any, folder: Path) -> dict[str, Any]:
        """Write the outputs into ``folder``; return the entry info (``output`` and ``content_sha256``)."""

        save_model(result.model, folder / self.output)
        write_json(folder / METRICS_FILE, result.metrics)
        return {"output": self.output, "content_sha256": model_hash(result.model)}

    def load(self, folder: Path, info: dict[str, Any]) -> Any:
        """The result of an earlier run, read back from its folder."""
        from edgeopt.stages import StageResult  # lazy: imports TensorFlow

        metrics = json.loads((folder / METRICS_FILE).read_text())
        return StageResult(self.name, metrics, model=load_model(folder / self.output), seconds=info["seconds"])

    def apply(self, state: RunState, result: Any, folder: Path, info: dict[str, Any]) -> None:
        """Make this step's output the current model."""
        state.model, state.model_hash, state.model_stage = result.model, info["content_sha256"], self.folder_name
        state.keras_model, state.keras_model_hash = result.model, info["content_sha256"]

    def summary(self, metrics: dict[str, Any]) -> list[tuple[str, Any]]:
        """The few figures worth showing after the step (the CLI renders them)."""
        return []

    @classmethod
    def search_space(cls, config: Any, *, integer_only: bool, n_train: int | None = None) -> dict[str | None, Any]:
        """What ``edgeopt search`` varies of this step by default, around the step's own values (which every
        choice list and range holds, so the pipeline as written is a point of the space): ``{field: choices
        or Range}``, and ``None: [True, False]`` when the step may be dropped. ``integer_only``: a device the
        pipeline validates for runs integer models only (TFLite Micro); ``n_train``: training examples (which
        of epochs and min_steps decides a training length), None when not known."""
        return {}

    @classmethod
    def at_fidelity(cls, config: Any, fraction: float) -> dict[str, Any]:
        """The fields to change so that the step does ``fraction`` of its work (a search's cheap first rungs);
        empty for a step whose cost does not shrink that way."""
        return {}


def _rows(metrics: dict[str, Any], keys: list[str]) -> list[tuple[str, Any]]:
    return [(k, metrics[k]) for k in keys if k in metrics]


def _length_space(config: Any, n_train: int | None, factors: tuple[float, ...]) -> dict[str | None, Any]:
    """A training length around the step's: the field that decides it on this data (``epochs``, or
    ``min_steps`` when its floor of optimizer steps is more than the epochs make), times each factor."""
    if config.epochs == 0:
        return {}
    per_epoch = math.ceil(n_train / config.batch_size) if n_train else None
    if config.min_steps and per_epoch and config.min_steps > config.epochs * per_epoch:
        return {"min_steps": sorted({round(config.min_steps * f) for f in factors})}
    return {"epochs": sorted({max(1, round(config.epochs * f)) for f in factors})}


def _around(value: float, spread: float, lo: float, hi: float, step: float) -> Range:
    """A range of ``value`` +- ``spread`` on a grid of ``step`` through ``value``, kept inside [lo, hi]."""
    below = math.floor(min(spread, value - lo) / step + 1e-9)
    above = math.floor(min(spread, hi - value) / step + 1e-9)
    if below + above == 0:  # no room on the grid within the bounds: the range cannot be empty
        above = 1
    return Range(low=round(value - below * step, 6), high=round(value + above * step, 6), step=step)


class DistillStep(Step):
    """A new, smaller student: expected to lose some accuracy, so the stage guard leaves it alone unless
    its step sets on_regression (the release gates judge it against the teacher)."""

    name = "distill"
    config_cls = DistillConfig
    fine_tunes = False

    @classmethod
    def search_space(cls, config: Any, *, integer_only: bool, n_train: int | None = None) -> dict[str | None, Any]:
        # A narrower and a wider student, and longer distillation (a student rarely gains from less).
        space: dict[str | None, Any] = {}
        if config.width is not None:
            w = config.width
            space["width"] = sorted({round(w * 0.75, 4), w, round(min(1.0, w * 1.5), 4)})
        return {**space, **_length_space(config, n_train, (1, 2, 3))}

    def execute(self, state: RunState) -> Any:
        from edgeopt import stages  # lazy: imports TensorFlow

        return stages.distill(state.model, state.data, self.config, seed=state.seed, unsafe=state.config.teacher.unsafe)

    def summary(self, metrics: dict[str, Any]) -> list[tuple[str, Any]]:
        return _rows(metrics, ["student_params", "teacher_accuracy", "accuracy"])


class FineTuneStep(Step):
    """A stage that fine-tunes the current model; with ``kd`` set it trains against the teacher's outputs,
    so the teacher's weights join its cache key."""

    def key_inputs(self, state: RunState) -> dict[str, Any]:
        keys = super().key_inputs(state)
        if self.config.kd is not None:
            keys["teacher"] = state.teacher_hash
        return keys

    def stage_kwargs(self, state: RunState) -> dict[str, Any]:
        return {"seed": state.seed, "teacher": state.teacher if self.config.kd is not None else None}

    @classmethod
    def at_fidelity(cls, config: Any, fraction: float) -> dict[str, Any]:
        """``fraction`` of the epochs (at least one, unless the step trains none) and of the step floor."""
        out: dict[str, Any] = {}
        if config.epochs:
            out["epochs"] = max(1, math.ceil(config.epochs * fraction))
        if config.min_steps:
            out["min_steps"] = math.ceil(config.min_steps * fraction)
        return out


class PruneStep(FineTuneStep):
    name = "prune"
    config_cls = PruneConfig

    @classmethod
    def search_space(cls, config: Any, *, integer_only: bool, n_train: int | None = None) -> dict[str | None, Any]:
        d = config.dense_share
        space: dict[str | None, Any] = {
            # 10 points of sparsity either side of the file's (a short recipe at 0.5 collapses at 0.9)
            "final_sparsity": _around(config.final_sparsity, 0.1, config.initial_sparsity, 0.95, 0.05),
            "dense_share": sorted({0.0, d, round(max(0.02, 2 * d), 4)}),
        }
        if config.m_by_n is None:  # runs of zeros in Dense kernels: less gzip at the same sparsity
            space["block"] = sorted({1, 4, config.block})
        return {**space, **_length_space(config, n_train, (1, 2))}

    def execute(self, state: RunState) -> Any:
        from edgeopt import stages  # lazy: imports TensorFlow

        return stages.prune(state.model, state.data, self.config, **self.stage_kwargs(state))

    def summary(self, metrics: dict[str, Any]) -> list[tuple[str, Any]]:
        return _rows(metrics, ["sparsity", "accuracy_before", "accuracy"])


class ClusterStep(FineTuneStep):
    name = "cluster"
    config_cls = ClusterConfig

    @classmethod
    def search_space(cls, config: Any, *, integer_only: bool, n_train: int | None = None) -> dict[str | None, Any]:
        c = config.clusters
        clusters: list[Any] = sorted({max(2, c // 2), c, 2 * c})
        return {"clusters": [*clusters, None], **_length_space(config, n_train, (1, 2))}  # None: no clustering

    def execute(self, state: RunState) -> Any:
        from edgeopt import stages  # lazy: imports TensorFlow

        return stages.cluster(state.model, state.data, self.config, **self.stage_kwargs(state))

    def summary(self, metrics: dict[str, Any]) -> list[tuple[str, Any]]:
        return _rows(metrics, ["max_distinct_values", "sparsity", "accuracy"])


class QATStep(FineTuneStep):
    """tfmot's quantize wrappers do not survive a .keras round trip: the output is a SavedModel folder,
    and the next stages read that folder whether the stage ran now or earlier."""

    name = "qat"
    config_cls = QATConfig
    output = "saved_model"

    @classmethod
    def search_space(cls, config: Any, *, integer_only: bool, n_train: int | None = None) -> dict[str | None, Any]:
        return {None: [True, False], **_length_space(config, n_train, (1, 2))}

    def execute(self, state: RunState) -> Any:
        from edgeopt import stages  # lazy: imports TensorFlow

        return stages.qat(state.model, state.data, self.config, **self.stage_kwargs(state))

    def persist(self, result: Any, folder: Path) -> dict[str, Any]:

        export_saved_model(result.model, folder / self.output)
        write_json(folder / METRICS_FILE, result.metrics)
        return {"output": self.output, "content_sha256": model_hash(result.model)}

    def load(self, folder: Path, info: dict[str, Any]) -> Any:
        from edgeopt.stages import StageResult  # lazy: imports TensorFlow

        metrics = json.loads((folder / METRICS_FILE).read_text())
        return StageResult(self.name, metrics, seconds=info["seconds"])

    def apply(self, state: RunState, result: Any, folder: Path, info: dict[str, Any]) -> None:
        state.model = SavedModelDir(folder / self.output)
        state.model_hash, state.model_stage = info["content_sha256"], self.folder_name

    def summary(self, metrics: dict[str, Any]) -> list[tuple[str, Any]]:
        return _rows(metrics, ["preserve", "accuracy_before", "accuracy"])


class ConvertStep(Step):
    """Converts the current model; the .tflite joins the run's artifacts and the model stays current."""

    name = "convert"
    config_cls = ConvertConfig
    makes_model = False
    fine_tunes = False
    makes_artifact = True

    @classmethod
    def search_space(cls, config: Any, *, integer_only: bool, n_train: int | None = None) -> dict[str | None, Any]:
        if integer_only:
            return {}
        return {"quantization": sorted({"int8", "dynamic", "float16", config.quantization.value})}

    @property
    def output(self) -> str:  # type: ignore[override]
        return f"model_{self.config.quantization.value}.tflite"

    def execute(self, state: RunState) -> Any:
        from edgeopt import stages  # lazy: imports TensorFlow

        source = self._source(state)
        clusters = state.keras_model if isinstance(source, SavedModelDir) else None
        return stages.convert(source, self.config, data=state.data, seed=state.seed, clusters_from=clusters)

    def key_inputs(self, state: RunState) -> dict[str, Any]:
        keys = super().key_inputs(state)
        if isinstance(self._source(state), SavedModelDir) and self.config.shared_codebook:
            keys["clusters_from"] = state.keras_model_hash  # the codebooks come from the last Keras model
        return keys

    def _source(self, state: RunState) -> Any:
        return state.model

    def persist(self, result: Any, folder: Path) -> dict[str, Any]:
        write_bytes(folder / self.output, result.tflite)
        write_json(folder / METRICS_FILE, result.metrics)
        return {"output": self.output, "content_sha256": sha256_bytes(result.tflite)}

    def load(self, folder: Path, info: dict[str, Any]) -> Any:
        from edgeopt.stages import StageResult  # lazy: imports TensorFlow

        metrics = json.loads((folder / METRICS_FILE).read_text())
        return StageResult(self.name, metrics, tflite=(folder / self.output).read_bytes(), seconds=info["seconds"])

    def apply(self, state: RunState, result: Any, folder: Path, info: dict[str, Any]) -> None:
        state.artifacts.append(
            Artifact(
                folder / self.output,
                self.config.quantization.value,
                result.tflite,
                state.model,
                state.model_stage,
                result.metrics,
            )
        )

    def summary(self, metrics: dict[str, Any]) -> list[tuple[str, Any]]:
        return _rows(metrics, ["quantization", "bytes", "gzip_bytes"])


class BaselineStep(ConvertStep):
    """The teacher converted as the reference artifact (``baseline:`` in the pipeline file): a convert
    of the teacher whose result is the run's baseline instead of one more artifact."""

    name = "baseline"
    makes_artifact = False  # the reference, not one of the run's artifacts

    @property
    def output(self) -> str:  # type: ignore[override]
        return f"teacher_{self.config.quantization.value}.tflite"

    def key_inputs(self, state: RunState) -> dict[str, Any]:
        return {"model": state.teacher_hash}

    def _source(self, state: RunState) -> Any:
        return state.teacher

    def apply(self, state: RunState, result: Any, folder: Path, info: dict[str, Any]) -> None:
        state.baseline = Artifact(
            folder / self.output,
            self.config.quantization.value,
            result.tflite,
            state.teacher,
            "baseline",
            result.metrics,
        )


class ValidateStep(Step):
    """Validates the baseline (accuracy and latency) and every .tflite so far against the step's device
    profiles, each through ``validate_artifact`` (cached per .tflite, so a new artifact does not validate
    the old ones again). The step's own key holds the .tflite bytes, their Keras references, the resolved
    profiles and the latency calibration. A run in which a runtime crashed is never cached."""

    name = "validate"
    config_cls = ValidateConfig
    output = METRICS_FILE
    makes_model = False
    fine_tunes = False
    validates = True

    def _profiles(self, state: RunState) -> list[Any]:
        return [load_profile(p, extra=state.config.profiles) for p in self.config.profiles]

    def _calibration(self, state: RunState) -> Any:
        """The host's latency calibration; measured now when a profile needs one and none is stored."""
        if state.calibration is None and self.config.profiles:
            state.calibration = calibrate.ensure(self._profiles(state)) or {}
        return state.calibration or None

    def key_inputs(self, state: RunState) -> dict[str, Any]:
        return {
            "tflite": [sha256_bytes(a.tflite) for a in state.validated()],
            "keras": [model_hash(a.keras_model) for a in state.artifacts],
            "profiles": [p.model_dump(mode="json") for p in self._profiles(state)],
            "calibration": self._calibration(state),
        }

    def execute(self, state: RunState) -> Any:
        from edgeopt.stages import StageResult  # lazy: imports TensorFlow

        profiles = self._profiles(state)
        calibration = self._calibration(state)
        results: dict[str, Any] = {}
        base = state.baseline
        with Timer() as t:
            for art in state.validated():
                if art.validation is None:
                    is_base = art is base
                    only_scores = ValidateConfig(
                        split=self.config.split, max_samples=self.config.max_samples, batch_size=self.config.batch_size
                    )
                    art.validation, _ = validate_artifact(
                        art.tflite,
                        state.data,
                        only_scores if is_base else self.config,
                        name=art.name,
                        keras_model=art.keras_model,
                        keras_hash=model_hash(art.keras_model),
                        baseline_accuracy=base.validation["accuracy"] if base and base.validation else None,
                        profiles=[] if is_base or not self._applies(art) else profiles,
                        calibration=calibration,
                        cache=state.cache,
                    )
                results[art.name] = art.validation
        typed = {name: ValidationResult.from_dict(v) for name, v in results.items()}
        failed = [f"{name}: {g.key} ({g.detail})" for name, v in typed.items() for g in v.failed_gates]
        not_evaluated = [f"{name}: {g.key} ({g.detail})" for name, v in typed.items() for g in v.not_evaluated]
        crashed = [f"{name}: {c}" for name, v in typed.items() for c in v.crashed]
        metrics = {"artifacts": results, "failed": failed, "not_evaluated": not_evaluated, "crashed": crashed}
        return StageResult(self.name, metrics=metrics, seconds=t.seconds)

    def _applies(self, art: Artifact) -> bool:
        wanted = self.config.profiles_for
        return wanted is None or art.quantization in {q.value for q in wanted}

    def cacheable(self, result: Any) -> bool:
        return not result.metrics["crashed"]

    def persist(self, result: Any, folder: Path) -> dict[str, Any]:
        write_json(folder / METRICS_FILE, result.metrics)
        validated = list(result.metrics["artifacts"].values())
        report.write_junit(folder / "junit.xml", validated)
        report.write_markdown(folder / "report.md", validated)
        return {"output": self.output, "content_sha256": sha256_bytes((folder / METRICS_FILE).read_bytes())}

    def load(self, folder: Path, info: dict[str, Any]) -> Any:
        from edgeopt.stages import StageResult  # lazy: imports TensorFlow

        return StageResult(self.name, json.loads((folder / METRICS_FILE).read_text()), seconds=info["seconds"])

    def apply(self, state: RunState, result: Any, folder: Path, info: dict[str, Any]) -> None:
        for art in state.validated():
            art.validation = result.metrics["artifacts"].get(art.name)
        state.failed_gates += result.metrics["failed"]
        state.not_evaluated += result.metrics.get("not_evaluated", [])
        state.crashed += result.metrics["crashed"]

    def summary(self, metrics: dict[str, Any]) -> list[tuple[str, Any]]:
        return [
            (name, f"accuracy {v['accuracy']:.4f}" if v.get("accuracy") is not None else "accuracy n/a")
            for name, v in metrics["artifacts"].items()
        ]
