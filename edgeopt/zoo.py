"""Reference model builders by name, and width-scaled copies of any Sequential or functional model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edgeopt.errors import BadInput

log = logging.getLogger(__name__)


def _fashion_cnn(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> Any:
    """The reference teacher: two conv blocks and a dense head (about 220k parameters at 28x28)."""
    from edgeopt._keras import keras  # lazy: imports TensorFlow

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
    from edgeopt._keras import keras  # lazy: imports TensorFlow

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
    from edgeopt._keras import keras  # lazy: imports TensorFlow

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


# ---- MLPerf Tiny reference architectures -----------------------------------------------------------
# Layer for layer as in mlcommons/tiny benchmark/training/*/ (keras_model.py, vww_model.py), so the
# published parameter and MAC counts of the reference .tflite files hold for them (REFERENCE_COUNTS,
# tests/unit/test_zoo.py). Only the layers matter here: weights are random, training is edgeopt's.


def _conv_bn(x: Any, filters: int, kernel: Any, strides: Any = 1, *, relu: bool = True, name: str) -> Any:
    from edgeopt._keras import keras  # lazy: imports TensorFlow

    L = keras.layers
    x = L.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.l2(1e-4),
        name=name,
    )(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _resnet8(input_shape: tuple[int, ...], num_classes: int) -> Any:
    """MLPerf Tiny image classification (CIFAR-10, 32x32x3): a ResNet-v1 stem and three residual
    stacks of 16/32/64 filters, the last two downsampling with a strided 1x1 shortcut; about 78k
    parameters and 12.5M MACs."""
    from edgeopt._keras import keras  # lazy: imports TensorFlow

    L = keras.layers
    inputs = keras.Input(input_shape, name="input")
    x = _conv_bn(inputs, 16, 3, name="stem")
    for stack, filters in enumerate((16, 32, 64), start=1):
        strides = 1 if stack == 1 else 2
        y = _conv_bn(x, filters, 3, strides, name=f"s{stack}_conv1")
        y = _conv_bn(y, filters, 3, relu=False, name=f"s{stack}_conv2")
        if stack > 1:  # the identity path must change shape with the stride
            x = L.Conv2D(
                filters,
                1,
                strides=2,
                padding="same",
                kernel_initializer="he_normal",
                kernel_regularizer=keras.regularizers.l2(1e-4),
                name=f"s{stack}_shortcut",
            )(x)
        x = L.Add(name=f"s{stack}_add")([x, y])
        x = L.Activation("relu", name=f"s{stack}_relu")(x)
    x = L.AveragePooling2D(pool_size=int(min(x.shape[1:3])), name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    out = L.Dense(num_classes, activation="softmax", kernel_initializer="he_normal", name="logits")(x)
    return keras.Model(inputs, out, name="resnet8")


def _ds_cnn(input_shape: tuple[int, ...], num_classes: int) -> Any:
    """MLPerf Tiny keyword spotting ("DS-CNN small", 49x10x1 MFCC features, 12 classes): a 10x4
    strided conv and four depthwise-separable blocks of 64 filters; about 23k parameters and 2.7M MACs."""
    from edgeopt._keras import keras  # lazy: imports TensorFlow

    L = keras.layers
    if len(input_shape) != 3:
        raise BadInput(f"ds_cnn needs (time, features, channels) inputs, like (49, 10, 1) (got {input_shape})")
    reg = keras.regularizers.l2(1e-4)
    inputs = keras.Input(input_shape, name="input")
    x = L.Conv2D(64, (10, 4), strides=(2, 2), padding="same", kernel_regularizer=reg, name="conv1")(inputs)
    x = L.BatchNormalization(name="conv1_bn")(x)
    x = L.Activation("relu", name="conv1_relu")(x)
    x = L.Dropout(0.2, name="dropout1")(x)
    for i in range(1, 5):
        x = L.DepthwiseConv2D((3, 3), padding="same", kernel_regularizer=reg, name=f"dw{i}")(x)
        x = L.BatchNormalization(name=f"dw{i}_bn")(x)
        x = L.Activation("relu", name=f"dw{i}_relu")(x)
        x = L.Conv2D(64, (1, 1), padding="same", kernel_regularizer=reg, name=f"pw{i}")(x)
        x = L.BatchNormalization(name=f"pw{i}_bn")(x)
        x = L.Activation("relu", name=f"pw{i}_relu")(x)
    x = L.Dropout(0.4, name="dropout2")(x)
    # The reference pools over (input / 2) rounded down, which is the whole (ceil) feature map but its
    # last row for odd sizes; kept so the counts match.
    x = L.AveragePooling2D(pool_size=(max(1, input_shape[0] // 2), max(1, input_shape[1] // 2)), name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    out = L.Dense(num_classes, activation="softmax", name="logits")(x)
    return keras.Model(inputs, out, name="ds_cnn")


def _mobilenet_v1_025(input_shape: tuple[int, ...], num_classes: int) -> Any:
    """MLPerf Tiny visual wake words (96x96x3, person / no person): Keras' MobileNetV1 at width 0.25,
    random weights; about 0.21M parameters and 7.5M MACs."""
    from edgeopt._keras import keras  # lazy: imports TensorFlow

    if len(input_shape) != 3 or input_shape[-1] not in (1, 3) or min(input_shape[:2]) < 32:
        raise BadInput(f"mobilenet_v1_025 needs (height, width, 1 or 3) inputs of at least 32x32 (got {input_shape})")
    model = keras.applications.MobileNet(
        input_shape=input_shape, alpha=0.25, weights=None, classes=num_classes, classifier_activation="softmax"
    )
    model._name = "mobilenet_v1_025"
    return model


def _fc_autoencoder(input_shape: tuple[int, ...], num_classes: int) -> Any:
    """MLPerf Tiny anomaly detection (ToyADMOS, 640 log-mel inputs): a dense autoencoder
    128-128-128-128-8-128-128-128-128 with BatchNorm and ReLU, reconstructing its input; about 0.27M
    parameters and 0.26M MACs. ``num_classes`` is not used: the output has the input's size."""
    from edgeopt._keras import keras  # lazy: imports TensorFlow

    L = keras.layers
    if len(input_shape) != 1:
        raise BadInput(f"fc_autoencoder needs flat inputs, like (640,) (got {input_shape})")
    inputs = keras.Input(input_shape, name="input")
    x = inputs
    for i, units in enumerate((128, 128, 128, 128, 8, 128, 128, 128, 128), start=1):
        x = L.Dense(units, name=f"fc{i}")(x)
        x = L.BatchNormalization(name=f"fc{i}_bn")(x)
        x = L.Activation("relu", name=f"fc{i}_relu")(x)
    out = L.Dense(input_shape[0], name="reconstruction")(x)
    return keras.Model(inputs, out, name="fc_autoencoder")


