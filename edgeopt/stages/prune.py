"""Magnitude pruning with tfmot (PolynomialDecay or ConstantSparsity), wrappers stripped."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeopt._keras import keras, set_seed, tfmot
from edgeopt.config import PruneConfig, Schedule
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

# Below this many weights a kernel is left dense: pruning it saves nothing and costs accuracy.
MIN_PRUNABLE_WEIGHTS = 64


def resolve_schedule(config: PruneConfig, steps: int) -> dict[str, int | float]:
    """Begin, end and frequency of pruning for ``steps`` training steps in all.

    When not given, the end step is at three quarters of training (the last quarter fine-tunes at
    the final sparsity) and the frequency is at most 100 steps but at least 10 updates; the end is
    moved onto an update step so the final sparsity is really applied.
    """
    begin = config.begin_step
    end = config.end_step if config.end_step is not None else max(begin + 1, int(steps * 0.75))
    freq = config.frequency
    if "frequency" not in config.model_fields_set:
        freq = max(1, min(freq, (end - begin) // 10))
    if (end - begin) % freq:
        end = begin + max(1, (end - begin) // freq) * freq
    if end > steps:
        log.warning("pruning ends at step %d but training has only %d steps", end, steps)
    return {"begin_step": begin, "end_step": end, "frequency": freq, "total_steps": steps}


def prune(
    model: Any, data: Dataset, config: PruneConfig | None = None, *, seed: int = 0, teacher: Any | None = None
) -> StageResult:
    """Prune ``model`` (left untouched) to ``config.final_sparsity`` while fine-tuning on ``data``."""
    config = config or PruneConfig()
    require_layer_graph(model, "prune")
    data.check_fits(model)
    sp = tfmot.sparsity.keras
    with Timer() as t:
        set_seed(seed)
        base = clone_with_weights(model)
        sched = resolve_schedule(config, training_plan(config, data)["steps"])
        m_by_n = tuple(int(v) for v in config.m_by_n.split(":")) if config.m_by_n else None
        targets: dict[str, float] = {}

        def wrap(layer: Any) -> Any:
            targets[layer.name] = layer_target(layer, config)
            kw: dict[str, Any] = {"pruning_schedule": _schedule(config, sched, targets[layer.name])}
            if m_by_n:
                kw["sparsity_m_by_n"] = m_by_n
            return sp.prune_low_magnitude(layer, **kw, **_block_kw(layer, config.block))

        wrapped, applied, skipped = wrap_layers(
            base,
            wrap,
            lambda layer: _why_not(layer, m_by_n, config.min_inputs),
            config.skip_layers,
            config.dense_share,
            depthwise=config.depthwise,
        )
        before = accuracy(model, data.x_test, data.y_test)
        if applied:
            history = fit(
                wrapped,
                data,
                description="prune",
                training=config,
                **fine_tune_args(model, data, config, teacher, "prune"),
                callbacks=[sp.UpdatePruningStep()],
            )
            stripped = plain_layers(sp.strip_pruning(wrapped))
            after = accuracy(stripped, data.x_test, data.y_test)
        else:  # fine-tuning would only train the model on: the next stages do that
            history, stripped, after = {}, base, before
    per_layer = sparsity_per_layer(stripped, applied)
    for name, v in per_layer.items():
        v["target"] = targets.get(name.split("/")[0], config.final_sparsity)
    pruned_total = sum(v["weights"] for v in per_layer.values())
    target = (1 - m_by_n[0] / m_by_n[1]) if m_by_n else _weighted_target(per_layer, config.final_sparsity)
    pruned_zeros = sum(v["zeros"] for v in per_layer.values())
    overall = pruned_zeros / pruned_total if pruned_total else 0.0
    all_k = kernels(stripped)
    metrics = {
        "target_sparsity": target,
        "sparsity": overall,
        "target_met": abs(overall - target) <= 0.01,
        "model_sparsity": float(
            sum((k == 0).sum() for k in all_k.values()) / max(1, sum(k.size for k in all_k.values()))
        ),
        "layers": per_layer,
        "skipped_layers": skipped,
        "schedule": {
            "type": config.schedule.value,
            "initial_sparsity": config.initial_sparsity,
            "final_sparsity": config.final_sparsity,
            "m_by_n": config.m_by_n,
            "block": config.block,
            "blocked_layers": [n for n in applied if blocked(base.get_layer(n), config.block)],
            **sched,
        },
        "accuracy_before": before,
        "accuracy": after,
        "accuracy_drop": before - after,
        "history": history,
        "training": training_plan(config, data) if applied else {"epochs": 0, "steps": 0},
        "kd": config.kd.model_dump() if config.kd is not None else None,
        "seed": seed,
    }
    if not applied:
        log.warning("no layer can be pruned (skipped_layers says why): the model is kept as it is, untrained")
    elif not metrics["target_met"]:
        log.warning("sparsity reached %.3f, target %.3f", overall, target)
    return StageResult("prune", metrics=metrics, model=stripped, seconds=t.seconds)


def inputs_per_unit(layer: Any) -> int:
    """How many inputs each output unit of ``layer`` reads: a Dense unit its input features, a conv filter
    its kernel window times its input channels, a depthwise channel its kernel window."""
    k = next((w for w in layer.weights if w.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel")), None)
    if k is None:
        return 0
    shape = [int(d) for d in k.shape]
    if "depthwise_kernel" in k.name:
        return int(np.prod(shape[:-2]))
    return int(np.prod(shape[:-1]))


def layer_target(layer: Any, config: PruneConfig) -> float:
    """``final_sparsity``, lowered where it would leave an output unit fewer than ``min_inputs`` inputs."""
    if not config.min_inputs:
        return config.final_sparsity
    n = inputs_per_unit(layer)
    return max(0.0, min(config.final_sparsity, 1.0 - config.min_inputs / n)) if n else config.final_sparsity


def _weighted_target(per_layer: dict[str, dict[str, Any]], default: float) -> float:
    total = sum(v["weights"] for v in per_layer.values())
    return sum(v["weights"] * v["target"] for v in per_layer.values()) / total if total else default


def _schedule(config: PruneConfig, sched: dict[str, Any], final: float) -> Any:
    """tfmot's schedule for one layer: the config's, towards ``final`` (the layer's own target)."""
    sp = tfmot.sparsity.keras
    if config.schedule is Schedule.polynomial:
        return sp.PolynomialDecay(
            initial_sparsity=min(config.initial_sparsity, final),
            final_sparsity=final,
            begin_step=sched["begin_step"],
            end_step=sched["end_step"],
            frequency=sched["frequency"],
        )
    return sp.ConstantSparsity(
        final, begin_step=sched["begin_step"], end_step=sched["end_step"], frequency=sched["frequency"]
    )


def flattened_channels(layer: Any) -> int | None:
    """The channels of the feature map a Dense layer reads through a Flatten (its inputs are those channels at
    each position, one position after another), or None when its input is not a flattened feature map."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    inbound = getattr(nodes[0], "inbound_layers", None) if nodes else None
    if isinstance(inbound, list):
        inbound = inbound[0] if len(inbound) == 1 else None
    if inbound is None or type(inbound).__name__ != "Flatten":
        return None
    shape = inbound.input_shape
    return int(shape[-1]) if shape and len(shape) > 2 and shape[-1] else None


def blocked(layer: Any, block: int) -> bool:
    """Whether ``layer`` is pruned in blocks: a Dense kernel (Keras' [inputs, units], the .tflite's [units,
    inputs]) with more than ``block`` inputs and more than one unit. tfmot squeezes the kernel before pooling
    it, so a one-unit head or a kernel no taller than a block would fail there; those, and every kernel that
    is not a Dense one, are pruned weight by weight."""

    if block == 1 or not isinstance(layer, keras.layers.Dense):
        return False
    rows, units = (int(d) for d in layer.kernel.shape)
    channels = flattened_channels(layer)
    # A block of a flattened feature map's inputs is `block` channels at one position: where there are few
    # channels it would drop whole positions (4 channels, blocks of 4), so such a layer is pruned weight by weight.
    if channels is not None and channels < 4 * block:
        return False
    return rows > block and units > 1


def _block_kw(layer: Any, block: int) -> dict[str, Any]:
    """tfmot's block sparsity for ``blocked`` layers: blocks of ``block`` consecutive inputs of one unit,
    ranked by their mean magnitude."""
    return {"block_size": (block, 1), "block_pooling_type": "AVG"} if blocked(layer, block) else {}


def _why_not(layer: Any, m_by_n: tuple[int, ...] | None, min_inputs: int = 0) -> str | None:
    reg = tfmot.sparsity.keras.PrunableLayer
    if not isinstance(layer, reg) and not _registry().supports(layer):
        return f"{type(layer).__name__} is not supported by tfmot pruning"
    if not isinstance(layer, reg) and layer.__class__ in _registry()._LAYERS_WEIGHTS_MAP:
        # e.g. BatchNormalization, and DepthwiseConv2D in tfmot 0.8: wrappable, but nothing is pruned
        if not _registry()._weight_names(layer):
            return f"tfmot prunes no weights of {type(layer).__name__}"
    k = [w for w in layer.weights if w.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel")]
    if k and int(np.prod(k[0].shape)) < MIN_PRUNABLE_WEIGHTS:
        return f"only {int(np.prod(k[0].shape))} weights (< {MIN_PRUNABLE_WEIGHTS})"
    if m_by_n and type(layer).__name__ not in ("Conv2D", "Dense"):
        return f"{m_by_n[0]}:{m_by_n[1]} sparsity is supported for Conv2D and Dense only"
    if min_inputs and 0 < (n := inputs_per_unit(layer)) <= min_inputs:
        return f"{n} inputs per output unit, at most min_inputs ({min_inputs}): nothing to prune"
    return None


def _registry() -> Any:
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    return PruneRegistry


def sparsity_per_layer(model: Any, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Zeros, weights and sparsity of each kernel (of the named layers, or of all)."""
    out = {}
    for name, k in kernels(model).items():
        if names is not None and name.split("/")[0] not in names:
            continue
        zeros = int((k == 0).sum())
        out[name] = {"weights": int(k.size), "zeros": zeros, "sparsity": zeros / k.size}
    return out
