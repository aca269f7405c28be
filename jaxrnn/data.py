"""Getting data into shape: scaling and its inverse, windows over a series, vocabularies, padding, batches, splits.

Everything here runs on the host (numpy) before training, except :meth:`MinMaxScaler.inverse_transform` and
:meth:`MinMaxScaler.transform`, which also work on ``jax`` arrays and inside ``jit`` (for predictions).

The time-series recipe of seed 001: split chronologically, fit the scaler on the training part only, scale every
part with it, cut windows, train, and map predictions back with ``inverse_transform``::

    (train,), (val,), (test,) = split(None, series, fractions=(0.8, 0.1, 0.1), shuffle=False)
    scaler = MinMaxScaler((-1, 1)).fit(train)
    x, y = sliding_windows(scaler.transform(train), past=4, future=4)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_finite, check_flag, check_key, shape_str

__all__ = [
    "PAD",
    "UNK",
    "Frames",
    "MinMaxScaler",
    "Vocabulary",
    "batches",
    "char_tokenize",
    "frames",
    "pad_sequences",
    "sliding_windows",
    "split",
    "windows",
    "word_tokenize",
]

PAD, UNK = "<pad>", "<unk>"


def _numeric(x, name: str) -> np.ndarray | jax.Array:
    """``x`` as a real-valued (integer or floating) array; jax arrays stay jax arrays."""
    if isinstance(x, jax.Array):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise TypeError(f"{name} must be an array, got {type(x).__name__}") from err
    real = jnp.issubdtype(arr.dtype, jnp.integer) or jnp.issubdtype(arr.dtype, jnp.floating)
    if arr.dtype == object or not real:
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype} (ragged or non-numeric input?)")
    return arr


def _check_finite(x, name: str) -> None:
    check_finite(x, name, hint="Drop or impute them before scaling")


# ------------------------------------------------------------------------------------------------------ scaling


class MinMaxScaler:
    """Affine scaling of each feature onto ``feature_range`` (default ``(-1, 1)``, the range of tanh), and back.

    With ``lo, hi = feature_range`` and per-feature training minimum/maximum ``m, M``::

        transform(x)         = (x − m) · s + lo,      s = (hi − lo) / (M − m)
        inverse_transform(y) = (y − lo) / s + m

    Features: for 2-D (or higher) data the last axis holds features and the statistics are taken over all other
    axes (for ``[N, F]``: over axis 0); 1-D data is one feature (all values). A constant feature (``M = m``) gets
    ``s = hi − lo`` and maps to the middle of the range, ``(lo + hi) / 2``, so the inverse stays exact.

    Fit on training data only. ``inverse_transform`` is the exact algebraic inverse of ``transform``. Numpy
    inputs are computed in float64 and returned in their own floating dtype (integers: float32), so a round trip
    ``inverse_transform(transform(x))`` returns float64 data to ~1e-15 relative and float32 data to the rounding
    of the scaled float32 values (a few ulp of the data range). ``jax`` inputs (also traced, inside ``jit``, e.g.
    predictions) are computed in their own dtype.

    Attributes (after ``fit``): ``data_min_``, ``data_max_``, ``scale_`` (``s``), ``n_features_`` (None for 1-D).
    """

    def __init__(self, feature_range=(-1.0, 1.0)):
        try:
            lo, hi = (float(v) for v in feature_range)
        except (TypeError, ValueError):
            raise TypeError(f"feature_range must be a pair of numbers (lo, hi), got {feature_range!r}") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"feature_range must be finite with lo < hi, got {feature_range!r}")
        self.feature_range = (lo, hi)
        self.data_min_ = self.data_max_ = self.scale_ = None
        self.n_features_ = None

    def __repr__(self) -> str:
        fitted = "fitted" if self.scale_ is not None else "not fitted"
        return f"MinMaxScaler(feature_range={self.feature_range}, {fitted})"

    def fit(self, x) -> MinMaxScaler:
        """Learn per-feature min and max of ``x`` (``[N]``, or ``[..., F]``). Returns ``self``."""
        x = _numeric(x, "x")
        if x.size == 0:
            raise ValueError(f"x must not be empty, got shape {shape_str(x.shape)}")
        _check_finite(x, "x")
        data = np.asarray(x, dtype=np.float64)
        axes = None if data.ndim <= 1 else tuple(range(data.ndim - 1))
        self.data_min_, self.data_max_ = data.min(axis=axes), data.max(axis=axes)
        self.n_features_ = None if data.ndim <= 1 else data.shape[-1]
        lo, hi = self.feature_range
        with np.errstate(over="ignore"):
            span = self.data_max_ - self.data_min_
        constant = span == 0
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            scale = (hi - lo) / np.where(constant, 1.0, span)
        if not (np.all(np.isfinite(span)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError(
                f"x's range cannot be scaled in float64: per-feature min {self.data_min_}, max {self.data_max_} "
                f"(a span that overflows, or one too small to invert); rescale the data first"
            )
        self.scale_ = scale
        # the value a feature's minimum maps to; a constant feature maps to the middle of the range
        self._low = np.where(constant, (lo + hi) / 2, lo)
        return self

    def _check(self, x, name: str):
        if self.scale_ is None:
            raise ValueError("this MinMaxScaler is not fitted yet: call scaler.fit(train_x) before transforming")
        x = _numeric(x, name)
        if self.n_features_ is not None and (x.ndim < 1 or x.shape[-1] != self.n_features_):
            raise ValueError(
                f"{name} must have {self.n_features_} features on its last axis (as the fitted data), got shape "
                f"{shape_str(x.shape)}"
            )
        _check_finite(x, name)
        return x

    def _params_like(self, x, dtype):
        # explicit broadcast: works under jax_numpy_rank_promotion="raise"
        return tuple(jnp.broadcast_to(jnp.asarray(v, dtype), x.shape) for v in (self.data_min_, self.scale_, self._low))

    @staticmethod
    def _out_dtype(x):
        return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else np.dtype(np.float32)

    def transform(self, x):
        """``(x − m) · s + lo`` per feature; shape kept. Raises on NaN/inf input or before ``fit``."""
        x = self._check(x, "x")
        dtype = self._out_dtype(x)
        if isinstance(x, jax.Array):
            low_x, scale, low = self._params_like(x, dtype)
            return ((x.astype(dtype) - low_x) * scale + low).astype(dtype)
        return ((np.asarray(x, np.float64) - self.data_min_) * self.scale_ + self._low).astype(dtype)

    def inverse_transform(self, y):
        """``(y − lo) / s + m`` per feature: values on the original scale; shape kept."""
        y = self._check(y, "y")
        dtype = self._out_dtype(y)
        if isinstance(y, jax.Array):
            low_x, scale, low = self._params_like(y, dtype)
            return ((y.astype(dtype) - low) / scale + low_x).astype(dtype)
        return ((np.asarray(y, np.float64) - self._low) / self.scale_ + self.data_min_).astype(dtype)

    def fit_transform(self, x):
        """``fit(x).transform(x)``."""
        return self.fit(x).transform(x)


# ------------------------------------------------------------------------------------------------------ windows


def _series(series) -> np.ndarray | jax.Array:
    series = _numeric(series, "series")
    if series.ndim < 1:
        raise ValueError(f"series must have rank >= 1 ([T] or [T, F]), got shape {shape_str(series.shape)}")
    return series


def _window_count(length: int, span: int, stride: int, what: str) -> int:
    if length < span:
        raise ValueError(f"series has {length} steps, fewer than the {span} one window needs ({what})")
    return (length - span) // stride + 1


def _gather(series, starts, size):
    idx = starts[:, None] + np.arange(size)[None, :]
    return series[idx]


def sliding_windows(series, past: int, future: int, *, stride: int = 1):
    """Input/target pairs from a series: ``past`` steps in, the next ``future`` steps out.

    Window ``i`` starts at ``t = i · stride``: ``inputs[i] = series[t : t + past]``,
    ``targets[i] = series[t + past : t + past + future]``.

    Args:
      series: ``[T]`` or ``[T, F]`` (numpy or jax).
      past, future: window lengths, positive ints.
      stride: the step between window starts.

    Returns:
      ``(inputs [N, past, *feat], targets [N, future, *feat])`` with ``N = (T − past − future) // stride + 1``;
      ``*feat`` is the series' trailing shape (none for a 1-D series: add ``[..., None]`` for a one-feature RNN).
    """
    series = _series(series)
    for name, value in (("past", past), ("future", future), ("stride", stride)):
        _positive(value, name)
    count = _window_count(series.shape[0], past + future, stride, f"past={past} + future={future}")
    starts = np.arange(count) * stride
    return _gather(series, starts, past), _gather(series, starts + past, future)


windows = sliding_windows


class Frames(NamedTuple):
    """Three consecutive frames of a series, each ``[N, size, *feat]``."""

    past: np.ndarray
    current: np.ndarray
    future: np.ndarray


def frames(series, size: int, *, stride: int = 1) -> Frames:
    """Consecutive past / current / future frames of ``size`` steps (seed 001), one triple per window.

    Window ``i`` starts at ``t = i · stride``: ``past = series[t : t+size]``, ``current = series[t+size : t+2·size]``,
    ``future = series[t+2·size : t+3·size]``. For the series ``-3, ..., 8`` and ``size=4`` there is one window:
    past ``[-3, -2, -1, 0]``, current ``[1, 2, 3, 4]``, future ``[5, 6, 7, 8]``.

    Returns:
      :class:`Frames` of arrays ``[N, size, *feat]``, ``N = (T − 3·size) // stride + 1``.
    """
    series = _series(series)
    _positive(size, "size")
    _positive(stride, "stride")
    count = _window_count(series.shape[0], 3 * size, stride, f"3 frames of size {size}")
    starts = np.arange(count) * stride
    return Frames(*(_gather(series, starts + k * size, size) for k in range(3)))


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------------- vocabulary


def char_tokenize(text: str) -> list[str]:
    """The characters of ``text``: ``"ab c" -> ["a", "b", " ", "c"]``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return list(text)


