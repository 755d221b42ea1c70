"""AdaRound (Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", ICML 2020):
round each weight up or down, whichever makes the layer's output closest to the float layer's, instead
of to the nearest integer.

Per layer, in order: the kernel is ``s * clip(floor(W / s) + h(V), -127, 127)`` with ``s`` the
converter's per-channel int8 scale and ``h`` a rectified sigmoid of a free variable ``V`` (initialised
so that ``h`` equals the fractional part, i.e. the float weight). ``V`` minimises the squared error
between the layer's output (activation included) fed by the already rounded earlier layers and the
float model's output, plus ``lambda * sum(1 - |2h - 1|^beta)``, which, as ``beta`` anneals from 20 to
2, pushes every ``h`` to 0 or 1. The rounded kernel replaces the float one in the Keras model: its
largest weight per channel keeps its value, so the converter derives the same scale and stores exactly
these integers.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeopt._keras import keras, tf
from edgeopt.quant import grid
from edgeopt.quant.fold import fold_batchnorm
from edgeopt.quant.graph import activation_fn, apply_linear, layer_inputs, linear_layers, linear_twin, require_graph

log = logging.getLogger(__name__)

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (the paper's values)


def _h(v: Any) -> Any:

    return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def round_layer(
    layer: Any,
    x_in: np.ndarray,
    target: np.ndarray,
    *,
    iterations: int = 1000,
    batch_size: int = 32,
    learning_rate: float = 1e-2,
    reg: float = 0.01,
    warmup: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The AdaRounded kernel of ``layer`` (float values on the converter's grid) fitted so that the layer
    on ``x_in`` reproduces ``target`` (the float layer's activated outputs); metrics compare its output
    error with nearest rounding's."""

    kernel, bias = layer.get_weights()[0], (layer.get_weights()[1] if layer.use_bias else None)
    dw = grid.is_depthwise(layer)
    s = grid.scales(kernel, depthwise=dw)
    ratio = grid.channels_last(kernel, dw) / s
    floor = np.floor(ratio)
    rest = np.clip(ratio - floor, 1e-4, 1 - 1e-4)
    # A weight at the channel's extreme keeps its nearest rounding: it fixes the scale the converter derives.
    fixed = np.abs(ratio) >= 126.5
    nearest = np.clip(np.round(ratio), -127, 127)
    v0 = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)
    shape = kernel.shape
    v = tf.Variable(v0.astype(np.float32))
    s_t = tf.constant(s)
    floor_t = tf.constant(floor.astype(np.float32))
    fixed_t = tf.constant(fixed)
    nearest_t = tf.constant(nearest.astype(np.float32))
    bias_t = None if bias is None else tf.constant(bias)
    act = activation_fn(layer)
    opt = keras.optimizers.Adam(learning_rate)
    x_in = x_in.astype(np.float32)
    target = target.astype(np.float32)
    warm = int(iterations * warmup)

    def kernel_of(h: Any) -> Any:
        q = tf.where(fixed_t, nearest_t, tf.clip_by_value(floor_t + h, -127.0, 127.0))
        return tf.reshape(q * s_t, shape)

    @tf.function
    def step(xb: Any, yb: Any, beta: Any, lam: Any) -> Any:
        with tf.GradientTape() as tape:
            h = _h(v)
            y = act(apply_linear(layer, xb, kernel_of(h), bias_t))
            mse = tf.reduce_mean(tf.square(y - yb))
            rounding = tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta))
            loss = mse + lam * rounding
        opt.apply_gradients([(tape.gradient(loss, v), v)])
        return mse

    rng = np.random.default_rng(seed)
    n = len(x_in)
    for it in range(iterations):
        idx = rng.choice(n, size=min(batch_size, n), replace=False)
        if it < warm:
            beta, lam = 20.0, 0.0
        else:
            frac = (it - warm) / max(1, iterations - warm)
            beta, lam = 20.0 + (2.0 - 20.0) * frac, reg
        step(tf.constant(x_in[idx]), tf.constant(target[idx]), tf.constant(beta), tf.constant(lam))

    hard = (_h(v).numpy() >= 0.5).astype(np.float32)
    q = np.where(fixed, nearest, np.clip(floor + hard, -127, 127))
    rounded = (q * s).reshape(shape).astype(np.float32)

    def err(k: np.ndarray) -> float:
        ys = []
        for i in range(0, n, 256):
            ys.append(act(apply_linear(layer, tf.constant(x_in[i : i + 256]), tf.constant(k), bias_t)).numpy())
        return float(np.mean((np.concatenate(ys) - target) ** 2))

    near_k = (nearest * s).reshape(shape).astype(np.float32)
    metrics = {
        "weights": int(q.size),
        "rounded_differently": float((q != nearest).mean()),
        "undecided": float(np.mean(np.abs(_h(v).numpy() - 0.5) < 0.4)),
        "mse_nearest": err(near_k),
        "mse_adaround": err(rounded),
    }
    return rounded, metrics


def adaround(
    model: Any,
    x: np.ndarray,
    *,
    iterations: int = 1000,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` (BatchNorm folded) whose kernels are AdaRounded one layer after the other on
    the calibration inputs ``x``; metrics per layer."""
    require_graph(model, "AdaRound")
    float_model, _ = fold_batchnorm(model)
    out = keras.models.clone_model(float_model)
    out.set_weights(float_model.get_weights())
    per_layer = {}
    for layer in linear_layers(out):
        fl = float_model.get_layer(layer.name)
        x_f = layer_inputs(float_model, [fl], x)[0]
        x_q = layer_inputs(out, [layer], x)[0]  # earlier layers already rounded
        target = np.asarray(activation_fn(fl)(linear_twin(fl)(x_f)))
        rounded, m = round_layer(layer, x_q, target, iterations=iterations, batch_size=batch_size, seed=seed)
        w = layer.get_weights()
        w[0] = rounded
        layer.set_weights(w)
        per_layer[layer.name] = m
        log.info(
            "AdaRound %s: %.1f%% rounded away from nearest, output MSE %.3g -> %.3g",
            layer.name,
            100 * m["rounded_differently"],
            m["mse_nearest"],
            m["mse_adaround"],
        )
    return out, {"layers": per_layer, "iterations": iterations, "batch_size": batch_size}
