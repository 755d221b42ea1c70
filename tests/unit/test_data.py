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


# ---- checks on every split ----------------------------------------------------------------------


def write_npz(path, **overrides):
    """A small valid npz (3 classes) with some arrays replaced."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.random((30, 4, 4), dtype=np.float32),
        "y_train": np.arange(30) % 3,
        "x_test": rng.random((12, 4, 4), dtype=np.float32),
        "y_test": np.arange(12) % 3,
    }
    arrays.update(overrides)
    np.savez(path, **arrays)
    return f"npz:{path}"


def with_value(a, index, value):
    a = a.copy()
    a[index] = value
    return a


@pytest.mark.parametrize(
    ("split", "index", "value", "message"),
    [
        ("train", 7, np.nan, r"train split: example 7 has a non-finite input value \(nan\)"),
        ("test", 3, np.inf, r"test split: example 3 has a non-finite input value \(inf\)"),
        ("train", 29, -np.inf, r"train split: example 29 has a non-finite input value \(-inf\)"),
    ],
)
def test_non_finite_input_names_split_and_index(tmp_path, split, index, value, message):
    rng = np.random.default_rng(0)
    n = 30 if split == "train" else 12
    x = rng.random((n, 4, 4), dtype=np.float32)
    x[index, 2, 1] = value
    name = write_npz(tmp_path / "d.npz", **{f"x_{split}": x})
    with pytest.raises(BadInput, match=message):
        load_dataset(name)


@pytest.mark.parametrize(
    ("split", "labels", "message"),
    [
        ("train", with_value(np.arange(30) % 3, 5, -1), r"train split: label of example 5 \(-1\) is negative"),
        (
            "test",
            with_value((np.arange(12) % 3).astype(np.float32), 2, 1.5),
            r"test split: label of example 2 \(1.5\) is not a whole number",
        ),
        (
            "test",
            with_value((np.arange(12) % 3).astype(np.float64), 9, np.nan),
            r"test split: label of example 9 \(nan\) is not a whole number",
        ),
        ("train", np.eye(3)[np.arange(30) % 3], r"train split: labels of shape \(30, 3\).*one-hot"),
        ("test", np.array(["a"] * 12), r"test split: labels of dtype <U1 are not class indices"),
    ],
)
def test_bad_labels_name_split_and_index(tmp_path, split, labels, message):
    name = write_npz(tmp_path / "d.npz", **{f"y_{split}": labels})
    with pytest.raises(BadInput, match=message):
        load_dataset(name)


def test_label_beyond_the_named_classes(tmp_path):
    """With class names in the npz, a label must be below their count."""
    y = with_value(np.arange(12) % 3, 4, 3)
    name = write_npz(tmp_path / "d.npz", y_test=y, class_names=np.array(["a", "b", "c"]))
    with pytest.raises(
        BadInput, match=r"test split: label of example 4 \(3\) is not below the number of classes \(3\)"
    ):
        load_dataset(name)
    ds = load_dataset(write_npz(tmp_path / "ok.npz", class_names=np.array(["a", "b", "c"])))
    assert ds.class_names == ["a", "b", "c"] and ds.named_classes
    numbered = load_dataset(write_npz(tmp_path / "n.npz"))
    assert numbered.class_names == ["0", "1", "2"] and not numbered.named_classes
    assert numbered.y_train.dtype == np.int64 and set(numbered.y_test) == {0, 1, 2}


def test_dataset_check_covers_the_validation_split(digits):
    import dataclasses

    digits.check()  # the real data passes
    bad = dataclasses.replace(digits, y_val=with_value(digits.y_val, 4, 10))
    with pytest.raises(BadInput, match=r"data digits, val split: label of example 4 \(10\) is not below .* \(10\)"):
        bad.check()
    x = digits.x_val.copy()
    x[11, 0, 0, 0] = np.nan
    with pytest.raises(BadInput, match="val split: example 11 has a non-finite"):
        dataclasses.replace(digits, x_val=x).check()


# ---- class order: image_dir folders vs the model's outputs --------------------------------------

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits_image_dir(root, digits, names=WORDS, per_class_train=3):
    """digits as PNGs, one folder per class named ``names[digit]``: train/ holds a few images a class,
    test/ all of digits' test images. Returns the digit of each test example in load order."""
    from PIL import Image

    for split, x, y in (("train", digits.x_train, digits.y_train), ("test", digits.x_test, digits.y_test)):
        for d, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True)
            idx = np.flatnonzero(y == d)
            for i in idx[:per_class_train] if split == "train" else idx:
                Image.fromarray(np.round(x[i, :, :, 0] * 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
    # load order: folders sorted by name, files by name (the index in digits' test split)
    return np.concatenate([np.full((digits.y_test == names.index(n)).sum(), names.index(n)) for n in sorted(names)])


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def test_image_dir_classes_are_mapped_to_the_models_order(tmp_path, digits, tiny_model):
    from edgeopt.data import align_labels

    truth = digits_image_dir(tmp_path, digits)
    ds = load_dataset(f"image_dir:{tmp_path}")
    assert ds.class_names == sorted(WORDS) and ds.class_names != WORDS
    # as loaded, label i is the i-th folder by name: not the model's output i
    assert not np.array_equal(ds.y_test, truth)
    aligned = align_labels(ds, WORDS, source="tiny_model")
    assert aligned.class_names == WORDS
    np.testing.assert_array_equal(aligned.y_test, truth)
    for split in ("train", "val"):  # the same renumbering on every split
        got, was = getattr(aligned, f"y_{split}"), getattr(ds, f"y_{split}")
        assert [WORDS[d] for d in got] == [ds.class_names[d] for d in was]
    assert ds.y_test is not aligned.y_test and ds.class_names == sorted(WORDS)  # the input is not changed
    # the trained model scores on the folders what it scores on digits once the labels follow its outputs
    want = accuracy(tiny_model, digits.x_test, digits.y_test)
    assert abs(accuracy(tiny_model, aligned.x_test, aligned.y_test) - want) <= 0.01
    assert accuracy(tiny_model, ds.x_test, ds.y_test) < want - 0.4
    assert align_labels(aligned, WORDS) is aligned  # already in order: unchanged


def test_align_matches_names_without_case_or_punctuation(digits):
    """Folder names cannot hold "/": "T-shirt_top" is the model's "T-shirt/top"."""
    import dataclasses

    from edgeopt.data import FASHION_CLASSES, align_labels

    folders = sorted(c.replace("/", "_").lower() for c in FASHION_CLASSES)  # "ankle boot", ..., "t-shirt_top"
    ds = dataclasses.replace(digits, class_names=folders)
    aligned = align_labels(ds, FASHION_CLASSES)
    by_folder = {c.replace("/", "_").lower(): i for i, c in enumerate(FASHION_CLASSES)}
    np.testing.assert_array_equal(aligned.y_test, np.array([by_folder[f] for f in folders])[digits.y_test])
    assert aligned.class_names == FASHION_CLASSES


def test_align_a_subset_and_different_sets(digits):
    import dataclasses

    from edgeopt.data import align_labels

    sub = dataclasses.replace(
        digits,
        x_test=digits.x_test[digits.y_test < 3],
        y_test=digits.y_test[digits.y_test < 3],
        x_train=digits.x_train[digits.y_train < 3],
        y_train=digits.y_train[digits.y_train < 3],
        x_val=digits.x_val[digits.y_val < 3],
        y_val=digits.y_val[digits.y_val < 3],
        class_names=["two", "one", "zero"],  # sorted order of a three-folder image_dir
    )
    aligned = align_labels(sub, WORDS)
    np.testing.assert_array_equal(aligned.y_test, 2 - sub.y_test)
    assert aligned.num_classes == 10
    wrong = dataclasses.replace(digits, class_names=[str(i) for i in range(10)])
    with pytest.raises(BadInput) as e:
        align_labels(wrong, WORDS, source="m.tflite")
    msg = str(e.value)
    assert str(wrong.class_names) in msg and str(WORDS) in msg and "m.tflite" in msg and "--labels" in msg
    with pytest.raises(BadInput, match=r"labels \['one'\] appear more than once"):
        align_labels(sub, ["one", "one", "two", "zero"])


def test_numbered_classes_and_no_labels_are_left_alone(tmp_path, digits):
    from edgeopt.data import align_labels

    numbered = load_dataset(write_npz(tmp_path / "n.npz"))
    assert align_labels(numbered, ["cat", "dog", "bird"]) is numbered  # no names to match: label i is output i
    assert align_labels(digits, None) is digits and align_labels(digits, []) is digits


def test_model_labels_from_file_and_embedded_manifest(tmp_path, tiny_model):
    from edgeopt import metadata, stages
    from edgeopt.config import ConvertConfig
    from edgeopt.data import labels_from_tflite, read_labels_file

    f = tmp_path / "labels.txt"
    f.write_text("zero\none\ntwo\n\n")
    assert read_labels_file(f) == ["zero", "one", "two"]
    f.write_text("zero\n\ntwo\n")
    with pytest.raises(BadInput, match="line 2 is blank"):
        read_labels_file(f)
    with pytest.raises(BadInput, match="cannot read the labels file"):
        read_labels_file(tmp_path / "missing.txt")

    content = stages.convert(tiny_model, ConvertConfig(quantization="float32")).tflite
    assert labels_from_tflite(content) is None  # a model without an edgeopt manifest
    manifest = metadata.manifest_bytes({"schema": 1, "labels": WORDS})
    assert labels_from_tflite(metadata.embed(content, metadata.MANIFEST_ENTRY, manifest)) == WORDS
    broken = metadata.embed(content, metadata.MANIFEST_ENTRY, b"{not json")
    with pytest.raises(BadInput, match="embedded edgeopt manifest is unreadable"):
        labels_from_tflite(broken)
