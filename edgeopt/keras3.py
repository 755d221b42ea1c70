"""Keras 3 ``.keras`` files -> equivalent tf-keras models (tfmot works with tf-keras only).

The archive's ``config.json`` is rewritten into a tf-keras config (input shapes, dtype policies,
serialized initializers/regularizers, the Keras 3 node format), the model is built with tf-keras,
and the weights are copied layer by layer from the same file read by Keras 3 (``safe_mode``
unless the user passed ``--unsafe``). Both models then run the same random inputs; a translation
whose outputs differ by more than ``TOLERANCE`` is refused.
"""

from __future__ import annotations

import inspect
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import BadInput
from edgeopt.progress import captured_stderr

TOLERANCE = 1e-5
MODEL_CLASSES = ("Functional", "Sequential", "Model")
# Layers that carry Python code in the file: loading them runs that code.
CODE_LAYERS = ("Lambda",)
# Keras 3 operations (``x + 3.0``, ``keras.ops.maximum(x, 0.5)``: config entries whose module is
# ``keras.src.ops.*``) -> the TensorFlow function tf-keras' TFOpLambda layer calls (what tf-keras itself
# records for the same expression) and the names of that function's parameters, in Keras 3's order.
# Keras 3 passes constants positionally (``args: [tensor, 3.0]``); tf-keras takes the first argument
# as the layer input and the others as keywords.
_OPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Add": ("math.add", ("x", "y")),
    "Subtract": ("math.subtract", ("x", "y")),
    "Multiply": ("math.multiply", ("x", "y")),
    "Divide": ("math.truediv", ("x", "y")),
    "TrueDivide": ("math.truediv", ("x", "y")),
    "Maximum": ("math.maximum", ("x", "y")),
    "Minimum": ("math.minimum", ("x", "y")),
    "Power": ("math.pow", ("x", "y")),
    "Negative": ("math.negative", ("x",)),
    "Absolute": ("math.abs", ("x",)),
    "Abs": ("math.abs", ("x",)),
    "Sqrt": ("math.sqrt", ("x",)),
    "Square": ("math.square", ("x",)),
    "Exp": ("math.exp", ("x",)),
    "Log": ("math.log", ("x",)),
    "Tanh": ("math.tanh", ("x",)),
    "Sigmoid": ("math.sigmoid", ("x",)),
    "Relu": ("nn.relu", ("features",)),
    "Relu6": ("nn.relu6", ("features",)),
}
# Keras 3 activations tf-keras lacks (or, for hard_sigmoid, defines differently: 0.2x + 0.5), as the
# chain of TensorFlow ops Keras 3's TensorFlow backend runs for them, so outputs match bit for bit.
# A step is (function, first argument, y): "in" is the activation's input, "prev" the previous step.
_HARD_SIGMOID = [("math.add", "in", 3.0), ("nn.relu6", "prev", None), ("math.truediv", "prev", 6.0)]
_HARD_SILU = [*_HARD_SIGMOID, ("math.multiply", "in", "prev")]
_ACTIVATION_CHAINS: dict[str, list[tuple[str, str, Any]]] = {
    "hard_sigmoid": _HARD_SIGMOID,
    "hard_silu": _HARD_SILU,
    "hard_swish": _HARD_SILU,
    "relu6": [("nn.relu6", "in", None)],
}
_OP_CHAINS = {"HardSigmoid": "hard_sigmoid", "HardSilu": "hard_silu", "HardSwish": "hard_silu", "Relu6": "relu6"}
# Same function under another name in tf-keras.
_ACTIVATION_NAMES = {"silu": "swish"}
# Keyword arguments every tf-keras layer takes (``Layer.__init__`` reads them from **kwargs).
_BASE_LAYER_KWARGS = {
    "name",
    "trainable",
    "dtype",
    "dynamic",
    "input_dim",
    "input_shape",
    "batch_input_shape",
    "batch_size",
    "weights",
    "activity_regularizer",
    "autocast",
    "implementation",
}


