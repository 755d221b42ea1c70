"""Weight clustering (weight sharing) with tfmot, sparsity kept, wrappers stripped."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeopt._keras import set_seed, tfmot
from edgeopt.config import ClusterConfig, ClusterInit
from edgeopt.data import Dataset
from edgeopt.progress import Timer
from edgeopt.stages._common import (
    StageResult,
    accuracy,
    clone_with_weights,
    fit,
    kernels,
    plain_layers,
    require_layer_graph,
    training_plan,
    wrap_layers,
)
from edgeopt.stages.distill import fine_tune_args

log = logging.getLogger(__name__)

_INIT = {
    ClusterInit.kmeans_plus_plus: "KMEANS_PLUS_PLUS",
    ClusterInit.linear: "LINEAR",
    ClusterInit.density: "DENSITY_BASED",
    ClusterInit.random: "RANDOM",
}
# A model counts as sparse (and sparsity is preserved by default) above this fraction of zeros.
SPARSE_THRESHOLD = 0.05


def cluster(
    model: Any, data: Dataset, config: ClusterConfig | None = None, *, seed: int = 0, teacher: Any | None = None
) -> StageResult:
    """Cluster every supported kernel of ``model`` (left untouched) into ``config.clusters`` values."""
    config = config or ClusterConfig()
    require_layer_graph(model, "cluster")
    data.check_fits(model)
    ck = tfmot.clustering.keras
    with Timer() as t:
        set_seed(seed)
        base = clone_with_weights(model)
        input_sparsity = _sparsity(kernels(base))
        preserve = config.preserve_sparsity
        if preserve is None:
            preserve = input_sparsity > SPARSE_THRESHOLD
        params = {
            "number_of_clusters": config.clusters,
            "cluster_centroids_init": getattr(ck.CentroidInitialization, _INIT[config.init]),
            "preserve_sparsity": preserve,
        }
        wrapped, applied, skipped = wrap_layers(
            base,
            lambda layer: ck.cluster_weights(layer, **params),
            lambda layer: _why_not(layer, config.clusters),
            config.skip_layers,
            config.dense_share,
            depthwise=config.depthwise,
        )
        before = accuracy(model, data.x_test, data.y_test)
        history = fit(
            wrapped,
            data,
            description="cluster",
            training=config,
            **fine_tune_args(model, data, config, teacher, "cluster"),
        )
        stripped = plain_layers(ck.strip_clustering(wrapped))
        after = accuracy(stripped, data.x_test, data.y_test)
    per_layer = {}
    for name, k in kernels(stripped).items():
        if name.split("/")[0] in applied:
            nz = k[k != 0]
            per_layer[name] = {
                "weights": int(k.size),
                "distinct_values": int(np.unique(k).size),
                "distinct_nonzero_values": int(np.unique(nz).size),
                "sparsity": float((k == 0).mean()),
            }
    out_sparsity = _sparsity({n: k for n, k in kernels(stripped).items()})
    metrics = {
        "clusters": config.clusters,
        "init": config.init.value,
        "preserve_sparsity": preserve,
        "input_sparsity": input_sparsity,
        "sparsity": out_sparsity,
        "max_distinct_values": max((v["distinct_nonzero_values"] for v in per_layer.values()), default=0),
        "layers": per_layer,
        "skipped_layers": skipped,
        "accuracy_before": before,
        "accuracy": after,
        "accuracy_drop": before - after,
        "history": history,
        "training": training_plan(config, data),
        "kd": config.kd.model_dump() if config.kd is not None else None,
        "seed": seed,
    }
    if not applied:
        log.warning("no layer was clustered")
    return StageResult("cluster", metrics=metrics, model=stripped, seconds=t.seconds)


def _why_not(layer: Any, clusters: int) -> str | None:
    from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import ClusteringRegistry

    if not isinstance(layer, tfmot.clustering.keras.ClusterableLayer) and not ClusteringRegistry.supports(layer):
        return f"{type(layer).__name__} is not supported by tfmot clustering"
    if layer.__class__ in ClusteringRegistry._LAYERS_WEIGHTS_MAP and not ClusteringRegistry._weight_names(layer):
        # BatchNormalization, and DepthwiseConv2D ("big unrecoverable accuracy loss" says tfmot)
        return f"tfmot clusters no weights of {type(layer).__name__}"
    k = [w for w in layer.weights if w.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel")]
    if not k:
        return "no kernel to cluster"
    if int(np.prod(k[0].shape)) <= clusters:
        return f"only {int(np.prod(k[0].shape))} weights for {clusters} clusters"
    return None


def _sparsity(ks: dict[str, np.ndarray]) -> float:
    total = sum(k.size for k in ks.values())
    return float(sum((k == 0).sum() for k in ks.values()) / total) if total else 0.0
