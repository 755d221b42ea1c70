"""Validation folds (``data.val_fold``), what the search re-measures its best candidates on when the
validation split is too small: fold 0 is the usual split, byte for byte, and the folds are disjoint
blocks of the training data, each held out from its own training split."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import yaml

from edgeopt.config import DataConfig
from edgeopt.data import load_dataset
from edgeopt.errors import BadInput
from edgeopt.pipeline.hashing import data_hash
from edgeopt.search.objectives import accuracy_floor
from edgeopt.search.study import Remeasure, prepare, teacher_tag
from tests.search.conftest import ROOT


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


def test_each_fold_is_judged_with_a_teacher_that_did_not_train_on_it(tmp_path):
    """With teacher.train, a fold's re-measurement distills from a teacher trained again without that fold
    (the file's teacher trained on folds 1 ... k); its accuracy there sets the floor on the folds. Made
    once per recipe and kept; without teacher.train the file's teacher serves every fold."""
    raw = yaml.safe_load((ROOT / "tests" / "data" / "digits.yaml").read_text())
    raw["teacher"]["train"]["epochs"] = 2
    prep = prepare(_write(tmp_path / "p.yaml", raw), build=tmp_path / "build")
    study = optuna.create_study()
    r = Remeasure(prep, study, 3, [])
    cfg = r._fold_config(prep.pipeline, 1)
    assert cfg.data.val_fold == 1 and cfg.teacher.path == r.teacher_path(1)
    assert r.teacher_path(1).parent == (prep.root / "teachers").resolve() and r.teacher_path(1) != r.teacher_path(2)
    assert not r.teacher_path(1).exists()
    rec = r.teacher_on(1)
    made = r.teacher_path(1).stat().st_mtime_ns
    assert rec["n"] == 144 and 0.0 <= rec["accuracy"] <= 1.0
    assert r.teacher_on(1) == rec and r.teacher_path(1).stat().st_mtime_ns == made  # kept, not trained again
    floor = r.floor()
    recs = [rec, r.teacher_on(2), r.teacher_on(3)]  # folds 1 to 3: the validation split (fold 0) is not one
    pooled = sum(x["accuracy"] * x["n"] for x in recs) / 432
    assert r.teacher_pooled == pytest.approx(pooled) and floor == accuracy_floor(prep.search, pooled)
    assert "trained again without the fold" in r.teachers

    raw["teacher"]["train"]["epochs"] = 3  # another recipe: other teachers
    assert teacher_tag(prepare(_write(tmp_path / "q.yaml", raw), build=tmp_path / "build").pipeline) != r.tag
    del raw["teacher"]["train"]  # nothing to train one with: the file's teacher on every fold
    shared = Remeasure(prepare(_write(tmp_path / "s.yaml", raw), build=tmp_path / "build"), study, 3, [])
    assert shared._fold_config(shared.prep.pipeline, 1).teacher.path == shared.prep.pipeline.teacher.path
    assert "flatters its students" in shared.teachers


def _write(path, raw):
    path.write_text(yaml.safe_dump(raw))
    return path