def read_archive_json(path: Path, name: str) -> Any | None:
    """``name`` (metadata.json / config.json) from a .keras zip, or None when absent or unreadable."""
    try:
        with zipfile.ZipFile(path) as zf:
            if name not in zf.namelist():
                return None
            return json.loads(zf.read(name))
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None


def is_keras3_archive(path: Path) -> bool:
    """True when the .keras zip was written by Keras 3: ``keras_version`` 3.x in metadata.json, or
    (without metadata) Keras 3-only markers in config.json (``batch_shape``, ``__keras_tensor__``)."""
    meta = read_archive_json(path, "metadata.json")
    if isinstance(meta, dict) and isinstance(meta.get("keras_version"), str):
        return meta["keras_version"].split(".")[0] == "3"
    config = read_archive_json(path, "config.json")
    if not isinstance(config, dict):
        return False
    text = json.dumps(config)
    return '"__keras_tensor__"' in text or ('"batch_shape"' in text and '"module": "keras' in text)


def _is_builtin(entry: dict[str, Any]) -> bool:
    module = entry.get("module") or ""
    registered = entry.get("registered_name")
    return module.split(".")[0] == "keras" and registered in (None, entry.get("class_name"))


def check_config(config: Any, path: Path, *, unsafe: bool, keras3: bool = True) -> None:
    """Refuse, before anything is deserialized, subclassed models, custom classes (Keras 3 files), and
    (without ``unsafe``) layers that carry code. One BadInput naming every layer concerned.

    tf-keras configs (``keras3=False``) name no module for built-in classes; they are checked for
    subclassed models and code layers only, tf-keras itself reports unknown classes.
    """
    if not keras3 and not isinstance(config, dict):
        return  # tf-keras reports an unreadable file itself
    if not isinstance(config, dict) or "class_name" not in config:
        raise BadInput(f"{path}: config.json does not describe a Keras model")
    damage = _structure_problem(config)
    if damage:
        raise BadInput(f"{path}: config.json is damaged: {damage}")
    builtin = _is_builtin if keras3 else (lambda entry: True)
    if config["class_name"] not in MODEL_CLASSES or not builtin(config):
        raise BadInput(subclassed_message(path, config.get("class_name", "?")))
    code: list[str] = []
    custom: list[str] = []
    for entry in _walk_layers(config, builtin):
        cls = entry.get("class_name", "?")
        name = entry.get("config", {}).get("name", entry.get("name", "?"))
        if cls in CODE_LAYERS:
            code.append(f"{name} ({cls})")
        elif not builtin(entry):
            custom.append(f"{name} ({cls}, module {entry.get('module')}, registered as {entry.get('registered_name')})")
    if custom:
        raise BadInput(
            f"{path}: cannot translate custom layer(s) to tf-keras: {', '.join(custom)}; "
            "only built-in Keras layers can be rebuilt without their code"
        )
    if code and not unsafe:
        raise BadInput(
            f"{path}: layer(s) {', '.join(code)} carry Python code stored in the file and loading them runs it; "
            "pass --unsafe (load_model(..., unsafe=True)) only if you trust the file"
        )


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(type(v), type(v).__name__)


