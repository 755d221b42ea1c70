"""Reference model builders by name, and width-scaled copies of any Sequential or functional model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeopt.errors import BadInput


def _fashion_cnn(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> Any:
    """The reference teacher: two conv blocks and a dense head (about 220k parameters at 28x28)."""
    from edgeopt._keras import keras

    L = keras.layers
    w = lambda n: max(1, round(n * width))  # noqa: E731
    return keras.Sequential(
        [
            L.InputLayer(input_shape=input_shape),
            L.Conv2D(w(32), 3, padding="same", activation="relu", name="conv1"),
            L.MaxPooling2D(name="pool1"),
            L.Conv2D(w(64), 3, padding="same", activation="relu", name="conv2"),
            L.MaxPooling2D(name="pool2"),
            L.Flatten(name="flatten"),
            L.Dropout(0.4, name="dropout"),
            L.Dense(w(64), activation="relu", name="fc1"),
            L.Dense(num_classes, activation="softmax", name="logits"),
        ],
        name="fashion_cnn" if width == 1.0 else f"fashion_cnn_w{width:g}",
    )


def _fashion_cnn_small(input_shape: tuple[int, ...], num_classes: int) -> Any:
    """A compact student: the teacher's shape at a quarter of the width (about 14k parameters)."""
    return _fashion_cnn(input_shape, num_classes, width=0.25)


def _tiny_cnn(input_shape: tuple[int, ...], num_classes: int) -> Any:
    """A few thousand parameters: for tests on digits or small slices."""
    from edgeopt._keras import keras

    L = keras.layers
    return keras.Sequential(
        [
            L.InputLayer(input_shape=input_shape),
            L.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
            L.MaxPooling2D(name="pool1"),
            L.Flatten(name="flatten"),
            L.Dense(32, activation="relu", name="fc1"),
            L.Dense(num_classes, activation="softmax", name="logits"),
        ],
        name="tiny_cnn",
    )


def _mlp(input_shape: tuple[int, ...], num_classes: int) -> Any:
    """A two-layer perceptron (LeNet-300-100's shape, for comparisons with Deep Compression)."""
    from edgeopt._keras import keras

    L = keras.layers
    return keras.Sequential(
        [
            L.InputLayer(input_shape=input_shape),
            L.Flatten(name="flatten"),
            L.Dense(300, activation="relu", name="fc1"),
            L.Dense(100, activation="relu", name="fc2"),
            L.Dense(num_classes, activation="softmax", name="logits"),
        ],
        name="mlp_300_100",
    )


ZOO: dict[str, Callable[[tuple[int, ...], int], Any]] = {
    "fashion_cnn": _fashion_cnn,
    "fashion_cnn_small": _fashion_cnn_small,
    "tiny_cnn": _tiny_cnn,
    "mlp_300_100": _mlp,
}


