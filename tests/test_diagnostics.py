"""Gradient flow through time and gate traces (jaxrnn.diagnostics)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_at_xla_defaults

import jaxrnn
from jaxrnn import diagnostics

CELLS = {
    "elman_tanh": (jaxrnn.elman, {"activation": "tanh"}),
    "elman_relu": (jaxrnn.elman, {"activation": "relu"}),
    "lstm": (jaxrnn.lstm, {}),
    "gru": (jaxrnn.gru, {}),
    "lstm_proj": (jaxrnn.lstm, {"proj_size": 2}),
}
T, D, H = 6, 2, 3


pytestmark = pytest.mark.usefixtures("x64")  # every test here runs in float64 (conftest.py)


def make_case(name, batch=(2, 3), seed=0):
    cell, options = CELLS[name]
    keys = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(keys[0], D, H, dtype=jnp.float64, **options)
    params = params._replace(b=0.3 * jax.random.normal(keys[1], params.b.shape, jnp.float64))
    xs = jax.random.normal(keys[2], (*batch, T, D), jnp.float64)
    return cell, params, xs


@pytest.mark.parametrize("name", ["elman_relu", "lstm", "gru"])
def test_methods_agree_and_match_brute_force(name):
    cell, params, xs = make_case(name, batch=(2, 1))
    carry = jax.tree.map(lambda a: a + 0.1, cell.initial_state(params, (2, 1)))
    auto = diagnostics.gradient_flow(cell, params, xs, carry)
    hand = diagnostics.gradient_flow(cell, params, xs, carry, method="analytic")
    assert auto.dloss_dh.shape == auto.dhT_dh.shape == (T,)
    np.testing.assert_allclose(hand.dloss_dh, auto.dloss_dh, rtol=1e-10)
    np.testing.assert_allclose(hand.dhT_dh, auto.dhT_dh, rtol=1e-10)
    width = cell.initial_state(params).h.shape[-1] if name.startswith("lstm") else H  # H, or the projected P
    np.testing.assert_allclose(auto.dhT_dh[-1], np.sqrt(width), rtol=1e-12)  # the identity

    # brute force, one sequence at a time: run to step t, then jacrev of "h_t -> h_{T-1}" with c_t held
    states = []
    c = carry
    for t in range(T):
        c, _ = cell.step(params, c, xs[..., t, :])
        states.append(c)
    norms_j, norms_g = np.zeros((T, 2, 1)), np.zeros((T, 2, 1))
    for t in range(T):

        def rest(h, t=t):
            state = states[t]._replace(h=h) if hasattr(states[t], "_replace") else h
            for s in range(t + 1, T):
                state, _ = cell.step(params, state, xs[..., s, :])
            return state.h if hasattr(state, "h") else state

        h_t = states[t].h if hasattr(states[t], "h") else states[t]
        jac = jax.jacrev(rest)(h_t)  # [2, 3, H, 2, 3, H], block diagonal over the batch
        per_seq = jnp.einsum("abiabj->abij", jac)
        norms_j[t] = np.linalg.norm(np.asarray(per_seq), axis=(-2, -1))
        norms_g[t] = np.linalg.norm(np.asarray(per_seq).sum(-2), axis=-1)  # loss = sum: g = 1ᵀ J
    np.testing.assert_allclose(auto.dhT_dh, norms_j.mean(axis=(1, 2)), rtol=1e-10)
    np.testing.assert_allclose(auto.dloss_dh, norms_g.mean(axis=(1, 2)), rtol=1e-10)


def test_custom_loss_no_batch_and_user_cell():
    cell, params, xs = make_case("lstm", batch=())
    target = jnp.arange(H, dtype=jnp.float64)

    def loss_fn(h):
        return 0.5 * jnp.sum((h - target) ** 2)

    auto = diagnostics.gradient_flow(cell, params, xs, loss_fn=loss_fn)
    hand = diagnostics.gradient_flow(cell, params, xs, loss_fn=loss_fn, method="analytic")
    np.testing.assert_allclose(hand.dloss_dh, auto.dloss_dh, rtol=1e-10)
    h_last = jaxrnn.rnn(cell, params, xs)[0].h
    np.testing.assert_allclose(auto.dloss_dh[-1], jnp.linalg.norm(h_last - target), rtol=1e-12)
    # a user cell (same maths, different function) goes through autodiff and gives the same curves
    mine = jaxrnn.Cell(
        jaxrnn.lstm.init, jaxrnn.lstm.initial_state, lambda p, c, x: jaxrnn.lstm.step(p, c, x), name="mine"
    )
    theirs = diagnostics.gradient_flow(mine, params, xs, loss_fn=loss_fn)
    np.testing.assert_allclose(theirs.dhT_dh, auto.dhT_dh, rtol=1e-12)


def test_gradient_flow_errors():
    cell, params, xs = make_case("gru")
    with pytest.raises(ValueError, match="method must be one of"):
        diagnostics.gradient_flow(cell, params, xs, method="numeric")
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        diagnostics.gradient_flow(cell, params, xs, loss_fn=lambda h: h)
    with pytest.raises(TypeError, match="loss_fn must be a callable"):
        diagnostics.gradient_flow(cell, params, xs, loss_fn=3)
    with pytest.raises(ValueError, match="xs has 5 features"):
        diagnostics.gradient_flow(cell, params, jnp.ones((T, 5)))
    mine = jaxrnn.Cell(jaxrnn.gru.init, jaxrnn.gru.initial_state, lambda p, c, x: jaxrnn.gru.step(p, c, x), name="mine")
    with pytest.raises(ValueError, match="method='analytic' needs a built-in cell"):
        diagnostics.gradient_flow(mine, params, xs, method="analytic")
    odd = jaxrnn.Cell(
        lambda *a, **k: None,
        lambda p, batch_shape=(): (jnp.zeros((*batch_shape, H)), jnp.zeros((*batch_shape, H))),
        lambda p, c, x: ((c[0] + x[..., :1], c[1]), c[0]),
        name="pair",
    )
    with pytest.raises(ValueError, match="field named 'h'"):
        diagnostics.gradient_flow(odd, params, xs)
    with pytest.raises(TypeError, match="loss_fn must return a real scalar .*got NoneType"):
        diagnostics.gradient_flow(cell, params, xs, loss_fn=lambda h: None)
    with pytest.raises(TypeError, match="loss_fn must return a real scalar, got dtype complex128"):
        diagnostics.gradient_flow(cell, params, xs, loss_fn=lambda h: jnp.sum(h) * 1j)
    with pytest.raises(ValueError, match=r"xs must hold at least one sequence, got batch shape \[0\]"):
        diagnostics.gradient_flow(cell, params, jnp.zeros((0, T, D)))


def test_gate_traces_lstm_gru_elman():
    lengths = jnp.array([[T, 3, 0], [1, 5, 2]])
    valid = (np.arange(T) < np.asarray(lengths)[..., None])[..., None]  # [2, 3, T, 1]
    for name in ["elman_tanh", "lstm", "gru"]:
        cell, params, xs = make_case(name)
        carry = jax.tree.map(lambda a: a + 0.2, cell.initial_state(params, (2, 3)))
        traces = diagnostics.gate_traces(cell, params, xs, carry, lengths=lengths)
        _, ys = jaxrnn.rnn(cell, params, xs, carry, lengths=lengths, grad="autodiff")
        for leaf in jax.tree.leaves(traces):
            assert leaf.shape == (2, 3, T, H)
            assert np.all(np.asarray(leaf)[~np.broadcast_to(valid, leaf.shape)] == 0)
        if name == "lstm":
            assert isinstance(traces, jaxrnn.LSTMGates)
            np.testing.assert_allclose(traces.o * jnp.tanh(traces.c), ys, atol=1e-14)
            # step 0 equals lstm.gates on the initial carry
            first = jaxrnn.cells.lstm.gates(params, carry, xs[..., 0, :])
            for got, want in zip(traces, first):
                np.testing.assert_allclose(got[..., 0, :][np.asarray(lengths) > 0], want[np.asarray(lengths) > 0])
            # with projections the gates are the same H wide; the output is (o·tanh(c)) W_hr, of P features
            cell, params, xs = make_case("lstm_proj")
            traces = diagnostics.gate_traces(cell, params, xs, lengths=lengths)
            _, ys = jaxrnn.rnn(cell, params, xs, lengths=lengths, grad="autodiff")
            assert [leaf.shape for leaf in traces] == [(2, 3, T, H)] * 5 and ys.shape == (2, 3, T, 2)
            np.testing.assert_allclose((traces.o * jnp.tanh(traces.c)) @ params.w_hr, ys, atol=1e-14)
        elif name == "gru":
            assert isinstance(traces, jaxrnn.GRUGates)
            # h' = (1 − z) n + z h, with h the previous output (or the initial carry)
            h_prev = jnp.concatenate([carry[..., None, :], ys[..., :-1, :]], axis=-2)
            h_new = (1 - traces.z) * traces.n + traces.z * h_prev
            np.testing.assert_allclose(jnp.where(valid, h_new, 0.0), ys, atol=1e-14)
        else:
            assert isinstance(traces, diagnostics.ElmanTrace)
            np.testing.assert_allclose(traces.h, ys, atol=0)


def test_gate_traces_time_major_and_errors():
    cell, params, xs = make_case("lstm")
    tm = diagnostics.gate_traces(cell, params, jnp.moveaxis(xs, -2, 0), time_major=True)
    bm = diagnostics.gate_traces(cell, params, xs)
    assert tm.f.shape == (T, 2, 3, H)
    np.testing.assert_allclose(jnp.moveaxis(tm.f, 0, -2), bm.f)
    mine = jaxrnn.Cell(
        jaxrnn.lstm.init, jaxrnn.lstm.initial_state, lambda p, c, x: jaxrnn.lstm.step(p, c, x), name="mine"
    )
    with pytest.raises(ValueError, match="gate_traces knows the gates of the built-in cells"):
        diagnostics.gate_traces(mine, params, xs)
    with pytest.raises(ValueError, match="lengths"):
        diagnostics.gate_traces(cell, params, xs, lengths=jnp.array([1, 2]))


def test_gate_traces_with_mask_and_resets_follow_the_driver():
    """Under ``mask`` (left padding, a gap) and ``resets``, the traces are those of the carry ``jaxrnn.rnn``
    carries: each row's traces equal the traces of its valid steps run alone, segment by segment."""
    cell, params, xs = make_case("lstm", batch=(2,))
    mask = np.array([[False, False, True, True, True, True], [True, True, False, True, True, True]])
    resets = np.array([[False, False, False, False, True, False], [False, False, True, False, False, False]])
    traces = diagnostics.gate_traces(cell, params, xs, mask=mask, resets=resets)
    _, ys = jaxrnn.rnn(cell, params, xs, mask=mask, resets=resets)
    np.testing.assert_allclose(traces.o * jnp.tanh(traces.c), ys, atol=1e-14)
    assert not np.any(np.asarray(traces.f)[~mask])
    for b, segments in ((0, [(2, 4), (4, 6)]), (1, [(0, 2), (3, 6)])):  # row 1: the reset on masked 2 starts 3
        for lo, hi in segments:
            alone = diagnostics.gate_traces(cell, params, xs[b, lo:hi])
            for got, want in zip(traces, alone):
                np.testing.assert_allclose(got[b, lo:hi], want, atol=1e-14)
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        diagnostics.gate_traces(cell, params, xs, mask=mask.astype(int))


