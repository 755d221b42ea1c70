"""The typed manifests read the JSON edgeopt wrote before they existed and write it back unchanged.

The dicts below have the shape of a real ``build/<name>/manifest.json`` (made by the tiny digits
pipeline, ``tests/data/digits.yaml``); ``tests/e2e/test_export.py`` checks the same on the manifests
of a real run.
"""

from __future__ import annotations

import copy
import json

import pytest
from pydantic import ValidationError

from edgeopt.manifest import (
    ArtifactRecord,
    BundleManifest,
    ManifestRef,
    RunManifest,
    StageRecord,
    Versions,
)

VERSIONS = {
    "edgeopt": "0.1.0",
    "tensorflow": "2.21.0",
    "tf-keras": "2.21.0",
    "tensorflow-model-optimization": "0.8.1",
    "ai-edge-litert": "2.3.0",
}
DATA = {
    "name": "digits",
    "source": "sklearn.datasets.load_digits",
    "seed": 7,
    "input_shape": [8, 8, 1],
    "classes": 10,
    "train": 1293,
    "val": 144,
    "test": 360,
    "class_names": [str(i) for i in range(10)],
}
TENSOR_IN = {
    "name": "serving_default_input:0",
    "dtype": "int8",
    "shape": [1, 8, 8, 1],
    "scale": 0.0039,
    "zero_point": -128,
}
TENSOR_OUT = {
    "name": "StatefulPartitionedCall:0",
    "dtype": "int8",
    "shape": [1, 10],
    "scale": 0.00390625,
    "zero_point": -128,
}
LATENCY = {"1": {"threads": 1, "runs": 2000, "p50_ms": 0.0011, "p90_ms": 0.0013, "method": "measured on this host"}}
GATE = {
    "profile": "my-board",
    "gate": "arena_bytes",
    "status": "passed",
    "measured": 2816,
    "budget": 65536,
    "unit": "bytes",
    "detail": "2,816 bytes (budget <= 65,536 bytes)",
}


def run_manifest() -> dict:
    validation = {"accuracy": 0.93, "gates": [GATE], "crashed": [], "latency": LATENCY, "tflm": {"arena_bytes": 2816}}
    return {
        "schema": "edgeopt.manifest/1",
        "pipeline": "digits_small",
        "seed": 7,
        "versions": VERSIONS,
        "data": DATA,
        "config": {"name": "digits_small", "seed": 7, "steps": [{"stage": "convert", "quantization": "int8"}]},
        "baseline": {
            "path": "00_baseline/teacher_float32.tflite",
            "quantization": "float32",
            "bytes": 20860,
            "gzip_bytes": 18125,
            "sha256": "4c" * 32,
            "accuracy": 0.9388888888888889,
            "latency": LATENCY,
        },
        "stages": [
            {
                "name": "teacher",
                "output": "build/test-models/digits_teacher.keras",
                "sha256": "e6" * 32,
                "content_sha256": "3d" * 32,
                "seconds": 0.0,
                "reused": True,
                "metrics": {"trained": False},
            },
            {
                "name": "convert",
                "output": "01_convert/model_int8.tflite",
                "sha256": "19" * 32,
                "seconds": 0.412,
                "reused": False,
                "metrics": {"quantization": "int8", "bytes": 5016, "op_counts": {"CONV_2D": 1}},
            },
            {
                "name": "validate",
                "output": "02_validate/metrics.json",
                "sha256": "aa" * 32,
                "seconds": 3.5,
                "reused": False,
                "metrics": {"artifacts": {"model_int8.tflite": validation}, "failed": [], "crashed": []},
            },
        ],
        "artifacts": [
            {
                "path": "01_convert/model_int8.tflite",
                "quantization": "int8",
                "sha256": "19" * 32,
                "bytes": 5016,
                "gzip_bytes": 2067,
                "accuracy": 0.6861111111111111,
                "latency": LATENCY,
                "gates": [GATE],
                "source_stage": "teacher",
                "inputs": [TENSOR_IN],
                "outputs": [TENSOR_OUT],
                "ops": {"CONV_2D": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1},
                "gzip_ratio_vs_baseline": 8.769,
                "speedup_vs_baseline_p50_1thread": 1.12,
                "accuracy_drop_vs_baseline": 0.2527777777777778,
            },
        ],
        "seconds": 52.9,
        "reused": [],
        "passed": True,
        "strict": False,
        "failed_gates": [],
        "not_evaluated": [],
        "crashed": [],
        "host": {
            "cpu": "AMD EPYC",
            "machine": "x86_64",
            "isa": ["avx2", "avx512_vnni"],
            "cpus": 2,
            "vnni": True,
            "fingerprint": "0123456789abcdef",
        },
    }


def _text(d: dict) -> str:
    return json.dumps(d, indent=2)


def test_run_manifest_round_trips_to_the_same_json_text():
    old = run_manifest()
    m = RunManifest.model_validate(old)
    assert _text(m.model_dump(mode="json")) == _text(old)  # same keys, values and order
    assert RunManifest.model_validate_json(_text(old)).to_json() == old
    assert m.versions.tf_keras == "2.21.0" and m.teacher.content_sha256 == "3d" * 32
    assert m.artifacts[0].inputs[0].zero_point == -128 and m.artifacts[0].name == "model_int8.tflite"
    assert m.validations()["model_int8.tflite"]["tflm"] == {"arena_bytes": 2816}  # stays a plain dict
    assert m.stage_accuracy("teacher") is None and m.baseline is not None and m.baseline.bytes == 20860
    assert m.host is not None and m.host.vnni is True and m.strict is False