_WORD = re.compile(r"\w+|[^\w\s]")


def word_tokenize(text: str, *, lower: bool = True) -> list[str]:
    """Words and punctuation marks of ``text`` (regex ``\\w+|[^\\w\\s]``), lower-cased by default:
    ``"Hi, you!" -> ["hi", ",", "you", "!"]``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _WORD.findall(text.lower() if lower else text)


class Vocabulary:
    """A token ↔ id mapping with ``<pad>`` = 0 and ``<unk>`` = 1.

    ``Vocabulary(tokens)`` takes the full ordered token list (``tokens[0] == "<pad>"``, ``tokens[1] == "<unk>"``);
    :meth:`build` counts tokens. Unknown tokens encode to 1; ``decode`` drops padding by default.
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if len(tokens) < 2 or tokens[0] != PAD or tokens[1] != UNK:
            raise ValueError(f"tokens must start with {PAD!r}, {UNK!r}, got {tokens[:2]!r}")
        for t in tokens:
            if not isinstance(t, str):
                raise TypeError(f"tokens must be strings, got {type(t).__name__} ({t!r})")
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, c in Counter(tokens).items() if c > 1)
            raise ValueError(f"tokens must be unique, got {dup!r} more than once")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    pad_id, unk_id = 0, 1

    @classmethod
    def build(cls, sequences: Iterable[Iterable[str]], *, min_freq: int = 1, max_size: int | None = None):
        """Count the tokens of ``sequences`` (e.g. ``[word_tokenize(s) for s in texts]``) and keep those seen at
        least ``min_freq`` times, most frequent first (ties: first seen first), at most ``max_size`` entries in all
        (``<pad>`` and ``<unk>`` included)."""
        _positive(min_freq, "min_freq")
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or max_size < 2
        ):
            raise ValueError(f"max_size must be an int >= 2 (room for {PAD!r} and {UNK!r}) or None, got {max_size!r}")
        if isinstance(sequences, str):
            raise TypeError("sequences must be an iterable of token sequences, got a str; wrap it: [char_tokenize(s)]")
        counts: Counter = Counter()
        for seq in sequences:
            if isinstance(seq, str):
                raise TypeError(
                    f"sequences must hold token lists, got the str {seq[:20]!r}; tokenize it first "
                    f"(word_tokenize or char_tokenize)"
                )
            counts.update(seq)
        kept = [t for t, c in counts.most_common() if c >= min_freq and t not in (PAD, UNK)]
        if max_size is not None:
            kept = kept[: max_size - 2]
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token) -> bool:
        return token in self.index

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens: {self.tokens[:6]}{'...' if len(self) > 6 else ''})"

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Token ids ``int32 [len(tokens)]``; unknown tokens become 1 (``<unk>``)."""
        if isinstance(tokens, str):
            raise TypeError("tokens must be a sequence of tokens, got a str; tokenize it first (word_/char_tokenize)")
        return np.array([self.index.get(t, self.unk_id) for t in tokens], dtype=np.int32)

    def decode(self, ids, *, skip_pad: bool = True) -> list[str]:
        """Tokens of ``ids`` (1-D ints in ``[0, len)``), padding dropped unless ``skip_pad=False``."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids must be a 1-D integer array, got shape {shape_str(ids.shape)} dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"ids must lie in [0, {len(self)}) (the vocabulary size), got [{ids.min()}, {ids.max()}]")
        return [self.tokens[i] for i in ids.tolist() if not (skip_pad and i == self.pad_id)]


