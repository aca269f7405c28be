"""The analytic fast path in feature-major layout, for wide cells: the LSTM's forward and backward, and the GRU's
forward pass when no gradient is taken.

Inside the scan the carry is kept as ``h, c [H, n]`` (features first, the ``n`` sequences of the flattened batch
last), so each step's gate matmul is ``[4H, D+H] @ [D+H, n]``::

    zᵀ = [W_x; W_h]ᵀ [xᵀ; hᵀ] + b          (4H, n)
    dhᵀ_prev = W_h daᵀ                       (H, n)

instead of ``[n, D+H] @ [D+H, 4H]``. On XLA CPU (2 cores, jax 0.10) that orientation ran the LSTM forward 7–20%
faster once ``4H >= 1024`` and ``n >= 8`` (H=256 and 512, B=8 to 64), with no gain at H=128 and a loss at B=1 H=32
(``benchmarks/README.md``); :func:`use_feature_major` picks it by those measured thresholds.

The layout never leaves this module: inputs, outputs, carries and gradients keep the library's
``[*batch, features]``: the outputs ``ys [T, H, n]`` are turned once after the loop (XLA merges that with the
driver's own transpose to batch-major). For training, each step also writes the ``h`` that multiplies ``W_h`` as
``[n, H]`` rows, and the backward emits its gate cotangents as ``da [n, 4H]`` rows (a transpose of one step's tile,
fused into the step), so the after-loop weight-gradient matmuls are the same as :mod:`jaxrnn.fastpath`'s: in
feature-major they measured 1.4x (``dW``) and 3x (``dxs``) slower, for the transposes of the stacked arrays.
The cell state a step started from is not kept: the backward reads it from the neighbouring step's ``c`` (or the
initial carry), which cut the compiled training step's memory by one ``[T, H, n]`` array (large config: 405 to
380 MiB; B=8 T=10,000 H=256: 1198 to 1120 MiB).

The GRU runs feature-major only where nothing differentiates it (:func:`gru_forward`, the custom VJP's primal), and
only where it measured faster (``GRU_FORWARD_MIN``: H >= 512 with 32 sequences, or H >= 1024 with 8): at B=64
T=200 D=64 H=512 its forward pass measured 1.14x the row-major one in one process, while a feature-major training
step (autodiff backward) measured 0.67x, so a training step keeps the row-major forward and backward.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxrnn._checks import check_tree_matches, shape_str
from jaxrnn.analytic import (
    _acc_dtype,
    _assemble,
    _lstm_delta,
    _masked_step,
    _masked_vjp,
    cut_at_resets,
    reset_carry,
)
from jaxrnn.cells import gru as _gru
from jaxrnn.cells import lstm as _lstm
from jaxrnn.cells.gru import GRUParams
from jaxrnn.cells.lstm import LSTMGates, LSTMParams, LSTMState, gate_activations
from jaxrnn.driver import check_time_major_scan, step_validity

__all__ = [
    "GRU_FORWARD_MIN",
    "MIN_BATCH",
    "MIN_GATE_WIDTH",
    "Kept",
    "backward",
    "backward_checked",
    "forward",
    "forward_checked",
    "gru_forward",
    "gru_forward_checked",
    "use_feature_major",
]

# The measured break-even (see the module docstring): 4H at least this, and at least this many sequences.
MIN_GATE_WIDTH = 1024
MIN_BATCH = 8


def _check_lstm(params, xs_tm, carry, lengths, mask, marks, unroll) -> None:
    if not isinstance(params, LSTMParams):
        raise TypeError(
            f"params must be LSTMParams (the feature-major path has no projections), got {type(params).__name__}"
        )
    check_time_major_scan(_lstm.cell, params, xs_tm, carry, lengths, mask=mask, marks=marks, unroll=unroll)


class Kept(NamedTuple):
    """What the forward keeps per step, stacked over time: ``h_prev [T, n, H]`` (rows, for ``dW_h``) and the gates
    with the new cell state ``[T, H, n]`` (feature-major, for the backward scan). The cell state a step started
    from is its neighbour's ``gates.c`` (or the initial carry's), so it is not kept a second time."""

    h_prev: jax.Array
    gates: LSTMGates


# The GRU's forward pass, measured separately (2026-12-07, B x H, T=100): feature-major won at 32 x 512 (1.03x),
# 64 x 512 (1.07-1.17x), 32 x 768 (1.14x), 8 x 1024 (1.31x), 32 x 1024 (1.36x) and lost at 8 x 512 (0.97x),
# 16 x 512 (0.92x), 24 x 512 (0.86x), 8 x 768 (0.88x), 32 x 384 (0.95x); level at 64 x 384 and 64 x 256. It runs
# feature-major where some (hidden size, sequences) pair here is reached in both.
GRU_FORWARD_MIN = ((512, 32), (1024, 8))


def use_feature_major(params, xs_tm) -> bool:
    """Whether the fast path runs feature-major for these params and ``xs_tm [T, *batch, D]``: the LSTM (never with
    projections) with at least ``MIN_GATE_WIDTH`` gate columns and ``MIN_BATCH`` sequences; for a forward pass
    alone, the GRU by ``GRU_FORWARD_MIN``."""
    n = math.prod(xs_tm.shape[1:-1])
    if isinstance(params, GRUParams):
        return any(params.w_h.shape[0] >= hidden and n >= batch for hidden, batch in GRU_FORWARD_MIN)
    if not isinstance(params, LSTMParams):
        return False
    return params.w_h.shape[1] >= MIN_GATE_WIDTH and n >= MIN_BATCH


def _rows(a):
    return jnp.swapaxes(a, -1, -2)


def _flat_valid(t, lengths, mask_t):
    """``[1, n]`` mask of the sequences that run step ``t`` (``mask_t``: that step's ``[1, n]`` row of the step
    mask), or None when all do."""
    return step_validity(t, None if lengths is None else lengths.reshape(1, -1), mask_t)


def _flat_mask(mask, num_steps, n):
    """A step mask (or reset marks) ``[T, *batch]`` as ``[T, 1, n]`` rows, or None."""
    return None if mask is None else mask.reshape(num_steps, 1, n)


def forward(
    params: LSTMParams, xs_tm, carry: LSTMState, lengths=None, *, reverse=False, unroll=1, mask=None, marks=None
):
    """:func:`forward_checked` after checking its inputs as :func:`jaxrnn.rnn` does."""
    _check_lstm(params, xs_tm, carry, lengths, mask, marks, unroll)
    return forward_checked(params, xs_tm, carry, lengths, reverse=reverse, unroll=unroll, mask=mask, marks=marks)


def forward_checked(
    params: LSTMParams, xs_tm, carry: LSTMState, lengths=None, *, reverse=False, unroll=1, mask=None, marks=None
):
    """The LSTM over ``xs_tm [T, *batch, D]`` from ``carry`` (each ``[*batch, H]``), as
    :func:`jaxrnn.analytic.forward_with_residuals`: returns ``(final_carry, ys [T, *batch, H], Kept)``. ``Kept``'s
    ``gates.c`` is the carried cell state: at a masked step, the one held. ``marks``: segment starts, where a step
    starts from zeros (``h_prev`` is then zero). The inputs are the caller's to check (:func:`forward` does)."""
    num_steps, batch, hidden = xs_tm.shape[0], xs_tm.shape[1:-1], params.w_h.shape[0]
    n = math.prod(batch)
    xs_fm = _rows(xs_tm.reshape(num_steps, n, xs_tm.shape[-1]))  # [T, D, n]
    w_t = jnp.concatenate([params.w_x, params.w_h], axis=0).T  # [4H, D+H]
    b_col = params.b[:, None]
    start = LSTMState(*(_rows(leaf.reshape(n, hidden)) for leaf in carry))

    def body(c, inputs):
        t, x, mask_t, mark_t = inputs
        c_in = reset_carry(mark_t, c)
        z = w_t @ jnp.concatenate([x, c_in.h.astype(x.dtype)], axis=0) + b_col
        act = gate_activations(z, c_in.c, axis=0)
        h = act.o * jnp.tanh(act.c)
        new, y = LSTMState(h=h, c=act.c), h
        valid = _flat_valid(t, lengths, mask_t)
        if valid is not None:
            new, y = _masked_step(valid, new, c, y)
        return new, (y, Kept(h_prev=_rows(c_in.h), gates=act._replace(c=new.c)))

    inputs = (jnp.arange(num_steps), xs_fm, _flat_mask(mask, num_steps, n), _flat_mask(marks, num_steps, n))
    final, (ys, kept) = lax.scan(body, start, inputs, reverse=reverse, unroll=unroll)
    final = LSTMState(*(_rows(leaf).reshape(*batch, hidden) for leaf in final))
    # ys [T, H, n] turned once after the loop: XLA merges this with the caller's transpose to batch-major
    return final, _rows(ys).reshape(num_steps, *batch, hidden), kept


