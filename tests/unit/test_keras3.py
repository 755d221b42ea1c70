"""Bring your own model: Keras 3 files, SavedModel folders, refusals (issue #6).

Models are built here with Keras 3 (random weights, no downloads) and saved to .keras files; every
stage then reads those files through the CLI.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeopt import keras3 as k3mod
from edgeopt._keras import keras as tfk  # sets TF's environment before Keras 3 imports TensorFlow
from edgeopt.artifacts import load_model, save_model
from edgeopt.cli import app
from edgeopt.errors import BadInput

keras = importlib.import_module("keras")  # Keras 3
L = keras.layers
runner = CliRunner()


def invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


# ---- models (Keras 3) ---------------------------------------------------------------------------


def resblock() -> object:
    """Functional ResNet-style block: Rescaling, Conv+BN, DepthwiseConv2D+BN, residual Add, GAP."""
    i = keras.Input((32, 32, 3), name="image")
    x = L.Rescaling(1 / 255.0, name="rescale")(i)
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = L.BatchNormalization(name="dw_bn")(y)
    y = L.ReLU(name="dw_relu")(y)
    y = L.Conv2D(16, 1, use_bias=False, name="pw", kernel_regularizer=keras.regularizers.L2(1e-4))(y)
    y = L.BatchNormalization(name="pw_bn")(y)
    x = L.Add(name="residual")([x, y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    o = L.Dense(10, activation="softmax", name="head")(x)
    return keras.Model(i, o, name="resblock")


def sensor() -> object:
    """1-D conv / dense model on (128, 3) sensor windows; PReLU is a layer tfmot cannot prune."""
    return keras.Sequential(
        [
            keras.Input((128, 3)),
            L.Conv1D(16, 5, name="conv1"),
            L.PReLU(shared_axes=[1], name="prelu"),
            L.MaxPooling1D(2, name="pool"),
            L.Conv1D(16, 3, padding="same", activation="relu", name="conv2"),
            L.GlobalAveragePooling1D(name="gap"),
            L.Dense(24, activation="relu", name="fc"),
            L.Dense(4, activation="softmax", name="head"),
        ],
        name="sensor",
    )


def mobilenet() -> object:
    return keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=10)


ARCHS = {
    "resblock": (resblock, (32, 32, 3), 10),
    "sensor": (sensor, (128, 3), 4),
    "mobilenetv2": (mobilenet, (96, 96, 3), 10),
}


def save_k3(model: object, path: Path) -> Path:
    model.save(path)
    return path


def write_npz(path: Path, shape: tuple[int, ...], classes: int, n: int = 64) -> str:
    rng = np.random.default_rng(0)
    x = rng.random((n + 16, *shape), dtype=np.float32)
    y = np.arange(n + 16) % classes
    np.savez(path, x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:])
    return f"npz:{path}"


@pytest.fixture(scope="module")
def res_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keras.utils.set_random_seed(0)
    return save_k3(resblock(), tmp_path_factory.mktemp("k3") / "res.keras")


# ---- detection and translation ------------------------------------------------------------------


def test_keras3_file_is_detected_by_its_metadata(res_path, tiny_model_path, tmp_path):
    assert k3mod.is_keras3_archive(res_path)
    assert not k3mod.is_keras3_archive(tiny_model_path)  # tf-keras writes keras_version 2.x
    assert json.loads(__import__("zipfile").ZipFile(res_path).read("metadata.json"))["keras_version"][0] == "3"
    # tf-keras itself cannot read the file: that is the gap being closed
    with pytest.raises(Exception):  # noqa: B017
        tfk.models.load_model(res_path, compile=False)


def test_keras3_translation_has_same_weights_and_outputs(res_path):
    k3 = keras.saving.load_model(res_path, compile=False)
    m = load_model(res_path)
    assert isinstance(m, tfk.Model) and m.name == "resblock"
    assert [layer.name for layer in m.layers] == [layer.name for layer in k3.layers]
    for layer in k3.layers:
        for a, b in zip(layer.get_weights(), m.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(1).random((3, 32, 32, 3), dtype=np.float32) * 255
    np.testing.assert_allclose(m(x, training=False).numpy(), np.asarray(k3(x, training=False)), atol=1e-5)
    # regularizers survive for fine-tuning: the same class with the same factor, giving the same penalty
    reg, k3_reg = m.get_layer("pw").kernel_regularizer, k3.get_layer("pw").kernel_regularizer
    assert type(reg).__name__ == type(k3_reg).__name__ == "L2"
    assert reg.get_config() == pytest.approx(k3_reg.get_config(), rel=1e-6)
    kernel = m.get_layer("pw").get_weights()[0]
    assert float(reg(kernel)) == pytest.approx(float(k3_reg(kernel)), rel=1e-5)


def test_keras3_translation_that_differs_is_refused(res_path, monkeypatch):
    original = k3mod._copy_weights

    def perturbed(k3_model, model, path):
        original(k3_model, model, path)
        w = model.get_layer("pw").get_weights()
        w[0] = w[0] + 1e-2
        model.get_layer("pw").set_weights(w)

    monkeypatch.setattr(k3mod, "_copy_weights", perturbed)
    with pytest.raises(BadInput, match=r"does not match the Keras 3 model \(max abs output difference [0-9.e-]+"):
        load_model(res_path)


def test_layers_without_tf_keras_equivalent_are_listed_in_one_error(tmp_path):
    i = keras.Input((16, 4))
    x = L.RMSNormalization(name="rms")(i)
    x = L.AdaptiveAveragePooling1D(4, name="adapt")(x)
    x = L.Flatten()(x)
    p = save_k3(keras.Model(i, L.Dense(2)(x)), tmp_path / "m.keras")
    with pytest.raises(BadInput, match=r"rms \(RMSNormalization\).*adapt \(AdaptiveAveragePooling1D\)"):
        load_model(p)


def test_custom_layer_is_refused_with_its_name_and_class(tmp_path):
    @keras.saving.register_keras_serializable(package="mine")
    class Scale(L.Layer):
        def call(self, x):
            return x * 2.0

    i = keras.Input((4,))
    p = save_k3(keras.Model(i, L.Dense(2)(Scale(name="twice")(i))), tmp_path / "m.keras")
    r = invoke("convert", p, "--out", tmp_path / "m.tflite", "--quantization", "float32")
    assert r.exit_code == 2 and "custom layer(s) to tf-keras: twice (Scale" in r.output, r.output
    assert not (tmp_path / "m.tflite").exists()


def test_lambda_is_refused_unless_unsafe(tmp_path):
    i = keras.Input((8,))
    x = L.Dense(4, name="d")(i)
    o = L.Lambda(lambda t: t * 3.0 + 1.0, name="affine")(x)
    p = save_k3(keras.Model(i, o), tmp_path / "lam.keras")
    with pytest.raises(BadInput, match=r"affine \(Lambda\) carry Python code .* pass --unsafe"):
        load_model(p)
    m = load_model(p, unsafe=True)
    x = np.ones((2, 8), np.float32)
    k3 = keras.saving.load_model(p, compile=False, safe_mode=False)
    np.testing.assert_allclose(m(x).numpy(), np.asarray(k3(x)), atol=1e-6)
    # the CLI: refused without the flag (exit 2, one line), converted with it
    out = tmp_path / "lam.tflite"
    r = invoke("convert", p, "--out", out, "--quantization", "float32")
    assert r.exit_code == 2 and "--unsafe" in r.output and not out.exists()
    r = invoke("convert", p, "--out", out, "--quantization", "float32", "--unsafe")
    assert r.exit_code == 0 and out.is_file(), r.output
    # a tf-keras file written from it still carries the code: refused the same way
    saved = save_model(m, tmp_path / "lam_tfk.keras")
    with pytest.raises(BadInput, match="--unsafe"):
        load_model(saved)
    np.testing.assert_allclose(load_model(saved, unsafe=True)(x).numpy(), m(x).numpy(), atol=1e-6)
    h5 = save_model(m, tmp_path / "lam_tfk.h5")
    with pytest.raises(BadInput, match=r"affine \(Lambda\).*--unsafe"):
        load_model(h5)


# ---- operations with constants (hard-swish and friends) -----------------------------------------


def hard_swish_net() -> object:
    """Conv + hand-written hard-swish x * relu6(x + 3) / 6 (Keras 3 records ``x + 3.0`` as an Add
    operation called with a constant), the same as Activation("hard_silu") and ops.hard_sigmoid, and
    operations with the constant first (3 - x) or between two tensors."""
    ops = keras.ops
    i = keras.Input((12, 12, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv")(i)
    hs = x * (L.ReLU(6.0, name="relu6")(x + 3.0) * (1.0 / 6.0))  # MobileNetV3's hard_sigmoid, times x
    a = L.Activation("hard_silu", name="act_hard_silu")(x)
    b = ops.hard_sigmoid(a) / 6.0
    c = 3.0 - ops.maximum(b, 0.25)
    d = L.Add(name="merge")([hs, -c, ops.add(a, 1)])
    o = L.Dense(4, name="head")(L.GlobalAveragePooling2D(name="gap")(d))
    return keras.Model(i, o, name="hswish")


def test_operations_with_constants_become_tf_op_layers(tmp_path):
    keras.utils.set_random_seed(0)
    k3 = hard_swish_net()
    p = save_k3(k3, tmp_path / "hs.keras")
    m = load_model(p)
    functions = sorted(layer.get_config()["function"] for layer in m.layers if type(layer).__name__ == "TFOpLambda")
    # x + 3.0, * (1/6), x * ...; hard_silu and hard_sigmoid expanded; / 6.0, 3.0 - ..., maximum, negative, add 1
    assert functions.count("nn.relu6") == 2 and functions.count("math.truediv") == 3, functions
    assert {"math.subtract", "math.maximum", "math.negative"} <= set(functions), functions
    x = np.random.default_rng(3).uniform(-4, 4, (5, 12, 12, 3)).astype(np.float32)
    want = np.asarray(k3(x, training=False))
    assert np.max(np.abs(m(x, training=False).numpy() - want)) <= k3mod.TOLERANCE
    # the translation is a plain tf-keras model: saved and read back without --unsafe, same outputs
    again = load_model(save_model(m, tmp_path / "hs_tfk.keras"))
    np.testing.assert_array_equal(again(x, training=False).numpy(), m(x, training=False).numpy())
    # and it converts: the float32 .tflite computes the same function
    from edgeopt import stages
    from edgeopt.config import ConvertConfig
    from edgeopt.runtimes.litert import LiteRTModel

    tfl = stages.convert(m, ConvertConfig(quantization="float32")).tflite
    np.testing.assert_allclose(LiteRTModel(tfl).predict(x), want, atol=1e-4)


def test_operation_without_tf_keras_equivalent_is_named(tmp_path):
    i = keras.Input((6, 4))
    x = keras.ops.mean(L.Dense(4, name="d")(i), axis=1, keepdims=False)
    y = keras.ops.cumsum(x, axis=-1)
    p = save_k3(keras.Model(i, y), tmp_path / "m.keras")
    with pytest.raises(
        BadInput,
        match=r"mean \(Mean\): Keras 3 operation Mean with options \{'axis': 1, 'keepdims': False\} has no tf-keras "
        r"equivalent; cumsum \(Cumsum\): Keras 3 operation Cumsum with options",
    ):
        load_model(p)


@pytest.mark.parametrize("preprocessing", [True, False])
def test_mobilenet_v3_small_translates(preprocessing, tmp_path):
    """Keras 3's MobileNetV3Small (hard-swish written as ops with constants; ~3 s each)."""
    keras.utils.set_random_seed(0)
    k3 = keras.applications.MobileNetV3Small(
        input_shape=(96, 96, 3), weights=None, include_preprocessing=preprocessing, classes=10
    )
    m = load_model(save_k3(k3, tmp_path / "mnv3.keras"))  # refused if the outputs differ by more than TOLERANCE
    assert k3mod.max_output_difference(k3, m) <= k3mod.TOLERANCE
    kinds = {type(layer).__name__ for layer in m.layers}
    assert "TFOpLambda" in kinds and m.count_params() == k3.count_params()


