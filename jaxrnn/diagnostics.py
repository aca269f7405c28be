"""Instruments for looking inside a recurrent net: gradient flow through time, and gate traces.

- :func:`gradient_flow`: for a loss on the last hidden state, how much gradient reaches each earlier step — the
  vanishing (or exploding) gradient of seeds 002 and 004, as two curves over ``t``. Computed by autodiff or by the
  hand-derived BPTT of :mod:`jaxrnn.analytic`; the two agree to rounding.
- :func:`gate_traces`: every gate's activation at every step (LSTM ``i, f, g, o, c``; GRU ``r, z, n``; Elman ``h``).
- :func:`state_jacobians`: ``∂s_t/∂s_{t-1}`` at every step, the factors whose products BPTT multiplies.
- :func:`lyapunov_spectrum`: the mean log growth rate per step of state perturbations, per direction: below zero
  gradients vanish, above zero they explode.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrnn._checks import check_resets
from jaxrnn.analytic import _bptt_scan, step_rule
from jaxrnn.cells import elman as _elman
from jaxrnn.cells import gru as _gru
from jaxrnn.cells import lstm as _lstm
from jaxrnn.cells.gru import GRUGates
from jaxrnn.cells.lstm import LSTMGates, LSTMState
from jaxrnn.driver import _lengths_or_mask, _reset_inputs, prepare, scan_cell

__all__ = [
    "ElmanTrace",
    "GradientFlow",
    "GRUGates",
    "LSTMGates",
    "gate_traces",
    "gradient_flow",
    "lyapunov_spectrum",
    "state_jacobians",
]

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
        The Jacobian takes ``H`` backward passes, one after another (``lax.map``).

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

    if math.prod(prep.batch_shape) == 0:
        raise ValueError(f"xs must hold at least one sequence, got batch shape {list(prep.batch_shape)}")

    final, _ = lax.scan(lambda c, x: cell.step(params, c, x), prep.carry, prep.xs)
    h_last = _hidden_of(final, cell.name)
    loss = loss_fn(h_last)
    if not hasattr(loss, "dtype"):
        if isinstance(loss, bool) or not isinstance(loss, (int, float)):
            raise TypeError(f"loss_fn must return a real scalar (a jax or Python number), got {type(loss).__name__}")
        loss = jnp.asarray(loss)
    if not (jnp.issubdtype(loss.dtype, jnp.floating) or jnp.issubdtype(loss.dtype, jnp.integer)):
        raise TypeError(f"loss_fn must return a real scalar, got dtype {loss.dtype}")
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
    # lax.map, not vmap: jaxlib 0.10.2's CPU compiler miscomputes a vmapped VJP of the LSTM and GRU scans in float64
    # (jax.jacrev off by O(1); a single VJP, jax.jacfwd and float32 are right).
    d_units = lax.map(backward, unit_cts)  # [H(k), T, *batch, H]

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


def gate_traces(cell, params, xs, carry=None, *, lengths=None, mask=None, resets=None, time_major: bool = False):
    """Every gate's activation at every step, for the built-in cells.

    Runs ``cell`` over ``xs [*batch, T, D]`` (or ``[T, *batch, D]`` with ``time_major``) exactly as
    :func:`jaxrnn.rnn` does and records, per step:

    - LSTM: ``LSTMGates(i, f, g, o, c)`` — ``i = σ(a_i)``, ``f = σ(a_f)``, ``g = tanh(a_g)``, ``o = σ(a_o)`` and the new
      cell state ``c' = f·c + i·g``;
    - GRU: ``GRUGates(r, z, n)`` — ``r = σ(..)``, ``z = σ(..)``, ``n = tanh(a_n + r·(h W_hn + b_hn))`` (reset
      before: ``n = tanh(a_n + (r·h) W_hn)``);
    - Elman: ``ElmanTrace(h)``, the hidden state (no gates).

    Each field is ``[*batch, T, H]`` (``[T, *batch, H]`` with ``time_major``). ``lengths``, ``mask`` and
    ``resets`` act as in :func:`jaxrnn.rnn`: steps past a sequence's length, and masked steps, are zero in every
    field (the carry is held), and the carry starts afresh at each segment start.
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
            return LSTMState(h=_lstm.output(params, act), c=act.c), act

    elif rule.name == "gru":

        def record(c, x):
            act = _gru.gates(params, c, x)
            return (1.0 - act.z) * act.n + act.z * c, act

    else:

        def record(c, x):
            h, _ = _elman.step(params, c, x)
            return h, ElmanTrace(h=h)

    num_steps = prep.xs.shape[0]
    resets_tm = None if resets is None else check_resets(resets, prep.batch_shape, num_steps, time_major)
    lengths_, mask_tm = _lengths_or_mask(prep, mask, time_major)
    marks, reset_carry = _reset_inputs(cell, params, prep.xs, prep.carry, lengths_, resets_tm, mask_tm, False)
    _, traces = scan_cell(lambda _, c, x: record(c, x), params, prep.xs, prep.carry, lengths_, marks=marks,
                          reset_carry=reset_carry, mask=mask_tm)  # fmt: skip
    if time_major:
        return traces
    return jax.tree.map(lambda a: jnp.moveaxis(a, 0, -2), traces)


