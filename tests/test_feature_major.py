"""The feature-major fast path (jaxrnn.feature_major): the LSTM's forward and backward, the GRU's forward pass alone;
same values and gradients as autodiff, and chosen only for wide cells."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import primitive_eqns
from test_fastpath import LENGTHS, MASK, RESETS, make_case, make_loss, rel_err

import jaxrnn
from jaxrnn import fastpath, feature_major


@pytest.fixture
def always_feature_major(monkeypatch):
    """Feature-major at any size, so that the small test cases take it; traces of either layout are dropped."""
    monkeypatch.setattr(feature_major, "MIN_GATE_WIDTH", 0)
    monkeypatch.setattr(feature_major, "MIN_BATCH", 0)
    monkeypatch.setattr(feature_major, "GRU_FORWARD_MIN", ((0, 0),))
    jax.clear_caches()
    yield
    jax.clear_caches()


def test_chosen_for_wide_cells_only():
    def chosen(batch, hidden):
        params = jaxrnn.lstm.init(jax.random.key(0), 3, hidden)
        xs = jax.ShapeDtypeStruct((5, *batch, 3), jnp.float32)
        return feature_major.use_feature_major(params, xs)

    assert chosen((8,), 256) and chosen((2, 4), 512)
    assert not chosen((8,), 128)  # 4H = 512 < MIN_GATE_WIDTH
    assert not chosen((4,), 256) and not chosen((), 256)  # fewer than MIN_BATCH sequences
    projected = jaxrnn.lstm.init(jax.random.key(0), 3, 512, proj_size=64)  # the LSTM with projections stays row-major
    assert not feature_major.use_feature_major(projected, jax.ShapeDtypeStruct((5, 64, 3), jnp.float32))

    def gru_chosen(batch, hidden):
        params = jaxrnn.gru.init(jax.random.key(0), 3, hidden)
        return feature_major.use_feature_major(params, jax.ShapeDtypeStruct((5, *batch, 3), jnp.float32))

    assert gru_chosen((32,), 512) and gru_chosen((4, 8), 512) and gru_chosen((8,), 1024)
    assert not gru_chosen((16,), 512) and not gru_chosen((64,), 511) and not gru_chosen((4,), 2048)
    elman = jaxrnn.elman.init(jax.random.key(0), 3, 1024)
    assert not feature_major.use_feature_major(elman, jax.ShapeDtypeStruct((5, 8, 3), jnp.float32))

    params = jaxrnn.lstm.init(jax.random.key(0), 3, 256)
    xs = jnp.zeros((5, 8, 3))
    carry = jaxrnn.lstm.initial_state(params, (8,))
    kept = jax.eval_shape(lambda: fastpath._forward("lstm", False, 1, params, xs, carry, None, None)[2])
    assert isinstance(kept, feature_major.Kept)
    assert kept.h_prev.shape == (5, 8, 256) and kept.gates.c.shape == (5, 256, 8)
    assert kept._fields == ("h_prev", "gates")  # the cell state a step started from is not kept twice


@pytest.mark.usefixtures("x64", "always_feature_major")
@pytest.mark.parametrize(
    ("padding", "reverse"),
    [(None, True), ("lengths", False), ("mask", True), ("resets", False)],  # each kind of padding, both directions
)  # fmt: skip
def test_float64_gradients_equal_autodiff(padding, reverse):
    """With a step mask (gaps, left padding) the cell state a step started from is still its neighbour's carried
    ``c``: a masked step keeps it. With resets (and lengths) it is zero at each segment start."""
    cell, params, xs, carry0 = make_case("lstm", dtype=jnp.float64, seed=2)
    kwargs = {"lengths": jnp.asarray(LENGTHS) if padding == "lengths" else None, "reverse": reverse}
    mask_tm = None
    if padding == "mask":
        kwargs["mask"] = MASK
        mask_tm = jnp.moveaxis(jnp.asarray(MASK), -1, 0)
    if padding == "resets":
        kwargs.update(resets=RESETS, lengths=jnp.asarray(LENGTHS))
    carry = jaxrnn.lstm.initial_state(params, LENGTHS.shape)
    xs_tm = jnp.moveaxis(xs, -2, 0)
    kept = jax.eval_shape(
        lambda: fastpath._forward("lstm", reverse, 1, params, xs_tm, carry, kwargs["lengths"], mask_tm)[2]
    )
    assert isinstance(kept, feature_major.Kept)

    out_ad = jaxrnn.rnn(cell, params, xs, carry0, grad="autodiff", **kwargs)
    out_fm = jaxrnn.rnn(cell, params, xs, carry0, grad="analytic", **kwargs)
    assert rel_err(out_ad, out_fm) < 1e-13
    loss_ad, g_ad = jax.value_and_grad(make_loss(cell, "autodiff", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
    loss_fm, g_fm = jax.value_and_grad(make_loss(cell, "analytic", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
    np.testing.assert_allclose(loss_fm, loss_ad, rtol=1e-13)
    assert rel_err(g_ad, g_fm) < 1e-12


@pytest.mark.usefixtures("always_feature_major")
def test_float32_jit_vmap_and_bfloat16():
    cell, params, xs, carry0 = make_case("lstm")
    lengths = jnp.asarray(LENGTHS)
    grad = {
        g: jax.jit(jax.grad(make_loss(cell, g, lengths=lengths), argnums=(0, 1, 2)))(params, xs, carry0)
        for g in ("autodiff", "analytic")
    }
    assert rel_err(grad["autodiff"], grad["analytic"]) < 1e-5

    per_example = jax.vmap(
        jax.grad(lambda p, x: jnp.sum(jnp.sin(jaxrnn.rnn(cell, p, x, grad="analytic")[1]))), in_axes=(None, 0)
    )(params, xs)
    want = jax.vmap(
        jax.grad(lambda p, x: jnp.sum(jnp.sin(jaxrnn.rnn(cell, p, x, grad="autodiff")[1]))), in_axes=(None, 0)
    )(params, xs)
    assert rel_err(want, per_example) < 1e-5

    half = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (params, xs, carry0))
    g16 = jax.jit(jax.grad(make_loss(cell, "analytic", lengths=lengths), argnums=(0, 1, 2)))(*half)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(g16))
    g32 = jax.grad(make_loss(cell, "autodiff", lengths=lengths), argnums=(0, 1, 2))(
        *jax.tree.map(lambda a: a.astype(jnp.float32), half)
    )
    assert rel_err(g32, jax.tree.map(lambda a: a.astype(jnp.float32), g16)) < 0.1


def _scan_carry_shapes(fn, *args):
    """The shapes of the first carry of every ``scan`` in ``fn``'s jaxpr."""
    jaxpr = jax.make_jaxpr(fn)(*args)
    return {tuple(eqn.invars[eqn.params["num_consts"]].aval.shape) for eqn in primitive_eqns(jaxpr, "scan")}


