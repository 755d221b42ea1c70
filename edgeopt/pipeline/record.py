"""The run manifest's records, built as typed records (``edgeopt.manifest``) as the run goes: the teacher,
each step, each .tflite and the baseline, then the manifest itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt import hostinfo
from edgeopt.artifacts import gzip_size, sha256_bytes, sha256_file, sha256_tree
from edgeopt.manifest import (
    TEACHER,
    ArtifactRecord,
    BaselineRecord,
    DataInfo,
    GuardVerdict,
    RunManifest,
    StageRecord,
    TensorRecord,
    Versions,
)
from edgeopt.pipeline.steps import Artifact, RunState, Step


def teacher_record(config: Any, content_hash: str, info: dict[str, Any]) -> StageRecord:
    """The model the run starts from; ``reused`` unless the run trained it."""
    path = config.teacher.path
    return StageRecord(
        name=TEACHER,
        output=str(path),
        sha256=sha256_file(path),
        content_sha256=content_hash,
        seconds=info.pop("seconds", 0.0),
        reused=not info["trained"],
        metrics=info,
    )


def stage_record(
    step: Step, result: Any, info: dict[str, Any], folder: Path, root: Path, reused: bool, guard: GuardVerdict | None
) -> StageRecord:
    """One step. ``seconds`` is how long it took when it ran (in an earlier run if reused)."""
    out = folder / info["output"]
    return StageRecord(
        name=step.name,
        output=str(out.relative_to(root)),
        sha256=sha256_tree(out),
        seconds=round(float(info["seconds"]), 3),
        reused=reused,
        metrics=result.metrics,
        val_accuracy=info.get("val_accuracy") if step.makes_model else None,
        guard=guard,
    )


def latency_summary(v: dict[str, Any] | None) -> dict[str, Any]:
    """Host latency per thread count without the raw times."""
    if not v:
        return {}
    return {th: {k: x for k, x in lat.items() if k != "times_ms"} for th, lat in v.get("latency", {}).items()}


def artifact_record(art: Artifact, root: Path) -> ArtifactRecord:
    """One .tflite a convert step made, with what validation measured."""
    v = art.validation
    return ArtifactRecord(
        path=str(art.path.relative_to(root)),
        quantization=art.quantization,
        sha256=sha256_bytes(art.tflite),
        bytes=len(art.tflite),
        gzip_bytes=gzip_size(art.tflite),
        accuracy=v["accuracy"] if v else None,
        latency=latency_summary(v),
        gates=v["gates"] if v else [],
        source_stage=art.source_stage,
        inputs=[TensorRecord.model_validate(t) for t in art.metrics["inputs"]],
        outputs=[TensorRecord.model_validate(t) for t in art.metrics["outputs"]],
        ops=art.metrics["op_counts"],
        firmware=(v or {}).get("firmware") or None,  # profile -> FirmwareRecord (profiles with firmware:)
    )


def baseline_record(base: Artifact, root: Path) -> BaselineRecord:
    return BaselineRecord(
        path=str(base.path.relative_to(root)),
        quantization=base.quantization,
        bytes=len(base.tflite),
        gzip_bytes=gzip_size(base.tflite),
        sha256=sha256_bytes(base.tflite),
        accuracy=base.validation["accuracy"] if base.validation else None,
        latency=latency_summary(base.validation),
    )


def relate(art: ArtifactRecord, base: BaselineRecord) -> None:
    """The figures of an artifact relative to the baseline: gzip ratio, 1-thread speed-up, accuracy drop."""
    art.gzip_ratio_vs_baseline = base.gzip_bytes / art.gzip_bytes
    base_lat, lat = base.latency.get("1"), art.latency.get("1")
    if base_lat and lat:
        art.speedup_vs_baseline_p50_1thread = base_lat["p50_ms"] / lat["p50_ms"]
    if art.accuracy is not None and base.accuracy is not None:
        art.accuracy_drop_vs_baseline = base.accuracy - art.accuracy


def run_manifest(
    state: RunState,
    records: list[StageRecord],
    reused: list[str],
    versions: dict[str, str],
    seconds: float,
    strict: bool,
) -> RunManifest:
    config, root = state.config, state.root
    artifacts = [artifact_record(a, root) for a in state.artifacts]
    baseline = baseline_record(state.baseline, root) if state.baseline is not None else None
    for art in artifacts if baseline is not None else []:
        relate(art, baseline)
    return RunManifest(
        pipeline=config.name,
        seed=config.seed,
        versions=Versions.model_validate(versions),
        data=DataInfo.model_validate({**state.data.summary(), "class_names": list(state.data.class_names)}),
        config=config.model_dump(mode="json"),
        baseline=baseline,
        stages=records,
        artifacts=artifacts,
        seconds=seconds,
        reused=reused,
        passed=not state.failed_gates and not state.crashed and not (strict and state.not_evaluated),
        strict=strict,
        failed_gates=state.failed_gates,
        not_evaluated=state.not_evaluated,
        crashed=state.crashed,
        host=hostinfo.host(),
    )