# ------------------------------------------------------------------------------------------------ batches, splits


def pad_sequences(
    seqs: Sequence,
    *,
    max_length: int | None = None,
    pad_value=0,
    dtype=None,
    padding: str = "post",
    truncating: str = "post",
):
    """Pad a list of sequences ``[T_i, *feat]`` into one array.

    Args:
      seqs: sequences (lists or arrays) with the same trailing shape ``feat``.
      max_length: pad (and truncate) to this length; default the longest sequence.
      pad_value: the fill value.
      dtype: of the result; default numpy's common type of the sequences.
      padding: ``"post"`` (the default) pads after each sequence (right padding, what the drivers' ``lengths``
        describe); ``"pre"`` pads before it (left padding, Keras' default), for ``mask=sequence_mask(lengths, T,
        padding="pre")``.
      truncating: which steps a sequence longer than ``max_length`` loses: ``"post"`` (the default) the last ones,
        ``"pre"`` the first ones (Keras' default).

    Returns:
      ``(padded [N, T, *feat], lengths int32 [N])`` with ``lengths[i] = min(T_i, T)``.
    """
    for name, value in (("padding", padding), ("truncating", truncating)):
        if value not in ("post", "pre"):
            raise ValueError(f"{name} must be 'post' or 'pre', got {value!r}")
    if isinstance(seqs, (str, bytes)) or not isinstance(seqs, Sequence) and not isinstance(seqs, np.ndarray):
        raise TypeError(f"seqs must be a list of sequences, got {type(seqs).__name__}")
    if len(seqs) == 0:
        raise ValueError("seqs must hold at least one sequence, got an empty list")
    arrays = [_numeric(s, f"seqs[{i}]") for i, s in enumerate(seqs)]
    arrays = [np.asarray(a) for a in arrays]
    for i, a in enumerate(arrays):
        if a.ndim < 1:
            raise ValueError(f"seqs[{i}] must have rank >= 1 ([T, *feat]), got a scalar")
        if a.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(
                f"seqs[{i}] has trailing shape {shape_str(a.shape[1:])}, seqs[0] has {shape_str(arrays[0].shape[1:])}"
            )
    if max_length is not None:
        _positive(max_length, "max_length")
    longest = max(a.shape[0] for a in arrays)
    length = longest if max_length is None else max_length
    if dtype is None:
        # an empty Python list comes out of numpy as float64: it must not decide the type of token ids
        filled = [a for a in arrays if a.size]
        dtype = np.result_type(*filled) if filled else np.dtype(np.int32)
    else:
        dtype = np.dtype(dtype)
    out = np.full((len(arrays), length, *arrays[0].shape[1:]), _exactly_as(pad_value, dtype, "pad_value"), dtype)
    lengths = np.zeros(len(arrays), np.int32)
    for i, a in enumerate(arrays):
        n = min(a.shape[0], length)
        kept = _exactly_as(a[:n] if truncating == "post" else a[a.shape[0] - n :], dtype, f"seqs[{i}]")
        if padding == "post":
            out[i, :n] = kept
        else:
            out[i, length - n :] = kept
        lengths[i] = n
    return out, lengths


