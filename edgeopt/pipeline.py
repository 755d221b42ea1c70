"""Run a pipeline file: teacher -> stages -> .tflite artifacts -> validation -> manifest.json."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

from edgeopt import stages, ui
from edgeopt.artifacts import (
    export_saved_model,
    gzip_size,
    load_model,
    save_model,
    sha256_bytes,
    sha256_file,
    sha256_tree,
    write_bytes,
    write_json,
)
from edgeopt.config import (
    ClusterStep,
    ConvertStep,
    DistillStep,
    PipelineConfig,
    PruneStep,
    QATStep,
    TrainConfig,
    ValidateConfig,
    ValidateStep,
)
from edgeopt.data import Dataset, load_dataset
from edgeopt.errors import BadInput, GateFailed, RuntimeCrash

MANIFEST_SCHEMA = "edgeopt.manifest/1"


@dataclass
class Artifact:
    path: Path
    quantization: str
    tflite: bytes
    keras_model: Any
    source_stage: str
    metrics: dict[str, Any]
    validation: dict[str, Any] | None = None

    def record(self, root: Path) -> dict[str, Any]:
        return {
            "path": str(self.path.relative_to(root)),
            "quantization": self.quantization,
            "sha256": sha256_bytes(self.tflite),
            "bytes": len(self.tflite),
            "gzip_bytes": gzip_size(self.tflite),
            "accuracy": self.validation["accuracy"] if self.validation else None,
            "latency": _latency_summary(self.validation),
            "gates": self.validation["gates"] if self.validation else [],
            "source_stage": self.source_stage,
            "inputs": self.metrics["inputs"],
            "outputs": self.metrics["outputs"],
            "ops": self.metrics["op_counts"],
        }


def _latency_summary(v: dict[str, Any] | None) -> dict[str, Any]:
    if not v:
        return {}
    return {th: {k: x for k, x in lat.items() if k != "times_ms"} for th, lat in v.get("latency", {}).items()}


@dataclass
class RunReport:
    """What a run produced: the manifest (also written to ``out_dir/manifest.json``)."""

    out_dir: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.manifest.get("passed"))


def versions() -> dict[str, str]:
    out = {}
    for name in ("edgeopt", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert"):
        try:
            out[name] = pkg_version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def ensure_teacher(config: PipelineConfig, data: Dataset) -> tuple[Any, dict[str, Any]]:
    """Load the teacher, training it from the zoo first when the file is missing and the config says how."""
    path = config.teacher.path
    if path.exists():
        return load_model(path), {"trained": False}
    if config.teacher.train is None:
        raise BadInput(f"teacher {path} does not exist and the pipeline has no teacher.train section to make it")
    tc: TrainConfig = config.teacher.train
    ui.info(f"teacher {path} not found: training zoo model {tc.zoo} for {tc.epochs} epochs")
    result = stages.train(data, tc, seed=config.seed)
    save_model(result.model, path)
    write_json(path.with_suffix(path.suffix + ".json"), result.metrics)
    return result.model, {"trained": True, **result.metrics, "seconds": result.seconds}


def run(config: PipelineConfig, out_dir: str | Path | None = None) -> RunReport:
    """Run every step of ``config``; write each stage's output under ``out_dir`` (default
    ``build/<name>``) and finish with ``manifest.json``. Raises GateFailed after writing the manifest
    when a validation gate failed."""
    root = Path(out_dir) if out_dir is not None else Path("build") / config.name
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    manifest_path.unlink(missing_ok=True)  # no stale manifest may outlive a failed run
    for old in root.glob("[0-9][0-9]_*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()

    started = time.time()
    data_cfg = config.data
    if "seed" not in data_cfg.model_fields_set:  # the pipeline seed also fixes the split
        data_cfg = data_cfg.model_copy(update={"seed": config.seed})
    data = load_dataset(data_cfg)
    teacher, teacher_info = ensure_teacher(config, data)
    data.check_fits(teacher, what="teacher")
    stage_records: list[dict[str, Any]] = [
        {
            "name": "teacher",
            "output": str(config.teacher.path),
            "sha256": sha256_file(config.teacher.path),
            "seconds": teacher_info.pop("seconds", 0.0),
            "metrics": teacher_info,
        }
    ]
    artifacts: list[Artifact] = []
    baseline: Artifact | None = None
    if config.baseline is not None:
        r = stages.convert(teacher, config.baseline, data=data, seed=config.seed)
        path = write_bytes(root / "00_baseline" / f"teacher_{config.baseline.quantization.value}.tflite", r.tflite)
        baseline = Artifact(path, config.baseline.quantization.value, r.tflite, teacher, "baseline", r.metrics)
        stage_records.append(_record("baseline", path, root, r))

    current, current_stage = teacher, "teacher"
    gates_failed: list[str] = []
    crashed: list[str] = []
    for i, step in enumerate(config.steps, start=1):
        folder = root / f"{i:02d}_{step.stage}"
        ui.info(f"[bold]step {i}/{len(config.steps)}: {step.stage}[/]")
        if isinstance(step, DistillStep):
            r = stages.distill(current, data, step, seed=config.seed)
        elif isinstance(step, PruneStep):
            r = stages.prune(current, data, step, seed=config.seed)
        elif isinstance(step, ClusterStep):
            r = stages.cluster(current, data, step, seed=config.seed)
        elif isinstance(step, QATStep):
            r = stages.qat(current, data, step, seed=config.seed)
        elif isinstance(step, ConvertStep):
            r = stages.convert(current, step, data=data, seed=config.seed)
        else:
            assert isinstance(step, ValidateStep)
            r = _validate_all(step, data, baseline, artifacts, config)
            gates_failed += r.metrics["failed"]
            crashed += r.metrics["crashed"]

        if r.model is not None and isinstance(step, QATStep):
            out = export_saved_model(r.model, folder / "saved_model")
            current, current_stage = r.model, f"{i:02d}_{step.stage}"
        elif r.model is not None:
            out = save_model(r.model, folder / "model.keras")
            current, current_stage = r.model, f"{i:02d}_{step.stage}"
        elif r.tflite is not None:
            out = write_bytes(folder / f"model_{step.quantization.value}.tflite", r.tflite)  # type: ignore[union-attr]
            artifacts.append(Artifact(out, step.quantization.value, r.tflite, current, current_stage, r.metrics))  # type: ignore[union-attr]
        else:
            out = folder / "metrics.json"
        write_json(folder / "metrics.json", r.metrics)
        if isinstance(step, ValidateStep):
            from edgeopt import report

            validated = list(r.metrics["artifacts"].values())
            report.write_junit(folder / "junit.xml", validated)
            report.write_markdown(folder / "report.md", validated)
        stage_records.append(_record(step.stage, out, root, r))
        _summary(step.stage, r.metrics)

    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "pipeline": config.name,
        "seed": config.seed,
        "versions": versions(),
        "data": data.summary(),
        "config": config.model_dump(mode="json"),
        "baseline": None,
        "stages": stage_records,
        "artifacts": [a.record(root) for a in artifacts],
        "seconds": time.time() - started,
        "passed": not gates_failed and not crashed,
        "failed_gates": gates_failed,
        "crashed": crashed,
    }
    if baseline is not None:
        manifest["baseline"] = {
            "path": str(baseline.path.relative_to(root)),
            "quantization": baseline.quantization,
            "bytes": len(baseline.tflite),
            "gzip_bytes": gzip_size(baseline.tflite),
            "sha256": sha256_bytes(baseline.tflite),
            "accuracy": baseline.validation["accuracy"] if baseline.validation else None,
            "latency": _latency_summary(baseline.validation),
        }
        for rec in manifest["artifacts"]:
            rec["gzip_ratio_vs_baseline"] = manifest["baseline"]["gzip_bytes"] / rec["gzip_bytes"]
            base_lat, lat = manifest["baseline"]["latency"].get("1"), rec["latency"].get("1")
            if base_lat and lat:
                rec["speedup_vs_baseline_p50_1thread"] = base_lat["p50_ms"] / lat["p50_ms"]
            if rec["accuracy"] is not None and manifest["baseline"]["accuracy"] is not None:
                rec["accuracy_drop_vs_baseline"] = manifest["baseline"]["accuracy"] - rec["accuracy"]
    write_json(manifest_path, manifest)
    report = RunReport(root, manifest)
    if crashed:
        raise RuntimeCrash("runtime crashed: " + "; ".join(crashed))
    if gates_failed:
        raise GateFailed(f"{len(gates_failed)} gate(s) failed: " + "; ".join(gates_failed))
    return report


def _validate_all(
    config: ValidateConfig,
    data: Dataset,
    baseline: Artifact | None,
    artifacts: list[Artifact],
    pipeline: PipelineConfig,
) -> stages.StageResult:
    """Validate the baseline (accuracy and latency) and every artifact converted so far against the
    step's device profiles; accuracy-drop gates compare against the baseline."""
    from edgeopt import calibrate
    from edgeopt.profiles import load_profile

    profiles = [load_profile(p, extra=pipeline.profiles) for p in config.profiles]
    calibration = calibrate.load() if profiles else None
    results: dict[str, Any] = {}
    failed: list[str] = []
    crashed: list[str] = []
    seconds = 0.0
    todo = ([baseline] if baseline is not None else []) + artifacts
    for art in todo:
        if art.validation is None:
            is_base = art is baseline
            r = stages.validate(
                art.tflite,
                data,
                ValidateConfig(max_samples=config.max_samples, batch_size=config.batch_size) if is_base else config,
                keras_model=art.keras_model,
                baseline_accuracy=baseline.validation["accuracy"] if baseline and baseline.validation else None,
                profiles=[] if is_base or not _profiles_apply(config, art) else profiles,
                calibration=calibration,
                name=art.path.name,
            )
            art.validation = r.metrics
            seconds += r.seconds
        results[art.path.name] = art.validation
        failed += [
            f"{art.path.name}: {g['profile']}/{g['gate']} ({g['detail']})"
            for g in art.validation["gates"]
            if g["status"] == "failed"
        ]
        crashed += [f"{art.path.name}: {c}" for c in art.validation["crashed"]]
    return stages.StageResult(
        "validate", metrics={"artifacts": results, "failed": failed, "crashed": crashed}, seconds=seconds
    )


def _profiles_apply(config: ValidateConfig, art: Artifact) -> bool:
    return config.profiles_for is None or art.quantization in {q.value for q in config.profiles_for}


def _record(name: str, out: Path, root: Path, r: stages.StageResult) -> dict[str, Any]:
    return {
        "name": name,
        "output": str(out.relative_to(root)),
        "sha256": sha256_tree(out),
        "seconds": round(r.seconds, 3),
        "metrics": r.metrics,
    }


def _summary(stage: str, m: dict[str, Any]) -> None:
    keys = {
        "distill": ["student_params", "teacher_accuracy", "accuracy"],
        "prune": ["sparsity", "accuracy_before", "accuracy"],
        "cluster": ["max_distinct_values", "sparsity", "accuracy"],
        "qat": ["preserve", "accuracy_before", "accuracy"],
        "convert": ["quantization", "bytes", "gzip_bytes"],
    }.get(stage, [])
    rows = [(k, m[k]) for k in keys if k in m]
    if stage == "validate":
        rows = [(name, f"accuracy {v['accuracy']:.4f}") for name, v in m["artifacts"].items()]
    ui.table(stage, rows)
