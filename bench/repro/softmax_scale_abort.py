"""Minimal reproduction: int8 SOFTMAX whose input scale is below 2**-26 / beta aborts LiteRT's
reference kernels (BUILTIN_REF) and TFLite Micro with SIGABRT and no message.

Why: the reference int8 Softmax (LiteRT kernels/activations.cc SoftmaxPrepare, kReference; TFLM
softmax_common.cc CalculateSoftmaxParams) calls PreprocessSoftmaxScaling(beta, input_scale, 5, ...),
which computes  m = beta * input_scale * 2**(31 - 5)  and passes it to
QuantizeMultiplierGreaterThanOne, whose TFLITE_CHECK_GT(m, 1.) calls abort() (no message in release
builds) when m <= 1, i.e. when input_scale <= 2**-26 / beta ~= 1.49e-8. The optimized kernel
(BUILTIN / AUTO) uses a lookup table for int8 Softmax and never computes that multiplier, so it runs.

An untrained MobileNetV2 (weights=None) has vanishing activations: its logits span ~1e-6, the
converter gives the Softmax input scale ~7.8e-9 (m ~= 0.53) and the reference kernels abort.

Run:  python bench/repro/softmax_scale_abort.py     (each case in a child process, ~20 s)

Expected output (LiteRT 2.3, tflite-micro; the optimized kernels run both models, the reference
kernels and TFLite Micro abort on the second while preparing the Softmax, before reading any input):

    logits x1: softmax input scale 0.0116, beta*scale*2^26 = 7.77e+05
      builtin   ran
      reference ran
      tflm      ran
    logits x1e-06: softmax input scale 1.16e-08, beta*scale*2^26 = 0.777
      builtin   ran
      reference killed by signal 6 (SIGABRT)
      tflm      killed by signal 6 (SIGABRT)

Exit code 0 when the reference kernels and TFLite Micro abort on the tiny-logits model only (the bug
reproduced), 1 otherwise (e.g. a runtime version that no longer aborts).
"""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CHILD = r"""
import sys, numpy as np
path, runtime = sys.argv[1], sys.argv[2]
x = None
if runtime == "tflm":
    from tflite_micro.python.tflite_micro import runtime as rt
    it = rt.Interpreter.from_bytes(open(path, "rb").read(), arena_size=1 << 20)
    d = it.get_input_details(0)
    it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
    it.invoke()
else:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    kinds = {"reference": OpResolverType.BUILTIN_REF, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    kind = kinds[runtime]
    it = Interpreter(model_path=path, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()
print("ran")
"""


def int8_dense_softmax(logit_scale: float, path: str) -> float:
    """Dense(10) + softmax whose logits span about ``logit_scale``; returns the Softmax input scale."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    i = keras.Input((16,))
    logits = keras.layers.Dense(10, name="logits")(i)
    m = keras.Model(i, keras.layers.Softmax()(logits))
    w, b = m.get_layer("logits").get_weights()
    m.get_layer("logits").set_weights([w * logit_scale, b * 0])
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(16):
            yield [rng.uniform(-1, 1, (1, 16)).astype(np.float32)]

    c = tf.lite.TFLiteConverter.from_keras_model(m)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = rep
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = c.inference_output_type = tf.int8
    content = c.convert()
    with open(path, "wb") as fh:
        fh.write(content)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    for op in it._get_ops_details():
        if op["op_name"] == "SOFTMAX":
            return float(it._get_tensor_details(op["inputs"][0], 0)["quantization"][0])
    raise AssertionError("no SOFTMAX op")


def run_child(path: str, runtime: str) -> str:
    r = subprocess.run([sys.executable, "-c", CHILD, path, runtime], capture_output=True, text=True)
    if r.returncode < 0:
        return f"killed by signal {-r.returncode}" + (" (SIGABRT)" if r.returncode == -6 else "")
    return "ran" if r.returncode == 0 else f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}"


def main() -> int:
    import tempfile

    seen: dict[tuple[float, str], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for logit_scale in (1.0, 1e-6):
            path = os.path.join(tmp, f"m{logit_scale:g}.tflite")
            scale = int8_dense_softmax(logit_scale, path)
            m = 1.0 * scale * 2 ** (31 - 5)
            print(f"logits x{logit_scale:g}: softmax input scale {scale:.3g}, beta*scale*2^26 = {m:.3g}")
            for runtime in ("builtin", "reference", "tflm"):
                seen[logit_scale, runtime] = run_child(path, runtime)
                print(f"  {runtime:9s} {seen[logit_scale, runtime]}", flush=True)
    aborts = {k for k, v in seen.items() if "SIGABRT" in v}
    reproduced = aborts == {(1e-6, "reference"), (1e-6, "tflm")} and all(
        v == "ran" for k, v in seen.items() if k not in aborts
    )
    print("reproduced" if reproduced else "NOT reproduced with these runtime versions")
    return 0 if reproduced else 1


if __name__ == "__main__":
    sys.exit(main())
