"""Minimal reproduction: an int8 SOFTMAX over 512 or more (near-)equal logits aborts LiteRT's reference
kernels (BUILTIN_REF) and TFLite Micro with SIGABRT and no message, in Eval (the first invoke).

Found on Keras' EfficientNetB0 (1000 classes, random weights): its logits span ~2e-5, so every class
has exp(logit - max) ~= 1 and their sum is ~1000. The reference int8 Softmax accumulates the sum in
fixed point with 12 integer bits and rescales each output by
    exponent = num_bits_over_unit + 31 - 8,   num_bits_over_unit = 12 - CountLeadingZeros(sum << 19)
which is 32 or more once the sum reaches 512, exactly where the abort starts (511 equal logits run,
512 abort); gdb shows abort() called from tflite::reference_ops::Softmax<signed char, signed char> under
SoftmaxEval<kReference>. That a check of this shift (at most 31) is what aborts is inferred from the
break point and the backtrace; the check's source line was not read. LiteRT's optimized kernels
(BUILTIN / AUTO) take another path and run. A trained classifier's top class takes far more than
1/512 of the mass, so this needs near-uniform logits (an untrained or collapsed model).

Run:  python bench/repro/softmax_sum_abort.py     (each case in a child process, ~20 s)

Expected output (LiteRT 2.3, tflite-micro):

    511 equal logits: builtin ran, reference ran, tflm ran
    512 equal logits: builtin ran, reference killed by signal 6 (SIGABRT), tflm killed by signal 6 (SIGABRT)
    reproduced

Exit code 0 when reproduced (only the 512-class model aborts, and only in the reference kernels and
TFLite Micro), 1 otherwise.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from softmax_scale_abort import run_child  # noqa: E402 - the same child runner (zeros as the input)


def int8_equal_logits_softmax(classes: int, path: str) -> None:
    """Dense(classes) + softmax with a zero bias: on the all-zero input every logit is 0 (all equal)."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    i = keras.Input((16,))
    logits = keras.layers.Dense(classes, name="logits")(i)
    m = keras.Model(i, keras.layers.Softmax()(logits))
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(16):
            yield [rng.uniform(-1, 1, (1, 16)).astype(np.float32)]

    c = tf.lite.TFLiteConverter.from_keras_model(m)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = rep
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = c.inference_output_type = tf.int8
    with open(path, "wb") as fh:
        fh.write(c.convert())


def main() -> int:
    import tempfile

    seen: dict[tuple[int, str], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for classes in (511, 512):
            path = os.path.join(tmp, f"m{classes}.tflite")
            int8_equal_logits_softmax(classes, path)
            for runtime in ("builtin", "reference", "tflm"):
                seen[classes, runtime] = run_child(path, runtime)
            print(
                f"{classes} equal logits: "
                + ", ".join(f"{rt} {seen[classes, rt]}" for rt in ("builtin", "reference", "tflm")),
                flush=True,
            )
    aborts = {k for k, v in seen.items() if "SIGABRT" in v}
    reproduced = aborts == {(512, "reference"), (512, "tflm")} and all(
        v == "ran" for k, v in seen.items() if k not in aborts
    )
    print("reproduced" if reproduced else "NOT reproduced with these runtime versions")
    return 0 if reproduced else 1


if __name__ == "__main__":
    sys.exit(main())