def _flat_state(carry, batch_ndim: int, cell_name: str):
    """``(flatten, unflatten, size)`` for a carry whose leaves are each ``[*batch, n_i]``: the state as one vector
    ``[*batch, S]``, ``S = Σ n_i``, in leaf order (LSTM: ``[h, c]``)."""
    leaves, treedef = jax.tree.flatten(carry)
    for leaf in leaves:
        if leaf.ndim != batch_ndim + 1:
            raise ValueError(
                f"state Jacobians need a carry of vectors: every leaf of {cell_name!r}'s carry must be "
                f"[*batch, n], got a leaf of shape {tuple(leaf.shape)} for batch rank {batch_ndim}"
            )
    sizes = [leaf.shape[-1] for leaf in leaves]
    bounds = list(itertools.accumulate(sizes))[:-1]

    def flatten(c):
        return jnp.concatenate(jax.tree.leaves(c), axis=-1)

    def unflatten(s):
        return jax.tree.unflatten(treedef, jnp.split(s, bounds, axis=-1))

    return flatten, unflatten, sum(sizes)


def _per_sequence_setup(cell, params, xs, carry, time_major):
    """Inputs flattened to one batch dim: ``(xs [T, N, D], s0 [N, S], step_flat, S, batch_shape)``."""
    prep = prepare(cell, params, xs, carry, time_major=time_major)
    batch_shape = prep.batch_shape
    flatten, unflatten, size = _flat_state(prep.carry, len(batch_shape), cell.name)
    n = math.prod(batch_shape)
    xs_flat = prep.xs.reshape((prep.xs.shape[0], n, prep.xs.shape[-1]))
    s0 = flatten(prep.carry).reshape((n, size))

    def step_flat(s, x):  # one sequence: s [S], x [D] -> s' [S]
        return flatten(cell.step(params, unflatten(s), x)[0])

    return xs_flat, s0, step_flat, size, batch_shape


def state_jacobians(cell, params, xs, carry=None, *, time_major: bool = False) -> jax.Array:
    """The Jacobian of every step's state update, ``J_t = ∂s_t/∂s_{t-1}``, along the trajectory of ``xs``.

    ``s_t`` is the whole carry after step ``t`` as one vector of ``S`` entries, its leaves concatenated in order:
    ``h`` (``S = H``) for Elman and GRU, ``[h, c]`` (``S = 2H``) for the LSTM, the vector leaves of a user cell.
    ``J_t`` is evaluated at ``(s_{t-1}, x_t)`` (``s_{-1}`` = ``carry``, zeros if None) by forward-mode autodiff.
    Their products are the gradients that BPTT carries back (``∂s_T/∂s_t = J_T ⋯ J_{t+1}``), so their singular
    values show directly whether a direction is contracted (vanishing) or stretched (exploding) at each step.

    Args:
      xs: ``[*batch, T, D]`` (``[T, *batch, D]`` with ``time_major``).

    Returns:
      ``[*batch, T, S, S]`` (``[T, *batch, S, S]`` with ``time_major``): ``J[..., t, i, j] = ∂s_t[i]/∂s_{t-1}[j]``.
      Memory grows as ``T·S²`` per sequence; :func:`lyapunov_spectrum` summarises without keeping them.
    """
    xs_flat, s0, step_flat, size, batch_shape = _per_sequence_setup(cell, params, xs, carry, time_major)
    jac = jax.vmap(jax.jacfwd(step_flat), in_axes=(0, 0))
    advance = jax.vmap(step_flat, in_axes=(0, 0))

    def body(s, x):
        return advance(s, x), jac(s, x)

    _, jacs = lax.scan(body, s0, xs_flat)  # [T, N, S, S]
    jacs = jacs.reshape((xs_flat.shape[0], *batch_shape, size, size))
    return jacs if time_major else jnp.moveaxis(jacs, 0, len(batch_shape))