def test_keys_present_only_sometimes_stay_absent():
    """``content_sha256`` (teacher only) and the ``*_vs_baseline`` figures (runs with a baseline) are
    left out when absent, not written as null, as are the keys manifests before strict runs lacked; a
    run without a baseline writes ``baseline: null``."""
    old = run_manifest()
    old["baseline"] = None
    for k in ("strict", "not_evaluated", "host"):
        del old[k]
    for k in ("gzip_ratio_vs_baseline", "speedup_vs_baseline_p50_1thread", "accuracy_drop_vs_baseline"):
        del old["artifacts"][0][k]
    out = RunManifest.model_validate(old).to_json()
    assert out == old and "baseline" in out and out["baseline"] is None
    assert "content_sha256" not in out["stages"][1] and "gzip_ratio_vs_baseline" not in out["artifacts"][0]
    # An artifact whose accuracy was never measured keeps accuracy: null (the key is always there).
    old["artifacts"][0]["accuracy"] = None
    assert RunManifest.model_validate(old).to_json()["artifacts"][0]["accuracy"] is None


def test_unknown_keys_are_kept_in_place():
    """A manifest from a newer edgeopt reads, and writes its extra keys back."""
    old = run_manifest()
    old["cache_dir"] = "build/.cache"
    old["stages"][1]["attempts"] = 2
    assert RunManifest.model_validate(old).to_json() == old


def test_wrong_or_missing_fields_fail_with_the_field_named():
    bad = run_manifest()
    bad["stages"][0]["reused"] = "sometimes"
    with pytest.raises(ValidationError, match=r"stages\.0\.reused"):
        RunManifest.model_validate(bad)
    missing = copy.deepcopy(run_manifest())
    del missing["versions"]["tf-keras"]
    with pytest.raises(ValidationError, match="tf-keras"):
        RunManifest.model_validate(missing)


def test_records_built_in_code_write_the_json_names():
    v = Versions(edgeopt="0.1.0", tensorflow="2.21.0", tf_keras="2.21.0", tfmot="0.8.1", ai_edge_litert="2.3.0")
    assert v.to_json() == VERSIONS
    s = StageRecord(name="prune", output="02_prune/model.keras", sha256="ab" * 32, seconds=1.5, reused=False)
    assert list(s.to_json()) == ["name", "output", "sha256", "seconds", "reused", "metrics"]
    a = ArtifactRecord.model_validate({**run_manifest()["artifacts"][0], "accuracy_drop_vs_baseline": None})
    assert "accuracy_drop_vs_baseline" not in a.to_json()
    ref = ManifestRef(pipeline="p", edgeopt="0.1.0", config_sha256="c" * 64, sha256_before_embedding="d" * 64)
    assert ref.to_json()["schema"] == "edgeopt.manifest-ref/1" and ref.to_json()["bundle_schema"] == "edgeopt.bundle/1"


def test_bundle_manifest_round_trips_and_reads_its_models():
    run = run_manifest()
    model = {
        "path": "mcu/digits_small_model.c",
        "role": "mcu",
        "build_artifact": "01_convert/model_int8.tflite",
        "quantization": "int8",
        "sha256": "42" * 32,
        "sha256_before_embedding": "19" * 32,
        "bytes": 5424,
        "gzip_bytes": 2332,
        "bytes_before_embedding": 5016,
        "accuracy": 0.6861111111111111,
        "inputs": [TENSOR_IN],
        "outputs": [TENSOR_OUT],
        "ops": ["CONV_2D", "FULLY_CONNECTED", "SOFTMAX"],
        "op_counts": {"CONV_2D": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1},
        "custom_ops": [],
        "macs": 3488,
        "params": 1252,
        "validation": {"my-board": [GATE]},
        "arena": {"bytes": 2816, "method": "validation: binary search"},
        "metadata_entry": "edgeopt_manifest_ref",
    }
    old = {
        "schema": "edgeopt.bundle/1",
        "status": "failed",
        "pipeline": run["pipeline"],
        "seed": 7,
        "versions": VERSIONS,
        "config": run["config"],
        "config_sha256": "dc" * 32,
        "source_model": {"path": "build/test-models/digits_teacher.keras", "sha256": "e6" * 32, "content_sha256": None},
        "data": DATA,
        "hashes": {"models[].sha256": "sha256 of the shipped model bytes"},
        "models": [model],
        "baseline": run["baseline"],
        "artifacts": run["artifacts"],
        "stages": run["stages"],
        "reused": [],
        "validation": {
            "passed": False,
            "failed_gates": ["model_int8.tflite: -/min_accuracy (...)"],
            "crashed": [],
            "per_profile": {"mcu/digits_small_model.c": {"my-board": [GATE]}},
        },
        "build_dir": "build/digits_small",
        "pipeline_seconds": 52.9,
        "files": [{"path": "junit.xml", "sha256": "ee" * 32, "bytes": 1024}],
    }
    m = BundleManifest.model_validate(old)
    assert _text(m.to_json()) == _text(old)
    assert m.passed is False and m.model("mcu").arena.bytes == 2816 and m.model("android") is None
    assert m.source_model.content_sha256 is None and "content_sha256" in m.to_json()["source_model"]
    with pytest.raises(ValidationError, match="status"):
        BundleManifest.model_validate({**old, "status": "maybe"})
