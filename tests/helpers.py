"""Shared test utilities: reference implementations that the library is checked against."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn

CELLS = {
    "elman": (jaxrnn.elman, {}),
    "elman_relu": (jaxrnn.elman, {"activation": "relu"}),
    "lstm": (jaxrnn.lstm, {}),
    "gru": (jaxrnn.gru, {}),
}


def make(name, input_size=3, hidden_size=5, seed=0, dtype=None, random_bias=True):
    """A cell and params with nonzero biases (zero biases hide bias-layout bugs)."""
    cell, options = CELLS[name]
    params = cell.init(jax.random.key(seed), input_size, hidden_size, dtype=dtype, **options)
    if random_bias:
        keys = iter(jax.random.split(jax.random.key(seed + 100), 8))
        params = params._replace(
            **{
                f: 0.3 * jax.random.normal(next(keys), getattr(params, f).shape, getattr(params, f).dtype)
                for f in ("b", "b_hn")
                if getattr(params, f, None) is not None
            }
        )
    return cell, params


def loop_rnn(cell, params, xs_tm, carry):
    """The plain Python loop over time that lax.scan replaces (time-major)."""
    ys = []
    for t in range(xs_tm.shape[0]):
        carry, y = cell.step(params, carry, xs_tm[t])
        ys.append(y)
    return carry, jnp.stack(ys)


def assert_trees_close(a, b, rtol=1e-6, atol=1e-6, err_msg=""):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b), err_msg
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol, err_msg=err_msg
        )


def primitive_eqns(jaxpr, name) -> list:
    """Every equation of primitive ``name`` in a closed jaxpr, nested ones (custom_vjp, jit, scan bodies) included."""
    from jax.extend.core import jaxprs_in_params

    found = []

    def visit(jx):
        for eqn in jx.eqns:
            if eqn.primitive.name == name:
                found.append(eqn)
            for sub in jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    return found


def primitive_params(jaxpr, name) -> list:
    """The params of every equation of primitive ``name`` in a closed jaxpr, nested ones included."""
    return [eqn.params for eqn in primitive_eqns(jaxpr, name)]


def scan_unrolls(jaxpr) -> list:
    """The ``unroll`` of every ``scan`` in a closed jaxpr, nested ones included."""
    return [params["unroll"] for params in primitive_params(jaxpr, "scan")]
