"""Content hashes for the stage cache: models by architecture and weights, data by its splits."""

from __future__ import annotations

import hashlib
import json
import os
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as pkg_version
from typing import Any

import numpy as np

from edgeopt.artifacts import sha256_tree

VERSIONED = ("edgeopt", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert")


def versions(packages: tuple[str, ...] = VERSIONED, missing: str = "unknown") -> dict[str, str]:
    """Installed versions of ``packages``; by default those that decide a stage's output bytes (part of
    every cache key), and then also ``tf-kernels``, TensorFlow's CPU kernels, which decide them too."""
    out = {}
    for name in packages:
        try:
            out[name] = pkg_version(name)
        except PackageNotFoundError:
            out[name] = missing
    if packages == VERSIONED:
        out["tf-kernels"] = tf_kernels()
    return out


def tf_kernels() -> str:
    """``onednn`` or ``eigen``: the kernels TensorFlow trains with (``TF_ENABLE_ONEDNN_OPTS``, which
    ``edgeopt._keras`` defaults to on before TensorFlow reads it). They round sums differently, so the
    same seed gives other weights with each."""
    import edgeopt._keras  # noqa: F401 - lazy: imports TensorFlow (sets the default, written only there)

    off = os.environ["TF_ENABLE_ONEDNN_OPTS"].strip().lower() in ("0", "false")
    return "eigen" if off else "onednn"


def _layer_config(layer: Any) -> Any:
    """A layer's config without its name: Keras numbers auto-named layers per process (dense_3), so
    names would make the same model hash differently in two processes."""
    try:
        cfg = dict(layer.get_config())
    except Exception:  # noqa: BLE001 - a layer without a serializable config is described by its class
        return None
    cfg.pop("name", None)
    return cfg


def model_hash(model: Any) -> str:
    """Content hash of a model: layer classes and configs (names left out) and weights (dtype, shape,
    bytes). A ``.keras`` file holds its save time, so the file's sha256 changes on every save; this
    does not. A SavedModel folder (``SavedModelDir``) is hashed by its files."""
    if not hasattr(model, "layers"):
        return "tree:" + sha256_tree(model.path)
    h = hashlib.sha256()
    desc = [[type(layer).__name__, _layer_config(layer)] for layer in model.layers]
    h.update(json.dumps(desc, sort_keys=True, default=str).encode())
    for w in model.get_weights():
        a = np.ascontiguousarray(w)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def data_hash(data: Any) -> str:
    """Content hash of a dataset's splits and class names (what every stage trains and evaluates on)."""
    h = hashlib.sha256(json.dumps(list(data.class_names)).encode())
    for a in (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()