def _structure_problem(model: dict[str, Any], where: str = "the model") -> str | None:
    """What makes a model config unreadable as a layer graph (a model or layer entry, or its ``config``,
    that is not a JSON object), naming the layer; None when the structure is sound. Checked before
    anything reads it, so a damaged file is one BadInput instead of an AttributeError deep inside."""
    cfg = model.get("config")
    if isinstance(cfg, list) and model.get("class_name") == "Sequential":
        cfg = {"layers": cfg}  # Keras 2.0-era Sequential: the config is the list of layers
    if not isinstance(cfg, dict):
        return f"{where} ({model.get('class_name')}) has a config that is {_kind(cfg)}, not an object"
    layers = cfg.get("layers", [])
    if not isinstance(layers, list):
        return f"the layers of {where} are {_kind(layers)}, not a list"
    for i, entry in enumerate(layers):
        if not isinstance(entry, dict):
            return f"layer {i} of {where} is {_kind(entry)}, not an object"
        layer_cfg = entry.get("config")
        name = entry.get("name") or (layer_cfg.get("name") if isinstance(layer_cfg, dict) else None)
        label = f"layer {i} {name!r} ({entry.get('class_name')})" if name else f"layer {i} ({entry.get('class_name')})"
        if not isinstance(entry.get("class_name"), str):
            return f"{label} has no class_name"
        if not isinstance(layer_cfg, dict):
            shown = f" ({layer_cfg!r:.40})" if isinstance(layer_cfg, str) else ""
            return f"{label} has a config that is {_kind(layer_cfg)}{shown}, not an object"
        if not isinstance(entry.get("inbound_nodes", []), list):
            return f"{label} has inbound_nodes that are {_kind(entry['inbound_nodes'])}, not a list"
        if entry["class_name"] in MODEL_CLASSES:
            inner = _structure_problem(entry, f"nested model {name!r}")
            if inner:
                return inner
    return None


def subclassed_message(path: Path | str, cls: str) -> str:
    return (
        f"{path}: {cls} is a subclassed model; prune, cluster and distill need a Sequential or functional "
        "model because tfmot wraps the layers of a layer graph, which a subclassed call() hides. "
        "Either convert it only (export a SavedModel with model.export(DIR), then `edgeopt convert DIR`) "
        "or rebuild it as a functional model"
    )


def _walk_layers(model_config: dict[str, Any], builtin: Any = _is_builtin) -> list[dict[str, Any]]:
    out = []
    cfg = model_config.get("config", {})
    for entry in cfg if isinstance(cfg, list) else cfg.get("layers", []):
        if entry.get("class_name") in MODEL_CLASSES and builtin(entry):
            out += _walk_layers(entry, builtin)
        else:
            out.append(entry)
    return out


# ---- config translation -------------------------------------------------------------------------