# ------------------------------------------------------------------------------------- state Jacobians, Lyapunov
def _flat(carry):
    return jnp.concatenate(jax.tree.leaves(carry), axis=-1)


@pytest.mark.parametrize("name", ["elman", "lstm", "gru", "lstm_proj"])
def test_state_jacobians_match_per_step_autodiff_and_finite_differences(name, x64):
    cell = {"elman": jaxrnn.elman, "lstm": jaxrnn.lstm, "gru": jaxrnn.gru, "lstm_proj": jaxrnn.lstm}[name]
    params = cell.init(jax.random.key(0), 3, 4, **({"proj_size": 2} if name == "lstm_proj" else {}))
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    carry0 = jax.tree.map(lambda z: z + 0.2, cell.initial_state(params, (2,)))
    jacs = diagnostics.state_jacobians(cell, params, xs, carry0)
    size = {"lstm": 8, "lstm_proj": 6}.get(name, 4)  # [h, c]: 4 + 4, or the projected h's 2 + 4
    assert jacs.shape == (2, 5, size, size)
    tm = diagnostics.state_jacobians(cell, params, jnp.swapaxes(xs, 0, 1), carry0, time_major=True)
    np.testing.assert_allclose(np.asarray(tm), np.asarray(jnp.swapaxes(jacs, 0, 1)), rtol=0, atol=0)
    unflat = (lambda s: jaxrnn.LSTMState(h=s[: size - 4], c=s[size - 4 :])) if "lstm" in name else (lambda s: s)
    for b in range(2):
        carry = jax.tree.map(lambda c: c[b], carry0)
        for t in range(5):
            step = lambda s, t=t: _flat(cell.step(params, unflat(s), xs[b, t])[0])  # noqa: E731
            s = _flat(carry)
            np.testing.assert_allclose(np.asarray(jacs[b, t]), np.asarray(jax.jacrev(step)(s)), rtol=1e-12,
                                       atol=1e-13)  # fmt: skip
            eps = 1e-6
            fd = np.stack([(step(s + eps * e) - step(s - eps * e)) / (2 * eps) for e in np.eye(size)], axis=1)
            np.testing.assert_allclose(np.asarray(jacs[b, t]), fd, atol=1e-8)
            carry, _ = cell.step(params, carry, xs[b, t])


