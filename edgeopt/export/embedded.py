"""What edgeopt writes inside the shipped ``.tflite`` bytes, as flatbuffer metadata entries.

- The Android asset carries the full ``edgeopt_manifest`` (``EmbeddedManifest``, several kB): an app
  or a reviewer can read where the model came from without the bundle.
- The MCU image carries only ``edgeopt_manifest_ref`` (``ManifestRef``, under 512 bytes with its
  flatbuffer entry): flash is scarce, and the full manifest is in the bundle's ``manifest.json``.

Both are canonical JSON (sorted keys, no spaces) without timings or validation results, so the same
config and seed give the same bytes. Interpreters ignore metadata entries.
"""

from __future__ import annotations

from typing import Any

from edgeopt import metadata
from edgeopt.artifacts import sha256_bytes
from edgeopt.manifest import (
    JSON,
    TEACHER,
    ArtifactRecord,
    EmbeddedManifest,
    EmbeddedModel,
    EmbeddedStage,
    ManifestRef,
    RunManifest,
)

# Keys left out of the embedded manifest: they change from run to run (timings) or are long training
# logs; the bundle's manifest.json keeps them.
VOLATILE = {"seconds", "history", "times_ms", "latency", "init_ms", "trained", "reused"}

# The pipeline name is the one free-length field of the reference; the config hash identifies the
# config anyway, so a long name is cut rather than letting the MCU image grow.
REF_NAME_CHARS = 64

NOTE = (
    "sha256_before_embedding is the hash of this model without its edgeopt_manifest metadata entry; "
    "host timings and validation results are in the bundle's manifest.json"
)


def strip(obj: Any) -> Any:
    """``obj`` without the run-to-run keys (``VOLATILE`` and anything ending in ``_ms``)."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in VOLATILE and not k.endswith("_ms")}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def config_sha256(config: JSON) -> str:
    """sha256 of the resolved pipeline config as canonical JSON."""
    return sha256_bytes(metadata.manifest_bytes(config))


def embedded_manifest(run: RunManifest, art: ArtifactRecord, content: bytes) -> EmbeddedManifest:
    """The ``edgeopt_manifest`` entry for ``art`` (whose converter bytes are ``content``)."""
    teacher = run.teacher
    return EmbeddedManifest(
        pipeline=run.pipeline,
        seed=run.seed,
        versions=run.versions,
        config=run.config,
        config_sha256=config_sha256(run.config),
        source_model={"path": teacher.output, "content_sha256": teacher.content_sha256},
        data=run.data,
        labels=run.data.class_names,
        model=EmbeddedModel(
            quantization=art.quantization,
            source_stage=art.source_stage,
            sha256_before_embedding=sha256_bytes(content),
            bytes_before_embedding=len(content),
            accuracy=art.accuracy,
            inputs=art.inputs,
            outputs=art.outputs,
            ops=art.ops,
        ),
        # The teacher's metrics exist only in the run that trained it, so they would make the bytes
        # differ between a first and a later run; its content hash identifies it.
        stages=[
            EmbeddedStage(name=s.name, metrics=strip(s.metrics))
            for s in run.stages
            if s.name != TEACHER and not s.is_validation
        ],
        note=NOTE,
    )


def manifest_ref(run: RunManifest, content: bytes) -> ManifestRef:
    """The ``edgeopt_manifest_ref`` entry for the MCU image made from the converter bytes ``content``."""
    return ManifestRef(
        pipeline=run.pipeline[:REF_NAME_CHARS],
        edgeopt=run.versions.edgeopt,
        config_sha256=config_sha256(run.config),
        sha256_before_embedding=sha256_bytes(content),
    )


def with_manifest(run: RunManifest, art: ArtifactRecord, content: bytes) -> bytes:
    """The Android asset: ``content`` with the full embedded manifest."""
    payload = metadata.manifest_bytes(embedded_manifest(run, art, content).to_json())
    return metadata.embed(content, metadata.MANIFEST_ENTRY, payload)


def with_manifest_ref(run: RunManifest, content: bytes, into: bytes | None = None, *, shared: bool = False) -> bytes:
    """The MCU image: ``content`` (the converter's bytes, which the reference names) with only the manifest
    reference; ``into``: the bytes to embed it in instead (``content`` after the flatbuffer diet);
    ``shared``: written as the diet writes (equal vectors once), so that embedding keeps what it saved."""
    payload = metadata.manifest_bytes(manifest_ref(run, content).to_json())
    return metadata.embed(content if into is None else into, metadata.MANIFEST_REF_ENTRY, payload, shared=shared)