class _Translator:
    """Rewrites a Keras 3 model config into a tf-keras one; collects what cannot be translated."""

    def __init__(self, k3_model: Any) -> None:
        self.k3_model = k3_model
        self.problems: list[str] = []

    # nested serialized objects (dtype policies, initializers, regularizers, constraints, tuples)
    def obj(self, v: Any, where: str) -> Any:
        if isinstance(v, list):
            return [self.obj(x, where) for x in v]
        if not isinstance(v, dict):
            return v
        if "class_name" in v and "config" in v and ("module" in v or "registered_name" in v):
            cls, cfg, module = v["class_name"], v["config"], v.get("module") or ""
            if cls in ("DTypePolicy", "FloatDTypePolicy"):
                return cfg["name"]
            if cls == "__tuple__":
                return tuple(self.obj(x, where) for x in cfg["value"])
            if cls == "function":
                if module.startswith("keras") and isinstance(cfg, str):
                    return cfg
                self.problems.append(f"{where}: custom function {cfg!r} from module {module}")
                return None
            return self._keras_object(cls, cfg, module, v, where)
        return {k: self.obj(x, where) for k, x in v.items() if k != "shared_object_id"}

    def _keras_object(self, cls: str, cfg: Any, module: str, v: dict[str, Any], where: str) -> Any:
        from edgeopt._keras import keras  # lazy: imports TensorFlow

        kind = module.split(".")[-1] if module.startswith("keras") else ""
        target = {
            "initializers": keras.initializers,
            "regularizers": keras.regularizers,
            "constraints": keras.constraints,
        }.get(kind)
        if target is None or not _is_builtin(v) or not hasattr(target, cls):
            self.problems.append(f"{where}: {cls} (module {module}) has no tf-keras equivalent")
            return None
        cfg = self.obj(cfg, where)
        accepted = _init_params(getattr(target, cls))
        if accepted is not None and isinstance(cfg, dict):
            extra = {k: x for k, x in cfg.items() if k not in accepted}
            if any(x is not None for x in extra.values()):
                self.problems.append(f"{where}: {cls} option(s) {sorted(extra)} have no tf-keras equivalent")
            cfg = {k: x for k, x in cfg.items() if k in accepted}
        return {"class_name": cls, "config": cfg}

    def layers(self, entry: dict[str, Any], functional: bool) -> list[dict[str, Any]]:
        """The tf-keras layer entries for one Keras 3 entry: one layer, or for a Keras 3 operation or
        an activation tf-keras lacks, TFOpLambda layers (the last keeps the entry's name, so the layers
        that use its output find it)."""
        cls = entry["class_name"]
        name = entry.get("config", {}).get("name", entry.get("name"))
        where = f"{name} ({cls})"
        module = entry.get("module") or ""
        if module.startswith("keras.src.ops."):
            return self._operation(entry, name, where, functional)
        if cls == "Activation":
            activation = entry["config"].get("activation")
            if isinstance(activation, str) and activation in _ACTIVATION_CHAINS:
                return self._chain(entry, name, where, _ACTIVATION_CHAINS[activation], functional)
        return [self.layer(entry, functional)]

    def layer(self, entry: dict[str, Any], functional: bool) -> dict[str, Any]:
        from edgeopt._keras import keras  # lazy: imports TensorFlow

        cls = entry["class_name"]
        name = entry.get("config", {}).get("name", entry.get("name"))
        where = f"{name} ({cls})"
        if cls in MODEL_CLASSES:
            out = self.model(entry)
        else:
            target = getattr(keras.layers, cls, None)
            if target is None:
                self.problems.append(f"{where}: no tf-keras layer of that class")
                return {"class_name": "InputLayer", "config": {"name": name}}
            cfg = self.obj(entry["config"], where)
            if isinstance(cfg.get("activation"), str):
                cfg["activation"] = _ACTIVATION_NAMES.get(cfg["activation"], cfg["activation"])
            if cls == "InputLayer" and "batch_shape" in cfg:
                cfg["batch_input_shape"] = cfg.pop("batch_shape")
            if cls == "Lambda":  # _lambda writes tf-keras' own Lambda config
                cfg, accepted = self._lambda(name, cfg), None
            else:
                accepted = _init_params(target)
            if accepted is not None:
                accepted |= _BASE_LAYER_KWARGS
                extra = {k: x for k, x in cfg.items() if k not in accepted}
                meaningful = {k: x for k, x in extra.items() if x not in (None, False, {}, [])}
                if meaningful:
                    self.problems.append(f"{where}: option(s) {meaningful} have no tf-keras equivalent")
                cfg = {k: x for k, x in cfg.items() if k in accepted}
            out = {"class_name": cls, "config": cfg}
        out["name"] = name
        if functional:
            out["inbound_nodes"] = [self.node(n, where) for n in entry.get("inbound_nodes", [])]
        return out

    def _lambda(self, name: str, cfg: dict[str, Any]) -> dict[str, Any]:
        """tf-keras Lambda config around the function Keras 3 loaded (only reached with ``unsafe``)."""
        from tf_keras.src.utils.generic_utils import func_dump

        fn = _find_layer(self.k3_model, name).function
        return {
            "name": name,
            "trainable": cfg.get("trainable", True),
            "dtype": cfg.get("dtype", "float32"),
            "function": func_dump(fn),
            "function_type": "lambda",
            "module": getattr(fn, "__module__", None),
            "output_shape": None,
            "output_shape_type": "raw",
            "output_shape_module": None,
            "arguments": cfg.get("arguments") or {},
        }

    def node(self, node: Any, where: str) -> list[list[Any]]:
        """Keras 3 ``{"args": [...], "kwargs": {...}}`` -> tf-keras ``[[layer, node, tensor, kwargs], ...]``."""
        if isinstance(node, list):  # already the old format
            return node
        args, kwargs = node.get("args", []), node.get("kwargs", {})
        tensors = _tensors(args[0]) if args else []
        if len(args) != 1 or not tensors or _tensors(args[1:]) or _tensors(kwargs):
            self.problems.append(f"{where}: called with more than one tensor argument or tensor keyword arguments")
            return []
        kw = self.obj(kwargs, where)
        return [[*t["config"]["keras_history"], kw] for t in tensors]

    # ---- Keras 3 operations and activation chains -> TFOpLambda layers

    def _operation(self, entry: dict[str, Any], name: str, where: str, functional: bool) -> list[dict[str, Any]]:
        cls = entry["class_name"]
        options = {k: v for k, v in entry["config"].items() if k != "name"}
        if cls in _OP_CHAINS and not options:
            return self._chain(entry, name, where, _ACTIVATION_CHAINS[_OP_CHAINS[cls]], functional)
        if cls not in _OPS or options:
            detail = f" with options {options}" if options else ""
            self.problems.append(f"{where}: Keras 3 operation {cls}{detail} has no tf-keras equivalent")
            return []
        if not functional:
            self.problems.append(f"{where}: a Keras 3 operation outside a functional model")
            return []
        function, params = _OPS[cls]
        nodes = []
        for node in entry.get("inbound_nodes", []):
            args, kwargs = node.get("args", []), node.get("kwargs", {})
            if len(args) > len(params) or kwargs or not _tensors(args):
                self.problems.append(f"{where}: called with arguments {_describe(args)} {kwargs or ''}".rstrip())
                return []
            values = [self._argument(a, where) for a in args]
            nodes.append(_op_node(values[0], dict(zip(params[1:], values[1:], strict=False))))
        return [_op_layer(name, function, _dtype(entry), nodes)]

    def _argument(self, v: Any, where: str) -> Any:
        """A Keras 3 call argument as tf-keras writes it: a tensor as [layer, node, index], a constant as is."""
        if isinstance(v, dict) and v.get("class_name") == "__keras_tensor__":
            return list(v["config"]["keras_history"])
        if isinstance(v, bool | int | float) or (
            isinstance(v, list) and all(isinstance(x, bool | int | float) for x in v)
        ):
            return v
        self.problems.append(f"{where}: argument {_describe([v])} is neither a tensor nor a number")
        return None

    def _chain(
        self, entry: dict[str, Any], name: str, where: str, steps: list[tuple[str, str, Any]], functional: bool
    ) -> list[dict[str, Any]]:
        """Layers computing ``steps`` on the entry's input, one TFOpLambda a step; the last one is ``name``."""
        if not functional:
            self.problems.append(
                f"{where}: tf-keras has no such activation and a Sequential model cannot hold its ops; "
                "rebuild the model as a functional one"
            )
            return []
        names = [f"{name}_{i}_{fn.replace('.', '_')}" for i, (fn, _, _) in enumerate(steps[:-1])] + [name]
        per_step: list[list[Any]] = [[] for _ in steps]
        for k, node in enumerate(entry.get("inbound_nodes", [])):
            args, kwargs = node.get("args", []), node.get("kwargs", {})
            tensors = _tensors(args)
            if len(args) != 1 or len(tensors) != 1 or _tensors(kwargs):
                self.problems.append(f"{where}: called with arguments {_describe(args)}")
                return []
            refs = {"in": list(tensors[0]["config"]["keras_history"])}
            for i, (_, first, y) in enumerate(steps):
                refs["prev"] = [names[i - 1], k, 0] if i else None
                extra = {} if y is None else {"y": refs[y] if isinstance(y, str) else y}
                per_step[i].append(_op_node(refs[first], extra))
        if entry["class_name"] == "Activation":
            dtype = self.obj(entry["config"].get("dtype"), where) or "float32"
        else:
            dtype = _dtype(entry)
        return [_op_layer(n, fn, dtype, nodes) for n, (fn, _, _), nodes in zip(names, steps, per_step, strict=True)]

    def model(self, entry: dict[str, Any]) -> dict[str, Any]:
        cls, cfg = entry["class_name"], entry["config"]
        if cls == "Sequential":
            layers = [x for e in cfg["layers"] for x in self.layers(e, functional=False)]
            return {"class_name": "Sequential", "config": {"name": cfg["name"], "layers": layers}}
        layers = [x for e in cfg["layers"] for x in self.layers(e, functional=True)]
        return {
            "class_name": "Functional",
            "config": {
                "name": cfg["name"],
                "layers": layers,
                "input_layers": cfg["input_layers"],
                "output_layers": cfg["output_layers"],
            },
        }


