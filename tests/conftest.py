"""Shared fixtures: scikit-learn's digits (bundled, no download) and a tiny trained CNN on it; every
test runs without the host's latency calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeopt.config import DataConfig, TrainConfig
from edgeopt.data import Dataset, find_fashion_mnist, load_dataset

# The latency calibration lives in ~/.cache/edgeopt/calibration.json unless this variable names another
# file (edgeopt.calibrate.default_path). A stale file there would change which latency gates are
# evaluated, so tests never see it: the variable points at a file that does not exist, in-process and
# in every subprocess (the CLI in a child, runtime workers), which inherit the environment.
CALIBRATION_ENV = "EDGEOPT_CALIBRATION"


@pytest.fixture(scope="session", autouse=True)
def _no_host_calibration(tmp_path_factory: pytest.TempPathFactory):
    """For session- and module-scoped fixtures, which run before any function-scoped one."""
    mp = pytest.MonkeyPatch()
    mp.setenv(CALIBRATION_ENV, str(tmp_path_factory.mktemp("calibration") / "calibration.json"))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def isolated_calibration(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A calibration path of this test's own, with no file yet (``edgeopt calibrate`` without ``--out``
    writes there, and no other test sees it)."""
    path = tmp_path_factory.mktemp("calibration") / "calibration.json"
    monkeypatch.setenv(CALIBRATION_ENV, str(path))
    return path


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def tiny_model(digits: Dataset):
    """tiny_cnn (4.5k parameters) trained on digits to ~93% test accuracy."""
    from edgeopt import stages

    result = stages.train(digits, TrainConfig(zoo="tiny_cnn", epochs=12, learning_rate=3e-3), seed=1)
    assert result.metrics["accuracy"] > 0.85, result.metrics
    return result.model


@pytest.fixture(scope="session")
def tiny_model_path(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeopt.artifacts import save_model

    return save_model(tiny_model, tmp_path_factory.mktemp("models") / "tiny.keras")


@pytest.fixture(scope="session")
def fashion_slice() -> Dataset:
    """2,000 training and 500 test images of the real Fashion-MNIST (Debian's dataset-fashion-mnist)."""
    try:
        find_fashion_mnist()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"Fashion-MNIST is needed for this test (run `make data`): {e}")
    return load_dataset(DataConfig(name="fashion_mnist", max_train=2000, max_test=500))


def weights_of(model) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def same_weights(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
