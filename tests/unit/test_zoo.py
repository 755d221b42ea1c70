import numpy as np
import pytest

from edgeopt import zoo
from edgeopt._keras import keras
from edgeopt.errors import BadInput
from edgeopt.stages._common import count_params


def test_fashion_cnn_is_the_reference_teacher():
    m = zoo.build("fashion_cnn", (28, 28, 1), 10)
    assert 200_000 < count_params(m) < 250_000


def test_unknown_zoo_name_lists_allowed():
    with pytest.raises(BadInput, match="allowed: .*fashion_cnn"):
        zoo.build("resnet", (28, 28, 1), 10)


def test_width_scaled_sequential_halves_hidden_layers_and_keeps_output():
    m = zoo.build("fashion_cnn", (28, 28, 1), 10)
    s = zoo.width_scaled(m, 0.5)
    assert [layer.get_config().get("filters") for layer in s.layers if "conv" in layer.name] == [16, 32]
    assert s.get_layer("fc1").units == 32 and s.get_layer("logits").units == 10
    assert s.output_shape == m.output_shape
    assert count_params(s) < count_params(m) / 3


def test_width_scaled_functional_with_residual_and_softmax_layer():
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inp)
    y = keras.layers.Conv2D(16, 3, padding="same", name="c2")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5, name="head")(x)
    out = keras.layers.Softmax()(x)
    m = keras.Model(inp, out)
    s = zoo.width_scaled(m, 0.25)
    assert s.get_layer("c1").filters == 4 and s.get_layer("c2").filters == 4
    assert s.get_layer("head").units == 5 and s.output_shape == (None, 5)


def test_width_scaled_refuses_subclassed():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(x)

    m = Sub()
    m(keras.Input((4,)))
    with pytest.raises(BadInput, match="subclassed"):
        zoo.width_scaled(m, 0.5)


@pytest.mark.parametrize("name", sorted(zoo.REFERENCE_COUNTS))
def test_mlperf_tiny_architectures_match_the_published_reference_counts(name):
    """Parameters and MACs of the converted float model equal those of MLPerf Tiny's reference .tflite
    (mlcommons/tiny trained_models, counted by the same edgeopt.tflite.inspect): MACs exactly, parameters
    within 0.01% (Keras' MobileNet head reshapes with a SHAPE/STRIDED_SLICE/PACK chain whose two
    constants the reference's Flatten does not have)."""
    from edgeopt.config import ConvertConfig
    from edgeopt.stages.convert import convert
    from edgeopt.tflite import inspect

    ref = zoo.REFERENCE_COUNTS[name]
    m = zoo.build(name, ref["input_shape"], ref["classes"])
    # Fresh layers have equal zero biases, which the converter stores once; distinct values keep every
    # tensor, as in the trained reference.
    rng = np.random.default_rng(0)
    m.set_weights([w + rng.uniform(0.5, 1.0, w.shape).astype(w.dtype) for w in m.get_weights()])
    s = inspect(convert(m, ConvertConfig(quantization="float32")).tflite)
    assert s["macs"] == ref["macs"]
    assert abs(s["params"] - ref["params"]) <= ref["params"] * 1e-4
    assert m.output_shape == (None, ref["classes"])


def test_mlperf_tiny_architectures_refuse_inputs_they_cannot_take():
    with pytest.raises(BadInput, match="ds_cnn needs .*49, 10, 1"):
        zoo.build("ds_cnn", (490,), 12)
    with pytest.raises(BadInput, match="fc_autoencoder needs flat inputs"):
        zoo.build("fc_autoencoder", (32, 20), 2)
    with pytest.raises(BadInput, match="at least 32x32"):
        zoo.build("mobilenet_v1_025", (28, 28, 1), 10)


def test_resnet8_residual_stacks_scale_together():
    m = zoo.build("resnet8", (32, 32, 3), 10)
    assert [m.get_layer(f"s{i}_conv2").filters for i in (1, 2, 3)] == [16, 32, 64]
    s = zoo.width_scaled(m, 0.5)
    # stack 1's add ties it to the stem; stacks 2 and 3 are tied to their shortcuts: all halve together
    assert [s.get_layer(n).filters for n in ("stem", "s1_conv2", "s2_shortcut", "s3_conv2")] == [8, 8, 16, 32]
    assert s.get_layer("logits").units == 10
