"""jaxrnn.interop's Equinox converters against the real ``eqx.nn.LSTMCell``/``GRUCell``: states and gradients agree.

The reference is what an Equinox user writes: ``jax.vmap(cell)`` over the batch inside a ``lax.scan`` over time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close

import jaxrnn
from jaxrnn import interop

eqx = pytest.importorskip("equinox")

B, T, D, H = 3, 6, 5, 4
TOL = 2e-6


def _xs(seed=1):
    return jax.random.normal(jax.random.PRNGKey(seed), (B, T, D))


def _equinox_scan(cell, xs, state):
    """Equinox's idiom: a scan over time of the vmapped cell; returns (final state, hidden outputs [B, T, H])."""

    def step(state, x):
        state = jax.vmap(cell)(x, state)
        return state, state[0] if isinstance(state, tuple) else state

    final, ys = jax.lax.scan(step, state, jnp.swapaxes(xs, 0, 1))
    return final, jnp.swapaxes(ys, 0, 1)


def _cell(name, seed=0, use_bias=True, dtype=None):
    make = {"LSTMCell": eqx.nn.LSTMCell, "GRUCell": eqx.nn.GRUCell}[name]
    return make(D, H, use_bias=use_bias, dtype=dtype, key=jax.random.PRNGKey(seed))


def _zeros_state(name):
    return (jnp.zeros((B, H)), jnp.zeros((B, H))) if name == "LSTMCell" else jnp.zeros((B, H))


def _close(ours, theirs, what, tol=TOL):
    assert_trees_close(ours, theirs, rtol=0, atol=tol, err_msg=what)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
def test_from_equinox_matches_the_vmapped_scan_in_outputs_states_and_gradients(name, use_bias):
    cell = _cell(name, use_bias=use_bias)
    layer, params = interop.from_equinox(cell)
    assert layer.cell is (jaxrnn.lstm if name == "LSTMCell" else jaxrnn.gru) and layer.num_layers == 1
    if not use_bias:
        assert not np.any(np.asarray(params[0].b))
    xs = _xs()
    key = jax.random.PRNGKey(9)
    state0 = jax.tree.map(lambda a: jax.random.normal(key, a.shape), _zeros_state(name))
    final_eqx, ys_eqx = _equinox_scan(cell, xs, state0)
    final, ys = layer.apply(params, xs, interop.carry_from_equinox(layer, state0))
    _close(ys, ys_eqx, f"{name} outputs")
    _close(interop.carry_to_equinox(layer, final), final_eqx, f"{name} final state")

    def loss_eqx(c):
        final, ys = _equinox_scan(c, xs, state0)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))

    def loss_ours(p):
        final, ys = layer.apply(p, xs, interop.carry_from_equinox(layer, state0))
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))

    grads_eqx = eqx.filter_grad(loss_eqx)(cell)
    if not use_bias:  # the mapping is linear; zero biases have no gradient to compare on the Equinox side
        grads_ours = jax.grad(loss_ours)(params)
        _, mapped = interop.from_equinox(grads_eqx)
        _close((grads_ours[0]._replace(b=mapped[0].b, **({"b_hn": mapped[0].b_hn} if name == "GRUCell" else {})),),
               mapped, f"{name} weight gradients")  # fmt: skip
    else:
        _, mapped = interop.from_equinox(grads_eqx)
        _close(jax.grad(loss_ours)(params), mapped, f"{name} gradients", tol=1e-5)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
