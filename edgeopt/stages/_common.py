"""What the stages share: the result record, private model copies, training and evaluation loops."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeopt import interrupt, progress
from edgeopt._keras import keras, tfmot
from edgeopt.data import Dataset
from edgeopt.errors import BadInput
from edgeopt.keras3 import subclassed_message

KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


@dataclass
class StageResult:
    """What every stage returns: a plain model (wrappers stripped) or .tflite bytes, plus metrics."""

    stage: str
    metrics: dict[str, Any] = field(default_factory=dict)
    model: Any | None = None
    tflite: bytes | None = None
    seconds: float = 0.0


def clone_with_weights(model: Any) -> Any:
    """A copy with its own variables, so that tfmot's wrappers can never touch the caller's model."""

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def require_layer_graph(model: Any, stage: str) -> None:
    """BadInput for a subclassed model: tfmot and width scaling need its layer graph."""

    if isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False):
        return
    raise BadInput(f"{stage}: " + subclassed_message(f"model {getattr(model, 'name', '?')!r}", type(model).__name__))


def count_params(model: Any) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


def kernels(model: Any) -> dict[str, np.ndarray]:
    """``{layer name: kernel}`` for every layer that has a (depthwise/pointwise) kernel."""
    out: dict[str, np.ndarray] = {}
    for layer in _all_layers(model):
        for w in layer.weights:
            short = w.name.split("/")[-1].split(":")[0]
            if short in KERNEL_NAMES:
                key = layer.name if short == "kernel" else f"{layer.name}/{short}"
                out[key] = w.numpy()
    return out


def _all_layers(model: Any) -> list[Any]:
    layers = []
    for layer in model.layers:
        if _nested_model(layer):
            layers += _all_layers(layer)
        else:
            layers.append(layer)
    return layers


def weight_depth(model: Any) -> int:
    """The most weight layers (convolutions, Dense) on one path from the model's inputs to an output: how
    many a gradient crosses. A nested model counts its own; BatchNorm, activations, pooling and Add count
    nothing. A model without a layer graph (subclassed) counts every weight layer."""
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return sum(_own_depth(layer) for layer in model.layers)
    memo: dict[int, int] = {}

    def node_depth(node: Any) -> int:
        if id(node) not in memo:
            memo[id(node)] = _own_depth(node.layer) + max((node_depth(p) for p in node.parent_nodes), default=0)
        return memo[id(node)]

    def tensor_depth(t: Any) -> int:
        layer, node_index, _ = t._keras_history
        return node_depth(layer._inbound_nodes[node_index])

    return max(tensor_depth(t) for t in outputs)


def _nested_model(layer: Any) -> bool:
    """A model used as a layer (it has layers), not a wrapper (tfmot's hold one ``layer``)."""
    return hasattr(layer, "layers") and not hasattr(layer, "layer")


def _own_depth(layer: Any) -> int:
    if _nested_model(layer):
        return weight_depth(layer)
    return 1 if kernel_weights(getattr(layer, "layer", layer)) else 0


def outputs_probabilities(model: Any) -> bool:
    """True when the model ends in a softmax (its outputs are probabilities, not logits)."""
    last = model.layers[-1]
    name = type(last).__name__
    if name == "Softmax":
        return True
    act = getattr(last, "activation", None)
    return getattr(act, "__name__", "") == "softmax"


def predict(model: Any, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Model outputs in batches, without Keras' own progress output."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    return float(np.mean(np.argmax(predict(model, x, batch_size), axis=-1) == y))


def fit(
    model: Any,
    data: Dataset,
    *,
    description: str,
    training: Any,
    callbacks: list[Any] | None = None,
    loss: Any = "sparse_categorical_crossentropy",
    metrics: list[Any] | None = None,
    y_train: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """Compile and train on the training split with a progress bar; returns Keras' history.

    ``training`` is a stage config with ``epochs``, ``batch_size``, ``learning_rate`` and ``lr_schedule``
    (and ``min_steps`` and ``lr_batch_size``: ``training_plan`` says what they make of it).
    """
    plan = training_plan(training, data, weight_depth(model) if getattr(training, "min_steps_per_layer", 0) else 0)
    epochs, batch_size, learning_rate = plan["epochs"], training.batch_size, plan["learning_rate"]
    if getattr(training, "freeze_batchnorm", False):
        freeze_batchnorm(model)
    lr_schedule = training.lr_schedule

    if epochs == 0:
        return {}
    lr: Any = learning_rate
    if str(lr_schedule) == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(learning_rate, plan["steps"])
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=loss,
        metrics=metrics if metrics is not None else ["accuracy"],
    )
    y_tr = data.y_train if y_train is None else y_train
    y_va = data.y_val if y_val is None else y_val
    steps = math.ceil(len(data.x_train) / batch_size)
    cbs = list(callbacks or [])
    bar = progress_callback(description, epochs, steps)  # None when nobody draws progress
    if bar is not None:
        cbs.append(bar)
    hist = model.fit(
        data.x_train,
        y_tr,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(data.x_val, y_va) if len(data.x_val) else None,
        shuffle=True,
        callbacks=cbs,
        verbose=0,
    )
    return {k: [float(v) for v in vs] for k, vs in hist.history.items()}


def steps_per_epoch(data: Dataset, batch_size: int) -> int:
    return math.ceil(len(data.x_train) / batch_size)


def freeze_batchnorm(model: Any) -> int:
    """Make every BatchNormalization layer of ``model`` (wrapped or not) untrainable, which in Keras also runs
    it in inference mode (its moving statistics, not the batch's); returns how many."""
    n = 0
    for layer in _all_layers(model):
        inner = getattr(layer, "layer", layer)  # tfmot wrappers hold the layer they wrap
        if isinstance(inner, keras.layers.BatchNormalization):
            inner.trainable = False
            n += 1
    return n


def training_plan(training: Any, data: Dataset, depth: int = 0) -> dict[str, Any]:
    """How long and how fast a stage trains on ``data``: its epochs, raised so that it takes at least
    ``min_steps`` optimizer steps (a recipe written for 54,000 images still trains enough on 4,000), or
    ``min_steps_per_layer`` times ``depth`` (the model's ``weight_depth``) when that is more (a deeper
    network needs more steps), and its learning rate scaled from ``lr_batch_size`` to ``batch_size`` by the
    square root of the ratio (the scaling rule for Adam; Malladi et al., 2022)."""
    per_epoch = steps_per_epoch(data, training.batch_size)
    per_layer = getattr(training, "min_steps_per_layer", 0)
    min_steps = max(getattr(training, "min_steps", 0), per_layer * depth)
    epochs = training.epochs if training.epochs == 0 else max(training.epochs, math.ceil(min_steps / per_epoch))
    lr = training.learning_rate * math.sqrt(
        training.batch_size / getattr(training, "lr_batch_size", training.batch_size)
    )
    plan = {"epochs": epochs, "steps": epochs * per_epoch, "steps_per_epoch": per_epoch, "learning_rate": lr}
    if per_layer:
        plan.update(depth=depth, min_steps=min_steps)
    return plan


def kernel_weights(layer: Any) -> int:
    """How many kernel weights (kernel, depthwise or pointwise kernel) a layer holds."""
    return int(sum(int(np.prod(w.shape)) for w in layer.weights if w.name.split("/")[-1].split(":")[0] in KERNEL_NAMES))


def dense_by_share(layers: list[Any], share: float) -> dict[str, str]:
    """``{layer name: reason}`` for the smallest of ``layers`` (by kernel weights) that together hold at most
    ``share`` of all their kernel weights: the layers to leave dense. Picked by size, not by name, so the
    same setting means the same thing on any model (the first conv and the classifier are usually small)."""
    sizes = [(kernel_weights(layer), i, layer.name) for i, layer in enumerate(layers)]
    total = sum(n for n, _, _ in sizes)
    if share <= 0 or total == 0:
        return {}
    out: dict[str, str] = {}
    held = 0
    for n, _, name in sorted(sizes):  # smallest first; ties in model order
        if held + n > share * total:
            break
        held += n
        out[name] = f"dense_share: {n} of {total} kernel weights ({n / total:.1%}; smallest layers up to {share:.1%})"
    return out


class DepthwiseWeights(
    keras.layers.DepthwiseConv2D, tfmot.sparsity.keras.PrunableLayer, tfmot.clustering.keras.ClusterableLayer
):
    """A DepthwiseConv2D whose kernel tfmot prunes and clusters (tfmot 0.8 wraps the plain layer but touches
    none of its weights); ``plain_layers`` turns it back into a DepthwiseConv2D after the wrappers are gone."""

    def get_prunable_weights(self) -> list[Any]:
        return [self.depthwise_kernel]

    def get_clusterable_weights(self) -> list[tuple[str, Any]]:
        return [("depthwise_kernel", self.depthwise_kernel)]


def _retype(layer: Any, cls: type) -> Any:
    """``layer`` as a ``cls`` instance with the same config and weights."""
    new = cls.from_config(layer.get_config())
    new.build(layer.input_shape)
    new.set_weights(layer.get_weights())
    return new


def plain_layers(model: Any) -> Any:
    """``model`` with every ``DepthwiseWeights`` layer back as a plain DepthwiseConv2D (same weights)."""
    if not any(isinstance(layer, DepthwiseWeights) for layer in model.layers):
        return model

    def clone(layer: Any) -> Any:
        return _retype(layer, keras.layers.DepthwiseConv2D) if isinstance(layer, DepthwiseWeights) else layer

    out = keras.models.clone_model(model, clone_function=clone)
    out.set_weights(model.get_weights())
    return out


def wrap_layers(
    model: Any,
    wrap: Any,
    why_not: Any,
    skip: list[str],
    dense_share: float = 0.0,
    *,
    depthwise: bool = False,
) -> tuple[Any, list[str], dict[str, str]]:
    """Clone ``model`` applying ``wrap(layer)`` to every layer for which ``why_not(layer)`` is None.

    ``dense_share`` leaves out, besides ``skip``, the smallest wrappable layers that together hold at most
    that share of the wrappable layers' kernel weights (``dense_by_share``). ``depthwise``: DepthwiseConv2D
    layers become ``DepthwiseWeights`` first, so that their kernels are wrapped too. ``model`` must already
    be a private copy: unwrapped layers are reused as they are. Returns the new model, the wrapped layer
    names and ``{skipped layer: reason}`` for layers with weights.
    """
    if depthwise and any(type(layer) is keras.layers.DepthwiseConv2D for layer in model.layers):
        retyped = keras.models.clone_model(
            model,
            clone_function=lambda layer: (
                _retype(layer, DepthwiseWeights) if type(layer) is keras.layers.DepthwiseConv2D else layer
            ),
        )
        retyped.set_weights(model.get_weights())
        model = retyped

    names = [layer.name for layer in model.layers]
    unknown = [s for s in skip if s not in names]
    if unknown:
        raise BadInput(f"--skip-layer {', '.join(unknown)}: no such layer; layers are {', '.join(names)}")
    applied: list[str] = []
    skipped: dict[str, str] = {}
    wrappable = [layer for layer in model.layers if layer.weights and layer.name not in skip and not why_not(layer)]
    by_share = dense_by_share(wrappable, dense_share)

    def clone(layer: Any) -> Any:
        if not layer.weights:
            return layer
        reason = "skipped on request" if layer.name in skip else by_share.get(layer.name) or why_not(layer)
        if reason:
            skipped[layer.name] = reason
            return layer
        applied.append(layer.name)
        return wrap(layer)

    wrapped = keras.models.clone_model(model, clone_function=clone)
    return wrapped, applied, skipped


def progress_callback(description: str, epochs: int, steps: int) -> Any:
    """A tf-keras callback that draws one bar over ``epochs * steps`` training batches with loss and
    accuracy, or None when no reporter is set (so ``fit`` gets no callback at all)."""
    reporter = progress.get_reporter()
    if reporter is None:
        return None

    class _ProgressCallback(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._ctx: contextlib.AbstractContextManager[progress.Advance] | None = None
            self._advance: progress.Advance = progress.no_op
            self._epoch = 0
            self._done = 0

        def on_train_begin(self, logs: Any = None) -> None:
            self._ctx = reporter.task(description, epochs * steps)
            self._advance = self._ctx.__enter__()
            self._done = 0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._epoch = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            interrupt.check()
            self._done += 1
            self._advance(1, f"epoch {self._epoch + 1}/{epochs} {progress.format_logs(logs)}")

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            # The epoch's logs now hold val_accuracy; also square the count if Keras ran fewer batches.
            target = (epoch + 1) * steps
            self._advance(
                target - self._done, f"epoch {epoch + 1}/{epochs} {progress.format_logs(logs)}", milestone=True
            )
            self._done = target

        def on_train_end(self, logs: Any = None) -> None:
            if self._ctx is not None:
                ctx, self._ctx = self._ctx, None
                ctx.__exit__(None, None, None)

    return _ProgressCallback()