@pytest.mark.parametrize("name", ["elman", "lstm", "gru"])
def test_lyapunov_spectrum_identities(name, x64):
    """Σλ·T = Σ_t log|det J_t| (all exponents), and λ₁·T = log‖J_{T-1}⋯J_0 e₁‖ (the first QR column)."""
    cell = {"elman": jaxrnn.elman, "lstm": jaxrnn.lstm, "gru": jaxrnn.gru}[name]
    params = cell.init(jax.random.key(2), 3, 4)
    xs = jax.random.normal(jax.random.key(3), (3, 12, 3))
    jacs = diagnostics.state_jacobians(cell, params, xs)
    lyap = diagnostics.lyapunov_spectrum(cell, params, xs)
    size = jacs.shape[-1]
    assert lyap.shape == (3, size)
    assert np.all(np.diff(np.asarray(lyap), axis=-1) <= 0)  # sorted, decreasing
    logdet = jnp.sum(jnp.linalg.slogdet(jacs)[1], axis=-1)
    np.testing.assert_allclose(np.asarray(jnp.sum(lyap, axis=-1) * 12), np.asarray(logdet), rtol=1e-10)
    first = diagnostics.lyapunov_spectrum(cell, params, xs, num_exponents=1)
    for b in range(3):
        v = jnp.eye(size)[:, 0]
        for t in range(12):
            v = jacs[b, t] @ v
        np.testing.assert_allclose(float(first[b, 0]) * 12, float(jnp.log(jnp.linalg.norm(v))), rtol=1e-10)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_lyapunov_spectrum_of_a_half_precision_cell_runs_its_qr_in_float32(dtype):
    params = jaxrnn.lstm.init(jax.random.key(2), 3, 4)
    xs = jax.random.normal(jax.random.key(3), (2, 12, 3), jnp.float32)
    half = diagnostics.lyapunov_spectrum(
        jaxrnn.lstm, jax.tree.map(lambda a: a.astype(dtype), params), xs.astype(dtype), num_exponents=3
    )
    full = diagnostics.lyapunov_spectrum(jaxrnn.lstm, params, xs, num_exponents=3)
    assert half.dtype == jnp.float32 and half.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(half), np.asarray(full), atol=0.05)