def _op_node(first: Any, kwargs: dict[str, Any]) -> list[Any]:
    """tf-keras node data of a TFOpLambda call: the first argument (a [layer, node, index] reference or
    a constant), then the other arguments by name. Not nested in a list: TFOpLambda keeps its input's
    structure, and a list around it would become an extra tensor axis."""
    kwargs = {**kwargs, "name": None}
    if isinstance(first, list) and len(first) == 3 and isinstance(first[0], str):
        return [*first, kwargs]
    return ["_CONSTANT_VALUE", -1, first, kwargs]


def _op_layer(name: str, function: str, dtype: Any, nodes: list[list[Any]]) -> dict[str, Any]:
    config = {"name": name, "trainable": True, "dtype": dtype, "function": function}
    return {"class_name": "TFOpLambda", "name": name, "config": config, "inbound_nodes": nodes}


def _dtype(entry: dict[str, Any]) -> str:
    """The dtype a Keras 3 operation computes in: that of its first tensor argument."""
    for node in entry.get("inbound_nodes", []):
        for t in _tensors(node.get("args", [])):
            return t["config"].get("dtype") or "float32"
    return "float32"


def _describe(args: list[Any]) -> str:
    return "[" + ", ".join("<tensor>" if _tensors(a) else repr(a)[:40] for a in args) + "]"


