"""The one place that configures and imports TensorFlow, tf-keras and tfmot.

tfmot only works with Keras 2 (tf-keras), so ``TF_USE_LEGACY_KERAS=1`` must be set before
TensorFlow is imported anywhere in the process. Every other module imports ``tf``, ``keras`` and
``tfmot`` from here.
"""

from __future__ import annotations

import logging
import os
import warnings

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ INFO/WARNING noise off
# oneDNN's kernels train the reference student 2x faster than Eigen's on a 2-core AMD EPYC (5.4 vs
# 10.5 s an epoch) and, with op determinism, give byte-identical weights run after run on one machine,
# concurrent processes included. They sum floats in another order than Eigen (and per ISA), so
# TF_ENABLE_ONEDNN_OPTS=0 reproduces runs made with it off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")

from edgeopt.progress import captured_stderr  # noqa: E402

# Importing TensorFlow prints absl/CUDA-stub lines to fd 2 before any log level applies; hide them
# unless the import fails.
try:
    with captured_stderr() as _import_log:
        import tensorflow as tf
        import tf_keras as keras
except Exception:
    logging.getLogger(__name__).error("importing TensorFlow failed; it wrote:\n%s", "\n".join(_import_log))
    raise

try:  # absl logs converter chatter at WARNING level
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
except ImportError:  # pragma: no cover - absl ships with TensorFlow
    pass

tf.get_logger().setLevel(logging.ERROR)
tf.autograph.set_verbosity(0)
# Same seed, same bytes: deterministic kernels cost little on CPU.
tf.config.experimental.enable_op_determinism()

import tensorflow_model_optimization as tfmot  # noqa: E402

__all__ = ["tf", "keras", "tfmot", "set_seed"]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow from one number."""
    keras.utils.set_random_seed(seed)