def test_lyapunov_spectrum_of_a_scaled_identity_recurrence():
    """Elman with w_h = a·I, zero input weights and bias: h stays 0, J_t = a·I, every exponent is log a."""
    for a in (0.5, 1.5):
        params = jaxrnn.ElmanParams(w_x=jnp.zeros((2, 3)), w_h=a * jnp.eye(3), b=jnp.zeros(3))
        xs = jax.random.normal(jax.random.key(0), (20, 2))
        lyap = diagnostics.lyapunov_spectrum(jaxrnn.elman, params, xs, warmup=5)
        np.testing.assert_allclose(np.asarray(lyap), np.log(a), rtol=1e-6)
    lstm = jaxrnn.lstm.init(jax.random.key(0), 2, 3, forget_bias=20.0)
    lstm = lstm._replace(w_x=jnp.zeros_like(lstm.w_x), w_h=jnp.zeros_like(lstm.w_h))
    # forget gate σ(20) ≈ 1 and nothing else moves c: three exponents ≈ 0 (the memory), three at log 0 (h).
    lyap = diagnostics.lyapunov_spectrum(jaxrnn.lstm, lstm, jnp.zeros((10, 2)))
    np.testing.assert_allclose(np.asarray(lyap[:3]), 0.0, atol=1e-6)
    assert np.all(np.asarray(lyap[3:]) < -5)