def gru_forward(params: GRUParams, xs_tm, carry, lengths=None, *, reverse=False, unroll=1, mask=None, marks=None):
    """:func:`gru_forward_checked` after checking its inputs as :func:`jaxrnn.rnn` does."""
    check_time_major_scan(_gru.cell, params, xs_tm, carry, lengths, mask=mask, marks=marks, unroll=unroll)
    return gru_forward_checked(params, xs_tm, carry, lengths, reverse=reverse, unroll=unroll, mask=mask, marks=marks)


def gru_forward_checked(
    params: GRUParams, xs_tm, carry, lengths=None, *, reverse=False, unroll=1, mask=None, marks=None
):
    """The GRU (either form) over ``xs_tm [T, *batch, D]`` from ``carry [*batch, H]`` with the state kept ``[H, n]``:
    ``(final_carry, ys [T, *batch, H])``, as :func:`jaxrnn.rnn`, with no residuals. Per step::

        [a_r; a_z; a_n] = W_xᵀ x + b        [u_r; u_z; u_n] = W_hᵀ h               (3H, n)
        r = σ(a_r + u_r)    z = σ(a_z + u_z)
        n = tanh(a_n + r ⊙ (u_n + b_hn))    reset after
        n = tanh(a_n + W_hnᵀ (r ⊙ h))       reset before
        h' = (1 − z) ⊙ n + z ⊙ h

    The inputs are the caller's to check (:func:`gru_forward` does).
    """
    num_steps, batch, hidden = xs_tm.shape[0], xs_tm.shape[1:-1], params.w_h.shape[0]
    n = math.prod(batch)
    xs_fm = _rows(xs_tm.reshape(num_steps, n, xs_tm.shape[-1]))  # [T, D, n]
    w_x_t, b_col = params.w_x.T, params.b[:, None]
    w_h_t = (params.w_h if params.reset_after else params.w_h[:, : 2 * hidden]).T  # [3H or 2H, H]
    start = _rows(carry.reshape(n, hidden))

    def body(h, inputs):
        t, x, mask_t, mark_t = inputs
        h_in = reset_carry(mark_t, h)
        act, _ = _gru.gate_activations(params, w_x_t @ x + b_col, w_h_t @ h_in, h_in, axis=0)
        new = y = (1.0 - act.z) * act.n + act.z * h_in
        valid = _flat_valid(t, lengths, mask_t)
        if valid is not None:
            new, y = _masked_step(valid, new, h, y)
        return new, y

    inputs = (jnp.arange(num_steps), xs_fm, _flat_mask(mask, num_steps, n), _flat_mask(marks, num_steps, n))
    final, ys = lax.scan(body, start, inputs, reverse=reverse, unroll=unroll)
    return _rows(final).reshape(*batch, hidden), _rows(ys).reshape(num_steps, *batch, hidden)


