"""jaxrnn.losses: masked means over padded steps, the many-to-one readout."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn

LENGTHS = jnp.array([3, 1, 0])


def test_sequence_mask_and_masked_mean():
    mask = jaxrnn.sequence_mask(LENGTHS, 4)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(jaxrnn.sequence_mask(LENGTHS, 4, time_major=True), np.asarray(mask).T)
    values = jnp.arange(12.0).reshape(3, 4)
    assert jaxrnn.masked_mean(values, LENGTHS) == pytest.approx((0 + 1 + 2 + 4) / 4)
    assert jaxrnn.masked_mean(values.T, LENGTHS, time_major=True) == pytest.approx(7 / 4)
    assert jaxrnn.masked_mean(values, jnp.zeros(3, jnp.int32)) == 0.0
    with pytest.raises(ValueError, match=r"lengths must have the batch shape of xs, \[3\], got \[2\]"):
        jaxrnn.masked_mean(values, LENGTHS[:2])


def test_padding_does_not_change_the_loss():
    logits = jax.random.normal(jax.random.key(0), (3, 4, 5))
    labels = jax.random.randint(jax.random.key(1), (3, 4), 0, 5)
    full = jaxrnn.sequence_cross_entropy(logits, labels, LENGTHS)
    garbage = logits.at[0, 3].set(100.0).at[1, 1:].set(-50.0)
    assert jaxrnn.sequence_cross_entropy(garbage, labels, LENGTHS) == pytest.approx(float(full))
    per_step = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    expected = (per_step[0, :3].sum() + per_step[1, 0]) / 4
    assert float(full) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="labels must have shape logits.shape"):
        jaxrnn.sequence_cross_entropy(logits, labels[:, :2])
    with pytest.raises(TypeError, match="labels must be integer class ids"):
        jaxrnn.sequence_cross_entropy(logits, labels.astype(jnp.float32))


def test_sequence_cross_entropy_rejects_labels_out_of_range_at_valid_steps():
    """optax gives NaN for a label outside [0, C); at a valid step that is an error, at a padded step (e.g. -1 as
    padding) it is ignored like the rest of the padding. Under jit nothing can be read, so nothing is checked."""
    logits = jax.random.normal(jax.random.key(0), (3, 4, 5))
    labels = jax.random.randint(jax.random.key(1), (3, 4), 0, 5)
    padded = labels.at[0, 3].set(-1).at[1, 1:].set(-1)  # only padded steps of LENGTHS
    assert jaxrnn.sequence_cross_entropy(logits, padded, LENGTHS) == jaxrnn.sequence_cross_entropy(
        logits, labels, LENGTHS
    )
    mask = np.ones((3, 4), bool)
    mask[1, 1:] = False
    assert np.isfinite(float(jaxrnn.sequence_cross_entropy(logits, labels.at[1, 2].set(9), mask=mask)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\) .* got values in \[-1, \d\]"):
        jaxrnn.sequence_cross_entropy(logits, padded)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\) .* got values in \[\d, 5\]"):
        jaxrnn.sequence_cross_entropy(logits, labels.at[0, 2].set(5), LENGTHS)
    jitted = jax.jit(jaxrnn.sequence_cross_entropy)(logits, labels.at[0, 2].set(5), LENGTHS)
    assert np.isnan(float(jitted))  # what the check prevents where it can


def test_sequence_mse():
    preds, targets = jnp.ones((2, 3, 2)), jnp.zeros((2, 3, 2))
    targets = targets.at[1, 2].set(5.0)  # padded step of sequence 1: ignored
    assert jaxrnn.sequence_mse(preds, targets, jnp.array([3, 2])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="targets must have the shape of predictions"):
        jaxrnn.sequence_mse(preds, targets[:, :2])
    assert jaxrnn.sequence_mse([[[1.0]], [[2.0]]], [[[0.0]], [[0.0]]]) == pytest.approx(2.5)  # lists work
    with pytest.raises(ValueError, match="predictions must have rank >= 1"):
        jaxrnn.sequence_mse(jnp.float32(1), jnp.float32(0))
    with pytest.raises(ValueError, match=r"logits must have rank >= 2 \(\[\*batch, T, C\]\), got shape \[3\]"):
        jaxrnn.sequence_cross_entropy(jnp.zeros(3), jnp.array(1))
    loss = jaxrnn.sequence_cross_entropy([[[0.0, 0.0]]], [[1]])
    assert float(loss) == pytest.approx(np.log(2))


def test_sequence_mask_checks_its_lengths_and_steps():
    with pytest.raises(TypeError, match="lengths must be an integer array, got dtype float32"):
        jaxrnn.sequence_mask(jnp.array([1.5, 2.0]), 3)
    with pytest.raises(
        ValueError, match=r"lengths must lie in \[0, 3\] \(the number of time steps\), got values in \[-1, 5\]"
    ):
        jaxrnn.sequence_mask([5, -1], 3)
    with pytest.raises(ValueError, match="num_steps must be a non-negative integer, got -2"):
        jaxrnn.sequence_mask(LENGTHS, -2)
    np.testing.assert_array_equal(jaxrnn.sequence_mask([2, 0], 2, padding="pre"), [[1, 1], [0, 0]])


def test_last_valid_is_many_to_one():
    ys = jax.random.normal(jax.random.key(0), (3, 4, 2))
    out = jaxrnn.last_valid(ys, LENGTHS)
    np.testing.assert_array_equal(out[0], ys[0, 2])
    np.testing.assert_array_equal(out[1], ys[1, 0])
    np.testing.assert_array_equal(out[2], [0.0, 0.0])
    np.testing.assert_array_equal(jaxrnn.last_valid(ys), ys[:, -1])
    np.testing.assert_array_equal(jaxrnn.last_valid(jnp.swapaxes(ys, 0, 1), LENGTHS, time_major=True), out)
    # The last valid output of a forward RNN is its final hidden state.
    params = jaxrnn.gru.init(jax.random.key(1), 2, 3)
    final, hs = jaxrnn.rnn(jaxrnn.gru, params, ys, lengths=LENGTHS)
    np.testing.assert_allclose(jaxrnn.last_valid(hs, LENGTHS)[:2], final[:2], rtol=1e-6)


# Padding anywhere: left padding, a gap, nothing valid.
MASK = np.array([[False, True, True, True], [True, False, True, False], [False, False, False, False]])


def test_mask_in_losses_and_readout():
    values = jnp.arange(12.0).reshape(3, 4)
    assert jaxrnn.masked_mean(values, mask=MASK) == pytest.approx((1 + 2 + 3 + 4 + 6) / 5)
    assert jaxrnn.masked_mean(values.T, mask=MASK.T, time_major=True) == pytest.approx(16 / 5)
    assert jaxrnn.masked_mean(values, LENGTHS, mask=MASK) == pytest.approx((1 + 2 + 4) / 3)  # both must allow
    assert jaxrnn.masked_mean(values, mask=np.zeros((3, 4), bool)) == 0.0
    logits = jax.random.normal(jax.random.key(0), (3, 4, 5))
    labels = jax.random.randint(jax.random.key(1), (3, 4), 0, 5)
    per_step = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    expected = np.asarray(per_step)[MASK].mean()
    assert float(jaxrnn.sequence_cross_entropy(logits, labels, mask=MASK)) == pytest.approx(float(expected), rel=1e-6)
    preds = jnp.zeros((3, 4, 2)).at[0, 0].set(9.0)  # a masked step: ignored
    assert float(jaxrnn.sequence_mse(preds, jnp.ones((3, 4, 2)), mask=MASK)) == pytest.approx(1.0)

    ys = jax.random.normal(jax.random.key(2), (3, 4, 2))
    out = jaxrnn.last_valid(ys, mask=MASK)
    np.testing.assert_array_equal(out[0], ys[0, 3])
    np.testing.assert_array_equal(out[1], ys[1, 2])
    np.testing.assert_array_equal(out[2], [0.0, 0.0])
    np.testing.assert_array_equal(jaxrnn.last_valid(jnp.swapaxes(ys, 0, 1), mask=MASK.T, time_major=True), out)
    params = jaxrnn.gru.init(jax.random.key(1), 2, 3)
    final, hs = jaxrnn.rnn(jaxrnn.gru, params, ys, mask=MASK)
    np.testing.assert_allclose(jaxrnn.last_valid(hs, mask=MASK)[:2], final[:2], rtol=1e-6)

    np.testing.assert_array_equal(
        jaxrnn.sequence_mask(LENGTHS, 4, padding="pre"), [[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
    )
    with pytest.raises(TypeError, match="time_major must be a bool, got str 'no'"):
        jaxrnn.sequence_mask(jnp.array([1, 2]), 3, time_major="no")
    with pytest.raises(ValueError, match=r"padding must be one of \('post', 'pre'\), got 'left'"):
        jaxrnn.sequence_mask(LENGTHS, 4, padding="left")
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        jaxrnn.masked_mean(values, mask=MASK.astype(np.float32))
    with pytest.raises(
        ValueError, match=r"mask must have shape \[\*batch, time\] = \[3, 4\] to match xs, got \[3, 3\]"
    ):
        jaxrnn.last_valid(ys, mask=MASK[:, :3])


def test_empty_sequences_give_zero_losses_and_zero_readouts():
    """T = 0 is "no step valid": the losses are 0 (as with every length 0), not nan, and the readout is zeros."""
    empty = jnp.ones((3, 0, 2))
    assert float(jaxrnn.masked_mean(jnp.ones((3, 0)))) == 0.0
    assert float(jaxrnn.sequence_mse(empty, empty)) == 0.0
    assert float(jaxrnn.sequence_mse(empty, empty, jnp.zeros(3, jnp.int32))) == 0.0
    logits, labels = jnp.ones((3, 0, 5)), jnp.zeros((3, 0), jnp.int32)
    assert float(jaxrnn.sequence_cross_entropy(logits, labels)) == 0.0
    for lengths in (None, jnp.zeros(3, jnp.int32)):
        out = jaxrnn.last_valid(empty, lengths)
        assert out.shape == (3, 2)
        np.testing.assert_array_equal(out, 0.0)
    assert jaxrnn.last_valid(jnp.ones((0, 3, 2)), time_major=True).shape == (3, 2)
    np.testing.assert_array_equal(jaxrnn.last_valid(empty, mask=np.zeros((3, 0), bool)), np.zeros((3, 2)))