# (filters, stride) of the MobileNet-style blocks after the stem
MOBILENET_STYLE_BLOCKS = ((24, 2), (24, 1), (32, 2), (32, 1), (48, 1), (48, 1))


def mobilenet_style(keras_module: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """MobileNet-style blocks as a functional model of ``keras_module`` (tf-keras for edgeopt's stages, or
    Keras 3 for a model that goes through the Keras 3 bridge): a 3x3 conv stem, then blocks of a 3x3
    depthwise conv, BatchNormalization and ReLU6, a 1x1 conv and BatchNormalization, closed by a residual
    Add where the shapes allow it and by ReLU6 where they do not, a 1x1 head, global average pooling and a
    softmax classifier. About 14k parameters at 28x28x1; 14 convolutions (6 depthwise), 3 residual Adds."""
    L = keras_module.layers

    def conv_bn(x: Any, filters: int, kernel: int, name: str, relu: bool = True) -> Any:
        x = L.Conv2D(filters, kernel, padding="same", use_bias=False, name=name)(x)
        x = L.BatchNormalization(name=f"{name}_bn")(x)
        return L.ReLU(6.0, name=f"{name}_relu")(x) if relu else x

    inputs = keras_module.Input(tuple(input_shape))
    x = conv_bn(inputs, 16, 3, "stem")
    for k, (filters, stride) in enumerate(MOBILENET_STYLE_BLOCKS):
        skip = x
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"b{k}_dw")(x)
        x = L.BatchNormalization(name=f"b{k}_dw_bn")(x)
        x = L.ReLU(6.0, name=f"b{k}_dw_relu")(x)
        x = conv_bn(x, filters, 1, f"b{k}_pw", relu=False)
        if stride == 1 and skip.shape[-1] == filters:
            x = L.Add(name=f"b{k}_add")([skip, x])
        else:
            x = L.ReLU(6.0, name=f"b{k}_pw_relu")(x)
    x = conv_bn(x, 64, 1, "head")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="logits")(x)
    return keras_module.Model(inputs, outputs, name="mobilenet_style")