def _exactly_as(values, dtype: np.dtype, name: str) -> np.ndarray:
    """``values`` cast to ``dtype``, or a ``ValueError`` naming ``name`` when the cast would change a value
    (a fraction cut off, an integer wrapped around, NaN into an integer type)."""
    values = np.asarray(values)
    with np.errstate(invalid="ignore", over="ignore"):
        cast = values.astype(dtype)
        same = cast.astype(values.dtype) == values
    if np.issubdtype(values.dtype, np.floating) and np.issubdtype(dtype, np.floating):
        same |= np.isnan(values) & np.isnan(cast)
    if not np.all(same):
        bad = values[~same] if values.ndim else values
        raise ValueError(
            f"{name} holds values that dtype {dtype} cannot represent exactly, e.g. {np.ravel(bad)[0].item()!r}: pass a "
            f"dtype that holds them (dtype=...)"
        )
    return cast


def _check_arrays(arrays, name="arrays") -> int:
    if not arrays:
        raise ValueError(f"{name}: give at least one array")
    sizes = []
    for i, a in enumerate(arrays):
        if not hasattr(a, "shape") or len(a.shape) < 1:
            raise ValueError(f"{name}[{i}] must be an array of rank >= 1, got {type(a).__name__}")
        sizes.append(a.shape[0])
    if len(set(sizes)) != 1:
        raise ValueError(f"{name} must share their leading (example) axis, got leading sizes {sizes}")
    return sizes[0]