def test_state_jacobian_and_lyapunov_errors():
    params = jaxrnn.gru.init(jax.random.key(0), 3, 4)
    xs = jnp.zeros((2, 6, 3))
    with pytest.raises(ValueError, match=r"num_exponents must be an int in \[1, 4\] \(the state size\), got 5"):
        diagnostics.lyapunov_spectrum(jaxrnn.gru, params, xs, num_exponents=5)
    with pytest.raises(ValueError, match=r"warmup must be an int in \[0, T\) = \[0, 6\), got 6"):
        diagnostics.lyapunov_spectrum(jaxrnn.gru, params, xs, warmup=6)
    with pytest.raises(ValueError, match=r"needs at least one step: xs has T = 0"):
        diagnostics.lyapunov_spectrum(jaxrnn.gru, params, jnp.zeros((2, 0, 3)))
    numpy_ints = diagnostics.lyapunov_spectrum(jaxrnn.gru, params, xs, num_exponents=np.int64(2), warmup=np.int32(1))
    assert numpy_ints.shape == (2, 2)
    matrix_cell = jaxrnn.Cell(
        init=lambda key, d, h, dtype=None: jnp.zeros((d, h)),
        initial_state=lambda p, batch_shape=(): jnp.zeros((*batch_shape, 2, p.shape[1])),
        step=lambda p, c, x: (c + (x @ p)[..., None, :], (x @ p)),
        name="matrix_state",
    )
    with pytest.raises(ValueError, match=r"every leaf of 'matrix_state''s carry must be \[\*batch, n\], got a leaf"):
        diagnostics.state_jacobians(matrix_cell, jnp.zeros((3, 4)), xs)


# Run at XLA's default options, which conftest.py changes for the other tests (TEST_XLA_FLAGS): there jaxlib
# 0.10.2's CPU compiler miscomputed a vmapped VJP of the LSTM and GRU scans in float64 (dhT_dh wrong in the second
# digit), and gradient_flow's Jacobian took that path.
DEFAULT_OPTIMISATION_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import jaxrnn
from jaxrnn import diagnostics
flow = diagnostics.gradient_flow  # not under one jit, where the miscompile did not show
cell, params = jaxrnn.lstm, jaxrnn.lstm.init(jax.random.key(0), 3, 5)
xs = jax.random.normal(jax.random.key(1), (4, 7, 3))  # a batch of 4 (one AVX2 vector of float64) showed it; 2, 3 not
one_by_one = np.mean([flow(cell, params, x).dhT_dh for x in xs], axis=0)
for method in ("autodiff", "analytic"):
    got = flow(cell, params, xs, method=method).dhT_dh
    np.testing.assert_allclose(got, one_by_one, rtol=1e-10, err_msg=method)
print("ok")
"""


def test_gradient_flow_of_a_batch_at_default_xla_optimisation():
    result = run_at_xla_defaults(DEFAULT_OPTIMISATION_SCRIPT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
