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