def damaged_copy(src: Path, dst: Path, damage) -> Path:
    """A copy of the .keras zip ``src`` whose config.json was changed by ``damage(config)``."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "config.json":
                config = json.loads(data)
                damage(config)
                data = json.dumps(config).encode()
            zout.writestr(name, data)
    return dst


@pytest.mark.parametrize("writer", ["keras3", "tf_keras"])
def test_damaged_layer_config_is_bad_input_naming_the_layer(writer, res_path, tiny_model_path, tmp_path):
    src = res_path if writer == "keras3" else tiny_model_path
    layers = json.loads(__import__("zipfile").ZipFile(src).read("config.json"))["config"]["layers"]
    index = next(i for i, e in enumerate(layers) if e["class_name"] == "Conv2D")
    # a functional entry names its layer outside the damaged config too; a Sequential one (tiny_model) does not
    label = f"layer {index} '{layers[index]['name']}'" if "name" in layers[index] else f"layer {index}"

    def damage(config):
        config["config"]["layers"][index]["config"] = "oops"

    bad = damaged_copy(src, tmp_path / "bad.keras", damage)
    message = rf"config.json is damaged: {label} \(Conv2D\) has a config that is a string \('oops'\), not an object"
    with pytest.raises(BadInput, match=message):
        load_model(bad)
    r = invoke("convert", bad, "--out", tmp_path / "m.tflite", "--quantization", "float32")
    assert r.exit_code == 2, r.output
    assert f"{label} (Conv2D) has a config that is a string" in r.output and len(r.output.strip().splitlines()) == 1
    assert "AttributeError" not in r.output and not (tmp_path / "m.tflite").exists()


def test_damaged_layer_list_and_nested_model_are_bad_input(res_path, tmp_path):
    def not_a_list(config):
        config["config"]["layers"] = "none"

    with pytest.raises(BadInput, match="config.json is damaged: the layers of the model are a string, not a list"):
        load_model(damaged_copy(res_path, tmp_path / "a.keras", not_a_list))

    def entry_is_number(config):
        config["config"]["layers"][2] = 7

    with pytest.raises(BadInput, match="config.json is damaged: layer 2 of the model is int, not an object"):
        load_model(damaged_copy(res_path, tmp_path / "b.keras", entry_is_number))


def test_subclassed_keras3_model_is_refused_with_what_to_do(tmp_path):
    class Net(keras.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    m = Net()
    m(np.zeros((1, 4), np.float32))
    p = save_k3(m, tmp_path / "sub.keras")
    r = invoke("prune", p, "--data", "digits", "--out", tmp_path / "p.keras")
    assert r.exit_code == 2, r.output
    assert "subclassed model" in r.output and "model.export(DIR)" in r.output and "functional" in r.output


def test_training_stages_refuse_a_subclassed_tf_keras_model(digits):
    from edgeopt import stages
    from edgeopt.config import PruneConfig

    class Net(tfk.Model):
        def __init__(self):
            super().__init__()
            self.f, self.d = tfk.layers.Flatten(), tfk.layers.Dense(10)

        def call(self, x):
            return self.d(self.f(x))

    m = Net()
    m(np.zeros((1, *digits.input_shape), np.float32))
    with pytest.raises(BadInput, match="prune: .*subclassed model.*rebuild it as a functional model"):
        stages.prune(m, digits, PruneConfig(epochs=1))


def test_saved_model_folder_converts_and_validates(tmp_path):
    keras.utils.set_random_seed(0)
    m = sensor()
    folder = tmp_path / "exported"
    m.export(folder, verbose=False)
    data = write_npz(tmp_path / "d.npz", (128, 3), 4)
    out = tmp_path / "s.tflite"
    r = invoke("convert", folder, "--out", out, "--quantization", "int8", "--data", data, "--quiet")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "s.tflite.json").read_text())
    assert meta["inputs"][0]["dtype"] == "int8" and meta["op_counts"].get("CONV_2D") == 2
    r = invoke("validate", out, "--data", data, "--keras", folder, "--json", tmp_path / "v.json", "--quiet")
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "v.json").read_text())["models"][0]
    assert v["max_abs_output_diff"] < 0.05 and v["outputs_finite"]
    # the training stages need a Keras model, which an exported SavedModel does not hold
    with pytest.raises(BadInput, match="SavedModel without a Keras model"):
        load_model(folder)


# ---- the three architectures through every stage ------------------------------------------------


@pytest.mark.parametrize("arch", list(ARCHS))
def test_keras3_architecture_through_every_stage(arch, tmp_path):
    build, shape, classes = ARCHS[arch]
    keras.utils.set_random_seed(0)
    src = save_k3(build(), tmp_path / f"{arch}.keras")
    data = write_npz(tmp_path / "d.npz", shape, classes)
    common = ["--data", data, "--epochs", "1", "--batch-size", "8", "--quiet"]  # 8 steps: sparsity reached

    r = invoke(
        "prune", src, "--out", tmp_path / "p.keras", "--final-sparsity", "0.5", "--schedule", "constant", *common
    )
    assert r.exit_code == 0, r.output
    pm = json.loads((tmp_path / "p.keras.json").read_text())
    assert pm["target_met"], pm["sparsity"]
    if arch == "sensor":
        assert pm["skipped_layers"] == {"prelu": "PReLU is not supported by tfmot pruning"}
    else:
        assert "tfmot prunes no weights of DepthwiseConv2D" in pm["skipped_layers"].values()

    r = invoke("cluster", tmp_path / "p.keras", "--out", tmp_path / "c.keras", "--clusters", "8", *common)
    assert r.exit_code == 0, r.output
    cm = json.loads((tmp_path / "c.keras.json").read_text())
    assert cm["max_distinct_values"] <= 8 and cm["layers"]
    skipped = cm["skipped_layers"]
    if arch == "sensor":
        assert skipped == {"prelu": "PReLU is not supported by tfmot clustering"}
    else:  # tfmot clusters neither BatchNormalization nor DepthwiseConv2D: listed, not a crash
        reasons = set(skipped.values())
        assert (
            reasons
            <= {"tfmot clusters no weights of BatchNormalization", "tfmot clusters no weights of DepthwiseConv2D"}
            and len(reasons) == 2
        ), skipped

    r = invoke("distill", src, "--out", tmp_path / "s.keras", "--width", "0.5", *common)
    assert r.exit_code == 0, r.output
    dm = json.loads((tmp_path / "s.keras.json").read_text())
    assert dm["student_params"] < dm["teacher_params"] * 0.6

    tfl = tmp_path / "m.tflite"
    r = invoke(
        "convert", src, "--out", tfl, "--quantization", "int8", "--data", data, "--calibration-samples", "16", "--quiet"
    )
    assert r.exit_code == 0, r.output
    ops = json.loads((tmp_path / "m.tflite.json").read_text())["op_counts"]
    translated = load_model(src)
    n_add = sum(type(layer).__name__ == "Add" for layer in translated.layers)
    n_bn = sum(type(layer).__name__ == "BatchNormalization" for layer in translated.layers)
    assert (n_bn > 0) == (arch != "sensor")
    # BatchNormalization folded into the convolutions: no MUL/ADD/SUB/RSQRT beyond the residual Adds
    assert ops.get("ADD", 0) == n_add and not {"MUL", "SUB", "RSQRT"} & set(ops), ops

    args = ["validate", tfl, "--data", data, "--keras", src, "--json", tmp_path / "v.json", "--quiet"]
    if arch == "mobilenetv2":
        # LiteRT 2.3's reference kernels abort while preparing this int8 MobileNetV2: validate reports
        # the crash (exit 3, the runtime and the signal) and still measures the rest.
        r = invoke(*args)
        assert r.exit_code == 3 and "litert-reference crashed: killed by SIGABRT" in r.output, r.output
        v = json.loads((tmp_path / "v.json").read_text())["models"][0]
        # (16 examples: LiteRT's optimized kernels may answer at most one of them unlike Keras)
        assert abs(v["accuracy"] - v["keras_accuracy"]) <= 1 / v["samples"] and v["latency"]["1"]["runs"] >= 50
        args.append("--no-cross-check")
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "v.json").read_text())["models"][0]
    assert v["outputs_finite"] and v["max_abs_output_diff"] < 0.05, v


def test_reference_kernel_abort_on_tiny_logits_is_explained(tmp_path):
    """Why the untrained MobileNetV2 above aborts the reference kernels: its logits span ~1e-6, the int8
    Softmax input scale falls below 2^-26 and PreprocessSoftmaxScaling's check aborts. The same model
    with logits of a normal size runs; the optimized kernels run both."""
    from edgeopt import stages
    from edgeopt.config import ConvertConfig
    from edgeopt.data import Dataset
    from edgeopt.runtimes.diagnose import known_aborts
    from edgeopt.runtimes.isolate import ChildFailed, run_task

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, 16)).astype(np.float32)
    i = tfk.Input((16,))
    init = tfk.initializers.GlorotUniform(seed=0)  # fixed weights: the logit range decides the outcome
    m = tfk.Model(i, tfk.layers.Dense(10, activation="softmax", name="logits", kernel_initializer=init)(i))
    y = np.arange(64) % 10
    calib = Dataset("random", "uniform noise", 0, x, y, x[:0], y[:0], x[:8], y[:8], [str(c) for c in range(10)])
    results = {}
    # 1e-7: the Softmax input scale lands at ~0.6 x 2^-26 (1e-6 gives ~1.0 x, too close to call)
    for factor in (1.0, 1e-7):
        w, b = m.get_layer("logits").get_weights()
        scaled = tfk.models.clone_model(m)
        scaled.get_layer("logits").set_weights([w * factor, b * 0])
        tfl = stages.convert(scaled, ConvertConfig(quantization="int8", calibration_samples=64), data=calib).tflite
        causes = known_aborts(tfl)
        try:
            run_task("litert_eval", "litert-reference", tfl, x[:4], timeout=120, resolver="reference")
            results[factor] = ("ran", causes)
        except ChildFailed as e:
            results[factor] = (str(e), causes)
        run_task("litert_eval", "litert", tfl, x[:4], timeout=120)  # optimized kernels: no crash either way
    assert results[1.0] == ("ran", [])
    message, causes = results[1e-7]
    assert message.startswith("litert-reference crashed: killed by SIGABRT"), message
    assert len(causes) == 1 and "SOFTMAX input" in causes[0] and causes[0] in message, message


def test_width_scaled_keeps_residual_branches_matching():
    """Channels tied by a residual Add scale together, or stay when tied to the input or an output."""
    from edgeopt import zoo

    Lt = tfk.layers
    i = tfk.Input((8, 8, 4))
    y = Lt.Conv2D(4, 3, padding="same", name="tied_to_input")(i)
    x = Lt.Add()([i, y])
    a = Lt.Conv2D(16, 1, name="a")(x)
    b = Lt.DepthwiseConv2D(3, padding="same", name="dw")(a)
    b = Lt.Conv2D(16, 1, name="b")(b)
    x = Lt.Add()([a, b])
    x = Lt.Conv2D(12, 1, name="before_reshape")(x)
    x = Lt.Reshape((8 * 8 * 12,))(x)
    o = Lt.Dense(3, name="head")(x)
    m = tfk.Model(i, o)
    assert zoo.fixed_width_layers(m) == {"tied_to_input", "before_reshape", "head"}
    s = zoo.width_scaled(m, 0.5)
    assert s.get_layer("a").filters == s.get_layer("b").filters == 8
    assert s.get_layer("dw").output_shape[-1] == 8 and s.output_shape == (None, 3)


def test_tf_keras_saved_model_folder_feeds_training_stages(tiny_model, tmp_path):
    folder = tmp_path / "tfk_saved"
    tiny_model.save(folder, save_format="tf")
    m = load_model(folder)
    assert isinstance(m, tfk.Model)
    assert [layer.name for layer in m.layers] == [layer.name for layer in tiny_model.layers]
    x = np.random.default_rng(0).random((4, *tiny_model.input_shape[1:]), dtype=np.float32)
    np.testing.assert_allclose(m.predict(x, verbose=0), tiny_model.predict(x, verbose=0), atol=1e-6)
