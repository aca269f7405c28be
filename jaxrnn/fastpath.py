"""The analytic fast path: the built-in cells' hand-derived backward as a ``jax.custom_vjp`` around the scan.

``jaxrnn.rnn(cell, params, xs, grad="analytic")`` runs :func:`analytic_scan`; it is also what ``grad=None`` (the
default) means for ``jaxrnn.lstm`` and ``jaxrnn.gru``, where it measured 1.1–1.4x faster training steps on CPU than
autodiff (Elman, with a single cheap gate block, measured no gain and stays on autodiff). Its forward is one ``lax.scan`` that
keeps, per step, the carry it started from and the cell's residuals (:mod:`jaxrnn.analytic`), written as one
packed array per step when a step's residuals are small (``PACK_MAX_BYTES``). Its backward is one
reverse ``lax.scan`` that carries only ``dcarry`` and emits the per-step pre-activation (gate) cotangents
``da_t, du_t [*batch, G*H]``; everything that does not feed the recurrence is formed after the loop, one matmul
each over time and batch::

    dW_x = Σ_{t,b} x_tᵀ da_t        dW_h = Σ_{t,b} h_{t-1}ᵀ du_t        db = Σ_{t,b} da_t
    dxs  = da W_xᵀ                  (all steps at once)

A wide LSTM (``4H >= 1024``, at least 8 sequences) runs the same equations feature-major, ``h, c [H, batch]``
inside the scan, where XLA CPU's per-step gate matmul measured faster (:mod:`jaxrnn.feature_major`). A wide GRU
(``feature_major.GRU_FORWARD_MIN``) does so only in a forward pass that nothing differentiates (the custom VJP's
primal): there it measured up to 1.36x, while its training step measured faster row-major.

Autodiff through ``lax.scan`` instead accumulates ``dW_x``, ``dW_h`` step by step inside the loop (two small
matmuls and a read-modify-write of the accumulators per step), and computes ``dx_t`` in the loop too.

Limits, by design:

- **Forward mode does not work through a custom_vjp**: ``jax.jvp``, ``jax.jacfwd``, ``jax.linearize`` and
  ``jax.hessian`` raise. Use ``grad="autodiff"`` for those. Reverse mode (``grad``, ``vjp``, ``jacrev``), ``jit``
  and ``vmap`` work.
- Only the built-in cells have the rule; the driver raises ``ValueError`` for ``grad="analytic"`` on a user cell.
- Half precision: residuals are kept in the params' dtype; the after-loop matmuls and sums accumulate in float32.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrnn import feature_major
from jaxrnn.analytic import (
    _RULES,
    StepRule,
    _acc_dtype,
    _assemble,
    _extra_input,
    _hidden,
    _masked_vjp,
    cut_at_resets,
    forward_with_residuals,
    transposed_recurrent_weights,
)
from jaxrnn.cells import gru as _gru
from jaxrnn.cells import lstm as _lstm
from jaxrnn.driver import (
    _check_cell,
    check_time_major_scan,
    match_varying,
    step_input,
    step_validity,
    sum_to_varying,
)

__all__ = ["analytic_by_default", "analytic_scan", "has_rule", "scan_checked"]

_BY_NAME = {rule.name: rule for rule in _RULES.values()}


def analytic_by_default(cell) -> bool:
    """Whether ``rnn(..., grad=None)`` takes the analytic path for ``cell``: the built-in LSTM and GRU."""
    return getattr(cell, "step", None) in (_lstm.step, _gru.step)


def has_rule(cell) -> bool:
    """Whether ``cell`` is a built-in cell with a hand-derived backward."""
    return getattr(cell, "step", None) in _RULES


def analytic_scan(cell, params, xs_tm, carry, lengths=None, *, reverse=False, unroll=1, mask=None, marks=None):
    """Like :func:`jaxrnn.driver.scan_cell` (time-major ``xs_tm [T, *batch, D]``; ``lengths`` or a step ``mask [T,
    *batch]``; segment-start ``marks [T, *batch]`` from :func:`jaxrnn.driver.reset_marks`, where the carry restarts
    from zeros) with the analytic backward. Returns ``(final_carry, ys [T, *batch, H])``. Raises ``ValueError`` for a
    cell without a hand-derived backward, and checks the inputs as :func:`jaxrnn.rnn` does (``rnn`` itself, having
    checked them, calls :func:`scan_checked`)."""
    _check_cell(cell)
    if not has_rule(cell):
        raise ValueError(
            f"analytic_scan needs a built-in cell (jaxrnn.elman, jaxrnn.lstm, jaxrnn.gru), got {cell.name!r}"
        )
    check_time_major_scan(cell, params, xs_tm, carry, lengths, mask=mask, marks=marks, unroll=unroll)
    return scan_checked(cell, params, xs_tm, carry, lengths, reverse=reverse, unroll=unroll, mask=mask, marks=marks)


def scan_checked(cell, params, xs_tm, carry, lengths=None, *, reverse=False, unroll=1, mask=None, marks=None):
    """:func:`analytic_scan` on inputs the caller has already checked (the driver's)."""
    return _scan(_RULES[cell.step].name, bool(reverse), unroll, params, xs_tm, carry, lengths, mask, marks)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _scan(name, reverse, unroll, params, xs_tm, carry, lengths, mask, marks):
    # the primal, run only where nothing differentiates the scan: a wide GRU then runs feature-major too
    if name == "gru" and feature_major.use_feature_major(params, xs_tm):
        return feature_major.gru_forward_checked(
            params, xs_tm, carry, lengths, reverse=reverse, unroll=unroll, mask=mask, marks=marks
        )
    final, ys, _ = _forward(name, reverse, unroll, params, xs_tm, carry, lengths, mask, marks)
    return final, ys


def _forward(name, reverse, unroll, params, xs_tm, carry, lengths, mask, marks=None):
    """``(final, ys, kept)``: the wide LSTM runs feature-major (:mod:`jaxrnn.feature_major`), every other cell
    row-major, its residuals packed when small."""
    if name == "lstm" and feature_major.use_feature_major(params, xs_tm):
        return feature_major.forward_checked(
            params, xs_tm, carry, lengths, reverse=reverse, unroll=unroll, mask=mask, marks=marks
        )
    rule = _BY_NAME[name]
    pack = _residual_layout(rule, params, carry, step_input(xs_tm)) is not None
    return forward_with_residuals(
        rule, params, xs_tm, carry, lengths, reverse=reverse, unroll=unroll, pack=pack, mask=mask, marks=marks
    )


# Packing pays where a step is so small that the per-op cost of writing each residual dominates (LSTM B=1 H=32:
# training step 1.1-1.3x faster); at B=64 H=512 the concatenation cost 10% (benchmarks/, issue 7).
PACK_MAX_BYTES = 32 * 1024


def _residual_layout(rule, params, carry, x):
    """How one step's ``(carry, residuals)`` leaves pack into one ``[*batch, Σ widths]`` array: ``(treedef,
    split indices)``; None (keep one stacked array per leaf) when the leaves differ in dtype or batch shape, or
    when a step's residuals exceed ``PACK_MAX_BYTES``."""
    tree = jax.eval_shape(lambda c, x: (c, rule.forward(params, c, x)[2]), carry, x)
    leaves, treedef = jax.tree.flatten(tree)
    if len({(leaf.dtype, leaf.shape[:-1]) for leaf in leaves}) != 1 or any(leaf.ndim == 0 for leaf in leaves):
        return None
    if sum(leaf.size * leaf.dtype.itemsize for leaf in leaves) > PACK_MAX_BYTES:
        return None
    widths = [leaf.shape[-1] for leaf in leaves]
    return treedef, tuple(int(i) for i in np.cumsum(widths)[:-1])


def _unpack(layout, packed):
    treedef, indices = layout
    return jax.tree.unflatten(treedef, jnp.split(packed, indices, axis=-1))


def _scan_fwd(name, reverse, unroll, params, xs_tm, carry, lengths, mask, marks):
    final, ys, kept = _forward(name, reverse, unroll, params, xs_tm, carry, lengths, mask, marks)
    # the initial carry (one step's size) is kept for the feature-major backward and for its varying mesh axes
    return (final, ys), (params, xs_tm, carry, kept, lengths, mask, marks)


def _scan_bwd(name, reverse, unroll, saved, cotangents):
    params, xs_tm, carry0, kept, lengths, mask, marks = saved
    dfinal, dys = cotangents
    dtype = params.w_h.dtype
    dys = dys.astype(dtype)
    dfinal = match_varying(jax.tree.map(lambda d: d.astype(dtype), dfinal), params, xs_tm, kept, dys)
    if isinstance(kept, feature_major.Kept):
        dparams, dxs, dcarry0 = feature_major.backward_checked(
            params, xs_tm, carry0, kept, lengths, dfinal, dys, reverse=reverse, unroll=unroll, mask=mask, marks=marks
        )
    else:
        dparams, dxs, dcarry0 = _backward(
            _BY_NAME[name], reverse, unroll, params, xs_tm, kept, lengths, dfinal, dys, mask, marks
        )
    grads = sum_to_varying(dparams, params), sum_to_varying(dxs, xs_tm), sum_to_varying(dcarry0, carry0)
    return (*grads, None, None, None)


def _backward(rule: StepRule, reverse, unroll, params, xs_tm, kept, lengths, dfinal, dys, mask=None, marks=None):
    """The row-major backward: ``(dparams, dxs, dcarry0)``."""
    # kept is (carries, residuals), or one packed array whose layout follows from the carry's shapes
    layout = None if isinstance(kept, tuple) else _residual_layout(rule, params, dfinal, step_input(xs_tm))
    times = jnp.arange(xs_tm.shape[0])
    weights_t = transposed_recurrent_weights(params)

    def body(dcarry, inputs):
        t, step_res, dy, mask_t, mark_t = inputs
        c, r = step_res if layout is None else _unpack(layout, step_res)
        delta = cut_at_resets(partial(rule.delta, params, c, r, **weights_t), mark_t)
        valid = step_validity(t, lengths, mask_t)
        da, du, dcarry_prev = delta(dcarry, dy) if valid is None else _masked_vjp(delta, valid[..., None], dcarry, dy)
        return dcarry_prev, (da, None if du is da else du)

    dcarry0, (da, du) = lax.scan(body, dfinal, (times, kept, dys, mask, marks), reverse=not reverse, unroll=unroll)
    carries, residuals = kept if layout is None else _unpack(layout, kept)
    # Elman, LSTM and the reset-before GRU: du is da (the reset-after GRU's n gate differs, and the projected
    # LSTM's du is its output cotangent), so it is emitted once.
    extra = _extra_input(params, residuals)
    dparams = _assemble(params, xs_tm, _hidden(carries), da, da if du is None else du, extra)
    dxs = jnp.matmul(da, params.w_x.T, preferred_element_type=_acc_dtype(params.w_h.dtype)).astype(xs_tm.dtype)
    return dparams, dxs, dcarry0


_scan.defvjp(_scan_fwd, _scan_bwd)
