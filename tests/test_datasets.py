"""The bundled data sets load offline, with the shapes, values and sources they claim."""

from __future__ import annotations

import numpy as np
import pytest

from jaxrnn import datasets


def test_iris():
    x, y = datasets.load_iris()
    assert x.shape == (150, 4) and x.dtype == np.float64
    assert y.shape == (150,) and np.bincount(y).tolist() == [50, 50, 50]
    np.testing.assert_allclose(x[0], [5.1, 3.5, 1.4, 0.2])
    np.testing.assert_allclose(x.mean(axis=0), [5.8433, 3.0573, 3.758, 1.1993], atol=1e-3)


def test_iris_matches_scikit_learn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    ref = sklearn_datasets.load_iris()
    x, y = datasets.load_iris()
    np.testing.assert_allclose(x, ref.data)
    np.testing.assert_array_equal(y, ref.target)


def test_sunspots():
    years, spots = datasets.load_sunspots()
    assert years.tolist() == list(range(1700, 2009))
    assert spots.shape == (309,) and np.all(spots >= 0)
    assert spots[0] == 5.0 and spots[-1] == 2.9
    assert 180 < spots.max() < 200  # 1957, the largest yearly mean of the series


def test_sentence_polarity():
    texts, labels = datasets.load_sentence_polarity()
    assert len(texts) == 4000 and labels.shape == (4000,)
    assert np.bincount(labels).tolist() == [2000, 2000]
    assert all(isinstance(t, str) and t for t in texts)


def test_every_file_names_its_source():
    for name in ("iris.csv", "sunspots.csv", "sentence_polarity.csv"):
        head = (datasets.DATA_DIR / name).read_text(encoding="utf-8").splitlines()[0]
        assert head.startswith("# ") and ("(" in head), head
    readme = (datasets.DATA_DIR / "README.txt").read_text(encoding="utf-8")
    for name in ("iris.csv", "sunspots.csv", "sentence_polarity.csv"):
        assert name in readme


def test_digits():
    pytest.importorskip("sklearn")
    images, y = datasets.load_digits()
    assert images.shape == (1797, 8, 8) and y.shape == (1797,)
    assert images.min() == 0 and images.max() == 16


def test_stdlib_docstrings_is_deterministic_text():
    a = datasets.stdlib_docstrings()
    assert len(a) > 50_000
    assert a == datasets.stdlib_docstrings()
    assert datasets.stdlib_docstrings(max_chars=1000) == a[:1000]


def test_load_text_labels_csv_and_tsv(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('label,text\npos,"good, very good"\nneg,bad\n', encoding="utf-8")
    texts, ids, names = datasets.load_text_labels(csv_path)
    assert texts == ["good, very good", "bad"] and names == ["neg", "pos"] and ids.tolist() == [1, 0]
    tsv_path = tmp_path / "d.tsv"
    tsv_path.write_text("fine\t1\nawful\t0\n", encoding="utf-8")
    texts, ids, names = datasets.load_text_labels(tsv_path)
    assert texts == ["fine", "awful"] and ids.tolist() == [1, 0]


def test_load_text_labels_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("only one column\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1 has 1 column"):
        datasets.load_text_labels(bad)
    headed = tmp_path / "headed.csv"
    headed.write_text("text,label\ngood film,pos\nbad film\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3 has 1 column"):  # the file's line, header counted
        datasets.load_text_labels(headed)
    one = tmp_path / "one.tsv"
    one.write_text("a\tx\nb\tx\n", encoding="utf-8")
    with pytest.raises(ValueError, match="at least two distinct labels"):
        datasets.load_text_labels(one)


def test_load_text_labels_drops_a_byte_order_mark(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text("text,label\ngood film,pos\nbad film,neg\n", encoding="utf-8-sig")
    texts, ids, names = datasets.load_text_labels(path)
    assert texts == ["good film", "bad film"] and ids.tolist() == [1, 0] and names == ["neg", "pos"]


def test_stdlib_docstrings_checks_its_arguments():
    for bad in (-5, True, 2.5, "10"):
        with pytest.raises(ValueError, match="max_chars must be a non-negative int or None"):
            datasets.stdlib_docstrings(bad)
    with pytest.raises(TypeError, match="modules must be a list of module names, got 'json'"):
        datasets.stdlib_docstrings(modules="json")
    with pytest.raises(ValueError, match="modules: cannot import 'no_such_mod'"):
        datasets.stdlib_docstrings(modules=["no_such_mod"])
    assert len(datasets.stdlib_docstrings(100, modules=["json"])) == 100
