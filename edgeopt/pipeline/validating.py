"""One validation path: a .tflite validated on a split of the data against the device profiles, cached
by everything the result depends on. The pipeline's validate steps, a search's trials (the validation
split) and the search's measurement of the models it chose (the test split) all go through
``validate_artifact``.
"""

from __future__ import annotations

import json
from typing import Any

from edgeopt.arm import guest
from edgeopt.artifacts import sha256_bytes, write_json
from edgeopt.config import DeviceProfile, ValidateConfig
from edgeopt.data import Dataset
from edgeopt.pipeline.cache import StageCache, cache_key
from edgeopt.pipeline.hashing import data_hash, versions

RESULT_FILE = "validation.json"


def validate_artifact(
    tflite: bytes,
    data: Dataset,
    config: ValidateConfig,
    *,
    name: str,
    keras_model: Any | None = None,
    keras_hash: str | None = None,
    baseline_accuracy: float | None = None,
    profiles: list[DeviceProfile] | None = None,
    calibration: dict[str, Any] | None = None,
    cache: StageCache | None = None,
) -> tuple[dict[str, Any], bool]:
    """(the validation result as ``ValidationResult.to_dict()``, whether it came from ``cache``).

    Scores ``config.split`` of ``data``. The cache key holds the .tflite's bytes, the Keras reference's
    content hash (``keras_hash``, given with ``keras_model``), the split and the data's content, the
    settings, the resolved profiles, the latency calibration, the baseline accuracy the drop gate compares
    with, the package versions and, with a phone profile, the emulator of the phone check (or why there
    is none). A result in which a runtime crashed is never cached."""
    profiles = profiles or []
    parts = {
        "stage": "validate-artifact",
        "split": config.split.value,
        "tflite": sha256_bytes(tflite),
        "keras": keras_hash if keras_model is not None else None,
        "config": config.model_dump(mode="json", exclude={"profiles", "profiles_for"}),
        "profiles": [p.model_dump(mode="json") for p in profiles],
        "calibration": calibration,
        "baseline_accuracy": baseline_accuracy,
        "data": data_hash(data),
        "versions": versions(),
    }
    if config.phone_check and any(p.arm is not None for p in profiles):
        parts["phone_check"] = guest.environment()
    key = cache_key(parts)
    entry = cache.get(key) if cache is not None else None
    if entry is not None:
        return json.loads((entry.folder / RESULT_FILE).read_text()), True
    from edgeopt import stages  # lazy: imports TensorFlow

    result = stages.validate(
        tflite,
        data,
        config,
        keras_model=keras_model,
        baseline_accuracy=baseline_accuracy,
        profiles=profiles,
        calibration=calibration,
        name=name,
    ).to_dict()
    if cache is not None and not result["crashed"]:
        cache.put(key, lambda d: {"output": write_json(d / RESULT_FILE, result).name}, parts=parts)
    return result, False