def _mobilenet_style(input_shape: tuple[int, ...], num_classes: int) -> Any:
    from edgeopt._keras import keras  # lazy: imports TensorFlow

    return mobilenet_style(keras, input_shape, num_classes)


# Parameters and MACs of MLPerf Tiny's reference models, counted by edgeopt.tflite.inspect on the
# reference .tflite files of github.com/mlcommons/tiny (benchmark/training/*/trained_models/, master at
# 1afd2c9): pretrainedResnet_quant.tflite, kws_ref_model.tflite, vww_96_int8.tflite, ad01_int8.tflite.
# MACs are those of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED plus one per output element of
# ADD and AVERAGE_POOL_2D (edgeopt.tflite._macs); parameters are the constant tensors' elements.
REFERENCE_COUNTS: dict[str, dict[str, Any]] = {
    "resnet8": {"input_shape": (32, 32, 3), "classes": 10, "params": 77_708, "macs": 12_530_368},
    "ds_cnn": {"input_shape": (49, 10, 1), "classes": 12, "params": 22_606, "macs": 2_656_832},
    "mobilenet_v1_025": {"input_shape": (96, 96, 3), "classes": 2, "params": 210_852, "macs": 7_489_920},
    "fc_autoencoder": {"input_shape": (640,), "classes": 640, "params": 265_864, "macs": 264_192},
}


ZOO: dict[str, Callable[[tuple[int, ...], int], Any]] = {
    "fashion_cnn": _fashion_cnn,
    "fashion_cnn_small": _fashion_cnn_small,
    "tiny_cnn": _tiny_cnn,
    "mlp_300_100": _mlp,
    "resnet8": _resnet8,
    "ds_cnn": _ds_cnn,
    "mobilenet_v1_025": _mobilenet_v1_025,
    "fc_autoencoder": _fc_autoencoder,
    "mobilenet_style": _mobilenet_style,
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


def with_dropout(model: Any, rate: float) -> Any:
    """A copy of ``model`` (same weights) whose Dropout layers (and subclasses) drop ``rate``; a model
    without one is returned as it is, with a warning."""
    from edgeopt._keras import keras  # lazy: imports TensorFlow
    from edgeopt.stages._common import require_layer_graph  # lazy: imports TensorFlow

    require_layer_graph(model, "dropout")
    if not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers):
        log.warning("dropout %.2f asked, but %s has no Dropout layer at its top level", rate, model.name)
        return model

    def clone(layer: Any) -> Any:
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.Dropout):
            cfg["rate"] = rate
        return layer.__class__.from_config(cfg)

    out = keras.models.clone_model(model, clone_function=clone)
    out.set_weights(model.get_weights())
    out._name = model.name
    return out


def width_scaled(model: Any, width: float, *, name: str | None = None) -> Any:
    """A fresh (randomly initialised) copy of ``model`` with ``width`` of the filters and units in every
    hidden Conv/Dense layer. The layers that produce the outputs keep their size, so the copy is a
    drop-in student for the same task; layers tied by a residual merge scale together or not at all
    (``fixed_width_layers``). Works for Sequential and functional models."""
    from edgeopt._keras import keras  # lazy: imports TensorFlow
    from edgeopt.stages._common import require_layer_graph  # lazy: imports TensorFlow

    if not 0 < width <= 1:
        raise BadInput(f"width must be in (0, 1] (got {width})")
    require_layer_graph(model, "width scaling")
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