def test_to_equinox_inverts_from_equinox_exactly(name):
    cell = _cell(name, seed=4)
    layer, params = interop.from_equinox(cell)
    back = interop.to_equinox(layer, params)
    assert type(back) is type(cell)
    for a, b in zip(jax.tree.leaves(eqx.filter(back, eqx.is_array)), jax.tree.leaves(eqx.filter(cell, eqx.is_array))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    fresh = jaxrnn.stack(layer.cell)
    new_params = fresh.init(jax.random.PRNGKey(2), D, H)
    built = interop.to_equinox(fresh, new_params)
    _close(_equinox_scan(built, _xs(), _zeros_state(name))[1], fresh.apply(new_params, _xs())[1], f"{name} built")


def test_dtypes_are_kept():
    cell = _cell("GRUCell", dtype=jnp.bfloat16)
    layer, params = interop.from_equinox(cell)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    back = interop.to_equinox(layer, params)
    assert {leaf.dtype for leaf in jax.tree.leaves(eqx.filter(back, eqx.is_array))} == {jnp.dtype(jnp.bfloat16)}


def test_errors_name_what_came():
    with pytest.raises(TypeError, match=r"cell must be an equinox.nn.LSTMCell or equinox.nn.GRUCell, got .*Linear"):
        interop.from_equinox(eqx.nn.Linear(D, H, key=jax.random.PRNGKey(0)))
    cell = _cell("LSTMCell")
    with pytest.raises(ValueError, match=r"cell.weight_ih must have shape \[16, D\], got \[12, 5\]"):
        interop.from_equinox(eqx.tree_at(lambda c: c.weight_ih, cell, jnp.zeros((12, D))))
    with pytest.raises(ValueError, match=r"cell.weight_hh must have shape \[4\*H, H\] for a lstm, got \[15, 4\]"):
        interop.from_equinox(eqx.tree_at(lambda c: c.weight_hh, cell, jnp.zeros((15, H))))
    with pytest.raises(ValueError, match=r"cell.bias must have shape \[16\], got \[4\]"):
        interop.from_equinox(eqx.tree_at(lambda c: c.bias, cell, jnp.zeros((H,))))
    gru = _cell("GRUCell")
    with pytest.raises(ValueError, match=r"cell.bias_n must have shape \[4\], got \[12\]"):
        interop.from_equinox(eqx.tree_at(lambda c: c.bias_n, gru, jnp.zeros((3 * H,))))
    with pytest.raises(
        TypeError, match=r"cell's weights must share one dtype, got float16 \(bias\), float32 \(weight_ih, weight_hh"
    ):
        interop.from_equinox(eqx.tree_at(lambda c: c.bias, gru, jnp.zeros((3 * H,), jnp.float16)))

    key = jax.random.PRNGKey(0)
    elman = jaxrnn.stack(jaxrnn.elman)
    with pytest.raises(ValueError, match=r"Equinox has no Elman"):
        interop.to_equinox(elman, elman.init(key, D, H))
    bi = jaxrnn.stack(jaxrnn.gru, bidirectional=True)
    with pytest.raises(ValueError, match=r"layer must have num_layers=1 and bidirectional=False"):
        interop.to_equinox(bi, bi.init(key, D, H))
    gru = jaxrnn.stack(jaxrnn.gru)
    with pytest.raises(ValueError, match=r"Equinox's GRUCell resets after its recurrent matmul; these params are a "
                                         r"reset-before \(b_hn=None\) GRU"):  # fmt: skip
        interop.to_equinox(gru, gru.init(key, D, H, reset_after=False))
    lstm = jaxrnn.stack(jaxrnn.lstm)
    with pytest.raises(ValueError, match=r"to_equinox: Equinox's LSTMCell has no output projection; these params "
                                         r"are an LSTM with projections \(LSTMPParams, proj_size=2\)"):  # fmt: skip
        interop.to_equinox(lstm, lstm.init(key, D, H, proj_size=2))
    dropped = jaxrnn.stack(jaxrnn.lstm, recurrent_dropout=0.5)
    with pytest.raises(ValueError, match=r"recurrent_dropout=0.5 has no Equinox counterpart"):
        interop.to_equinox(dropped, dropped.init(key, D, H))
    lstm = jaxrnn.stack(jaxrnn.lstm)
    with pytest.raises(TypeError, match=r"an LSTM state must be a tuple \(h, c\), got ArrayImpl"):
        interop.carry_from_equinox(lstm, jnp.zeros((B, H)))
    with pytest.raises(ValueError, match=r"h and c must have one shape, got \[3, 4\] and \[4\]"):
        interop.carry_from_equinox(lstm, (jnp.zeros((B, H)), jnp.zeros((H,))))
    with pytest.raises(TypeError, match=r"a GRU state must be one array \[\*batch, H\], got a tuple"):
        interop.carry_from_equinox(jaxrnn.stack(jaxrnn.gru), (jnp.zeros((B, H)),))
    with pytest.raises(ValueError, match=r"carry_to_equinox: an Equinox cell's state is one layer, one direction"):
        interop.carry_to_equinox(bi, (jaxrnn.Bidirectional(jnp.zeros((B, H)), jnp.zeros((B, H))),))


def test_carry_from_equinox_checks_dtypes():
    layer = jaxrnn.stack(jaxrnn.lstm)
    h = jnp.zeros((2, 4))
    with pytest.raises(TypeError, match="carry_from_equinox: h and c must share one dtype"):
        interop.carry_from_equinox(layer, (h, h.astype(jnp.bfloat16)))
    with pytest.raises(TypeError, match="needs jax_enable_x64"):
        interop.carry_from_equinox(jaxrnn.stack(jaxrnn.gru), np.zeros((2, 4)))
