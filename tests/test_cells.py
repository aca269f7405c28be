"""The built-in cells: equations, gate order, initialisation, params validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make

import jaxrnn


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def numpy_params(params):
    return {f: np.asarray(getattr(params, f), np.float64) for f in ("w_x", "w_h", "b", "b_hn") if hasattr(params, f)}


def test_lstm_step_gate_by_gate():
    _, params = make("lstm", 3, 4)
    p = numpy_params(params)
    x, h, c = np.random.default_rng(0).normal(size=(3, 2, 4))[0][:, :3], np.full((2, 4), 0.3), np.full((2, 4), -0.2)
    z = x @ p["w_x"] + h @ p["w_h"] + p["b"]
    i, f, g, o = sigmoid(z[:, :4]), sigmoid(z[:, 4:8]), np.tanh(z[:, 8:12]), sigmoid(z[:, 12:])
    c_new = f * c + i * g
    state, out = jaxrnn.lstm.step(
        params, jaxrnn.LSTMState(jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32)), jnp.asarray(x, jnp.float32)
    )
    np.testing.assert_allclose(state.c, c_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, o * np.tanh(c_new), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.h, out)


def test_gru_step_reset_after():
    _, params = make("gru", 3, 4)
    p = numpy_params(params)
    rng = np.random.default_rng(1)
    x, h = rng.normal(size=(2, 3)), rng.normal(size=(2, 4))
    a, u = x @ p["w_x"] + p["b"], h @ p["w_h"]
    r, z = sigmoid(a[:, :4] + u[:, :4]), sigmoid(a[:, 4:8] + u[:, 4:8])
    n = np.tanh(a[:, 8:] + r * (u[:, 8:] + p["b_hn"]))
    new, out = jaxrnn.gru.step(params, jnp.asarray(h, jnp.float32), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(new, (1 - z) * n + z * h, rtol=1e-5, atol=1e-6)


def test_gru_step_reset_before():
    """Cho et al. (2014): the reset gate scales h before the n block's recurrent matmul."""
    params = jaxrnn.gru.init(jax.random.key(0), 3, 4, reset_after=False)
    assert params.b_hn is None and not params.reset_after and jaxrnn.gru.init(jax.random.key(0), 3, 4).reset_after
    params = params._replace(b=0.3 * jax.random.normal(jax.random.key(1), (12,)))
    p = numpy_params(params)
    rng = np.random.default_rng(1)
    x, h = rng.normal(size=(2, 3)), rng.normal(size=(2, 4))
    a = x @ p["w_x"] + p["b"]
    r = sigmoid(a[:, :4] + h @ p["w_h"][:, :4])
    z = sigmoid(a[:, 4:8] + h @ p["w_h"][:, 4:8])
    n = np.tanh(a[:, 8:] + (r * h) @ p["w_h"][:, 8:])
    new, out = jaxrnn.gru.step(params, jnp.asarray(h, jnp.float32), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(new, (1 - z) * n + z * h, rtol=1e-5, atol=1e-6)
    # not the reset-after GRU with a zero b_hn: r·(h W_hn) differs from (r·h) W_hn
    after, _ = jaxrnn.gru.step(params._replace(b_hn=jnp.zeros(4)), jnp.asarray(h, jnp.float32), jnp.asarray(x))
    assert np.abs(np.asarray(after) - np.asarray(new)).max() > 1e-2
    assert jaxrnn.gru.sizes(params) == (3, 4)
    with pytest.raises(TypeError, match="reset_after must be a bool, got str"):
        jaxrnn.gru.init(jax.random.key(0), 3, 4, reset_after="no")
    with pytest.raises(ValueError, match=r"GRUParams.b_hn must have shape \[4\], got \[3\]"):
        jaxrnn.gru.sizes(params._replace(b_hn=jnp.zeros(3)))


def test_lstm_with_projections_step():
    """Sak et al. (2014), PyTorch's proj_size: h' = (o·tanh(c')) W_hr, and h (P features) is the recurrent input."""
    params = jaxrnn.lstm.init(jax.random.key(0), 3, 4, proj_size=2)
    assert isinstance(params, jaxrnn.LSTMPParams) and params.proj_size == 2
    assert [np.shape(leaf) for leaf in params] == [(3, 16), (2, 16), (16,), (4, 2)]
    assert jaxrnn.lstm.sizes(params) == (3, 4)
    # per-gate blocks of w_h have orthonormal rows
    for k in range(4):
        block = np.asarray(params.w_h[:, 4 * k : 4 * k + 4], np.float64)
        np.testing.assert_allclose(block @ block.T, np.eye(2), atol=1e-5)
    params = params._replace(b=0.3 * jax.random.normal(jax.random.key(1), (16,)))
    p = {f: np.asarray(getattr(params, f), np.float64) for f in params._fields}
    rng = np.random.default_rng(2)
    x, h, c = rng.normal(size=(5, 3)), rng.normal(size=(5, 2)), rng.normal(size=(5, 4))
    z = x @ p["w_x"] + h @ p["w_h"] + p["b"]
    i, f, g, o = sigmoid(z[:, :4]), sigmoid(z[:, 4:8]), np.tanh(z[:, 8:12]), sigmoid(z[:, 12:])
    c_new = f * c + i * g
    state, out = jaxrnn.lstm.step(params, jaxrnn.LSTMState(jnp.asarray(h), jnp.asarray(c)), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(state.c, c_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, (o * np.tanh(c_new)) @ p["w_hr"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.h, out)
    zero = jaxrnn.lstm.initial_state(params, (5,))
    assert zero.h.shape == (5, 2) and zero.c.shape == (5, 4)
    # without proj_size the same key gives the plain LSTM, its w_x drawn from the same split
    plain = jaxrnn.lstm.init(jax.random.key(0), 3, 4)
    assert isinstance(plain, jaxrnn.LSTMParams) and np.array_equal(
        plain.w_x, jaxrnn.lstm.init(jax.random.key(0), 3, 4, proj_size=2).w_x
    )


@pytest.mark.parametrize(
    ("proj_size", "error", "match"),
    [(4, ValueError, r"proj_size must lie in \(0, hidden_size=4\), got 4"), (0, ValueError, "got 0"),
     (2.0, TypeError, "proj_size must be an int or None, got float"), (True, TypeError, "got bool")],
)  # fmt: skip
def test_lstm_proj_size_is_checked(proj_size, error, match):
    with pytest.raises(error, match=match):
        jaxrnn.lstm.init(jax.random.key(0), 3, 4, proj_size=proj_size)


@pytest.mark.parametrize("name", ["elman", "lstm", "gru"])
def test_params_of_mixed_dtypes_are_refused(name):
    """One dtype for every leaf: a bfloat16 w_h among float32 leaves would change the carry's dtype within the scan,
    and a float16 b would come back with a float32 gradient."""
    cell = getattr(jaxrnn, name)
    params = cell.init(jax.random.key(0), 3, 4)
    with pytest.raises(TypeError, match=r"leaves must share one dtype, got bfloat16 \(w_h\), float32 \(w_x, b"):
        cell.sizes(params._replace(w_h=params.w_h.astype(jnp.bfloat16)))
    with pytest.raises(TypeError, match=r"float16 \(b\), float32 \(w_x, w_h"):
        jaxrnn.rnn(cell, params._replace(b=params.b.astype(jnp.float16)), jnp.zeros((2, 5, 3)))


def test_lstm_with_projections_params_are_checked():
    params = jaxrnn.lstm.init(jax.random.key(0), 3, 4, proj_size=2)
    with pytest.raises(ValueError, match=r"LSTMPParams.w_hr must have shape \[H, P\] with 0 < P < H, got \[4, 4\]"):
        jaxrnn.lstm.sizes(params._replace(w_hr=jnp.zeros((4, 4))))
    with pytest.raises(
        ValueError, match=r"LSTMPParams.w_h must have shape \[2, 16\] for H=4, P=2 \(from w_hr\), got \[4, 16\]"
    ):
        jaxrnn.lstm.sizes(params._replace(w_h=jnp.zeros((4, 16))))
    with pytest.raises(ValueError, match=r"LSTMPParams.w_x must have shape \[D, 16\]"):
        jaxrnn.lstm.sizes(params._replace(w_x=jnp.zeros((3, 12))))
    with pytest.raises(TypeError, match="floating point"):
        jaxrnn.lstm.sizes(params._replace(w_hr=jnp.zeros((4, 2), jnp.int32)))
    with pytest.raises(ValueError, match=r"xs has 4 features .* expect input_size=3"):
        jaxrnn.rnn(jaxrnn.lstm, params, jnp.ones((2, 5, 4)))
    with pytest.raises(ValueError, match="carry"):  # a carry with h of H features instead of P
        jaxrnn.rnn(jaxrnn.lstm, params, jnp.ones((2, 5, 3)), jaxrnn.LSTMState(jnp.zeros((2, 4)), jnp.zeros((2, 4))))


@pytest.mark.parametrize("activation, fn", [("tanh", np.tanh), ("relu", lambda v: np.maximum(v, 0))])
def test_elman_step(activation, fn):
    _, params = make("elman" if activation == "tanh" else "elman_relu", 3, 4)
    p = numpy_params(params)
    x, h = np.ones((3,)), np.linspace(-1, 1, 4)
    new, out = jaxrnn.elman.step(params, jnp.asarray(h, jnp.float32), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(new, fn(x @ p["w_x"] + h @ p["w_h"] + p["b"]), rtol=1e-5, atol=1e-6)
    assert params.activation == activation


def test_step_accepts_any_leading_batch_dims():
    _, params = make("lstm", 3, 4)
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    carry = jaxrnn.lstm.initial_state(params, (2, 5))
    _, out = jaxrnn.lstm.step(params, carry, x)
    _, out_one = jaxrnn.lstm.step(params, jaxrnn.lstm.initial_state(params), x[1, 2])
    assert out.shape == (2, 5, 4)
    np.testing.assert_allclose(out[1, 2], out_one, rtol=1e-6)


@pytest.mark.parametrize(
    "cell, gates", [(jaxrnn.elman, 1), (jaxrnn.lstm, 4), (jaxrnn.gru, 3)], ids=["elman", "lstm", "gru"]
)
def test_init_layout_and_scheme(cell, gates):
    params = cell.init(jax.random.key(0), 16, 8)
    assert params.w_x.shape == (16, gates * 8) and params.w_h.shape == (8, gates * 8) and params.b.shape == (gates * 8,)
    assert cell.sizes(params) == (16, 8)
    for k in range(gates):  # each gate's recurrent block is orthogonal
        block = np.asarray(params.w_h[:, k * 8 : (k + 1) * 8], np.float64)
        np.testing.assert_allclose(block.T @ block, np.eye(8), atol=1e-5)
    bound = np.sqrt(6 / (16 + gates * 8))
    assert np.abs(params.w_x).max() <= bound + 1e-7
    carry = cell.initial_state(params, (3,))
    assert all(leaf.shape == (3, 8) and not np.any(leaf) for leaf in jax.tree_util.tree_leaves(carry))


def test_lstm_forget_bias():
    b = jaxrnn.lstm.init(jax.random.key(0), 2, 3).b
    np.testing.assert_array_equal(b, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    assert not np.any(jaxrnn.lstm.init(jax.random.key(0), 2, 3, forget_bias=0.0).b)


def test_dtype_follows_x64_and_can_be_given():
    assert jaxrnn.gru.init(jax.random.key(0), 2, 3).w_x.dtype == jnp.float32
    assert jaxrnn.gru.init(jax.random.key(0), 2, 3, dtype=jnp.bfloat16).w_h.dtype == jnp.bfloat16
    with jax.enable_x64(True):
        assert jaxrnn.lstm.init(jax.random.key(0), 2, 3).w_x.dtype == jnp.float64


def test_init_errors():
    with pytest.raises(ValueError, match="activation must be one of"):
        jaxrnn.elman.init(jax.random.key(0), 2, 3, activation="sigmoid")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer, got 0"):
        jaxrnn.lstm.init(jax.random.key(0), 2, 0)
    with pytest.raises(ValueError, match="input_size must be a positive integer"):
        jaxrnn.gru.init(jax.random.key(0), 2.5, 3)
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype, got int32"):
        jaxrnn.lstm.init(jax.random.key(0), 2, 3, dtype=jnp.int32)
    with pytest.raises(TypeError, match="forget_bias"):
        jaxrnn.gru.init(jax.random.key(0), 2, 3, forget_bias=1.0)


def test_elman_params_with_static_activation_are_a_pytree():
    params = jaxrnn.elman.init(jax.random.key(0), 2, 3, activation="relu")
    assert len(jax.tree_util.tree_leaves(params)) == 3
    doubled = jax.tree.map(lambda v: 2 * v, params)
    assert isinstance(doubled, jaxrnn.ElmanParams) and doubled.activation == "relu"
    tanh_params = params._replace(activation="tanh")
    assert jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(tanh_params)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_gate_activations_in_either_layout(reset_after):
    """The GRU's gate math is one function for the cell and the feature-major forward: features first (``axis=0``)
    gives the transpose of features last."""
    from jaxrnn.cells import gru

    params = jaxrnn.gru.init(jax.random.key(0), 3, 4, reset_after=reset_after)
    params = params._replace(b=params.b + 0.3, b_hn=None if params.b_hn is None else params.b_hn - 0.2)
    x, h = jax.random.normal(jax.random.key(1), (5, 3)), jax.random.normal(jax.random.key(2), (5, 4))
    w_h = params.w_h if reset_after else params.w_h[:, :8]
    a, u = x @ params.w_x + params.b[None], h @ w_h
    rows, hn_rows = gru.gate_activations(params, a, u, h)
    cols, hn_cols = gru.gate_activations(params, a.T, u.T, h.T, axis=0)
    for want, got in zip((*rows, hn_rows), (*cols, hn_cols)):
        np.testing.assert_allclose(got.T, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rows.n, gru.gates(params, h, x).n, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="axis must be -1 .* or 0 .*, got 1"):
        gru.gate_activations(params, a, u, h, axis=1)


@pytest.mark.parametrize("name", ["elman", "lstm", "gru"])
def test_step_checks_carry_and_input_before_tracing(name):
    cell = {"elman": jaxrnn.elman, "lstm": jaxrnn.lstm, "gru": jaxrnn.gru}[name]
    params = cell.init(jax.random.key(0), 3, 4)
    x = jnp.ones((3, 3))
    good = cell.initial_state(params, (3,))
    cell.step(params, good, x)
    narrow = cell.initial_state(params, (1,))  # would broadcast to batch 3
    with pytest.raises(ValueError, match=r"carry.* has shape \[1, 4\], expected \[3, 4\]. A .* step takes the carry"):
        cell.step(params, narrow, x)
    with pytest.raises(ValueError, match=r"x must be \[\*batch, 3\] .*got shape \[3, 5\]"):
        cell.step(params, good, jnp.ones((3, 5)))
    with pytest.raises(TypeError, match="x must be floating point, got dtype int32"):
        cell.step(params, good, jnp.ones((3, 3), jnp.int32))
    with pytest.raises(TypeError, match="x must have the params' dtype float32 .*got bfloat16"):
        cell.step(params, good, jnp.ones((3, 3), jnp.bfloat16))  # the carry would turn bfloat16
    with pytest.raises(TypeError, match=r"params must be .*got DenseParams"):
        cell.initial_state(jaxrnn.dense.init(jax.random.key(0), 3, 4), (2,))


@pytest.mark.parametrize("name", ["elman", "lstm", "gru"])
def test_initial_state_and_init_check_their_arguments(name):
    cell = {"elman": jaxrnn.elman, "lstm": jaxrnn.lstm, "gru": jaxrnn.gru}[name]
    params = cell.init(jax.random.key(0), 3, 4)
    with pytest.raises(TypeError, match=r"batch_shape must be a tuple of ints, got the int 2; pass \(2,\)"):
        cell.initial_state(params, 2)
    with pytest.raises(TypeError, match="batch_shape must be a tuple of ints, got NoneType"):
        cell.initial_state(params, None)
    for bad in ((-1,), (2.0,)):
        with pytest.raises(ValueError, match="batch_shape must hold non-negative ints"):
            cell.initial_state(params, bad)
    assert jax.tree.leaves(cell.initial_state(params, (np.int64(2),)))[0].shape[0] == 2
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        cell.init(0, 3, 4)
    with pytest.raises(TypeError, match=r"Params\.b\[0\] must be an array, got float"):
        jaxrnn.rnn(cell, params._replace(b=params.b.tolist()), jnp.ones((2, 5, 3)))


def test_cell_options_are_checked():
    with pytest.raises(TypeError, match="forget_bias must be a real number, got str"):
        jaxrnn.lstm.init(jax.random.key(0), 3, 4, forget_bias="1")
    with pytest.raises(TypeError, match="forget_bias must be a real number, got ArrayImpl"):
        jaxrnn.lstm.init(jax.random.key(0), 3, 4, forget_bias=jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="forget_bias must be finite, got nan"):
        jaxrnn.lstm.init(jax.random.key(0), 3, 4, forget_bias=float("nan"))
    assert jaxrnn.gru.init(jax.random.key(0), 3, 4, reset_after=np.False_).b_hn is None
    with pytest.raises(TypeError, match="reset_after must be a bool, got str"):
        jaxrnn.gru.init(jax.random.key(0), 3, 4, reset_after="no")
    e = jaxrnn.elman.init(jax.random.key(0), 3, 4)
    with pytest.raises(ValueError, match=r"ElmanParams.activation must be one of .*got \['tanh'\]"):
        jaxrnn.rnn(jaxrnn.elman, e._replace(activation=["tanh"]), jnp.ones((2, 5, 3)))