def _cell_before(kept: Kept, c0, t, *, reverse):
    """The cell state step ``t`` started from, ``[H, n]``: the previous step's carried ``c`` (the next one's when
    ``reverse``), or ``c0`` at the first step. A masked step carried the ``c`` it was given, so this holds under
    ``lengths`` and step masks too. (Before a reset mark the caller replaces it by zeros.)"""
    num_steps = kept.gates.c.shape[0]
    if num_steps == 0:  # the body is traced but never runs
        return c0
    if not reverse:
        before = lax.dynamic_index_in_dim(kept.gates.c, jnp.maximum(t - 1, 0), keepdims=False)
        return jnp.where(t > 0, before, c0)
    before = lax.dynamic_index_in_dim(kept.gates.c, jnp.minimum(t + 1, num_steps - 1), keepdims=False)
    return jnp.where(t + 1 < num_steps, before, c0)


def backward(params, xs_tm, carry0, kept, lengths, dfinal, dys, *, reverse=False, unroll=1, mask=None, marks=None):
    """:func:`backward_checked` after checking its inputs: those of :func:`forward`, ``dfinal`` shaped like the
    carry and ``dys`` like ``ys``."""
    _check_lstm(params, xs_tm, carry0, lengths, mask, marks, unroll)
    check_tree_matches(dfinal, carry0, "dfinal", hint="It is the cotangent of the final carry, shaped like the carry.")
    ys_shape = (xs_tm.shape[0], *xs_tm.shape[1:-1], params.w_h.shape[0])
    if tuple(jnp.shape(dys)) != ys_shape:
        raise ValueError(f"dys must have the shape of ys, {shape_str(ys_shape)}, got {shape_str(jnp.shape(dys))}")
    return backward_checked(
        params, xs_tm, carry0, kept, lengths, dfinal, dys, reverse=reverse, unroll=unroll, mask=mask, marks=marks
    )


