"""jaxrnn.stack: depth, bidirectionality, merging, dropout, variational recurrent dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, primitive_params, scan_unrolls

import jaxrnn

XS = jax.random.normal(jax.random.key(3), (3, 6, 4))
LENGTHS = jnp.array([6, 4, 1])


@pytest.mark.parametrize("cell", [jaxrnn.lstm, jaxrnn.gru, jaxrnn.elman], ids=lambda c: c.name)
def test_one_layer_equals_rnn(cell):
    layer = jaxrnn.stack(cell)
    params = layer.init(jax.random.key(0), 4, 5)
    (final,), ys = layer.apply(params, XS, lengths=LENGTHS)
    ref_final, ref_ys = jaxrnn.rnn(cell, params[0], XS, lengths=LENGTHS)
    assert_trees_close(final, ref_final)
    assert_trees_close(ys, ref_ys)


def test_two_layers_compose_and_carry_in():
    layer = jaxrnn.stack(jaxrnn.lstm, 2)
    params = layer.init(jax.random.key(0), 4, 5)
    assert params[1].w_x.shape == (5, 20)
    carry = tuple(
        jax.tree.map(lambda z: z + 0.1 * (k + 1), jaxrnn.lstm.initial_state(p, (3,))) for k, p in enumerate(params)
    )
    finals, ys = layer.apply(params, XS, carry, lengths=LENGTHS)
    f0, y0 = jaxrnn.rnn(jaxrnn.lstm, params[0], XS, carry[0], lengths=LENGTHS)
    f1, y1 = jaxrnn.rnn(jaxrnn.lstm, params[1], y0, carry[1], lengths=LENGTHS)
    assert_trees_close(finals, (f0, f1))
    assert_trees_close(ys, y1)


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_projected_lstm_layers_read_the_projected_outputs(merge):
    """With proj_size=P each layer outputs P features per direction: layer k > 0 reads 2P (concat) or P."""
    layer = jaxrnn.stack(jaxrnn.lstm, 2, bidirectional=True, merge=merge)
    params = layer.init(jax.random.key(0), 4, 5, proj_size=2)
    width = 4 if merge == "concat" else 2
    assert params[1].forward.w_x.shape == (width, 20) and params[1].backward.w_h.shape == (2, 20)
    finals, ys = layer.apply(params, XS, lengths=LENGTHS)
    assert ys.shape == (3, 6, width)
    assert finals[1].forward.h.shape == (3, 2) and finals[1].forward.c.shape == (3, 5)
    f0, y0 = jaxrnn.rnn(jaxrnn.lstm, params[0].forward, XS, lengths=LENGTHS)
    b0, z0 = jaxrnn.rnn(jaxrnn.lstm, params[0].backward, XS, lengths=LENGTHS, reverse=True)
    assert_trees_close(finals[0], jaxrnn.Bidirectional(f0, b0))
    mid = jnp.concatenate([y0, z0], axis=-1) if merge == "concat" else y0 + z0
    f1, y1 = jaxrnn.rnn(jaxrnn.lstm, params[1].forward, mid, lengths=LENGTHS)
    b1, z1 = jaxrnn.rnn(jaxrnn.lstm, params[1].backward, mid, lengths=LENGTHS, reverse=True)
    assert_trees_close(finals[1], jaxrnn.Bidirectional(f1, b1))
    assert_trees_close(ys, jnp.concatenate([y1, z1], axis=-1) if merge == "concat" else y1 + z1)


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_with_lengths(merge):
    layer = jaxrnn.stack(jaxrnn.gru, 2, bidirectional=True, merge=merge)
    params = layer.init(jax.random.key(1), 4, 5)
    assert isinstance(params[0], jaxrnn.Bidirectional)
    assert params[1].forward.w_x.shape == ((10 if merge == "concat" else 5), 15)
    finals, ys = layer.apply(params, XS, lengths=LENGTHS)
    assert ys.shape == (3, 6, 10 if merge == "concat" else 5)
    for i, n in enumerate(LENGTHS.tolist()):
        # Each sequence alone, unpadded: the backward direction must start at its own last valid step.
        single_finals, single_ys = layer.apply(params, XS[i, :n])
        assert_trees_close(ys[i, :n], single_ys, atol=1e-5)
        assert_trees_close(jax.tree.map(lambda z: z[i], finals), single_finals, atol=1e-5)
        assert np.all(np.asarray(ys[i, n:]) == 0.0)


@pytest.mark.parametrize("merge", ["concat", "sum", "mean", "mul"])
def test_bidirectional_parts(merge):
    layer = jaxrnn.stack(jaxrnn.lstm, 2, bidirectional=True, merge=merge)
    params = layer.init(jax.random.key(2), 4, 3)
    (final, _), ys = layer.apply(params, XS)
    f_final, f_ys = jaxrnn.rnn(jaxrnn.lstm, params[0].forward, XS)
    b_final, b_ys = jaxrnn.rnn(jaxrnn.lstm, params[0].backward, XS, reverse=True)
    merged = {"concat": jnp.concatenate([f_ys, b_ys], axis=-1), "sum": f_ys + b_ys, "mean": (f_ys + b_ys) / 2,
              "mul": f_ys * b_ys}[merge]  # fmt: skip
    (second,), _ = jaxrnn.stack(jaxrnn.lstm, 1, bidirectional=True).apply(params[1:], merged)
    assert_trees_close(final, jaxrnn.Bidirectional(f_final, b_final))
    assert params[1].forward.w_x.shape[0] == (6 if merge == "concat" else 3)  # layer 2 reads the merged outputs
    assert_trees_close(layer.apply(params, XS)[0][1], second)
    assert ys.shape == (*XS.shape[:-1], 6 if merge == "concat" else 3)


def test_dropout_only_in_training_and_keyed():
    layer = jaxrnn.stack(jaxrnn.lstm, 3, dropout=0.5, recurrent_dropout=0.3)
    plain = jaxrnn.stack(jaxrnn.lstm, 3)
    params = layer.init(jax.random.key(0), 4, 8)
    _, ys_eval = layer.apply(params, XS)
    assert_trees_close(ys_eval, plain.apply(params, XS)[1])
    _, a = layer.apply(params, XS, key=jax.random.key(1), train=True)
    _, b = layer.apply(params, XS, key=jax.random.key(1), train=True)
    _, c = layer.apply(params, XS, key=jax.random.key(2), train=True)
    assert_trees_close(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, ys_eval)
    with pytest.raises(ValueError, match="train=True with dropout or recurrent_dropout needs a PRNG key"):
        layer.apply(params, XS, train=True)


def test_recurrent_dropout_mask_is_the_same_at_every_step():
    """A probe cell whose output is the (masked) recurrent input it receives, and whose new carry is ones."""

    def init(key, input_size, hidden_size, *, dtype=None):
        return {"unused": jnp.zeros((input_size, hidden_size))}

    def initial_state(params, batch_shape=()):
        return jnp.zeros((*batch_shape, params["unused"].shape[1]))

    def step(params, carry, x):
        return jnp.ones_like(carry), carry

    probe = jaxrnn.Cell(init, initial_state, step, name="probe")
    layer = jaxrnn.stack(probe, recurrent_dropout=0.5)
    params = layer.init(jax.random.key(0), 4, 64)
    _, ys = layer.apply(params, XS, key=jax.random.key(5), train=True)
    masks = np.asarray(ys[:, 1:])  # step t >= 1 sees the mask times ones
    np.testing.assert_array_equal(masks, np.broadcast_to(masks[:, :1], masks.shape))
    assert set(np.unique(masks)) == {0.0, 2.0}
    assert not np.array_equal(masks[0, 0], masks[1, 0]), "one mask per sequence"


def test_scan_options_reach_every_layer_and_direction():
    """unroll, checkpoint_every and grad go to jaxrnn.rnn for every layer and direction; values are unchanged."""
    plain = jaxrnn.stack(jaxrnn.lstm, 2, bidirectional=True)
    tuned = jaxrnn.stack(jaxrnn.lstm, 2, bidirectional=True, unroll=3, checkpoint_every=4, grad="autodiff")
    assert (tuned.unroll, tuned.checkpoint_every, tuned.grad) == (3, 4, "autodiff")
    assert "unroll=3, checkpoint_every=4, grad='autodiff'" in repr(tuned)
    params = plain.init(jax.random.key(0), 4, 5)

    def loss(layer):
        return lambda p: jnp.sum(layer.apply(p, XS, lengths=LENGTHS)[1] ** 2)

    assert_trees_close(jax.value_and_grad(loss(tuned))(params), jax.value_and_grad(loss(plain))(params), rtol=1e-5)
    jaxpr = jax.make_jaxpr(loss(tuned))(params)
    assert set(scan_unrolls(jaxpr)) == {1, 3}  # the scans within chunks unrolled, the scans over chunks not
    remat = primitive_params(jaxpr, "remat2") + primitive_params(jaxpr, "checkpoint")  # jax.checkpoint's primitive
    assert len(remat) == 4  # a rematerialised chunk per layer and direction
    analytic = jaxrnn.stack(jaxrnn.gru, 2, grad="analytic", unroll=2)
    assert set(scan_unrolls(jax.make_jaxpr(loss(analytic))(analytic.init(jax.random.key(1), 4, 5)))) == {2}


def test_recurrent_dropout_runs_autodiff_under_the_default_grad():
    layer = jaxrnn.stack(jaxrnn.lstm, recurrent_dropout=0.5, unroll=2)
    params = layer.init(jax.random.key(0), 4, 5)

    def grad_of(layer, train):
        return jax.grad(lambda p: jnp.sum(layer.apply(p, XS, key=jax.random.key(1), train=train)[1] ** 2))(params)

    g = grad_of(layer, True)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))
    autodiff = jaxrnn.stack(jaxrnn.lstm, recurrent_dropout=0.5, grad="autodiff")
    assert_trees_close(g, grad_of(autodiff, True), rtol=1e-5)  # the masked cell is differentiated by autodiff
    assert not np.allclose(g[0].w_h, grad_of(layer, False)[0].w_h)  # and the mask was applied


def test_stack_errors():
    with pytest.raises(ValueError, match="merge must be one of"):
        jaxrnn.stack(jaxrnn.lstm, merge="max")
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        jaxrnn.stack(jaxrnn.lstm, 0)
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\)"):
        jaxrnn.stack(jaxrnn.lstm, dropout=1.0)
    with pytest.raises(TypeError, match="cell must be a jaxrnn.Cell"):
        jaxrnn.stack(object())
    with pytest.raises(ValueError, match="unroll must be a positive int, a bool or None, got 0"):
        jaxrnn.stack(jaxrnn.lstm, unroll=0)
    with pytest.raises(TypeError, match="bidirectional must be a bool, got str 'no'"):
        jaxrnn.stack(jaxrnn.lstm, bidirectional="no")
    layer = jaxrnn.stack(jaxrnn.lstm)
    params = layer.init(jax.random.key(0), 3, 4)
    with pytest.raises(TypeError, match="train must be a bool, got str 'false'"):
        layer.apply(params, jnp.zeros((2, 5, 3)), train="false")
    with pytest.raises(TypeError, match="time_major must be a bool, got int 1"):
        layer.apply(params, jnp.zeros((2, 5, 3)), time_major=1)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive int, got 0"):
        jaxrnn.stack(jaxrnn.lstm, checkpoint_every=0)
    with pytest.raises(ValueError, match="grad must be one of"):
        jaxrnn.stack(jaxrnn.lstm, grad="fast")
    with pytest.raises(ValueError, match="grad='analytic' cannot be combined with recurrent_dropout"):
        jaxrnn.stack(jaxrnn.lstm, recurrent_dropout=0.2, grad="analytic")
    own = jaxrnn.Cell(jaxrnn.elman.init, jaxrnn.elman.initial_state, lambda p, c, x: jaxrnn.elman.step(p, c, x))
    with pytest.raises(ValueError, match="grad='analytic' needs a built-in cell"):
        jaxrnn.stack(own, grad="analytic")
    layer = jaxrnn.stack(jaxrnn.lstm, 2, bidirectional=True)
    params = layer.init(jax.random.key(0), 4, 5)
    with pytest.raises(TypeError, match="params must be a tuple of 2 per-layer entries"):
        layer.apply(params[:1], XS)
    with pytest.raises(TypeError, match=r"params\[0\] must be Bidirectional"):
        layer.apply((params[0].forward, params[1]), XS)
    with pytest.raises(ValueError, match="carry must be a tuple of 2 per-layer carries"):
        layer.apply(params, XS, carry=(None,))
    with pytest.raises(ValueError, match="xs has 3 features"):
        layer.apply(params, XS[..., :3])


def test_time_major_equals_batch_major():
    layer = jaxrnn.stack(jaxrnn.gru, 2, bidirectional=True)
    params = layer.init(jax.random.key(0), 4, 5)
    finals, ys = layer.apply(params, XS, lengths=LENGTHS)
    finals_tm, ys_tm = layer.apply(params, jnp.swapaxes(XS, 0, 1), lengths=LENGTHS, time_major=True)
    assert ys_tm.shape == (6, 3, 10)
    assert_trees_close(jnp.swapaxes(ys_tm, 0, 1), ys)
    assert_trees_close(finals_tm, finals)


def test_bidirectional_layers_keep_segments_apart():
    """Two episodes concatenated in one row, marked with ``resets``, give what each episode gives alone, in both
    directions and both layers."""
    layer = jaxrnn.stack(jaxrnn.gru, 2, bidirectional=True)
    params = layer.init(jax.random.key(0), 3, 4)
    xs = jax.random.normal(jax.random.key(1), (2, 7, 3))
    resets = np.zeros((2, 7), bool)
    resets[:, 3] = True  # episodes [0, 3) and [3, 7) in each row
    lengths = jnp.array([7, 6])
    _, ys = layer.apply(params, xs, lengths=lengths, resets=resets)
    _, first = layer.apply(params, xs[:, :3])
    _, second = layer.apply(params, xs[:, 3:], lengths=lengths - 3)
    assert_trees_close(ys, jnp.concatenate([first, second], axis=1))
    _, unmarked = layer.apply(params, xs, lengths=lengths)
    assert not np.allclose(np.asarray(ys[:, :3]), np.asarray(unmarked[:, :3]))  # the backward direction crossed


def test_bidirectional_layers_with_left_padding_equal_the_unpadded_rows():
    """``mask`` with left padding (and a gap) in a two-layer bidirectional stack: every row gives, at its valid
    steps, what its valid steps give alone, in both directions and both layers; masked steps give zeros."""
    layer = jaxrnn.stack(jaxrnn.lstm, 2, bidirectional=True)
    params = layer.init(jax.random.key(0), 3, 4)
    xs = jax.random.normal(jax.random.key(1), (2, 7, 3))
    mask = np.array([[False, False, False, True, True, True, True], [True, True, False, True, True, True, False]])
    finals, ys = layer.apply(params, xs, mask=mask)
    assert not np.any(np.asarray(ys)[~mask])
    for b in range(2):
        alone_finals, alone = layer.apply(params, xs[b : b + 1, mask[b]])
        assert_trees_close(ys[b : b + 1, mask[b]], alone)
        assert_trees_close(jax.tree.map(lambda c: c[b : b + 1], finals), alone_finals)


def test_stack_checks_carries_rates_keys_and_numpy_sizes():
    layer = jaxrnn.stack(jaxrnn.lstm, 2, bidirectional=True)
    params = layer.init(jax.random.key(0), 4, 5)
    carry, _ = layer.apply(params, XS)
    with pytest.raises(TypeError, match=r"carry\[0\] must be Bidirectional\(forward, backward\) .*got tuple"):
        layer.apply(params, XS, tuple(tuple(c) for c in carry))
    with pytest.raises(TypeError, match=r"carry\[0\] must be Bidirectional.*got LSTMState"):
        layer.apply(params, XS, carry[0])
    for rate in ("0.5", None, jnp.array([0.1, 0.2])):
        with pytest.raises(TypeError, match="dropout must be a number in"):
            jaxrnn.stack(jaxrnn.lstm, dropout=rate)
    assert jaxrnn.stack(jaxrnn.lstm, num_layers=np.int64(2)).num_layers == 2
    dropped = jaxrnn.stack(jaxrnn.elman, 1, recurrent_dropout=0.3)
    p = dropped.init(jax.random.key(0), 4, 5)
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        dropped.apply(p, XS, train=True, key=0)
    with pytest.raises(ValueError, match="carry has the wrong structure"):  # checked before the mask needs `h`
        dropped.apply(p, XS, ((np.zeros((XS.shape[0], 5)),) * 2,), train=True, key=jax.random.key(1))


def test_recurrent_dropout_compiles_once_for_every_new_mask():
    from jaxrnn import driver

    layer = jaxrnn.stack(jaxrnn.gru, 1, recurrent_dropout=0.3)
    params = layer.init(jax.random.key(0), 4, 5)
    layer.apply(params, XS, train=True, key=jax.random.key(1))
    before = driver._run_scan._cache_size()
    outs = [layer.apply(params, XS, train=True, key=jax.random.key(k))[1] for k in (2, 3, 4)]
    assert driver._run_scan._cache_size() == before  # a new mask is a new argument, not a new cell to compile
    assert not np.allclose(outs[0], outs[1])