@pytest.mark.usefixtures("x64", "always_feature_major")
@pytest.mark.parametrize("name", ["gru", "gru_reset_before"])
def test_gru_forward_alone_runs_feature_major_and_training_row_major(name):
    """Both GRU forms, every kind of padding in both directions: the feature-major forward equals autodiff's
    row-major scan; a differentiated scan keeps the row-major forward (and its analytic backward)."""
    cell, params, xs, carry0 = make_case(name, dtype=jnp.float64, seed=3)
    lengths = jnp.asarray(LENGTHS)
    for kwargs in ({}, {"lengths": lengths}, {"mask": MASK}, {"resets": RESETS, "lengths": lengths}):
        for reverse in (False, True):
            want = jaxrnn.rnn(cell, params, xs, carry0, grad="autodiff", reverse=reverse, **kwargs)
            got = jaxrnn.rnn(cell, params, xs, carry0, reverse=reverse, **kwargs)
            assert rel_err(want, got) < 1e-13, (kwargs.keys(), reverse)

    n, hidden = int(np.prod(LENGTHS.shape)), params.w_h.shape[0]
    forward = _scan_carry_shapes(lambda x: jaxrnn.rnn(cell, params, x, carry0)[1], xs)
    assert forward == {(hidden, n)}
    training = _scan_carry_shapes(jax.grad(make_loss(cell, None), argnums=(0, 1, 2)), params, xs, carry0)
    assert (hidden, n) not in training and (*LENGTHS.shape, hidden) in training

    g_ad = jax.grad(make_loss(cell, "autodiff", lengths=lengths), argnums=(0, 1, 2))(params, xs, carry0)
    g_default = jax.grad(make_loss(cell, None, lengths=lengths), argnums=(0, 1, 2))(params, xs, carry0)
    assert rel_err(g_ad, g_default) < 1e-12


