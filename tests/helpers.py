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


def per_sequence_rnn(cell, params, xs, carry, *, lengths=None, mask=None, resets=None, reverse=False):
    """What :func:`jaxrnn.rnn` documents, one sequence at a time in a Python loop over the steps it runs.

    ``xs [B, T, D]`` (one batch dim), carry leaves ``[B, ...]``; ``lengths [B]``, ``mask``/``resets [B, T]`` as
    NumPy arrays. A step runs when ``t < lengths[b]`` and ``mask[b, t]``; the steps run in time order (reversed with
    ``reverse``). The carry restarts from ``cell.initial_state`` before a step when a segment boundary (a reset at
    step ``s``: between ``s - 1`` and ``s``) lies between it and the step run before it; going forward, also when
    one lies at or before the first step run. Skipped steps emit zeros. Returns ``(final carry, ys [B, T, H])``.
    """
    num_seqs, num_steps = xs.shape[0], xs.shape[1]
    out_size = jax.eval_shape(lambda: cell.step(params, cell.initial_state(params, ()), xs[0, 0])[1]).shape[-1]
    finals, outputs = [], []
    for b in range(num_seqs):
        c = jax.tree.map(lambda leaf, b=b: leaf[b], carry)
        steps = [t for t in range(num_steps) if (lengths is None or t < lengths[b]) and (mask is None or mask[b, t])]
        ys = [jnp.zeros((out_size,), xs.dtype)] * num_steps
        previous = None
        for t in reversed(steps) if reverse else steps:
            if resets is not None:
                if not reverse:
                    crossed = resets[b, (-1 if previous is None else previous) + 1 : t + 1].any()
                else:
                    crossed = previous is not None and resets[b, t + 1 : previous + 1].any()
                if crossed:
                    c = cell.initial_state(params, ())
            c, ys[t] = cell.step(params, c, xs[b, t])
            previous = t
        finals.append(c)
        outputs.append(jnp.stack(ys) if num_steps else jnp.zeros((0, out_size), xs.dtype))
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *finals), jnp.stack(outputs)
