"""The analytic fast path (jaxrnn.rnn(..., grad="analytic")): same values and gradients as autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_at_xla_defaults
from helpers import primitive_eqns, primitive_params

import jaxrnn

CELLS = {
    "elman_tanh": (jaxrnn.elman, {"activation": "tanh"}),
    "elman_relu": (jaxrnn.elman, {"activation": "relu"}),
    "lstm": (jaxrnn.lstm, {}),
    "gru": (jaxrnn.gru, {}),
    "gru_reset_before": (jaxrnn.gru, {"reset_after": False}),
    "lstm_proj": (jaxrnn.lstm, {"proj_size": 3}),
}
BATCH, T, D, H = (2, 3), 6, 3, 4
LENGTHS = np.array([[6, 3, 0], [1, 5, 2]], np.int32)
# A step mask with padding anywhere: left padding, gaps, nothing valid, nothing masked.
MASK = np.array(
    [
        [[0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0]],
        [[1, 1, 1, 1, 1, 1], [0, 1, 0, 1, 0, 1], [1, 1, 0, 0, 1, 1]],
    ],
    bool,
)
# Segment starts: within valid steps, on masked steps, at t = 0 (replacing carry0), none.
RESETS = np.array(
    [
        [[0, 0, 0, 1, 0, 1], [1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, 0]],
        [[0, 0, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]],
    ],
    bool,
)


def make_case(name, dtype=jnp.float32, seed=0):
    cell, options = CELLS[name]
    keys = jax.random.split(jax.random.key(seed), 4)
    params = cell.init(keys[0], D, H, dtype=dtype, **options)
    leaves, tree = jax.tree_util.tree_flatten(params)
    noise = [0.2 * jax.random.normal(k, p.shape, dtype) for p, k in zip(leaves, jax.random.split(keys[1], len(leaves)))]
    params = jax.tree_util.tree_unflatten(tree, [p + n for p, n in zip(leaves, noise)])
    xs = jax.random.normal(keys[2], (*BATCH, T, D), dtype)
    carry0 = jax.tree.map(lambda a: 0.5 * jax.random.normal(keys[3], a.shape, dtype), cell.initial_state(params, BATCH))
    return cell, params, xs, carry0


def make_loss(cell, grad, **kwargs):
    """A loss that puts a nonzero cotangent on every output and on the final carry."""

    def loss(params, xs, carry0):
        final, ys = jaxrnn.rnn(cell, params, xs, carry0, grad=grad, **kwargs)
        carry_term = sum(jnp.sum(jnp.cos(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(final))
        return (
            jnp.sum(
                jnp.sin(ys.astype(jnp.float32))
                * jnp.arange(1.0, ys.shape[-1] + 1).reshape((1,) * (ys.ndim - 1) + (-1,))
            )
            + carry_term
        )

    return loss


def rel_err(a, b):
    return max(
        float(jnp.linalg.norm(jnp.ravel(x - y)) / max(float(jnp.linalg.norm(jnp.ravel(x))), 1e-30))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.parametrize(
    ("name", "with_lengths", "reverse"),
    [
        ("lstm", False, False),
        ("lstm", True, True),
        ("gru", True, True),
        ("gru_reset_before", True, False),
        ("lstm_proj", True, True),
        ("elman_tanh", True, False),
        ("elman_relu", True, True),
    ],
)
def test_analytic_gradients_equal_autodiff_float32_jit(name, with_lengths, reverse):
    cell, params, xs, carry0 = make_case(name)
    kwargs = {"lengths": jnp.asarray(LENGTHS) if with_lengths else None, "reverse": reverse}
    grads = {
        grad: jax.jit(jax.value_and_grad(make_loss(cell, grad, **kwargs), argnums=(0, 1, 2)))(params, xs, carry0)
        for grad in ("autodiff", "analytic")
    }
    (loss_ad, g_ad), (loss_an, g_an) = grads["autodiff"], grads["analytic"]
    np.testing.assert_allclose(loss_an, loss_ad, rtol=1e-6)
    assert jax.tree.structure(g_an) == jax.tree.structure(g_ad)
    assert rel_err(g_ad, g_an) < 1e-5


@pytest.mark.parametrize(
    ("name", "reverse", "resets"),
    [("lstm", True, True), ("gru", True, False), ("gru", False, True), ("gru_reset_before", True, True),
     ("lstm_proj", False, True), ("elman_tanh", False, True)],
)  # fmt: skip
def test_mask_and_resets_take_the_analytic_path_with_autodiff_gradients_float64(x64, name, reverse, resets):
    cell, params, xs, carry0 = make_case(name, dtype=jnp.float64)
    kwargs = {"mask": MASK, "lengths": jnp.asarray(LENGTHS) if name == "gru" else None, "reverse": reverse}
    if resets:
        kwargs["resets"] = RESETS
    out_ad = jaxrnn.rnn(cell, params, xs, carry0, grad="autodiff", **kwargs)
    out_an = jaxrnn.rnn(cell, params, xs, carry0, grad="analytic", **kwargs)
    assert rel_err(out_ad, out_an) < 1e-13
    g_ad = jax.grad(make_loss(cell, "autodiff", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
    g_an = jax.grad(make_loss(cell, "analytic", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
    assert rel_err(g_ad, g_an) < 1e-12
    valid = MASK & (np.arange(T) < LENGTHS[..., None]) if name == "gru" else MASK
    assert not np.any(np.asarray(g_an[1])[~valid])  # masked steps get no input gradient
    if name in ("lstm", "gru", "gru_reset_before", "lstm_proj"):  # the default takes the analytic path under a mask
        jaxpr = jax.make_jaxpr(lambda p: jnp.sum(jaxrnn.rnn(cell, p, xs, carry0, **kwargs)[1]))(params)
        assert "custom_vjp_call" in str(jaxpr)


@pytest.mark.parametrize("name", ["lstm", "gru"])  # the layout code is the same for every cell
def test_packed_and_unpacked_residuals_give_the_same_gradients(name, monkeypatch):
    from jaxrnn import fastpath

    cell, params, xs, carry0 = make_case(name)
    rule = fastpath._RULES[cell.step]
    x0 = xs[..., 0, :]
    assert fastpath._residual_layout(rule, params, carry0, x0) is not None  # these small steps pack
    kwargs = {"lengths": jnp.asarray(LENGTHS), "reverse": True}
    want = jax.grad(make_loss(cell, "autodiff", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
    packed = jax.grad(make_loss(cell, "analytic", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
    monkeypatch.setattr(fastpath, "PACK_MAX_BYTES", 0)
    jax.clear_caches()  # the traced backward of the packed run must not be reused
    try:
        assert fastpath._residual_layout(rule, params, carry0, x0) is None
        unpacked = jax.grad(make_loss(cell, "analytic", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
    finally:
        jax.clear_caches()
    assert rel_err(want, packed) < 1e-5 and rel_err(want, unpacked) < 1e-5


@pytest.mark.parametrize(("name", "widths"), [("gru", [3 * H, H]), ("gru_reset_before", [3 * H]), ("lstm", [4 * H])])
def test_backward_scan_stacks_one_gate_cotangent_per_step(name, widths):
    """The reverse scan emits da [T, *batch, G·H] and, for the reset-after GRU, only the n block of du (its r and z
    blocks are da's): the memory a wide GRU's training step saves (50 MiB at B=64 T=200 H=512)."""
    cell, params, xs, carry0 = make_case(name)
    jaxpr = jax.make_jaxpr(jax.grad(make_loss(cell, "analytic")))(params, xs, carry0)
    backward = [
        [v.aval.shape for v in eqn.outvars[eqn.params["num_carry"] :]]
        for eqn in primitive_eqns(jaxpr, "scan")
        if eqn.params["reverse"]
    ]
    assert len(backward) == 1, backward
    assert [shape[-1] for shape in backward[0]] == widths
    assert all(shape[:-1] == (T, *BATCH) for shape in backward[0])


@pytest.mark.parametrize("name", ["elman_tanh", "lstm", "lstm_proj", "gru", "gru_reset_before"])
def test_backward_scan_multiplies_by_recurrent_weights_transposed_once_before_it(name):
    """``dh_prev = da W_hᵀ`` inside the reverse scan uses ``W_hᵀ`` (and ``W_hrᵀ``) made once before the loop,
    behind an optimization barrier (a plain matmul per step on XLA CPU), not a transpose in every step."""
    cell, params, xs, carry0 = make_case(name)
    jaxpr = jax.make_jaxpr(jax.grad(make_loss(cell, "analytic", lengths=jnp.asarray(LENGTHS))))(params, xs, carry0)
    (backward,) = [eqn for eqn in primitive_eqns(jaxpr, "scan") if eqn.params["reverse"]]
    body = backward.params["jaxpr"]
    assert primitive_eqns(body, "transpose") == []
    assert any(eqn.params["dimension_numbers"][0][1] == (0,) for eqn in primitive_eqns(body, "dot_general"))
    barriers = primitive_eqns(jaxpr, "optimization_barrier")
    transposed = [params.w_h.T.shape] + ([params.w_hr.T.shape] if name == "lstm_proj" else [])
    assert sorted(v.aval.shape for eqn in barriers for v in eqn.outvars) == sorted(transposed)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", ["gru"])
def test_float64_analytic_matches_autodiff_exactly(name):
    cell, params, xs, carry0 = make_case(name, dtype=jnp.float64, seed=1)
    kwargs = {"lengths": jnp.asarray(LENGTHS), "time_major": True}
    xs = jnp.moveaxis(xs, -2, 0)
    g_default = jax.grad(make_loss(cell, "analytic", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
    g_ad = jax.grad(make_loss(cell, "autodiff", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
    assert rel_err(g_ad, g_default) < 1e-12


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize(("name", "hidden"), [("lstm", H), ("lstm", 256), ("gru", H), ("elman_tanh", H)])
def test_empty_sequence_returns_the_carry_and_passes_its_gradient(name, hidden):
    """T = 0: ys is [*batch, 0, H], the final carry is the initial one, and the analytic VJP hands the carry's
    cotangent straight back (H=256 on 8 sequences takes the feature-major LSTM)."""
    cell, options = CELLS[name]
    params = cell.init(jax.random.key(0), D, hidden, dtype=jnp.float64, **options)
    xs = jnp.zeros((8, 0, D), jnp.float64)
    carry0 = jax.tree.map(lambda a: a + 0.5, cell.initial_state(params, (8,)))
    for kwargs in ({}, {"reverse": True, "lengths": jnp.zeros(8, jnp.int32)}):
        final, ys = jaxrnn.rnn(cell, params, xs, carry0, **kwargs)
        assert ys.shape == (8, 0, hidden)
        assert rel_err(carry0, final) == 0.0
        g_an = jax.grad(make_loss(cell, "analytic", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
        g_ad = jax.grad(make_loss(cell, "autodiff", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
        assert g_an[1].shape == xs.shape
        assert all(not np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(g_an[0]))
        assert rel_err(g_ad[2], g_an[2]) < 1e-15
        assert all(np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(g_an[2]))


@pytest.mark.parametrize("name", ["lstm", "gru_reset_before", "lstm_proj"])
def test_bfloat16_runs(name):
    cell, params, xs, carry0 = make_case(name, dtype=jnp.bfloat16)
    lengths = jnp.asarray(LENGTHS)
    grad_fn = jax.jit(jax.grad(make_loss(cell, "analytic", lengths=lengths)))
    g = grad_fn(params, xs, carry0)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(g))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))
    # close to the float32 gradient of the same (rounded) weights
    up = jax.tree.map(lambda a: a.astype(jnp.float32), (params, xs, carry0))
    g32 = jax.grad(make_loss(cell, "autodiff", lengths=lengths))(*up)
    assert rel_err(g32, jax.tree.map(lambda a: a.astype(jnp.float32), g)) < 0.1


def test_forward_values_identical_and_vmap_jacrev():
    cell, params, xs, carry0 = make_case("lstm")
    lengths = jnp.asarray(LENGTHS)
    out_ad = jaxrnn.rnn(cell, params, xs, carry0, lengths=lengths, grad="autodiff")
    out_an = jaxrnn.rnn(cell, params, xs, carry0, lengths=lengths, grad="analytic")
    assert rel_err(out_ad, out_an) == 0.0
    # vmap over an extra leading axis, and jacrev, go through the custom_vjp
    f = lambda x, g: jaxrnn.rnn(cell, params, x, grad=g)[1][-1, -1]  # noqa: E731
    jac_ad = jax.jacrev(f)(xs[0, 0], "autodiff")
    jac_an = jax.jacrev(f)(xs[0, 0], "analytic")
    assert rel_err(jac_ad, jac_an) < 1e-5
    per = jax.vmap(jax.grad(lambda p, x: jnp.sum(jaxrnn.rnn(cell, p, x, grad="analytic")[1])), in_axes=(None, 0))(
        params, xs
    )
    assert per.w_h.shape == (2, H, 4 * H)


@pytest.mark.parametrize(
    ("name", "steps", "reverse"),
    [("gru", "lengths", False), ("lstm", "lengths", True), ("lstm", "mask+resets", False),
     ("elman_tanh", "mask+resets", True), ("gru", None, True), ("gru_reset_before", "mask+resets", False)],
)  # fmt: skip
def test_checkpoint_every_runs_the_analytic_backward_chunk_by_chunk(x64, name, steps, reverse):
    """Chunks of 4 over T = 6 (a ragged last chunk): the per-chunk analytic backward, after each chunk's forward is
    recomputed, equals autodiff through the whole sequence, with lengths (shifted per chunk), masks and resets."""
    cell, params, xs, carry0 = make_case(name, dtype=jnp.float64)
    kwargs = {"reverse": reverse}
    if steps == "lengths":
        kwargs["lengths"] = jnp.asarray(LENGTHS)
    elif steps:
        kwargs.update(mask=MASK, resets=RESETS)
    g_ck = jax.grad(make_loss(cell, "analytic", checkpoint_every=4, **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
    g_ad = jax.grad(make_loss(cell, "autodiff", **kwargs), argnums=(0, 1, 2))(params, xs, carry0)
    assert rel_err(g_ad, g_ck) < 1e-12
    jaxpr = jax.make_jaxpr(lambda p: jnp.sum(jaxrnn.rnn(cell, p, xs, grad="analytic", checkpoint_every=4)[1]))(params)
    assert primitive_params(jaxpr, "custom_vjp_call")
    # forward mode needs autodiff, as without checkpointing
    jax.jvp(lambda p: jaxrnn.rnn(cell, p, xs, checkpoint_every=4, grad="autodiff")[1], (params,), (params,))


def test_default_grad_and_forward_mode():
    cell, params, xs, _ = make_case("lstm")
    # the analytic path (the default for lstm and gru) is a custom_vjp: forward mode raises there;
    # grad="autodiff" supports it, and so does the default for elman
    for grad in ("analytic", None):
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jvp(lambda p: jaxrnn.rnn(cell, p, xs, grad=grad)[1], (params,), (params,))
    jax.jvp(lambda p: jaxrnn.rnn(cell, p, xs, grad="autodiff")[1], (params,), (params,))
    e_cell, e_params, e_xs, _ = make_case("elman_tanh")
    jax.jvp(lambda p: jaxrnn.rnn(e_cell, p, e_xs)[1], (e_params,), (e_params,))
    # user cells always use autodiff
    mine = jaxrnn.Cell(
        jaxrnn.lstm.init, jaxrnn.lstm.initial_state, lambda p, c, x: jaxrnn.lstm.step(p, c, x), name="mine"
    )
    _, tangent = jax.jvp(lambda p: jaxrnn.rnn(mine, p, xs)[1], (params,), (params,))
    assert tangent.shape == (*BATCH, T, H)
    # forward over reverse differentiates the custom VJP's backward, which is plain JAX: the hessian works
    xs_small = xs[..., :3, :]
    hessians = [
        jax.hessian(lambda x, g=g: jnp.sum(jaxrnn.rnn(cell, params, x, grad=g)[1] ** 2))(xs_small)
        for g in (None, "autodiff")
    ]
    assert rel_err(hessians[0], hessians[1]) < 1e-5  # float32


def test_grad_option_errors():
    cell, params, xs, _ = make_case("elman_tanh")
    mine = jaxrnn.Cell(
        jaxrnn.elman.init, jaxrnn.elman.initial_state, lambda p, c, x: jaxrnn.elman.step(p, c, x), name="mine"
    )
    with pytest.raises(ValueError, match="grad='analytic' needs a built-in cell .*'mine'"):
        jaxrnn.rnn(mine, params, xs, grad="analytic")
    with pytest.raises(ValueError, match=r"grad must be one of \('autodiff', 'analytic'\) or None, got 'manual'"):
        jaxrnn.rnn(cell, params, xs, grad="manual")
    _, ys = jaxrnn.rnn(mine, params, xs, grad="autodiff")
    assert ys.shape == (*BATCH, T, H)


# At XLA's default CPU options (conftest.py's TEST_XLA_FLAGS change them for every other test), jaxlib 0.10.2's
# fusion emitters miscompile jax.grad through the autodiff LSTM and GRU scans in float64 at H=5 with an innermost
# batch dim of 4 (README, "A compiler bug to know of"). The library's default gradient, the analytic path, must be
# right there: it is checked against the autodiff program compiled with the test options, and the autodiff error at
# the defaults is printed for the record, not asserted (it is the compiler's).
DEFAULT_OPTIONS_SCRIPT = """
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import jaxrnn
REFERENCE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
cases = [("lstm", {}, (2, 4)), ("gru", {}, (2, 4)), ("gru", {"reset_after": False}, (4,)), ("lstm", {}, (2, 2, 4))]
for name, options, batch in cases:
    cell = getattr(jaxrnn, name)
    params = cell.init(jax.random.key(0), 2, 5, **options)
    xs = jax.random.normal(jax.random.key(1), (*batch, 3, 2))
    weights = jax.random.normal(jax.random.key(2), (*batch, 3, 1))
    def run(grad, compiler_options):
        loss = lambda p, x: jnp.sum(jaxrnn.rnn(cell, p, x, grad=grad)[1] * weights)
        step = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile(compiler_options=compiler_options)
        return step(params, xs)
    reference = run("autodiff", REFERENCE)
    def error(grads):
        return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference)))
    default_error, autodiff_error = error(run(None, {})), error(run("autodiff", {}))
    print(f"{name} {options} batch {batch}: default {default_error:.1e}, autodiff {autodiff_error:.1e}")
    assert default_error < 1e-12, (name, batch, default_error)
print("ok")
"""


def test_default_gradient_is_right_at_default_xla_options_where_autodiff_is_miscompiled():
    result = run_at_xla_defaults(DEFAULT_OPTIONS_SCRIPT)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr[-3000:]
