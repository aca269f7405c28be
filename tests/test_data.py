"""Data utilities: the seed-001 scaling and frames, windows, vocabulary, padding, batches, splits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import data
from jaxrnn.data import MinMaxScaler, Vocabulary

SEED_SERIES = np.arange(-3, 9, dtype=np.float64)  # -3, -2, ..., 8


def seed_scale(value, old_min, old_max, new_max=1, new_min=-1):  # seed 001, verbatim
    return (((value - old_min) * (new_max - new_min)) / (old_max - old_min)) + new_min


# ---------------------------------------------------------------------------------------------------- scaler


def test_scaler_matches_seed_001():
    scaler = MinMaxScaler((-1, 1)).fit(SEED_SERIES)
    np.testing.assert_allclose(scaler.transform(SEED_SERIES), seed_scale(SEED_SERIES, -3, 8), rtol=0, atol=1e-15)
    target = np.array([5.0, 6, 7, 8])
    np.testing.assert_allclose(scaler.transform(target), [0.4545, 0.6364, 0.8182, 1.0], atol=1e-4)
    # the seed's inverse: scale(h, -1, 1, 8, -3)
    pred = np.array([-0.96, -0.99, -0.99, -0.99])
    np.testing.assert_allclose(scaler.inverse_transform(pred), seed_scale(pred, -1, 1, 8, -3), atol=1e-12)


def test_scaler_per_feature_and_exact_inverse():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)) * [1.0, 100.0, 0.01] + [0.0, -5.0, 3.0]
    scaler = MinMaxScaler().fit(x)
    y = scaler.transform(x)
    np.testing.assert_allclose(y.min(axis=0), -1.0, atol=1e-12)
    np.testing.assert_allclose(y.max(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(scaler.inverse_transform(y), x, rtol=1e-14, atol=1e-13)
    x32 = x.astype(np.float32)
    back = MinMaxScaler().fit(x32).inverse_transform(MinMaxScaler().fit(x32).transform(x32))
    assert back.dtype == np.float32
    span = x32.max(0) - x32.min(0)
    assert np.all(np.abs(back - x32) <= 4 * np.finfo(np.float32).eps * span)
    # [N, T, F]: statistics over all but the last axis
    seq = rng.normal(size=(4, 5, 2))
    s3 = MinMaxScaler((0, 1)).fit(seq).transform(seq)
    np.testing.assert_allclose(s3.reshape(-1, 2).min(0), 0.0, atol=1e-12)


def test_scaler_on_jax_arrays_and_inside_jit():
    x = np.linspace(-2, 6, 20, dtype=np.float32).reshape(10, 2)
    scaler = MinMaxScaler().fit(x)
    y = jax.jit(scaler.transform)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), scaler.transform(x), atol=1e-6)
    back = jax.jit(scaler.inverse_transform)(y)
    assert back.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(back), x, atol=1e-5)
    bf = scaler.transform(jnp.asarray(x, jnp.bfloat16))
    assert bf.dtype == jnp.bfloat16


def test_scaler_constant_feature_and_ints():
    x = np.array([[1, 5], [2, 5], [3, 5]])
    scaler = MinMaxScaler().fit(x)
    y = scaler.transform(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[:, 1], 0.0)  # a constant maps to the middle of (-1, 1)
    np.testing.assert_array_equal(scaler.inverse_transform(y), x)


def test_scaler_keeps_precision_far_from_zero_on_jax_arrays():
    # (x - m)·s + lo, not x·s + (lo - m·s): data near 3e6 with a span of 10 must not lose the span in float32
    x = np.linspace(3e6, 3e6 + 10, 11)
    scaler = MinMaxScaler().fit(x)
    exact = (x - 3e6) / 5 - 1
    on_device = np.asarray(scaler.transform(jnp.asarray(x, jnp.float32)), np.float64)
    np.testing.assert_allclose(on_device, exact, atol=1e-6)
    back = scaler.inverse_transform(jnp.asarray(exact, jnp.float32))
    np.testing.assert_allclose(np.asarray(back, np.float64), x, atol=0.5)  # float32 holds 3e6 to 0.25
    # x·s would overflow float16 (80000 > 65504) here; x − m does not
    half = MinMaxScaler().fit([40000.0, 40001.0]).transform(jnp.array([40000.0], jnp.float16))
    np.testing.assert_array_equal(np.asarray(half, np.float32), [-1.0])


def test_scaler_errors():
    with pytest.raises(ValueError, match="not fitted yet: call scaler.fit"):
        MinMaxScaler().transform(np.zeros(3))
    with pytest.raises(
        ValueError,
        match=r"x must be finite, got 1 non-finite value\(s\) \(NaN/inf\) in shape \[2, 2\], "
        r"the first at index \[1, 0\]: nan\. Drop or impute",
    ):
        MinMaxScaler().fit(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    scaler = MinMaxScaler().fit(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="x must be finite"):
        scaler.transform(np.array([[np.inf, 0.0]]))
    with pytest.raises(ValueError, match="y must be finite"):
        scaler.inverse_transform(jnp.array([[jnp.nan, 0.0]]))
    with pytest.raises(ValueError, match=r"x must have 2 features on its last axis .*got shape \[3, 3\]"):
        scaler.transform(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="feature_range must be finite with lo < hi"):
        MinMaxScaler((1, -1))
    with pytest.raises(TypeError, match="feature_range must be a pair of numbers"):
        MinMaxScaler(1.0)
    with pytest.raises(ValueError, match=r"x must not be empty, got shape \[0\]"):
        MinMaxScaler().fit(np.zeros(0))
    with pytest.raises(ValueError, match="x's range cannot be scaled in float64"):
        MinMaxScaler().fit([-1e308, 1e308])
    with pytest.raises(ValueError, match="x's range cannot be scaled in float64"):
        MinMaxScaler().fit([0.0, 5e-324])
    with pytest.raises(TypeError, match="x must be a real numeric array, got dtype complex128"):
        MinMaxScaler().fit(np.array([1 + 1j, 2]))
    with pytest.raises(TypeError, match="x must be a real numeric array, got dtype bool"):
        MinMaxScaler().fit(jnp.array([True, False]))
    with pytest.raises(TypeError, match="x must be a real numeric array, got dtype <U1"):
        MinMaxScaler().fit(np.array(["a"]))


# ---------------------------------------------------------------------------------------------------- windows


def test_frames_match_seed_001():
    past, current, future = data.frames(SEED_SERIES, 4)
    np.testing.assert_array_equal(past, [[-3, -2, -1, 0]])
    np.testing.assert_array_equal(current, [[1, 2, 3, 4]])
    np.testing.assert_array_equal(future, [[5, 6, 7, 8]])
    f = data.frames(np.arange(14.0).reshape(7, 2), 2, stride=1)
    assert f.past.shape == (2, 2, 2)
    np.testing.assert_array_equal(f.future[1], [[10, 11], [12, 13]])


def test_sliding_windows():
    x, y = data.sliding_windows(SEED_SERIES, past=4, future=4)
    assert x.shape == (5, 4) and y.shape == (5, 4)
    np.testing.assert_array_equal(x[4], [1, 2, 3, 4])
    np.testing.assert_array_equal(y[4], [5, 6, 7, 8])
    series = np.arange(20.0).reshape(10, 2)
    x, y = data.windows(series, 3, 2, stride=2)
    assert x.shape == (3, 3, 2) and y.shape == (3, 2, 2)
    np.testing.assert_array_equal(x[1, 0], series[2])
    np.testing.assert_array_equal(y[2, -1], series[8])
    xj, _ = data.sliding_windows(jnp.asarray(series), 3, 2)
    assert isinstance(xj, jax.Array)


def test_window_errors():
    with pytest.raises(ValueError, match="series has 12 steps, fewer than the 15 one window needs"):
        data.frames(SEED_SERIES, 5)
    with pytest.raises(ValueError, match="past must be a positive integer, got 0"):
        data.sliding_windows(SEED_SERIES, 0, 1)
    with pytest.raises(ValueError, match="stride must be a positive integer, got 1.5"):
        data.sliding_windows(SEED_SERIES, 1, 1, stride=1.5)
    with pytest.raises(ValueError, match=r"series must have rank >= 1 \(\[T\] or \[T, F\]\), got shape \[\]"):
        data.frames(np.float32(1.0), 1)


# -------------------------------------------------------------------------------------------------- vocabulary


def test_vocabulary_build_encode_decode():
    texts = ["the cat sat", "the dog sat down", "The end."]
    vocab = Vocabulary.build([data.word_tokenize(t) for t in texts], min_freq=1)
    assert vocab.tokens[:5] == ["<pad>", "<unk>", "the", "sat", "cat"]  # by count, ties by first appearance
    ids = vocab.encode(data.word_tokenize("the cow sat"))
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [2, 1, 3])
    assert vocab.decode(np.array([2, 1, 3, 0, 0])) == ["the", "<unk>", "sat"]
    assert vocab.decode([2, 0], skip_pad=False) == ["the", "<pad>"]
    assert len(Vocabulary.build([data.word_tokenize(t) for t in texts], min_freq=2)) == 4
    assert len(Vocabulary.build([data.word_tokenize(t) for t in texts], max_size=3)) == 3
    chars = Vocabulary.build([data.char_tokenize("abca")])
    assert chars.tokens == ["<pad>", "<unk>", "a", "b", "c"] and "a" in chars
    assert data.word_tokenize("Hi, you!", lower=False) == ["Hi", ",", "you", "!"]


def test_vocabulary_errors():
    with pytest.raises(TypeError, match="sequences must hold token lists, got the str"):
        Vocabulary.build(["some text"])
    with pytest.raises(TypeError, match="sequences must be an iterable of token sequences, got a str"):
        Vocabulary.build("text")
    with pytest.raises(ValueError, match="max_size must be an int >= 2"):
        Vocabulary.build([["a"]], max_size=1)
    assert len(Vocabulary.build([["a", "b", "a"]], max_size=np.int64(3))) == 3
    with pytest.raises(ValueError, match="min_freq must be a positive integer, got 0"):
        Vocabulary.build([["a"]], min_freq=0)
    with pytest.raises(ValueError, match="tokens must start with '<pad>', '<unk>'"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="tokens must be unique, got 'a' more than once"):
        Vocabulary(["<pad>", "<unk>", "a", "a"])
    with pytest.raises(TypeError, match="tokens must be strings, got int"):
        Vocabulary(["<pad>", "<unk>", 3])
    vocab = Vocabulary(["<pad>", "<unk>", "a"])
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 3\) \(the vocabulary size\), got \[0, 5\]"):
        vocab.decode([0, 5])
    with pytest.raises(TypeError, match="ids must be a 1-D integer array"):
        vocab.decode([[1]])
    with pytest.raises(TypeError, match="tokens must be a sequence of tokens, got a str"):
        vocab.encode("abc")
    with pytest.raises(TypeError, match="text must be a str, got int"):
        data.char_tokenize(3)


# ----------------------------------------------------------------------------------------- padding, batching


def test_pad_sequences():
    padded, lengths = data.pad_sequences([[1, 2, 3], [4], []])
    np.testing.assert_array_equal(padded, [[1, 2, 3], [4, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(lengths, [3, 1, 0])
    assert lengths.dtype == np.int32
    feats = [np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)]
    padded, lengths = data.pad_sequences(feats, max_length=3, pad_value=-1.0)
    assert padded.shape == (2, 3, 3) and padded.dtype == np.float32
    np.testing.assert_array_equal(lengths, [2, 3])
    assert padded[0, 2, 0] == -1.0
    assert data.pad_sequences([[1, 2]], dtype=jnp.bfloat16)[0].dtype == jnp.bfloat16
    with pytest.raises(ValueError, match=r"seqs\[1\] has trailing shape \[2\], seqs\[0\] has \[3\]"):
        data.pad_sequences([np.ones((2, 3)), np.ones((2, 2))])
    with pytest.raises(ValueError, match="seqs must hold at least one sequence"):
        data.pad_sequences([])
    with pytest.raises(TypeError, match="seqs must be a list of sequences, got str"):
        data.pad_sequences("abc")
    with pytest.raises(ValueError, match="max_length must be a positive integer, got 0"):
        data.pad_sequences([[1]], max_length=0)


def test_pad_sequences_never_changes_a_value_by_casting():
    assert data.pad_sequences([[1, 2], []])[0].dtype == np.int64  # the empty list does not make ids float
    assert data.pad_sequences([[], []])[0].dtype == np.int32
    np.testing.assert_array_equal(data.pad_sequences([[1.0, 2.0]], dtype=np.int32)[0], [[1, 2]])  # exact: fine
    with pytest.raises(ValueError, match="pad_value holds values that dtype int64 cannot represent exactly, e.g. 0.5"):
        data.pad_sequences([[1, 2, 3], [4]], pad_value=0.5)
    with pytest.raises(ValueError, match="pad_value holds values that dtype int64 cannot"):
        data.pad_sequences([[1, 2, 3], [4]], pad_value=float("nan"))
    with pytest.raises(ValueError, match=r"seqs\[0\] holds values that dtype uint8 cannot represent exactly, e.g. 300"):
        data.pad_sequences([[300, 2]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"seqs\[0\] holds values that dtype int32 cannot represent exactly, e.g. 1.7"):
        data.pad_sequences([[1.7, 2.2], [4.9]], dtype=np.int32)
    padded, _ = data.pad_sequences([[1.5, np.nan], [2.0]], pad_value=np.nan)
    assert np.isnan(padded[1, 1]) and np.isnan(padded[0, 1])


def test_pad_sequences_pre_padding_and_truncation_as_keras():
    seqs = [[1, 2, 3, 4], [5], []]
    padded, lengths = data.pad_sequences(seqs, max_length=3, padding="pre", truncating="pre")
    np.testing.assert_array_equal(padded, [[2, 3, 4], [0, 0, 5], [0, 0, 0]])  # keras pad_sequences(seqs, maxlen=3)
    np.testing.assert_array_equal(lengths, [3, 1, 0])
    np.testing.assert_array_equal(padded != 0, jaxrnn.sequence_mask(lengths, 3, padding="pre"))
    padded, _ = data.pad_sequences(seqs, max_length=3, padding="pre")  # truncating="post" keeps the first steps
    np.testing.assert_array_equal(padded[0], [1, 2, 3])
    padded, _ = data.pad_sequences(seqs, max_length=3, truncating="pre")
    np.testing.assert_array_equal(padded, [[2, 3, 4], [5, 0, 0], [0, 0, 0]])
    for name in ("padding", "truncating"):
        with pytest.raises(ValueError, match=f"{name} must be 'post' or 'pre', got 'left'"):
            data.pad_sequences(seqs, **{name: "left"})


def test_batches_share_one_permutation():
    x = np.arange(10)
    y = x * 10.0
    out = list(data.batches(jax.random.key(0), x, y, batch_size=4))
    assert [len(b[0]) for b in out] == [4, 4, 2]
    for bx, by in out:
        np.testing.assert_array_equal(by, bx * 10.0)
    assert sorted(np.concatenate([b[0] for b in out]).tolist()) == list(range(10))
    again = list(data.batches(jax.random.key(0), x, y, batch_size=4))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(out, again))  # same key, same order
    assert len(list(data.batches(None, x, batch_size=4, shuffle=False, drop_last=True))) == 2
    np.testing.assert_array_equal(next(data.batches(None, x, batch_size=3, shuffle=False))[0], [0, 1, 2])
    with pytest.raises(
        ValueError, match=r"arrays must share their leading \(example\) axis, got leading sizes \[10, 9\]"
    ):
        next(data.batches(jax.random.key(0), x, y[:9], batch_size=2))
    with pytest.raises(ValueError, match="shuffle=True needs a PRNG key, got key=None"):
        next(data.batches(None, x, batch_size=2))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        data.batches(None, x, batch_size=0, shuffle=False)  # at the call, not at the first batch
    with pytest.raises(TypeError, match="drop_last must be a bool, got str"):
        data.batches(None, x, batch_size=4, shuffle=False, drop_last="no")
    with pytest.raises(TypeError, match="shuffle must be a bool, got str"):
        data.batches(None, x, batch_size=4, shuffle="no")
    with pytest.raises(TypeError, match="key must be a single PRNG key .*got int"):
        data.batches(0, x, batch_size=4)


def test_split():
    x, y = np.arange(10), np.arange(10) * 2
    (xt, yt), (xv, yv), (xs, ys) = data.split(jax.random.key(1), x, y)
    assert (len(xt), len(xv), len(xs)) == (8, 1, 1)
    np.testing.assert_array_equal(yt, xt * 2)
    assert sorted(np.concatenate([xt, xv, xs]).tolist()) == list(range(10))
    (a,), (b,) = data.split(None, x, fractions=(0.7, 0.3), shuffle=False)
    np.testing.assert_array_equal(a, np.arange(7))
    np.testing.assert_array_equal(b, [7, 8, 9])
    with pytest.raises(ValueError, match=r"fractions must be non-negative and sum to 1, got \(0.5, 0.4\)"):
        data.split(None, x, fractions=(0.5, 0.4), shuffle=False)
    with pytest.raises(ValueError, match="arrays: give at least one array"):
        data.split(None, shuffle=False)
    with pytest.raises(TypeError, match="shuffle must be a bool, got str"):
        data.split(None, x, shuffle="no")
