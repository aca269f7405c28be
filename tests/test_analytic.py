"""Hand-derived gradients (jaxrnn.analytic) against jax.vjp / jax.grad and finite differences, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads, check_vjp

import jaxrnn
from jaxrnn import analytic

CELLS = {
    "elman_tanh": (jaxrnn.elman, {"activation": "tanh"}),
    "elman_relu": (jaxrnn.elman, {"activation": "relu"}),
    "lstm": (jaxrnn.lstm, {}),
    "gru": (jaxrnn.gru, {}),
    "gru_reset_before": (jaxrnn.gru, {"reset_after": False}),
    "lstm_proj": (jaxrnn.lstm, {"proj_size": 2}),
}
# The projected LSTM runs the cases where its backward differs from the LSTM's, not every one (CI time).
CORE = [name for name in CELLS if name != "lstm_proj"]
BATCH = (2, 3)
T, D, H = 5, 2, 3
LENGTHS = np.array([[5, 3, 0], [1, 4, 2]], np.int32)
RESETS = np.array(
    [[[0, 0, 1, 0, 1], [1, 0, 0, 1, 0], [0, 1, 0, 0, 0]], [[0, 0, 0, 0, 0], [0, 0, 1, 1, 0], [0, 1, 0, 0, 1]]], bool
)
MASK = np.array(
    [[[0, 0, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 0, 0, 0]], [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0], [1, 0, 0, 1, 1]]], bool
)


pytestmark = pytest.mark.usefixtures("x64")  # every test here runs in float64 (conftest.py)


def _rand(key, shape, scale=1.0):
    return scale * jax.random.normal(key, shape, jnp.float64)


def make_case(name, seed=0, batch=BATCH):
    """Params with every leaf perturbed (nonzero biases), xs, a nonzero carry0, dys and a nonzero dcarry_T."""
    cell, options = CELLS[name]
    keys = jax.random.split(jax.random.key(seed), 6)
    params = cell.init(keys[0], D, H, dtype=jnp.float64, **options)
    leaves, tree = jax.tree_util.tree_flatten(params)
    leaf_keys = jax.random.split(keys[1], len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [p + _rand(k, p.shape, 0.3) for p, k in zip(leaves, leaf_keys)])
    xs = _rand(keys[2], (*batch, T, D))
    carry0 = jax.tree.map(lambda a: _rand(keys[3], a.shape, 0.5), cell.initial_state(params, batch))
    dys = _rand(keys[4], (*batch, T, jaxrnn.rnn(cell, params, xs)[1].shape[-1]))  # H, or the projected P
    dcarry_t = jax.tree.map(lambda a: _rand(keys[5], a.shape), carry0)
    return cell, params, xs, carry0, dys, dcarry_t


def rel_err(a, b):
    """max over leaves of ‖a − b‖ / ‖a‖."""
    errs = [
        float(jnp.linalg.norm(jnp.ravel(x - y)) / max(float(jnp.linalg.norm(jnp.ravel(x))), 1e-300))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    ]
    return max(errs)


# Each kind of padding, and both directions; CI time keeps the cross product out.
PADDINGS = [(None, False), ("lengths", True), ("mask", False), ("resets", True)]


@pytest.mark.parametrize(
    ("name", "padding", "reverse"),
    [(name, *case) for name in CORE for case in PADDINGS]
    + [("lstm_proj", "lengths", True), ("lstm_proj", "resets", False)],
)
def test_bptt_equals_vjp_of_rnn(name, padding, reverse):
    cell, params, xs, carry0, dys, dcarry_t = make_case(name)
    steps = {"lengths": jnp.asarray(LENGTHS) if padding == "lengths" else None}
    steps["mask"] = MASK if padding in ("mask", "resets") else None
    steps["resets"] = RESETS if padding == "resets" else None

    def run(p, x, c):
        return jaxrnn.rnn(cell, p, x, c, reverse=reverse, grad="autodiff", **steps)

    _, vjp = jax.vjp(run, params, xs, carry0)
    want = vjp((dcarry_t, dys))
    got = analytic.bptt(cell, params, xs, carry0, dys, dcarry_t, reverse=reverse, **steps)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert rel_err(want, got) < 1e-10
    if padding:  # masked steps get no input gradient
        dxs = got[1]
        mask = MASK if padding in ("mask", "resets") else np.arange(T) < LENGTHS[..., None]
        assert np.all(np.asarray(dxs)[~np.broadcast_to(mask[..., None], dxs.shape)] == 0)


@pytest.mark.parametrize("name", CORE)
def test_bptt_time_major_and_no_batch(name):
    cell, params, xs, carry0, dys, dcarry_t = make_case(name, seed=1, batch=())
    _, vjp = jax.vjp(lambda p, x, c: jaxrnn.rnn(cell, p, x, c, grad="autodiff"), params, xs, carry0)
    assert rel_err(vjp((dcarry_t, dys)), analytic.bptt(cell, params, xs, carry0, dys, dcarry_t)) < 1e-10
    # time-major, batch [2, 3]; dcarry_T=None means zero; carry0=None means zeros
    cell, params, xs, _, dys, _ = make_case(name, seed=2)
    xs_tm, dys_tm = jnp.moveaxis(xs, -2, 0), jnp.moveaxis(dys, -2, 0)
    _, vjp = jax.vjp(lambda p, x: jaxrnn.rnn(cell, p, x, time_major=True, grad="autodiff")[1], params, xs_tm)
    got = analytic.bptt(cell, params, xs_tm, None, dys_tm, time_major=True)
    assert rel_err(vjp(dys_tm), got[:2]) < 1e-10


@pytest.mark.parametrize(
    ("name", "with_lengths"),
    [(name, True) for name in CELLS] + [("elman_tanh", False)],
)
def test_finite_differences(name, with_lengths):
    """Both autodiff (jvp and vjp) and the hand-derived bptt agree with central finite differences."""
    cell, params, xs, carry0, _, _ = make_case(name, seed=3, batch=(2,))
    lengths = jnp.asarray([T, 2]) if with_lengths else None

    def run(p, x, c):
        return jaxrnn.rnn(cell, p, x, c, lengths=lengths, grad="autodiff")

    def run_vjp(p, x, c):
        def pullback(cotangent):
            dcarry_t, dys = cotangent
            return analytic.bptt(cell, p, x, c, dys, dcarry_t, lengths=lengths)

        return run(p, x, c), pullback

    check_grads(run, (params, xs, carry0), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-6)
    check_vjp(run, run_vjp, (params, xs, carry0), eps=1e-6, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", CORE)
def test_jacfwd_equals_jacrev_through_driver(name):
    cell, params, xs, carry0, _, _ = make_case(name, seed=4, batch=(2,))
    lengths = jnp.asarray([T, 3])

    def run(p, x, c):
        final, ys = jaxrnn.rnn(cell, p, x, c, lengths=lengths, grad="autodiff")
        return ys, final

    fwd = jax.jacfwd(run, argnums=(0, 1, 2))(params, xs, carry0)
    rev = jax.jacrev(run, argnums=(0, 1, 2))(params, xs, carry0)
    assert rel_err(fwd, rev) < 1e-10


@pytest.mark.parametrize("name", list(CELLS))
def test_step_vjp_equals_vjp_of_step(name):
    cell, params, xs, carry0, dys, dcarry_t = make_case(name, seed=5)
    rule = analytic.step_rule(cell)
    x, dh = xs[..., 0, :], dys[..., 0, :]
    new_carry, h, residuals = rule.forward(params, carry0, x)
    ref_carry, ref_h = cell.step(params, carry0, x)
    assert rel_err((ref_carry, ref_h), (new_carry, h)) < 1e-14
    _, vjp = jax.vjp(cell.step, params, carry0, x)
    want = vjp((dcarry_t, dh))  # (dparams, dcarry_prev, dx)
    got = rule.step_vjp(params, carry0, x, residuals, dcarry_t, dh)
    assert rel_err(want, got) < 1e-12


def test_bptt_errors_name_the_argument():
    cell, params, xs, carry0, dys, dcarry_t = make_case("lstm")
    with pytest.raises(ValueError, match=r"dys must have the shape of ys, \[2, 3, 5, 3\]"):
        analytic.bptt(cell, params, xs, carry0, dys[..., :4, :], dcarry_t)
    with pytest.raises(ValueError, match="dys must have the shape"):
        analytic.bptt(cell, params, xs, carry0, jnp.moveaxis(dys, -2, 0), dcarry_t)
    with pytest.raises(TypeError, match="dys must be a floating-point array"):
        analytic.bptt(cell, params, xs, carry0, dys.astype(jnp.int32), dcarry_t)
    with pytest.raises(ValueError, match="dcarry_T"):
        analytic.bptt(cell, params, xs, carry0, dys, dcarry_t.h)
    with pytest.raises(ValueError, match="dcarry_T"):
        analytic.bptt(cell, params, xs, carry0, dys, jaxrnn.LSTMState(h=dcarry_t.h[0], c=dcarry_t.c[0]))
    with pytest.raises(ValueError, match="lengths"):
        analytic.bptt(cell, params, xs, carry0, dys, lengths=jnp.array([1, 2]))
    with pytest.raises(ValueError, match="xs has 4 features"):
        analytic.bptt(cell, params, jnp.ones((*BATCH, T, 4)), carry0, dys)
    with pytest.raises(ValueError, match="carry"):
        analytic.bptt(cell, params, xs, carry0.h, dys)
    with pytest.raises(TypeError, match="params must be LSTMParams"):
        analytic.bptt(cell, jaxrnn.gru.init(jax.random.key(0), D, H), xs, carry0, dys)
    mine = jaxrnn.Cell(jaxrnn.elman.init, jaxrnn.elman.initial_state, lambda p, c, x: jaxrnn.elman.step(p, c, x))
    with pytest.raises(ValueError, match="built-in cell"):
        analytic.bptt(mine, params, xs, carry0, dys)
    for flag in ("no", None, jnp.array(False)):
        with pytest.raises(TypeError, match="reverse must be a bool"):
            analytic.bptt(cell, params, xs, carry0, dys, reverse=flag)


# ------------------------------------------------------------------------------------------------------------
# The MLP of seed 000
# ------------------------------------------------------------------------------------------------------------


def iris_like(n=30, seed=0):
    """Three Gaussian blobs in 4 dimensions: a stand-in for iris (labels 0, 1, 2)."""
    k_x, k_c = jax.random.split(jax.random.key(seed))
    centres = 2.0 * jax.random.normal(k_c, (3, 4), jnp.float64)
    y = jnp.arange(n) % 3
    x = centres[y] + 0.5 * jax.random.normal(k_x, (n, 4), jnp.float64)
    return x, y


@pytest.mark.parametrize(
    ("loss", "sizes", "activation", "reduction"),
    [
        ("squared_error", [4, 10, 2], "sigmoid", "sum"),
        ("squared_error", [4, 6, 5, 2], "tanh", "mean"),
        ("softmax_cross_entropy", [4, 10, 3], "sigmoid", "sum"),
        ("softmax_cross_entropy", [4, 6, 5, 3], "relu", "mean"),
    ],
)
def test_mlp_backprop_equals_grad(loss, sizes, activation, reduction):
    params = jaxrnn.mlp.init(jax.random.key(1), sizes, activation=activation, dtype=jnp.float64)
    params = jax.tree.map(lambda p: p + 0.1, params)  # nonzero biases
    x, y = iris_like()
    want = jax.grad(analytic.mlp_loss)(params, x, y, loss=loss, reduction=reduction)
    got = analytic.mlp_backprop(params, x, y, loss=loss, reduction=reduction)
    assert isinstance(got, jaxrnn.mlp.MLPParams) and got.activation == activation
    assert rel_err(want, got) < 1e-12


def test_mlp_batch_dims_and_targets():
    params = jaxrnn.mlp.init(jax.random.key(2), [4, 5, 2], dtype=jnp.float64)
    x, y = iris_like(12)
    flat = analytic.mlp_backprop(params, x, y)
    batched = analytic.mlp_backprop(params, x.reshape(3, 4, 4), y.reshape(3, 4))
    assert rel_err(flat, batched) < 1e-13
    # class K (= 2 here) is the all-zeros target: the loss is ½ Σ p² for those rows
    p = jax.nn.sigmoid(jaxrnn.mlp.apply(params, x[:1]))
    loss = analytic.mlp_loss(params, x[:1], jnp.array([2]))
    np.testing.assert_allclose(loss, 0.5 * jnp.sum(p**2), rtol=1e-14)
    loss0 = analytic.mlp_loss(params, x[:1], jnp.array([0]))
    np.testing.assert_allclose(loss0, 0.5 * ((1 - p[0, 0]) ** 2 + p[0, 1] ** 2), rtol=1e-14)


def test_mlp_errors():
    params = jaxrnn.mlp.init(jax.random.key(2), [4, 5, 2], dtype=jnp.float64)
    x, y = iris_like(6)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 2\]"):
        analytic.mlp_backprop(params, x, y + 1)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 1\] for loss='softmax_cross_entropy'"):
        analytic.mlp_loss(params, x, y, loss="softmax_cross_entropy")
    with pytest.raises(ValueError, match="y must have the batch shape of x"):
        analytic.mlp_loss(params, x, y[:3])
    with pytest.raises(TypeError, match="integer class labels"):
        analytic.mlp_loss(params, x, y.astype(jnp.float64))
    with pytest.raises(ValueError, match="loss must be one of"):
        analytic.mlp_backprop(params, x, y, loss="hinge")
    with pytest.raises(ValueError, match="reduction must be one of"):
        analytic.mlp_backprop(params, x, y, reduction="max")
    with pytest.raises(ValueError, match="x has 3 features"):
        analytic.mlp_backprop(params, x[:, :3], y)
    with pytest.raises(TypeError, match="params must be MLPParams"):
        analytic.mlp_loss(params.layers, x, y)


def test_seed000_gradient_descent_fifty_steps():
    """Seed 000: 4 inputs, 10 sigmoid hidden units, 2 sigmoid outputs for 3 classes, eta 0.02, 50 full-batch
    steps of W ← W − η ∂E/∂W; by hand and by jax.grad, the weights end the same."""
    x, y = iris_like(60, seed=3)
    params0 = jaxrnn.mlp.init(jax.random.key(0), [4, 10, 2], activation="sigmoid", dtype=jnp.float64)
    eta = 0.02

    def descend(grad_fn):
        step = jax.jit(lambda p: jax.tree.map(lambda w, g: w - eta * g, p, grad_fn(p, x, y)))
        p = params0
        for _ in range(50):
            p = step(p)
        return p

    by_hand = descend(analytic.mlp_backprop)
    by_autodiff = descend(jax.grad(analytic.mlp_loss))
    assert rel_err(by_autodiff, by_hand) < 1e-10
    assert rel_err(params0, by_hand) > 1e-3  # it moved
    assert analytic.mlp_loss(by_hand, x, y) < analytic.mlp_loss(params0, x, y)  # and learned