def backward_checked(
    params: LSTMParams,
    xs_tm,
    carry0: LSTMState,
    kept: Kept,
    lengths,
    dfinal: LSTMState,
    dys,
    *,
    reverse=False,
    unroll=1,
    mask=None,
    marks=None,
):
    """The VJP of :func:`forward` from ``carry0`` for cotangents ``dfinal`` (each ``[*batch, H]``) and ``dys [T,
    *batch, H]``: ``(LSTMParams of gradients, dxs [T, *batch, D], dcarry0)``, the same equations as
    :func:`jaxrnn.analytic.lstm_step_vjp` with the weight gradients formed after the loop. The inputs are the
    caller's to check (:func:`backward` does)."""
    num_steps, batch, hidden = xs_tm.shape[0], xs_tm.shape[1:-1], params.w_h.shape[0]
    n = math.prod(batch)
    dys = dys.reshape(num_steps, n, hidden)
    dstart = LSTMState(*(_rows(leaf.reshape(n, hidden)) for leaf in dfinal))
    c0 = _rows(carry0.c.reshape(n, hidden)).astype(kept.gates.c.dtype)

    def body(dcarry, inputs):
        t, gates, dy, mask_t, mark_t = inputs
        c_prev = reset_carry(mark_t, _cell_before(kept, c0, t, reverse=reverse))
        delta = cut_at_resets(partial(_lstm_delta, params, LSTMState(h=None, c=c_prev), gates, axis=0), mark_t)
        dy = _rows(dy)
        valid = _flat_valid(t, lengths, mask_t)
        da, _, dcarry_prev = delta(dcarry, dy) if valid is None else _masked_vjp(delta, valid, dcarry, dy)
        return dcarry_prev, _rows(da)

    inputs = (jnp.arange(num_steps), kept.gates, dys, _flat_mask(mask, num_steps, n), _flat_mask(marks, num_steps, n))
    dcarry0, da = lax.scan(body, dstart, inputs, reverse=not reverse, unroll=unroll)  # da [T, n, 4H]
    xs = xs_tm.reshape(num_steps, n, xs_tm.shape[-1])
    dparams = _assemble(params, xs, kept.h_prev, da, da)
    dxs = jnp.matmul(da, params.w_x.T, preferred_element_type=_acc_dtype(params.w_x.dtype)).astype(xs_tm.dtype)
    dcarry0 = LSTMState(*(_rows(leaf).reshape(*batch, hidden) for leaf in dcarry0))
    return dparams, dxs.reshape(xs_tm.shape), dcarry0
