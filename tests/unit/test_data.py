import gzip

import numpy as np
import pytest

from edgeopt import data as data_mod
from edgeopt.config import DataConfig
from edgeopt.data import load_dataset, read_idx
from edgeopt.errors import BadInput


def test_digits_splits_are_seeded_and_disjoint():
    a = load_dataset(DataConfig(name="digits", seed=3))
    b = load_dataset(DataConfig(name="digits", seed=3))
    c = load_dataset(DataConfig(name="digits", seed=4))
    assert a.input_shape == (8, 8, 1) and a.num_classes == 10
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    assert np.array_equal(a.x_train, b.x_train) and not np.array_equal(a.x_train, c.x_train)
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0


def test_fashion_mnist_full_splits():
    ds = load_dataset(DataConfig(name="fashion_mnist", seed=0))
    assert ds.input_shape == (28, 28, 1)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (54000, 6000, 10000)
    assert ds.class_names[0] == "T-shirt/top" and ds.x_train.dtype == np.float32
    assert set(np.unique(ds.y_test)) == set(range(10))


def test_missing_fashion_mnist_says_where_and_how(monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod, "fashion_mnist_search_path", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(BadInput) as e:
        load_dataset("fashion_mnist")
    assert str(tmp_path / "a") in str(e.value) and "dataset-fashion-mnist" in str(e.value)
    assert "EDGEOPT_DATA_DIR" in str(e.value)


def test_edgeopt_data_dir_is_searched(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEOPT_DATA_DIR", str(tmp_path))
    assert data_mod.fashion_mnist_search_path()[0] == tmp_path


def test_truncated_idx(tmp_path):
    p = tmp_path / "x.gz"
    header = bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    p.write_bytes(gzip.compress(header + b"\0" * 100))
    with pytest.raises(BadInput, match="truncated"):
        read_idx(p)


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "d.npz"
    np.savez(
        p,
        x_train=rng.random((50, 4, 3), dtype=np.float32),
        y_train=rng.integers(0, 3, 50),
        x_test=rng.random((20, 4, 3), dtype=np.float32),
        y_test=rng.integers(0, 3, 20),
    )
    ds = load_dataset(f"npz:{p}")
    assert ds.input_shape == (4, 3) and len(ds.x_test) == 20 and len(ds.x_train) + len(ds.x_val) == 50


def test_npz_missing_arrays(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x_train=np.zeros((2, 2)))
    with pytest.raises(BadInput, match="missing arrays y_train, x_test, y_test"):
        load_dataset(f"npz:{p}")


def test_image_dir(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = load_dataset(f"image_dir:{tmp_path}")
    assert ds.class_names == ["cat", "dog"] and ds.input_shape == (12, 12, 1)
    assert len(ds.x_test) == 4 and len(ds.x_train) + len(ds.x_val) == 16


def test_unknown_dataset_name():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="allowed: fashion_mnist, digits"):
        DataConfig(name="mnist")


def test_shape_mismatch_names_both_shapes(digits, tiny_model):
    other = load_dataset(DataConfig(name="fashion_mnist", max_train=10, max_test=10))
    with pytest.raises(BadInput) as e:
        other.check_fits(tiny_model)
    assert "(28, 28, 1)" in str(e.value) and "(8, 8, 1)" in str(e.value)
    digits.check_fits(tiny_model)  # fits: no error
