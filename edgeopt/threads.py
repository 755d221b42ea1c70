"""How many CPU threads TensorFlow uses in this process. N processes sharing C cores each get C // N: a
small model does not keep two threads busy, so two 1-thread trainings at once do more work than one
2-thread training (1.35x for the default student on a 2-core host; bench/suite.md has the measurement)."""

from __future__ import annotations

import os


def limit(threads: int) -> None:
    """Use ``threads`` intra-op threads and one inter-op thread (0: TensorFlow's default, nothing changes).
    Best called before TensorFlow starts (the environment variables cover libraries that read them once);
    a TensorFlow runtime already initialised in this process keeps its setting."""
    if threads <= 0:
        return
    for var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    from edgeopt._keras import tf  # lazy: imports TensorFlow

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised (an in-process search worker): keep its setting
        pass
