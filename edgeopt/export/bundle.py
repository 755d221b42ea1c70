"""``edgeopt export``: run a pipeline, then write its release bundle for Android and microcontrollers.

The bundle is written into a temporary folder next to the target and renamed into place at the end
(the old bundle moved aside, then removed). When a gate failed or a runtime crashed it goes to
``<target>.failed`` instead, with ``"status": "failed"``, and the previous good bundle stays where it
is. ``manifest.json`` is written last: a folder without it is not a complete bundle.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt import htmlreport, interrupt, metadata, pipeline, report, tflite_diet
from edgeopt.artifacts import gzip_size, sha256_bytes, write_bytes, write_json
from edgeopt.errors import EdgeoptError, GateFailed, RuntimeCrash
from edgeopt.export import android, embedded, mcu
from edgeopt.firmware import example
from edgeopt.manifest import (
    JSON,
    ArenaRecord,
    ArtifactRecord,
    BundleManifest,
    BundleStatus,
    DietRecord,
    FileRecord,
    FirmwareRecord,
    ModelRecord,
    RunManifest,
    SourceModel,
    TensorRecord,
    ValidationSummary,
)
from edgeopt.tflite import inspect

log = logging.getLogger(__name__)

HASHES = {
    "models[].sha256": "sha256 of the shipped model bytes: the Android .tflite file (with the embedded edgeopt "
    "manifest), or the MCU C array's content (with only the edgeopt_manifest_ref entry)",
    "models[].sha256_before_embedding": "sha256 of the .tflite as the converter wrote it (build/ artifact); "
    "the embedded manifest records this one, as a file cannot contain its own hash",
    "files[].sha256": "sha256 of each bundle file as written (manifest.json itself excluded)",
    "config_sha256": "sha256 of the resolved pipeline config as canonical JSON (sorted keys, no spaces)",
    "source_model.sha256": "sha256 of the teacher file (a .keras file includes its save time)",
    "source_model.content_sha256": "hash of the teacher's layer classes and weights (stable across saves)",
}


@dataclass
class ExportResult:
    """Where the bundle went (``dist/<name>`` or ``dist/<name>.failed``) and its manifest."""

    bundle: Path
    manifest: BundleManifest

    @property
    def passed(self) -> bool:
        return self.manifest.passed


def export(
    config: Any,
    out: str | Path | None = None,
    *,
    build_dir: str | Path | None = None,
    force: bool = False,
    cache_dir: str | Path | None = None,
    on_stage: Callable[[Any], None] | None = None,
    strict: bool = True,
    diet: bool = True,
) -> ExportResult:
    """Run ``config`` (a ``PipelineConfig``; stages in ``build_dir``, default ``build/<name>``) and write
    the bundle to ``out`` (default ``dist/<name>``). Raises GateFailed / RuntimeCrash after writing the
    failed bundle to ``<out>.failed`` when a gate failed or a runtime crashed; any other error leaves
    no bundle. ``force``, ``cache_dir``, ``on_stage`` and ``strict`` go to ``edgeopt.pipeline.run``:
    a release is strict by default, so a gate that could not be evaluated fails it too. ``diet``: the MCU
    image through the flatbuffer diet (on by default; ``edgeopt.tflite_diet``)."""

    target = Path(out) if out is not None else Path("dist") / config.name
    build_root = Path(build_dir) if build_dir is not None else Path("build") / config.name
    error: EdgeoptError | None = None
    try:
        report = pipeline.run(config, build_root, force=force, cache_dir=cache_dir, on_stage=on_stage, strict=strict)
        run = report.manifest
    except (GateFailed, RuntimeCrash) as e:
        mpath = build_root / "manifest.json"
        if not mpath.is_file():
            raise
        run, error = RunManifest.model_validate_json(mpath.read_text()), e
    interrupt.check()  # nothing is written after a Ctrl-C
    status = BundleStatus.passed if error is None else BundleStatus.failed
    final = target if error is None else target.with_name(target.name + ".failed")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=final.parent))
    try:
        manifest = write_bundle(tmp, run, build_root, status, diet=diet)
        interrupt.check()  # a Ctrl-C while the bundle was written: the old one stays
        _swap(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("bundle written to %s (%s)", final, status.value)
    if error is None:
        stale = target.with_name(target.name + ".failed")
        if stale.is_dir():  # an older failure is no longer news
            shutil.rmtree(stale)
    else:
        raise type(error)(f"{error}; the bundle for inspection is in {final}")
    return ExportResult(final, manifest)


def _swap(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` into ``final``; an existing ``final`` is moved aside first and removed after."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bundle(
    root: Path, run: RunManifest, build_root: Path, status: BundleStatus, *, diet: bool = True
) -> BundleManifest:
    """Write every bundle file into ``root`` (an empty folder), ``manifest.json`` last. ``diet``: the MCU image
    goes through the flatbuffer diet (names, signatures, unused metadata and buffers cut; vectors shared),
    which leaves LiteRT's and TFLite Micro's outputs as they are."""

    name = run.pipeline
    validations = run.validations()
    android_art, mcu_art = run.shipped()
    models: list[ModelRecord] = []
    if android_art is not None:
        content = (build_root / android_art.path).read_bytes()
        asset = embedded.with_manifest(run, android_art, content)
        info = inspect(asset)
        path = android.write_android(root, name, asset, info, android_art.quantization, run.data.class_names)
        models.append(_model_record(path, "android", asset, android_art, info, validations, metadata.MANIFEST_ENTRY))
    if mcu_art is not None:
        content = (build_root / mcu_art.path).read_bytes()
        slim, diet_rec = content, None
        if diet:  # what no runtime reads, cut; repeated vectors stored once (edgeopt.tflite_diet)
            slim, cut = tflite_diet.diet(content)
            diet_rec = DietRecord(**cut.to_dict(), sha256_after=sha256_bytes(slim))
        shared = diet_rec is not None and "shared" in diet_rec.cuts  # written as the diet wrote it
        image = embedded.with_manifest_ref(run, content, into=slim, shared=shared)
        info = inspect(image)
        arena = mcu.arena(validations.get(mcu_art.name), content)
        path = mcu.write_mcu(root, name, image, info, arena, run, diet_rec.saved if diet_rec else None)
        example.write_bundle_example(root, name, image, info, run.data.name, run.data.seed)
        entry = metadata.MANIFEST_REF_ENTRY
        rec = _model_record(path, "mcu", image, mcu_art, info, validations, entry, arena)
        rec.diet = diet_rec
        models.append(rec)
    else:
        mcu.write_no_int8(root)

    report.write_junit(root / "junit.xml", list(validations.values()))
    teacher = run.teacher
    manifest = BundleManifest(
        status=status,
        pipeline=run.pipeline,
        seed=run.seed,
        versions=run.versions,
        config=run.config,
        config_sha256=embedded.config_sha256(run.config),
        source_model=SourceModel(path=teacher.output, sha256=teacher.sha256, content_sha256=teacher.content_sha256),
        data=run.data,
        hashes=HASHES,
        models=models,
        baseline=run.baseline,
        artifacts=run.artifacts,
        stages=run.stages,
        reused=run.reused,
        validation=ValidationSummary(
            passed=run.passed,
            strict=run.strict,
            failed_gates=run.failed_gates,
            not_evaluated=run.not_evaluated,
            crashed=run.crashed,
            per_profile={m.path: m.validation for m in models},
        ),
        build_dir=str(build_root),
        pipeline_seconds=run.seconds,
        host=run.host,
    )
    write_bytes(root / "model_card.md", htmlreport.model_card(manifest).encode())
    write_bytes(root / "report.html", htmlreport.html_report(manifest, build_root).encode())
    manifest.files = [
        FileRecord(path=str(p.relative_to(root)), sha256=sha256_bytes(p.read_bytes()), bytes=p.stat().st_size)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]
    write_json(root / "manifest.json", manifest.to_json())  # last: a bundle without it is not complete
    return manifest


def _model_record(
    path: str,
    role: str,
    shipped: bytes,
    art: ArtifactRecord,
    info: dict[str, Any],
    validations: dict[str, JSON],
    entry: str,
    arena: ArenaRecord | None = None,
) -> ModelRecord:
    v = validations.get(art.name) or {}
    per_profile: dict[str, list[JSON]] = {}
    for g in v.get("gates", []):
        per_profile.setdefault(g["profile"], []).append(g)
    return ModelRecord(
        path=path,
        role=role,
        build_artifact=art.path,
        quantization=art.quantization,
        sha256=sha256_bytes(shipped),
        sha256_before_embedding=art.sha256,
        bytes=len(shipped),
        gzip_bytes=gzip_size(shipped),
        bytes_before_embedding=art.bytes,
        accuracy=art.accuracy,
        inputs=[TensorRecord.model_validate(t) for t in info["inputs"]],
        outputs=[TensorRecord.model_validate(t) for t in info["outputs"]],
        ops=info["ops"],
        op_counts=info["op_counts"],
        custom_ops=info["custom_ops"],
        macs=info["macs"],
        params=info["params"],
        validation=per_profile,
        arena=arena,
        metadata_entry=entry,
        firmware={k: FirmwareRecord.model_validate(r) for k, r in (v.get("firmware") or {}).items()} or None,
    )
