"""Run a pipeline file: teacher -> stages -> .tflite artifacts -> validation -> manifest.json."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

from edgeopt import stages, ui
from edgeopt.artifacts import (
    SavedModelDir,
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
        return load_model(path, unsafe=config.teacher.unsafe), {"trained": False}
    if config.teacher.train is None:
        raise BadInput(f"teacher {path} does not exist and the pipeline has no teacher.train section to make it")
    tc: TrainConfig = config.teacher.train
    ui.info(f"teacher {path} not found: training zoo model {tc.zoo} for {tc.epochs} epochs")
    result = stages.train(data, tc, seed=config.seed)
    save_model(result.model, path)
    write_json(path.with_suffix(path.suffix + ".json"), {**result.metrics, "seconds": round(result.seconds, 1)})
    return result.model, {"trained": True, **result.metrics, "seconds": result.seconds}


def model_hash(model: Any) -> str:
    """Content hash of a Keras model: layer classes and weights (dtype, shape, bytes).

    A ``.keras`` file holds its save time, so the file's sha256 changes on every save; this does not."""
    import numpy as np

    h = hashlib.sha256()
    h.update(json.dumps([type(layer).__name__ for layer in model.layers]).encode())
    for w in model.get_weights():
        a = np.ascontiguousarray(w)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def data_hash(data: Dataset) -> str:
    """Content hash of a dataset's splits and class names (what every stage trains and evaluates on)."""
    import numpy as np

    h = hashlib.sha256(json.dumps(data.class_names).encode())
    for a in (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


CACHE_FILE = "cache.json"


def _cache_key(stage: str, config: Any, inputs: list[str], context: dict[str, Any]) -> str:
    cfg = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
    blob = {"stage": stage, "config": cfg, "inputs": inputs, **context}
    return sha256_bytes(json.dumps(blob, sort_keys=True, default=str).encode())


def _cache_hit(folder: Path, key: str) -> dict[str, Any] | None:
    """The sidecar of a stage folder whose outputs were made from exactly these inputs, else None."""
    try:
        side = json.loads((folder / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if side.get("key") != key or not (folder / side.get("output", "")).exists():
        return None
    if not (folder / "metrics.json").is_file():
        return None
    return side


def _fresh(folder: Path) -> None:
    """Empty a stage folder before its stage runs: no sidecar may describe outputs that are being rewritten."""
    if folder.exists():
        shutil.rmtree(folder)


def _write_sidecar(folder: Path, key: str, output: Path, content_sha256: str, seconds: float) -> None:
    # Written last: a stage interrupted before this point is never taken from the cache.
    write_json(
        folder / CACHE_FILE,
        {"key": key, "output": output.name, "content_sha256": content_sha256, "seconds": round(seconds, 3)},
    )


def run(config: PipelineConfig, out_dir: str | Path | None = None, *, force: bool = False) -> RunReport:
    """Run every step of ``config``; write each stage's output under ``out_dir`` (default
    ``build/<name>``) and finish with ``manifest.json``. Raises GateFailed after writing the manifest
    when a validation gate failed.

    Stage outputs are cached in their folders, keyed by the content hash of their inputs (model
    weights or .tflite bytes), the stage config, the seed, the data and the edgeopt version: a stage
    whose key matches is loaded instead of run and recorded with ``reused: true``. ``force`` runs every
    stage again."""
    root = Path(out_dir) if out_dir is not None else Path("build") / config.name
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    manifest_path.unlink(missing_ok=True)  # no stale manifest may outlive a failed run
    expected = {f"{i:02d}_{s.stage}" for i, s in enumerate(config.steps, start=1)}
    if config.baseline is not None:
        expected.add("00_baseline")
    for old in root.glob("[0-9][0-9]_*"):
        if force or old.name not in expected:
            shutil.rmtree(old) if old.is_dir() else old.unlink()

    started = time.time()
    data = load_dataset(config.data)
    teacher, teacher_info = ensure_teacher(config, data)
    data.check_fits(teacher, what="teacher")
    context = {"seed": config.seed, "data": data_hash(data), "edgeopt": versions()["edgeopt"]}
    teacher_hash = model_hash(teacher)
    stage_records: list[dict[str, Any]] = [
        {
            "name": "teacher",
            "output": str(config.teacher.path),
            "sha256": sha256_file(config.teacher.path),
            "content_sha256": teacher_hash,
            "seconds": teacher_info.pop("seconds", 0.0),
            "reused": not teacher_info["trained"],
            "metrics": teacher_info,
        }
    ]
    artifacts: list[Artifact] = []
    baseline: Artifact | None = None
    if config.baseline is not None:
        folder = root / "00_baseline"
        path = folder / f"teacher_{config.baseline.quantization.value}.tflite"
        key = _cache_key("baseline", config.baseline, [teacher_hash], context)
        side = _cache_hit(folder, key)
        if side is not None:
            r = _load_cached("convert", folder, side)
            ui.info(f"  reused {folder.name} (teacher weights and config unchanged)")
        else:
            _fresh(folder)
            r = stages.convert(teacher, config.baseline, data=data, seed=config.seed)
            write_bytes(path, r.tflite)
            write_json(folder / "metrics.json", r.metrics)
            _write_sidecar(folder, key, path, sha256_bytes(r.tflite), r.seconds)
        baseline = Artifact(path, config.baseline.quantization.value, r.tflite, teacher, "baseline", r.metrics)
        stage_records.append(_record("baseline", path, root, r, reused=side is not None))

    current, current_stage, current_hash = teacher, "teacher", teacher_hash
    gates_failed: list[str] = []
    crashed: list[str] = []
    reused_names: list[str] = []
    for i, step in enumerate(config.steps, start=1):
        folder = root / f"{i:02d}_{step.stage}"
        ui.info(f"[bold]step {i}/{len(config.steps)}: {step.stage}[/]")
        if isinstance(step, ValidateStep):
            inputs = [sha256_bytes(a.tflite) for a in ([baseline] if baseline else []) + artifacts]
            inputs += [model_hash(a.keras_model) for a in artifacts if hasattr(a.keras_model, "layers")]
            inputs.append(json.dumps(_validate_context(step, config), sort_keys=True, default=str))
        else:
            inputs = [current_hash]
        key = _cache_key(step.stage, step, inputs, context)
        side = None if force else _cache_hit(folder, key)
        if side is not None:
            r = _load_cached(step.stage, folder, side)
            reused_names.append(folder.name)
            ui.info(f"  reused {folder.name} (inputs, config, seed and data unchanged)")
            if isinstance(step, ValidateStep):
                for a in ([baseline] if baseline else []) + artifacts:
                    a.validation = r.metrics["artifacts"].get(a.path.name)
                gates_failed += r.metrics["failed"]
        else:
            _fresh(folder)
            if isinstance(step, DistillStep):
                r = stages.distill(current, data, step, seed=config.seed, unsafe=config.teacher.unsafe)
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
            # tfmot's quantize wrappers do not survive a .keras round trip: the stage output is a
            # SavedModel folder, and the next stages read that folder whether the stage ran or was reused.
            out = folder / "saved_model"
            if side is None:
                export_saved_model(r.model, out)
            current_hash = side["content_sha256"] if side is not None else model_hash(r.model)
            current, current_stage, content = SavedModelDir(out), f"{i:02d}_{step.stage}", current_hash
        elif r.model is not None:
            out = folder / "model.keras"
            if side is None:
                save_model(r.model, out)
            current, current_stage = r.model, f"{i:02d}_{step.stage}"
            current_hash = side["content_sha256"] if side is not None else model_hash(r.model)
            content = current_hash
        elif r.tflite is not None:
            out = folder / f"model_{step.quantization.value}.tflite"  # type: ignore[union-attr]
            if side is None:
                write_bytes(out, r.tflite)
            artifacts.append(Artifact(out, step.quantization.value, r.tflite, current, current_stage, r.metrics))  # type: ignore[union-attr]
            content = sha256_bytes(r.tflite)
        else:
            out = folder / "metrics.json"
            content = ""
        if side is None:
            write_json(folder / "metrics.json", r.metrics)
        if isinstance(step, ValidateStep):
            from edgeopt import report

            validated = list(r.metrics["artifacts"].values())
            report.write_junit(folder / "junit.xml", validated)
            report.write_markdown(folder / "report.md", validated)
        if side is None and not (isinstance(step, ValidateStep) and r.metrics["crashed"]):
            _write_sidecar(folder, key, out, content or sha256_file(out), r.seconds)  # a crash is never cached
        stage_records.append(_record(step.stage, out, root, r, reused=side is not None))
        _summary(step.stage, r.metrics)

    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "pipeline": config.name,
        "seed": config.seed,
        "versions": versions(),
        "data": {**data.summary(), "class_names": list(data.class_names)},
        "config": config.model_dump(mode="json"),
        "baseline": None,
        "stages": stage_records,
        "artifacts": [a.record(root) for a in artifacts],
        "seconds": time.time() - started,
        "reused": reused_names,
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


def _record(name: str, out: Path, root: Path, r: stages.StageResult, *, reused: bool = False) -> dict[str, Any]:
    """``seconds`` is how long the stage took when it ran (in an earlier run when ``reused``)."""
    return {
        "name": name,
        "output": str(out.relative_to(root)),
        "sha256": sha256_tree(out),
        "seconds": round(r.seconds, 3),
        "reused": reused,
        "metrics": r.metrics,
    }


def _load_cached(stage: str, folder: Path, side: dict[str, Any]) -> stages.StageResult:
    metrics = json.loads((folder / "metrics.json").read_text())
    out = folder / side["output"]
    if out.suffix == ".keras":
        return stages.StageResult(stage, metrics, model=load_model(out), seconds=side["seconds"])
    if out.suffix == ".tflite":
        return stages.StageResult(stage, metrics, tflite=out.read_bytes(), seconds=side["seconds"])
    if out.is_dir():  # the qat stage's SavedModel folder
        return stages.StageResult(stage, metrics, model=SavedModelDir(out), seconds=side["seconds"])
    return stages.StageResult(stage, metrics, seconds=side["seconds"])


def _validate_context(step: ValidateStep, pipeline: PipelineConfig) -> dict[str, Any]:
    """What a validation depends on besides the models: the resolved profiles and the latency calibration."""
    from edgeopt import calibrate
    from edgeopt.profiles import load_profile

    profiles = [load_profile(p, extra=pipeline.profiles).model_dump(mode="json") for p in step.profiles]
    return {"profiles": profiles, "calibration": calibrate.load() if profiles else None}


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