def _tensors(v: Any) -> list[dict[str, Any]]:
    if isinstance(v, dict):
        if v.get("class_name") == "__keras_tensor__":
            return [v]
        return [t for x in v.values() for t in _tensors(x)]
    if isinstance(v, list | tuple):
        return [t for x in v for t in _tensors(x)]
    return []


def _init_params(cls: type) -> set[str] | None:
    """Named ``__init__`` parameters along the class's MRO (up to tf-keras' base Layer)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass.__name__ in ("Layer", "Module", "AutoTrackable", "object"):
            continue
        try:
            params = inspect.signature(klass.__init__).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
    return names


def _find_layer(model: Any, name: str) -> Any:
    for layer in model.layers:
        if layer.name == name:
            return layer
        if hasattr(layer, "layers"):
            try:
                return _find_layer(layer, name)
            except KeyError:
                pass
    raise KeyError(name)


# ---- loading ------------------------------------------------------------------------------------


def load_keras3(path: Path, *, unsafe: bool = False) -> Any:
    """A tf-keras model equivalent to the Keras 3 model in ``path`` (checked on random inputs)."""
    config = read_archive_json(path, "config.json")
    check_config(config, path, unsafe=unsafe)
    k3 = _load_with_keras3(path, unsafe=unsafe)
    tr = _Translator(k3)
    tf_config = tr.model(config)
    if tr.problems:
        raise BadInput(f"{path}: cannot translate to tf-keras: {'; '.join(tr.problems)}")
    model = _build(tf_config, path, unsafe=unsafe)
    _copy_weights(k3, model, path)
    diff = max_output_difference(k3, model)
    if not diff <= TOLERANCE:
        raise BadInput(
            f"{path}: the tf-keras translation does not match the Keras 3 model (max abs output difference "
            f"{diff:.3g} on random inputs, limit {TOLERANCE:g}); refusing to go on"
        )
    return model


def _load_with_keras3(path: Path, *, unsafe: bool) -> Any:
    import edgeopt._keras  # noqa: F401 - lazy: imports TensorFlow, whose environment Keras 3 must find set

    try:
        with captured_stderr():
            import keras as keras3
    except ImportError:
        raise BadInput(f"{path}: was saved by Keras 3, which is needed to read it (pip install 'keras>=3')") from None
    if not keras3.__version__.startswith("3."):
        raise BadInput(f"{path}: was saved by Keras 3 but the installed keras is {keras3.__version__}")
    try:
        return keras3.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"{path}: Keras 3 cannot read it: {first[:300]}") from None


def _build(tf_config: dict[str, Any], path: Path, *, unsafe: bool) -> Any:
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    from edgeopt._keras import keras  # lazy: imports TensorFlow

    try:
        with SafeModeScope(not unsafe):
            return keras.models.model_from_config(tf_config)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"{path}: tf-keras cannot build the translated model: {first[:300]}") from None


def _copy_weights(k3_model: Any, model: Any, path: Path) -> None:
    """Copy every layer's weights from the Keras 3 model to the tf-keras one, by layer name."""
    mismatched: list[str] = []
    for layer in _leaf_layers(model):
        if not layer.weights:  # nothing to copy; TFOpLambda layers have no Keras 3 layer to look up
            continue
        src = _find_layer(k3_model, layer.name)
        src_w, dst_w = src.get_weights(), layer.get_weights()
        if len(src_w) != len(dst_w) or any(a.shape != b.shape for a, b in zip(src_w, dst_w, strict=False)):
            mismatched.append(f"{layer.name} ({type(layer).__name__})")
            continue
        if src_w:
            layer.set_weights(src_w)
    if mismatched:
        raise BadInput(f"{path}: weights of layer(s) {', '.join(mismatched)} do not match in tf-keras")