def lyapunov_spectrum(
    cell, params, xs, carry=None, *, num_exponents: int | None = None, warmup: int = 0, time_major: bool = False
) -> jax.Array:
    """Lyapunov exponents of the recurrence driven by ``xs``: the mean log growth rate per step of perturbations of
    the state, per direction, by the QR method (Benettin et al. 1980; for RNNs, Vogt et al. 2022).

    With ``Q_{-1}`` the first ``k`` columns of the identity, every step takes ``J_t Q_{t-1} = Q_t R_t`` (QR) and

        λ_i = (1 / (T − warmup)) Σ_{t ≥ warmup} log |R_t[i, i]|.

    ``λ_1 < 0`` means every perturbation — and so every gradient carried back through time — shrinks
    exponentially (``e^{λ_1 t}``); ``λ_1 > 0`` means some grow (chaos, exploding gradients); an exponent near 0 is a
    direction that memory can live in (the LSTM's cell state, when its forget gate is near 1). Exactly (``warmup =
    0``): ``T·Σ_i λ_i = Σ_t log |det J_t|`` for ``k = S``, and the first column's sum is ``log ‖J_{T-1} ⋯ J_0
    e_1‖``, which is ``T·λ_1`` for ``k = 1``; for ``k > 1`` the columns' rates are sorted, so over a finite ``T``
    another column's rate may come first. Half-precision cells are differentiated in their dtype and their QR runs
    in float32 (float32 exponents).

    Args:
      xs: ``[*batch, T, D]`` (``[T, *batch, D]`` with ``time_major``), the driving input.
      num_exponents: ``k``, how many leading exponents (``1 ≤ k ≤ S``; default ``S``, the state size of
        :func:`state_jacobians`).
      warmup: initial steps whose growth is not counted (the transient from ``carry``); ``0 ≤ warmup < T``.

    Returns:
      ``[*batch, k]``, each row sorted in decreasing order, in nats per step (``-inf`` for a direction a step
      annihilates, e.g. a dead ReLU unit).
    """
    xs_flat, s0, step_flat, size, batch_shape = _per_sequence_setup(cell, params, xs, carry, time_major)
    num_steps = xs_flat.shape[0]
    k = size if num_exponents is None else num_exponents
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= size:
        raise ValueError(f"num_exponents must be an int in [1, {size}] (the state size), got {num_exponents!r}")
    if num_steps == 0:
        raise ValueError("lyapunov_spectrum needs at least one step: xs has T = 0")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or not 0 <= warmup < num_steps:
        raise ValueError(f"warmup must be an int in [0, T) = [0, {num_steps}), got {warmup!r}")
    k, warmup = int(k), int(warmup)
    work = jnp.promote_types(s0.dtype, jnp.float32)  # LAPACK's QR has no half-precision kernels

    def one_step(s, q, x):
        j = jax.jacfwd(step_flat)(s, x).astype(work)
        q_new, r = jnp.linalg.qr(j @ q)
        return step_flat(s, x), q_new, jnp.log(jnp.abs(jnp.diagonal(r)))

    step_all = jax.vmap(one_step, in_axes=(0, 0, 0))

    def body(state, inputs):
        s, q, total = state
        t, x = inputs
        s, q, logs = step_all(s, q, x)
        return (s, q, total + jnp.where(t >= warmup, logs, 0.0)), None

    n = s0.shape[0]
    q0 = jnp.broadcast_to(jnp.eye(size, k, dtype=work), (n, size, k))
    total0 = jnp.zeros((n, k), work)
    (_, _, total), _ = lax.scan(body, (s0, q0, total0), (jnp.arange(num_steps), xs_flat))
    exponents = -jnp.sort(-total / (num_steps - warmup), axis=-1)
    return exponents.reshape((*batch_shape, k))