@pytest.mark.usefixtures("always_feature_major")
def test_gru_feature_major_forward_under_jit_vmap_and_bfloat16():
    cell, params, xs, carry0 = make_case("gru")
    lengths = jnp.asarray(LENGTHS)
    want = jaxrnn.rnn(cell, params, xs, carry0, lengths=lengths, grad="autodiff")
    got = jax.jit(lambda p, x, c: jaxrnn.rnn(cell, p, x, c, lengths=lengths))(params, xs, carry0)
    assert rel_err(want, got) < 1e-5
    per_row = jax.vmap(lambda x, c: jaxrnn.rnn(cell, params, x, c)[1])(xs, carry0)
    assert rel_err(jaxrnn.rnn(cell, params, xs, carry0, grad="autodiff")[1], per_row) < 1e-5

    half = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (params, xs, carry0))
    final, ys = jaxrnn.rnn(cell, *half, lengths=lengths)
    assert final.dtype == ys.dtype == jnp.bfloat16
    assert rel_err(want[1], ys.astype(jnp.float32)) < 0.05


def test_the_lower_level_scans_check_their_inputs_as_rnn_does():
    lstm = jaxrnn.lstm.init(jax.random.key(0), 3, 4)
    gru = jaxrnn.gru.init(jax.random.key(0), 3, 4)
    xs_tm = jnp.ones((7, 2, 3))
    c0, h0 = jaxrnn.lstm.initial_state(lstm, (2,)), jaxrnn.gru.initial_state(gru, (2,))
    with pytest.raises(ValueError, match="xs has 2 features"):
        feature_major.forward(lstm, xs_tm[..., :2], c0)
    with pytest.raises(TypeError, match="params must be GRUParams"):
        feature_major.gru_forward(lstm, xs_tm, h0)
    with pytest.raises(TypeError, match="params must be LSTMParams"):
        feature_major.forward(gru, xs_tm, c0)
    with pytest.raises(ValueError, match="carry has the wrong structure"):
        feature_major.forward(lstm, xs_tm, jnp.zeros((2, 4)))
    with pytest.raises(TypeError, match="xs_tm must have the params' dtype float32, got bfloat16"):
        feature_major.gru_forward(gru, xs_tm.astype(jnp.bfloat16), h0)
    with pytest.raises(TypeError, match="lengths must be an integer array"):
        fastpath.analytic_scan(jaxrnn.lstm, lstm, xs_tm, c0, jnp.array([2.5, 1.0]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 7\]"):
        fastpath.analytic_scan(jaxrnn.lstm, lstm, xs_tm, c0, jnp.array([9, 2]))
    with pytest.raises(ValueError, match="unroll must be a positive int"):
        fastpath.analytic_scan(jaxrnn.lstm, lstm, xs_tm, c0, unroll=0)
    with pytest.raises(ValueError, match="marks must have shape"):
        fastpath.analytic_scan(jaxrnn.gru, gru, xs_tm, h0, marks=jnp.zeros((2, 7), bool))
    with pytest.raises(ValueError, match="carry is required here"):
        fastpath.analytic_scan(jaxrnn.gru, gru, xs_tm, None)
    mine = jaxrnn.Cell(jaxrnn.gru.init, jaxrnn.gru.initial_state, lambda p, c, x: jaxrnn.gru.step(p, c, x), name="mine")
    with pytest.raises(ValueError, match="analytic_scan needs a built-in cell .*got 'mine'"):
        fastpath.analytic_scan(mine, gru, xs_tm, h0)
    with pytest.raises(TypeError, match="cell must be a jaxrnn.Cell"):
        fastpath.analytic_scan(None, gru, xs_tm, h0)
    _, ys, kept = feature_major.forward(lstm, xs_tm, c0)
    with pytest.raises(ValueError, match=r"dys must have the shape of ys, \[7, 2, 4\]"):
        feature_major.backward(lstm, xs_tm, c0, kept, None, c0, ys[:, :1])