def _permutation(key, n: int, shuffle: bool) -> np.ndarray:
    if not check_flag(shuffle, "shuffle"):
        return np.arange(n)
    if key is None:
        raise ValueError("shuffle=True needs a PRNG key, got key=None (pass jax.random.key(seed), or shuffle=False)")
    check_key(key)
    return np.asarray(jax.random.permutation(key, n))


def batches(key, *arrays, batch_size: int, shuffle: bool = True, drop_last: bool = False) -> Iterator[tuple]:
    """Yield ``tuple(a[idx] for a in arrays)`` for consecutive ``batch_size`` chunks of one permutation.

    Args:
      key: PRNG key for the permutation (``jax.random.permutation``); None only with ``shuffle=False``.
      arrays: arrays sharing their leading (example) axis ``N``.
      batch_size: examples per batch.
      shuffle: permute (the same permutation for every array) or keep the order.
      drop_last: drop a final batch smaller than ``batch_size`` (keeps shapes fixed: no recompilation).

    Yields:
      tuples of arrays ``[batch_size, ...]`` (the last may be smaller unless ``drop_last``).
    """
    n = _check_arrays(arrays)
    batch_size = _positive(batch_size, "batch_size")
    order = _permutation(key, n, shuffle)
    stop = n - n % batch_size if check_flag(drop_last, "drop_last") else n
    return (tuple(a[order[start : start + batch_size]] for a in arrays) for start in range(0, stop, batch_size))


def split(key, *arrays, fractions: Sequence[float] = (0.8, 0.1, 0.1), shuffle: bool = True) -> tuple[tuple, ...]:
    """Split ``arrays`` (shared leading axis ``N``) into parts of the given ``fractions`` of ``N``.

    Part ``j`` takes examples ``[round(N·c_{j−1}), round(N·c_j))`` of the (permuted, with ``shuffle``) order, where
    ``c`` are the cumulative fractions. ``shuffle=False`` keeps time order (``key`` may be None): the right split
    for a series, so that validation and test lie after the training part.

    Returns:
      one tuple of arrays per fraction: ``((x_train, y_train), (x_val, y_val), (x_test, y_test))``.
    """
    n = _check_arrays(arrays)
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise TypeError(f"fractions must be a sequence of numbers, got {fractions!r}") from None
    if not fr or any(not (f >= 0) for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions!r} (sum {sum(fr):.6g})")
    order = _permutation(key, n, shuffle)
    bounds = [0, *(int(round(n * c)) for c in np.cumsum(fr)[:-1]), n]
    return tuple(tuple(a[order[lo:hi]] for a in arrays) for lo, hi in zip(bounds[:-1], bounds[1:]))