def build(name: str, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Build zoo model ``name`` for the given input shape and class count (random weights)."""
    if name not in ZOO:
        raise BadInput(f"unknown zoo model {name!r}; allowed: {', '.join(sorted(ZOO))}")
    return ZOO[name](tuple(input_shape), num_classes)


# ---- width scaling ------------------------------------------------------------------------------

_WIDTH_KEYS = {
    "Conv1D": "filters",
    "Conv2D": "filters",
    "Conv3D": "filters",
    "SeparableConv1D": "filters",
    "SeparableConv2D": "filters",
    "Conv2DTranspose": "filters",
    "Dense": "units",
}
# Layers that pass their input's channel count through unchanged (DepthwiseConv2D multiplies it by a
# constant, so it follows its input too).
_PASS_THROUGH = {
    "Activation",
    "Softmax",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "GaussianNoise",
    "BatchNormalization",
    "LayerNormalization",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "MaxPooling2D",
    "AveragePooling2D",
    "MaxPooling1D",
    "AveragePooling1D",
    "Rescaling",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "Cropping1D",
    "Cropping2D",
    "UpSampling1D",
    "UpSampling2D",
    "DepthwiseConv2D",
    "DepthwiseConv1D",
    "InputLayer",
}
# Layers whose inputs must have equal channel counts: their inputs scale together or not at all.
_MERGE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
# Layers whose output width is a function of their inputs' (a sum or a product): it follows them
# only while nothing ties it to another width.
_COMPOSITE = {"Concatenate", "Flatten"}


def _graph(model: Any) -> tuple[list[tuple[str, str, list[str]]], list[str], list[str]]:
    """``[(layer, class, inbound layers)]`` in build order, input layer names, output layer names."""
    cfg = model.get_config()
    if "input_layers" in cfg:  # functional
        nodes = []
        for entry in cfg["layers"]:
            names = _history_names(entry.get("inbound_nodes", []))
            nodes.append((entry["config"]["name"], entry["class_name"], names))
        return nodes, _history_names(cfg["input_layers"]), _history_names(cfg["output_layers"])
    prev = ["__input__"]  # Sequential: a chain
    nodes = [("__input__", "InputLayer", [])]
    for layer in model.layers:
        nodes.append((layer.name, type(layer).__name__, prev))
        prev = [layer.name]
    return nodes, ["__input__"], prev


def _history_names(v: Any) -> list[str]:
    """Layer names in (nested) ``[name, node, tensor(, kwargs)]`` lists."""
    if isinstance(v, list | tuple):
        if len(v) in (3, 4) and isinstance(v[0], str) and isinstance(v[1], int):
            return [v[0]]
        return [n for x in v for n in _history_names(x)]
    return []


def fixed_width_layers(model: Any) -> set[str]:
    """Names of the Conv/Dense layers whose filters/units must stay as they are.

    Layers are grouped by the channel count they share: a Conv/Dense starts a group, pass-through
    layers (and DepthwiseConv2D) stay in their input's group, and residual merges (``Add`` and the
    like) join their inputs' groups. A group is fixed when it reaches a model output or input, a
    ``Reshape`` (its target shape is written down) or a layer edgeopt does not know; a Concatenate or
    Flatten whose width is tied to another group fixes its inputs too.
    """
    nodes, inputs, outputs = _graph(model)
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    token: dict[str, str] = {}  # layer -> group token of its output channels
    fixed: set[str] = {f"in:{n}" for n in inputs}
    composite: dict[str, list[str]] = {}
    width_layers: dict[str, str] = {}
    for name, cls, inbound in nodes:
        ins = [token[n] for n in inbound if n in token]
        if name in inputs or cls == "InputLayer":
            token[name] = f"in:{name}"
            fixed.add(token[name])
        elif cls in _WIDTH_KEYS:
            token[name] = width_layers[name] = f"w:{name}"
        elif cls in _PASS_THROUGH and len(ins) == 1:
            token[name] = ins[0]
        elif cls in _MERGE and ins:
            for t in ins[1:]:
                union(ins[0], t)
            token[name] = ins[0]
        elif cls in _COMPOSITE and ins:
            token[name] = f"c:{name}"
            composite[token[name]] = ins
        else:  # Reshape, unknown layers, nested models: leave their inputs and outputs as they are
            fixed.update(ins)
            token[name] = f"x:{name}"
            fixed.add(token[name])
    fixed.update(token[n] for n in outputs if n in token)
    fixed_roots = {find(t) for t in fixed}
    changed = True
    while changed:  # a composite tied to another width, or fixed, fixes what it is made of
        changed = False
        for c, ins in composite.items():
            members = [t for t in token.values() if find(t) == find(c)]
            if find(c) in fixed_roots or len(set(members)) > 1:
                for t in [c, *ins]:
                    if find(t) not in fixed_roots:
                        fixed_roots.add(find(t))
                        changed = True
    return {name for name, t in width_layers.items() if find(t) in fixed_roots}


def width_scaled(model: Any, width: float, *, name: str | None = None) -> Any:
    """A fresh (randomly initialised) copy of ``model`` with ``width`` of the filters and units in every
    hidden Conv/Dense layer. The layers that produce the outputs keep their size, so the copy is a
    drop-in student for the same task; layers tied by a residual merge scale together or not at all
    (``fixed_width_layers``). Works for Sequential and functional models."""
    from edgeopt._keras import keras

    if not 0 < width <= 1:
        raise BadInput(f"width must be in (0, 1] (got {width})")
    if not isinstance(model, keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise BadInput(
            f"model {model.name!r} is a subclassed model; width scaling needs a Sequential or functional model"
        )
    keep = fixed_width_layers(model)

    def clone(layer: Any) -> Any:
        cfg = layer.get_config()
        key = _WIDTH_KEYS.get(type(layer).__name__)
        if key and layer.name not in keep:
            cfg[key] = max(1, round(cfg[key] * width))
        return layer.__class__.from_config(cfg)

    student = keras.models.clone_model(model, clone_function=clone)
    student._name = name or f"{model.name}_w{width:g}"
    return student
