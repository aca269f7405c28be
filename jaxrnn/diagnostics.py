"""Instruments for looking inside a recurrent net: gradient flow through time, and gate traces.

- :func:`gradient_flow`: for a loss on the last hidden state, how much gradient reaches each earlier step — the
  vanishing (or exploding) gradient of seeds 002 and 004, as two curves over ``t``. Computed by autodiff or by the
  hand-derived BPTT of :mod:`jaxrnn.analytic`; the two agree to rounding.
- :func:`gate_traces`: every gate's activation at every step (LSTM ``i, f, g, o, c``; GRU ``r, z, n``; Elman ``h``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxrnn.analytic import _bptt_scan, _mask_tree, step_rule
from jaxrnn.cells import elman as _elman
from jaxrnn.cells import gru as _gru
from jaxrnn.cells import lstm as _lstm
from jaxrnn.cells.gru import GRUGates
from jaxrnn.cells.lstm import LSTMGates, LSTMState
from jaxrnn.driver import prepare

__all__ = ["ElmanTrace", "GradientFlow", "GRUGates", "LSTMGates", "gate_traces", "gradient_flow"]

METHODS = ("autodiff", "analytic")


class GradientFlow(NamedTuple):
    """Gradient flow through time, one value per step ``t = 0..T-1`` (see :func:`gradient_flow`).

    Attributes:
      dloss_dh: ``[T]``, the batch mean of ``‖∂L/∂h_t‖₂`` (norm over the hidden units).
      dhT_dh: ``[T]``, the batch mean of ``‖∂h_T/∂h_t‖_F`` (Frobenius norm of each sequence's ``[H, H]`` Jacobian).
    """

    dloss_dh: jax.Array
    dhT_dh: jax.Array


class ElmanTrace(NamedTuple):
    """The Elman cell has no gates; its trace is the hidden state ``h [*batch, T, H]``."""

    h: jax.Array


def _hidden_of(carry, cell_name: str):
    """The hidden state inside a carry: the carry itself when it is one array, else its ``h`` field."""
    if isinstance(carry, jax.Array) or hasattr(carry, "shape"):
        return carry
    if hasattr(carry, "h"):
        return carry.h
    raise ValueError(
        f"gradient_flow needs the hidden state h_t of {cell_name!r}: the carry must be one array or have a field "
        f"named 'h', got {type(carry).__name__}"
    )


def _replace_hidden(carry, h):
    if hasattr(carry, "shape"):
        return h
    return carry._replace(h=h)


def _default_loss(h_last):
    return jnp.sum(h_last)


def gradient_flow(
    cell, params, xs, carry=None, *, loss_fn: Callable | None = None, method: str = "autodiff"
) -> GradientFlow:
    """Gradient flow through time for a loss on the last hidden state.

    Runs ``cell`` over ``xs [*batch, T, D]`` (batch-major; any number of batch dims, including none) from ``carry``
    (zeros if None). ``h_t [*batch, H]`` is the hidden state after step ``t`` (the carry, or ``carry.h`` for the
    LSTM; for a user cell, its carry if that is one array, else its ``h`` field). The loss is
    ``L = loss_fn(h_{T-1})``, a scalar; the default ``loss_fn`` is ``jnp.sum`` (so ``∂L/∂h_{T-1}`` is all ones).
    ``∂L/∂h_t`` is the total derivative through every later step, with the rest of the carry at step ``t`` (the
    LSTM's ``c_t``) held fixed.

    Batch reduction, exactly: sequences are independent, so each sequence ``b`` has its own gradient
    ``∂L/∂h_t^(b) [H]`` and Jacobian ``J_t^(b) = ∂h_{T-1}^(b)/∂h_t^(b) [H, H]``. Then

        dloss_dh[t] = mean_b ‖∂L/∂h_t^(b)‖₂          dhT_dh[t] = mean_b ‖J_t^(b)‖_F

    (the mean over all batch dims; no batch dims: the norms themselves). ``dhT_dh[T-1] = √H`` (the identity).

    Args:
      method: ``"autodiff"`` (``jax.vjp`` of the scan, any cell) or ``"analytic"`` (the hand-derived BPTT of
        :func:`jaxrnn.analytic.bptt`, built-in cells only). ``∂L/∂h_{T-1}`` is ``jax.grad(loss_fn)`` either way.
        The Jacobian takes ``H`` backward passes (vmapped).

    Returns:
      ``GradientFlow(dloss_dh [T], dhT_dh [T])``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if loss_fn is None:
        loss_fn = _default_loss
    elif not callable(loss_fn):
        raise TypeError(f"loss_fn must be a callable h_last [*batch, H] -> scalar, got {type(loss_fn).__name__}")
    prep = prepare(cell, params, xs, carry)
    rule = step_rule(cell)
    if method == "analytic" and rule is None:
        raise ValueError(
            f"method='analytic' needs a built-in cell (jaxrnn.elman, jaxrnn.lstm, jaxrnn.gru), got {cell.name!r}; "
            f"use method='autodiff' for your own cells"
        )
    _hidden_of(prep.carry, cell.name)  # raises early for carries without a hidden state
    batch_ndim = len(prep.batch_shape)

    final, _ = lax.scan(lambda c, x: cell.step(params, c, x), prep.carry, prep.xs)
    h_last = _hidden_of(final, cell.name)
    loss = loss_fn(h_last)
    if jnp.shape(loss) != ():
        raise ValueError(f"loss_fn must return a scalar, got shape {jnp.shape(loss)}")
    g_last = jax.grad(lambda h: jnp.asarray(loss_fn(h), h.dtype))(h_last)
    hidden = h_last.shape[-1]
    eye = jnp.eye(hidden, dtype=h_last.dtype)
    # One cotangent per hidden unit k, the same for every sequence: e_k broadcast to [*batch, H].
    unit_cts = jnp.broadcast_to(eye.reshape((hidden,) + (1,) * batch_ndim + (hidden,)), (hidden, *h_last.shape))

    if method == "autodiff":
        backward = _autodiff_backward(cell, params, prep)
    else:
        backward = _analytic_backward(rule, params, prep)
    d_loss = backward(g_last)  # [T, *batch, H]
    d_units = jax.vmap(backward)(unit_cts)  # [H(k), T, *batch, H]

    batch_axes = tuple(range(1, 1 + batch_ndim))
    dloss_dh = jnp.mean(jnp.linalg.norm(d_loss, axis=-1), axis=batch_axes)
    frob = jnp.sqrt(jnp.sum(d_units * d_units, axis=(0, -1)))  # [T, *batch]
    return GradientFlow(dloss_dh=dloss_dh, dhT_dh=jnp.mean(frob, axis=batch_axes))


def _autodiff_backward(cell, params, prep):
    """``g_last -> [∂<g_last, h_{T-1}>/∂h_t for t]`` by ``jax.vjp`` of the scan with a perturbation ``ε_t`` added to
    each ``h_t``."""
    hidden_shape = _hidden_of(prep.carry, cell.name).shape

    def run(eps):
        def body(c, inputs):
            x, e = inputs
            new_c, _ = cell.step(params, c, x)
            return _replace_hidden(new_c, _hidden_of(new_c, cell.name) + e), None

        final, _ = lax.scan(body, prep.carry, (prep.xs, eps))
        return _hidden_of(final, cell.name)

    eps0 = jnp.zeros((prep.xs.shape[0], *hidden_shape), prep.xs.dtype)
    _, vjp = jax.vjp(run, eps0)
    return lambda g: vjp(g)[0]


def _analytic_backward(rule, params, prep):
    """The same map by :func:`jaxrnn.analytic.bptt`'s reverse scan: the cotangent of each step's carry, h part."""
    num_steps = prep.xs.shape[0]
    hidden = params.w_h.shape[0]
    dys = jnp.zeros((num_steps, *prep.batch_shape, hidden), prep.xs.dtype)

    def backward(g):
        zeros = jax.tree.map(jnp.zeros_like, prep.carry)
        dcarry_last = _replace_hidden(zeros, g)
        _, _, _, dcarries = _bptt_scan(rule, params, prep.xs, prep.carry, dys, dcarry_last, None, False)
        return _hidden_of(dcarries, "")

    return backward


def gate_traces(cell, params, xs, carry=None, *, lengths=None, time_major: bool = False):
    """Every gate's activation at every step, for the built-in cells.

    Runs ``cell`` over ``xs [*batch, T, D]`` (or ``[T, *batch, D]`` with ``time_major``) exactly as
    :func:`jaxrnn.rnn` does and records, per step:

    - LSTM: ``LSTMGates(i, f, g, o, c)`` — ``i = σ(a_i)``, ``f = σ(a_f)``, ``g = tanh(a_g)``, ``o = σ(a_o)`` and the new
      cell state ``c' = f·c + i·g``;
    - GRU: ``GRUGates(r, z, n)`` — ``r = σ(..)``, ``z = σ(..)``, ``n = tanh(a_n + r·(h W_hn + b_hn))``;
    - Elman: ``ElmanTrace(h)``, the hidden state (no gates).

    Each field is ``[*batch, T, H]`` (``[T, *batch, H]`` with ``time_major``). With ``lengths``, steps past a
    sequence's length are zero in every field (the carry is held, as in :func:`jaxrnn.rnn`).
    """
    prep = prepare(cell, params, xs, carry, lengths=lengths, time_major=time_major)
    rule = step_rule(cell)
    if rule is None:
        raise ValueError(
            f"gate_traces knows the gates of the built-in cells (jaxrnn.elman, jaxrnn.lstm, jaxrnn.gru), got "
            f"{cell.name!r}; for your own cell, scan its step and record what you need"
        )
    if rule.name == "lstm":

        def record(c, x):
            act = _lstm.gates(params, c, x)
            return LSTMState(h=act.o * jnp.tanh(act.c), c=act.c), act

    elif rule.name == "gru":

        def record(c, x):
            act = _gru.gates(params, c, x)
            return (1.0 - act.z) * act.n + act.z * c, act

    else:

        def record(c, x):
            h, _ = _elman.step(params, c, x)
            return h, ElmanTrace(h=h)

    lengths_ = prep.lengths

    def body(c, inputs):
        t, x = inputs
        new_c, trace = record(c, x)
        if lengths_ is None:
            return new_c, trace
        valid = t < lengths_
        zeros = jax.tree.map(jnp.zeros_like, trace)
        return _mask_tree(valid, new_c, c), _mask_tree(valid, trace, zeros)

    _, traces = lax.scan(body, prep.carry, (jnp.arange(prep.xs.shape[0]), prep.xs))
    if time_major:
        return traces
    return jax.tree.map(lambda a: jnp.moveaxis(a, 0, -2), traces)