def _leaf_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out += _leaf_layers(layer) if hasattr(layer, "layers") else [layer]
    return out


def random_inputs(model: Any, scale: float = 1.0, batch: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Random inputs of the model's input shapes (``None`` dims set to 8): floats uniform in
    ``[-scale, scale)``, integer inputs 0 or 1."""
    rng = np.random.default_rng(seed)
    xs = []
    for t in model.inputs:
        shape = [batch, *(d if d is not None else 8 for d in tuple(t.shape)[1:])]
        dtype = np.dtype(getattr(t.dtype, "name", t.dtype))
        x = rng.integers(0, 2, shape) if dtype.kind in "iu" else rng.uniform(-scale, scale, shape)
        xs.append(x.astype(dtype))
    return xs


# Unit-range inputs, and pixel-range ones: a model that starts with Rescaling(1/255) barely reacts to
# the first, a softmax saturates on the second for a model that expects [0, 1].
CHECK_SCALES = (1.0, 255.0)


def max_output_difference(k3_model: Any, model: Any) -> float:
    """Largest absolute difference between the two models' outputs on the same random inputs."""
    worst = 0.0
    for seed, scale in enumerate(CHECK_SCALES):
        xs = random_inputs(model, scale=scale, seed=seed)
        arg = xs[0] if len(xs) == 1 else xs
        a = [np.asarray(o) for o in _flat(k3_model(arg, training=False))]
        b = [np.asarray(o) for o in _flat(model(arg, training=False))]
        if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=False)):
            return float("inf")
        for x, y in zip(a, b, strict=True):
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0)
    return worst


def _flat(v: Any) -> list[Any]:
    if isinstance(v, dict):
        return [x for k in sorted(v) for x in _flat(v[k])]
    if isinstance(v, list | tuple):
        return [x for y in v for x in _flat(y)]
    return [v]


__all__ = ["is_keras3_archive", "load_keras3", "max_output_difference"]
