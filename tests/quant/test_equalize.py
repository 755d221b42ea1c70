"""Cross-layer equalisation: equal per-channel ranges, the same float function, and int8 that recovers on a
model whose channel scales were made deliberately unequal."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt import stages
from edgeopt.config import ConvertConfig
from edgeopt.quant.equalize import equalize, find_pairs, in_ranges, out_ranges
from edgeopt.quant.fold import fold_batchnorm
from tests.conftest import same_weights, weights_of
from tests.quant.conftest import dequantized, run_litert


def test_equal_ranges_same_float_outputs(unequal_model, digits):
    before = weights_of(unequal_model)
    r = equalize(unequal_model)
    assert same_weights(before, weights_of(unequal_model))  # the caller's model is not touched
    assert r.metrics["pairs"] == [["conv1", "fc1"], ["fc1", "logits"]]
    for first, second, flat in (("conv1", "fc1", True), ("fc1", "logits", False)):
        r1 = out_ranges(r.model.get_layer(first))
        r2 = in_ranges(r.model.get_layer(second), r1.size, flat)
        # after equalisation the first layer's output channel i and the second's input channel i have one range
        np.testing.assert_allclose(r1, r2, rtol=1e-3)
    assert r.metrics["range_spread_before"] > 100 * r.metrics["range_spread_after"]
    x = digits.x_test
    np.testing.assert_allclose(r.model.predict(x, verbose=0), unequal_model.predict(x, verbose=0), atol=1e-5)


def test_int8_recovers_on_unequal_channel_scales(unequal_model, digits):
    x, y = digits.x_test, digits.y_test
    ref = unequal_model.predict(x, verbose=0)
    errs, accs = {}, {}
    for eq in (False, True):
        c = stages.convert(unequal_model, ConvertConfig(quantization="int8", equalize=eq), data=digits).tflite
        out = dequantized(c, run_litert(c, x))
        errs[eq], accs[eq] = float(np.mean((out - ref) ** 2)), float(np.mean(out.argmax(1) == y))
    float_acc = float(np.mean(ref.argmax(1) == y))
    # one int8 scale for conv1's output: the 0.05x channels vanish without equalisation
    assert accs[False] < float_acc - 0.05 and accs[True] >= float_acc - 0.01, (accs, float_acc)
    assert errs[True] < errs[False] / 50, errs


def test_batchnorm_folds_and_depthwise_pairs(mobilenet_model, digits):
    x = digits.x_test[:200]
    folded, bns = fold_batchnorm(mobilenet_model)
    assert bns == ["dw_bn", "expand_bn", "project_bn", "stem_bn"]
    np.testing.assert_allclose(folded.predict(x, verbose=0), mobilenet_model.predict(x, verbose=0), atol=1e-5)
    # ReLU6 is not scale-invariant: without equalize_relu6 no pair crosses one
    assert find_pairs(folded) == []
    pairs = [(p.first, p.second) for p in find_pairs(folded, relu6=True)]
    assert pairs == [("expand", "dw"), ("dw", "project")]  # the stem feeds the residual Add too: not a pair
    r = equalize(mobilenet_model, relu6=True, x=x)
    assert r.metrics["relu6_replaced"] == ["dw_relu6", "expand_relu6"]
    assert set(r.metrics["relu6_share_above_6"]) == {"dw_relu6", "expand_relu6"}
    assert all(0.0 <= v < 1.0 for v in r.metrics["relu6_share_above_6"].values())
    for first, second in pairs:
        r1 = out_ranges(r.model.get_layer(first))
        np.testing.assert_allclose(r1, in_ranges(r.model.get_layer(second), r1.size, False), rtol=1e-3)


@pytest.mark.parametrize("bad", [{"quantization": "float16", "equalize": True}, {"equalize_relu6": True}])
def test_config_refuses(bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ConvertConfig(**bad)
