"""Validation folds (``data.val_fold``), what the search re-measures its best candidates on when the
validation split is too small: fold 0 is the usual split, byte for byte, and the folds are disjoint
blocks of the training data, each held out from its own training split."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.config import DataConfig
from edgeopt.data import load_dataset
from edgeopt.errors import BadInput
from edgeopt.pipeline.hashing import data_hash


def _rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x.reshape(len(x), -1)}


def test_fold_zero_is_the_usual_split_and_changes_no_config_hash():
    usual = load_dataset(DataConfig(name="digits", seed=3))
    assert data_hash(load_dataset(DataConfig(name="digits", seed=3, val_fold=0))) == data_hash(usual)
    assert "val_fold" not in DataConfig(name="digits").model_dump(mode="json")  # existing caches keep their keys
    assert usual.val_folds == 9 and len(usual.x_val) == 144  # 1,437 training images, 144 a fold


def test_folds_are_disjoint_and_held_out():
    folds = [load_dataset(DataConfig(name="digits", seed=3, val_fold=f)) for f in range(4)]
    seen: set[bytes] = set()
    for d in folds:
        val, train = _rows(d.x_val), _rows(d.x_train)
        assert len(d.x_val) == 144 and len(d.x_train) == 1437 - 144
        assert not val & train, "a fold is never in its own training split"
        assert not val & seen, "folds do not overlap"
        seen |= val
        assert np.array_equal(d.x_test, folds[0].x_test), "the test split is the same for every fold"


def test_a_fold_out_of_range_is_bad_input():
    with pytest.raises(BadInput, match="val_fold 9 out of range: 1,437 training examples make 9 validation fold"):
        load_dataset(DataConfig(name="digits", seed=3, val_fold=9))
