"""Gradients derived by hand, as working code: seed 000's MLP backprop and BPTT for every built-in cell.

Autodiff (``jax.grad``) is the training path; this module is the cross-check and the textbook. Everything here is
tested in float64 against ``jax.vjp`` (to ~1e-12 relative) and against finite differences.

**The MLP** (seed 000). ``a_0 = x``, ``a_k = act(a_{k-1} W_k + b_k)`` for the hidden layers, ``z_L`` the logits.
The rule, layer by layer (``dE/dy · dy/dz · dz/dw``)::

    δ_L = ∂E/∂z_L                         (the output delta, per loss below)
    ∂E/∂W_k = a_{k-1}ᵀ δ_k                 (dz/dw: the layer's input, summed over the batch)
    ∂E/∂b_k = Σ_batch δ_k
    δ_{k-1} = (δ_k W_kᵀ) ⊙ act'(a_{k-1})   (dE/dy of the layer below, times dy/dz)

Losses, for integer labels ``y`` and ``K`` output units:

- ``"squared_error"`` (the seed's): ``p = σ(z_L)``, ``E = ½ Σ_n Σ_k (t_nk − p_nk)²``, ``δ_L = (p − t) ⊙ p(1 − p)``.
  Targets ``t``: class ``k < K`` is the one-hot row ``e_k``; class ``K`` is the all-zeros row. So ``K`` sigmoid
  outputs score ``K + 1`` classes, the last one implicitly (score ``1 − Σ_k p_k``), as in seed 000, whose
  ``get_SE_row`` compares only the first ``n_class − 1`` outputs. Labels lie in ``[0, K]``.
- ``"softmax_cross_entropy"``: ``E = −Σ_n log softmax(z_L)_{n, y_n}``, ``δ_L = softmax(z_L) − onehot(y)``; labels in
  ``[0, K)``.

``reduction="sum"`` (the seed's) sums over the batch; ``"mean"`` divides by the number of examples.

Seed 000's own update differs from ``W ← W − η ∂E/∂W`` in two places, both bugs of the seed, not conventions: its
``dEdy = −½(t − p)`` is a quarter of ``∂[Σ(t − p)²]/∂p``, and its hidden-layer ``dydz = −a(1 − a)`` carries a stray
minus sign, so its hidden weights climb the gradient. :func:`mlp_backprop` gives the true gradient.

**BPTT.** For each built-in cell, ``<cell>_forward(params, carry, x) -> (carry', h', residuals)`` runs one step and
keeps what the backward needs, and ``<cell>_step_vjp(params, carry, x, residuals, dcarry, dh) ->
(dparams, dcarry_prev, dx)`` is that step's vector-Jacobian product, derived from the cell equations (the formulas
are in each docstring). ``dcarry`` is the cotangent of the new carry and ``dh`` that of the step's output; for all
three cells the output is the new hidden state, so the two add. :func:`bptt` chains them in one reverse
``lax.scan``: the exact VJP of :func:`jaxrnn.rnn`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrnn._checks import as_float_array, check_flag, check_resets, check_tree_matches, is_concrete, shape_str
from jaxrnn.cells import elman as _elman
from jaxrnn.cells import gru as _gru
from jaxrnn.cells import lstm as _lstm
from jaxrnn.cells.base import Cell, add_bias, check_step_inputs
from jaxrnn.cells.elman import ElmanParams
from jaxrnn.cells.gru import GRUParams
from jaxrnn.cells.lstm import LSTMGates, LSTMParams, LSTMPParams, LSTMState
from jaxrnn.driver import _lengths_or_mask, _where_valid, prepare, reset_marks, step_validity
from jaxrnn.mlp import MLPParams, hidden_activations

__all__ = [
    "LOSSES",
    "ElmanResiduals",
    "GRUResiduals",
    "StepRule",
    "bptt",
    "elman_forward",
    "elman_step_vjp",
    "gru_forward",
    "gru_step_vjp",
    "lstm_forward",
    "lstm_step_vjp",
    "mlp_backprop",
    "mlp_loss",
    "step_rule",
]

LOSSES = ("squared_error", "softmax_cross_entropy")
_REDUCTIONS = ("sum", "mean")


# ----------------------------------------------------------------------------------------------------------------
# The MLP (seed 000)
# ----------------------------------------------------------------------------------------------------------------


def _check_mlp_inputs(params, x, y, loss: str, reduction: str):
    if not isinstance(params, MLPParams):
        raise TypeError(f"params must be MLPParams (from jaxrnn.mlp.init), got {type(params).__name__}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    x = as_float_array(x, "x", min_rank=1, layout="[*batch, features]")
    if not hasattr(y, "dtype"):
        y = np.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if tuple(y.shape) != tuple(x.shape[:-1]):
        raise ValueError(
            f"y must have the batch shape of x, {shape_str(x.shape[:-1])} (one label per example), got "
            f"{shape_str(y.shape)}"
        )
    num_out = params.layers[-1].w.shape[-1]
    hi = num_out if loss == "squared_error" else num_out - 1
    if is_concrete(y) and np.size(y):
        values = np.asarray(y)
        lo_got, hi_got = int(values.min()), int(values.max())
        if lo_got < 0 or hi_got > hi:
            extra = f" ({num_out} sigmoid outputs score {num_out + 1} classes)" if loss == "squared_error" else ""
            raise ValueError(f"y must hold labels in [0, {hi}] for loss={loss!r}{extra}, got [{lo_got}, {hi_got}]")
    return x, jnp.asarray(y)


def _targets(y, num_out: int, dtype):
    """One-hot rows; label ``num_out`` (the implicit last class of the squared-error loss) is the zero row."""
    return jax.nn.one_hot(y, num_out, dtype=dtype)


def mlp_loss(params: MLPParams, x, y, *, loss: str = "squared_error", reduction: str = "sum") -> jax.Array:
    """The loss of :func:`jaxrnn.mlp.apply` on inputs ``x [*batch, in]`` and integer labels ``y [*batch]``.

    ``"squared_error"``: ``E = ½ Σ (t − σ(z))²`` with the targets described in the module docstring (class ``K``
    → zeros). ``"softmax_cross_entropy"``: ``E = −Σ log softmax(z)_y``. Summed over the batch, or averaged with
    ``reduction="mean"``. Returns a scalar.
    """
    x, y = _check_mlp_inputs(params, x, y, loss, reduction)
    hidden = hidden_activations(params, x)[-1]
    logits = add_bias(hidden @ params.layers[-1].w, params.layers[-1].b)
    num_out = logits.shape[-1]
    t = _targets(y, num_out, logits.dtype)
    if loss == "squared_error":
        per_example = 0.5 * jnp.sum((t - jax.nn.sigmoid(logits)) ** 2, axis=-1)
    else:
        per_example = -jnp.sum(t * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    total = jnp.sum(per_example)
    return total / max(int(np.prod(y.shape)), 1) if reduction == "mean" else total


def _act_grad_from_output(activation: str, a: jax.Array) -> jax.Array:
    """``act'(z)`` written in terms of ``a = act(z)``: σ → a(1 − a), tanh → 1 − a², relu → [a > 0]."""
    if activation == "sigmoid":
        return a * (1.0 - a)
    if activation == "tanh":
        return 1.0 - a * a
    if activation == "relu":
        return (a > 0).astype(a.dtype)
    raise ValueError(f"unknown activation {activation!r}")


def mlp_backprop(params: MLPParams, x, y, *, loss: str = "squared_error", reduction: str = "sum") -> MLPParams:
    """``∂E/∂params`` by seed 000's rule, layer by layer, as matrix code (see the module docstring).

    Same arguments as :func:`mlp_loss`; returns gradients as ``MLPParams`` (the params' own pytree type), equal to
    ``jax.grad(mlp_loss)(params, x, y, loss=loss, reduction=reduction)``.
    """
    x, y = _check_mlp_inputs(params, x, y, loss, reduction)
    acts = hidden_activations(params, x)  # [a_0 = x, a_1, ..., a_{L-1}], each [*batch, n_k]
    acts = [a.reshape(-1, a.shape[-1]) for a in acts]  # flatten the batch dims: [N, n_k]
    y = y.reshape(-1)
    last = params.layers[-1]
    logits = add_bias(acts[-1] @ last.w, last.b)  # z_L [N, K]
    t = _targets(y, logits.shape[-1], logits.dtype)
    if loss == "squared_error":
        p = jax.nn.sigmoid(logits)
        delta = (p - t) * p * (1.0 - p)  # dE/dp · dp/dz
    else:
        delta = jax.nn.softmax(logits, axis=-1) - t
    if reduction == "mean":
        delta = delta / max(y.shape[0], 1)
    grads = []
    for k in range(len(params.layers) - 1, -1, -1):
        layer, a_in = params.layers[k], acts[k]
        grads.append(type(layer)(w=a_in.T @ delta, b=jnp.sum(delta, axis=0)))  # dz/dw = a_{k-1}
        if k > 0:
            delta = (delta @ layer.w.T) * _act_grad_from_output(params.activation, a_in)
    return MLPParams(layers=tuple(reversed(grads)), activation=params.activation)


# ----------------------------------------------------------------------------------------------------------------
# Per-step VJPs of the cells
# ----------------------------------------------------------------------------------------------------------------
#
# Each cell has a "delta" function (params, carry, residuals, dcarry, dh) -> (da, du, dcarry_prev): da is the
# cotangent of the input-side pre-activations a = x W_x + b ([*batch, G*H]) and du that of the recurrent-side ones
# u = h W_h ([*batch, G*H]); they differ only for the GRU's n gate. Then dW_x = xᵀ da, dW_h = hᵀ du, db = Σ da,
# dx = da W_xᵀ. The reset-after GRU returns du's n block alone ([*batch, H]; its r and z blocks are da's), the
# projected LSTM its output's cotangent (for dW_hr). The fast path (jaxrnn.fastpath) uses the deltas directly, so
# that dW_x and dW_h become one matmul each over all steps, and passes ``w_h_t``: ``W_hᵀ`` made once before its
# loop (and ``w_hr_t``, see ``transposed_recurrent_weights``), so that each step's ``dh_prev = da W_hᵀ`` is a plain
# matmul.


class ElmanResiduals(NamedTuple):
    """What the Elman backward keeps from the forward: the new hidden state ``h' [*batch, H]``."""

    h: jax.Array


class GRUResiduals(NamedTuple):
    """What the GRU backward keeps: the gates ``r, z, n`` and ``hn``, each ``[*batch, H]``. Reset after: ``hn =
    h W_hn + b_hn``; reset before: ``hn = r ⊙ h``, the input of ``W_hn``."""

    r: jax.Array
    z: jax.Array
    n: jax.Array
    hn: jax.Array


def _contract(a: jax.Array, b: jax.Array, dtype=None) -> jax.Array:
    """``Σ_batch aᵀ b``: ``a [*lead, m]``, ``b [*lead, n]`` -> ``[m, n]`` (every leading dim summed)."""
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    out = jnp.matmul(a2.T, b2, preferred_element_type=_acc_dtype(a.dtype))
    return out.astype(dtype or a.dtype)


def _sum_lead(a: jax.Array, dtype=None) -> jax.Array:
    return jnp.sum(a.reshape(-1, a.shape[-1]), axis=0, dtype=_acc_dtype(a.dtype)).astype(dtype or a.dtype)


def _acc_dtype(dtype):
    """Accumulate half-precision sums in float32."""
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else dtype


def elman_forward(params: ElmanParams, carry: jax.Array, x: jax.Array):
    """One Elman step keeping residuals: ``h' = act(x W_x + h W_h + b)``; returns ``(h', h', ElmanResiduals(h'))``."""
    h, _ = _elman.step(params, carry, x)
    return h, h, ElmanResiduals(h=h)


def transposed_recurrent_weights(params) -> dict[str, jax.Array]:
    """The weights of a step's backward matmuls, transposed once, as the deltas' keyword arguments: ``w_h_t =
    W_hᵀ`` (``[G*H, H]``), and ``w_hr_t = W_hrᵀ`` for the LSTM with projections. Each sits behind an optimization
    barrier, which keeps XLA from folding the transpose back into every step's matmul: on XLA CPU, ``da @ W_hᵀ``
    with ``W_hᵀ`` laid out row-major ran the medium LSTM's and GRU's training steps 3–6% faster than the
    transposed-operand form (``benchmarks/README.md``, "The backward's W_hᵀ")."""
    weights = {"w_h_t": params.w_h.T}
    if isinstance(params, LSTMPParams):
        weights["w_hr_t"] = params.w_hr.T
    return lax.optimization_barrier(weights)


def _transposed(w, w_t):
    """``w_t`` (made beforehand by :func:`transposed_recurrent_weights`), else ``wᵀ``."""
    return w.T if w_t is None else w_t


def _elman_delta(params: ElmanParams, carry, res: ElmanResiduals, dcarry, dh, *, w_h_t=None):
    g = dcarry + dh
    if params.activation == "tanh":
        da = g * (1.0 - res.h * res.h)
    else:
        da = g * (res.h > 0).astype(g.dtype)
    return da, da, da @ _transposed(params.w_h, w_h_t)


def elman_step_vjp(params: ElmanParams, carry: jax.Array, x: jax.Array, residuals: ElmanResiduals, dcarry, dh):
    """VJP of one Elman step ``h' = act(a)``, ``a = x W_x + h W_h + b``, for cotangents ``dcarry`` (of the new carry
    ``h'``) and ``dh`` (of the output, also ``h'``), each ``[*batch, H]``::

        g  = dcarry + dh
        da = g ⊙ act'(a)          tanh: 1 − h'²     relu: [h' > 0]
        dW_x = Σ_batch xᵀ da      dW_h = Σ_batch hᵀ da      db = Σ_batch da
        dh_prev = da W_hᵀ         dx = da W_xᵀ

    Returns ``(ElmanParams of gradients, dh_prev [*batch, H], dx [*batch, D])``.
    """
    check_step_inputs(_elman.sizes, _elman.initial_state, params, carry, x, "elman")
    da, du, dcarry_prev = _elman_delta(params, carry, residuals, dcarry, dh)
    return _assemble(params, x, _hidden(carry), da, du), dcarry_prev, da @ params.w_x.T


def lstm_forward(params: LSTMParams | LSTMPParams, carry: LSTMState, x: jax.Array):
    """One LSTM step keeping residuals: returns ``(LSTMState(h', c'), h', LSTMGates(i, f, g, o, c'))``."""
    act = _lstm.gates(params, carry, x)
    h = _lstm.output(params, act)
    return LSTMState(h=h, c=act.c), h, act


def _lstm_delta(
    params, carry: LSTMState, res: LSTMGates, dcarry: LSTMState, dh, *, axis: int = -1, w_h_t=None, w_hr_t=None
):
    """``(da, du, dcarry_prev)`` of one step; ``axis`` is the feature axis (0: feature-major ``[4H, batch]``).
    ``du`` is ``da``, except with projections, where it is the cotangent of the projected output ``h'``
    (``[*batch, P]``), the one ``dW_hr`` needs. ``w_h_t``, ``w_hr_t``: ``W_hᵀ`` and ``W_hrᵀ`` made beforehand
    (:func:`transposed_recurrent_weights`; row-major only), else transposed here."""
    g_out = dcarry.h + dh
    projected = isinstance(params, LSTMPParams)
    g_h = g_out @ _transposed(params.w_hr, w_hr_t) if projected else g_out
    tc = jnp.tanh(res.c)
    d_o = g_h * tc
    dc = dcarry.c + g_h * res.o * (1.0 - tc * tc)
    d_i, d_g, d_f = dc * res.g, dc * res.i, dc * carry.c
    da = jnp.concatenate(
        [
            d_i * res.i * (1.0 - res.i),
            d_f * res.f * (1.0 - res.f),
            d_g * (1.0 - res.g * res.g),
            d_o * res.o * (1.0 - res.o),
        ],
        axis=axis,
    )
    dh_prev = params.w_h @ da if axis == 0 else da @ _transposed(params.w_h, w_h_t)
    return da, g_out if projected else da, LSTMState(h=dh_prev, c=dc * res.f)


def lstm_step_vjp(params, carry: LSTMState, x: jax.Array, residuals: LSTMGates, dcarry: LSTMState, dh):
    """VJP of one LSTM step (``c' = f c + i g``, ``h' = o tanh(c')``, gates from ``a = x W_x + h W_h + b``) for
    cotangents ``dcarry = LSTMState(dh', dc')`` and ``dh`` (of the output ``h'``), each ``[*batch, H]``::

        g_h = dcarry.h + dh
        do  = g_h ⊙ tanh(c')
        dc  = dcarry.c + g_h ⊙ o ⊙ (1 − tanh²(c'))         (total cotangent of c')
        di  = dc ⊙ g     df = dc ⊙ c     dg = dc ⊙ i
        da  = [di ⊙ i(1−i) | df ⊙ f(1−f) | dg ⊙ (1−g²) | do ⊙ o(1−o)]     [*batch, 4H]
        dW_x = Σ xᵀ da    dW_h = Σ hᵀ da    db = Σ da
        dh_prev = da W_hᵀ     dc_prev = dc ⊙ f     dx = da W_xᵀ

    With projections (:class:`~jaxrnn.LSTMPParams`, ``h' = m W_hr`` with ``m = o tanh(c')``; ``dcarry.h``, ``dh``
    and ``dh_prev`` are ``[*batch, P]``), the cotangent of ``m`` takes the place of ``g_h`` above::

        g = dcarry.h + dh       g_h = g W_hrᵀ       dW_hr = Σ mᵀ g

    Returns ``(params of gradients, LSTMState(dh_prev, dc_prev), dx [*batch, D])``.
    """
    check_step_inputs(_lstm.sizes, _lstm.initial_state, params, carry, x, "lstm")
    da, du, dcarry_prev = _lstm_delta(params, carry, residuals, dcarry, dh)
    extra = _extra_input(params, residuals)
    return _assemble(params, x, _hidden(carry), da, du, extra), dcarry_prev, da @ params.w_x.T


def gru_forward(params: GRUParams, carry: jax.Array, x: jax.Array):
    """One GRU step keeping residuals: returns ``(h', h', GRUResiduals(r, z, n, hn))``; ``hn = h W_hn + b_hn``
    (reset after) or ``r ⊙ h`` (reset before)."""
    check_step_inputs(_gru.sizes, _gru.initial_state, params, carry, x, "gru")
    hidden = params.w_h.shape[0]
    a = add_bias(x @ params.w_x, params.b)
    u = carry @ (params.w_h if params.reset_after else params.w_h[:, : 2 * hidden])
    act, hn = _gru.gate_activations(params, a, u, carry)
    h = (1.0 - act.z) * act.n + act.z * carry
    return h, h, GRUResiduals(r=act.r, z=act.z, n=act.n, hn=hn)


def _gru_delta(params: GRUParams, carry, res: GRUResiduals, dcarry, dh, *, w_h_t=None):
    hidden = params.w_h.shape[0]
    g = dcarry + dh
    dn_pre = g * (1.0 - res.z) * (1.0 - res.n * res.n)
    da_z = g * (carry - res.n) * res.z * (1.0 - res.z)
    w_h_t = _transposed(params.w_h, w_h_t)  # [3H, H]
    if not params.reset_after:
        ds = dn_pre @ w_h_t[2 * hidden :]
        da_rz = jnp.concatenate([ds * carry * res.r * (1.0 - res.r), da_z], axis=-1)
        da = jnp.concatenate([da_rz, dn_pre], axis=-1)
        return da, da, da_rz @ w_h_t[: 2 * hidden] + ds * res.r + g * res.z
    da_r = dn_pre * res.hn * res.r * (1.0 - res.r)
    dn_r = dn_pre * res.r
    da = jnp.concatenate([da_r, da_z, dn_pre], axis=-1)
    # du = [dâ_r | dâ_z | dn̂ ⊙ r] shares its first 2H columns with da: only its n block is returned (and stacked
    # over time by the fast path), which at B=64 T=200 H=512 saved 50 MiB of the training step's memory.
    return da, dn_r, jnp.concatenate([da_r, da_z, dn_r], axis=-1) @ w_h_t + g * res.z


def gru_step_vjp(params: GRUParams, carry: jax.Array, x: jax.Array, residuals: GRUResiduals, dcarry, dh):
    """VJP of one GRU step (``a = x W_x + b``, ``u = h W_h``, ``r = σ(a_r + u_r)``, ``z = σ(a_z + u_z)``,
    ``n = tanh(a_n + r ⊙ hn)`` with ``hn = u_n + b_hn``, ``h' = (1 − z) n + z h``) for cotangents ``dcarry`` and
    ``dh`` of ``h'``, each ``[*batch, H]``::

        g    = dcarry + dh
        dn̂   = g ⊙ (1 − z) ⊙ (1 − n²)                     (cotangent of n's pre-activation)
        dâ_r = dn̂ ⊙ hn ⊙ r(1 − r)      dâ_z = g ⊙ (h − n) ⊙ z(1 − z)
        da = [dâ_r | dâ_z | dn̂]        du = [dâ_r | dâ_z | dn̂ ⊙ r]     [*batch, 3H]
        dW_x = Σ xᵀ da    db = Σ da    dW_h = Σ hᵀ du    db_hn = Σ dn̂ ⊙ r
        dh_prev = du W_hᵀ + g ⊙ z       dx = da W_xᵀ

    Reset before (``b_hn`` None; ``n = tanh(a_n + s W_hn)`` with ``s = r ⊙ h``, kept as ``hn``)::

        ds   = dn̂ W_hnᵀ                 dâ_r = ds ⊙ h ⊙ r(1 − r)        dâ_z as above
        da = du = [dâ_r | dâ_z | dn̂]
        dW_h = [Σ hᵀ [dâ_r | dâ_z]  |  Σ sᵀ dn̂]
        dh_prev = [dâ_r | dâ_z] W_{h,rz}ᵀ + ds ⊙ r + g ⊙ z

    Returns ``(GRUParams of gradients, dh_prev [*batch, H], dx [*batch, D])``.
    """
    check_step_inputs(_gru.sizes, _gru.initial_state, params, carry, x, "gru")
    da, du, dcarry_prev = _gru_delta(params, carry, residuals, dcarry, dh)
    extra = _extra_input(params, residuals)
    return _assemble(params, x, _hidden(carry), da, du, extra), dcarry_prev, da @ params.w_x.T


def _extra_input(params, residuals):
    """The input of a recurrent weight other than ``h`` (stacked like ``residuals``): the reset-before GRU's
    ``r ⊙ h`` (``W_h``'s n block), the projected LSTM's ``m = o ⊙ tanh(c')`` (``W_hr``); None for every other
    cell."""
    if isinstance(params, GRUParams) and not params.reset_after:
        return residuals.hn
    if isinstance(params, LSTMPParams):
        return residuals.o * jnp.tanh(residuals.c)
    return None


def _hidden(carry):
    """The hidden state ``h`` that multiplies ``W_h``: the carry itself, or ``carry.h`` for the LSTM."""
    return carry.h if isinstance(carry, LSTMState) else carry


def _assemble(params, xs, hs, da, du, extra=None):
    """Parameter gradients from the deltas, every leading (time and batch) dim contracted in one matmul each.
    ``extra``: what multiplies ``W_h``'s n block where that is not ``hs``, or the projected LSTM's ``W_hr`` (see
    ``_extra_input``; ``du`` is then the projected output's cotangent)."""
    dtype = params.w_x.dtype
    d_wx, d_b = _contract(xs, da, dtype), _sum_lead(da, dtype)
    if isinstance(params, LSTMPParams):
        return LSTMPParams(w_x=d_wx, w_h=_contract(hs, da, dtype), b=d_b, w_hr=_contract(extra, du, dtype))
    if isinstance(params, GRUParams) and params.reset_after:  # du: the n block of [dâ_r | dâ_z | dn̂ ⊙ r] only
        hidden = params.w_h.shape[0]
        d_wh = jnp.concatenate([_contract(hs, da[..., : 2 * hidden], dtype), _contract(hs, du, dtype)], axis=-1)
        return GRUParams(w_x=d_wx, w_h=d_wh, b=d_b, b_hn=_sum_lead(du, dtype))
    if extra is None:
        d_wh = _contract(hs, du, dtype)
    else:
        split = du.shape[-1] - extra.shape[-1]
        d_wh = jnp.concatenate(
            [_contract(hs, du[..., :split], dtype), _contract(extra, du[..., split:], dtype)], axis=-1
        )
    if isinstance(params, ElmanParams):
        return ElmanParams(w_x=d_wx, w_h=d_wh, b=d_b, activation=params.activation)
    if isinstance(params, LSTMParams):
        return LSTMParams(w_x=d_wx, w_h=d_wh, b=d_b)
    return GRUParams(w_x=d_wx, w_h=d_wh, b=d_b, b_hn=None)


class StepRule(NamedTuple):
    """A built-in cell's hand-derived step: ``forward``, its VJP, and the deltas the fast path uses."""

    name: str
    forward: Callable[..., tuple[Any, jax.Array, Any]]
    step_vjp: Callable[..., tuple[Any, Any, jax.Array]]
    delta: Callable[..., tuple[jax.Array, jax.Array, Any]]


_RULES = {
    _elman.step: StepRule("elman", elman_forward, elman_step_vjp, _elman_delta),
    _lstm.step: StepRule("lstm", lstm_forward, lstm_step_vjp, _lstm_delta),
    _gru.step: StepRule("gru", gru_forward, gru_step_vjp, _gru_delta),
}


def step_rule(cell: Cell) -> StepRule | None:
    """The hand-derived rule of a built-in cell (``jaxrnn.elman``, ``lstm``, ``gru``), or None for a user cell."""
    if not isinstance(cell, Cell):
        return None
    return _RULES.get(cell.step)


# ----------------------------------------------------------------------------------------------------------------
# BPTT
# ----------------------------------------------------------------------------------------------------------------


def reset_carry(mark_t, carry):
    """The carry a step starts from: zeros (the built-in cells' initial state) where ``mark_t [*batch]`` (a segment
    start, from :func:`jaxrnn.driver.reset_marks`), else ``carry``; ``carry`` itself without marks."""
    return carry if mark_t is None else _where_valid(mark_t, jax.tree.map(jnp.zeros_like, carry), carry)


def cut_at_resets(vjp, mark_t):
    """``vjp(...) -> (*cotangents, dcarry_prev)`` with ``dcarry_prev`` zero where ``mark_t``: a reset replaced the
    carry there, so no gradient flows into the previous step. ``vjp`` itself without marks."""
    if mark_t is None:
        return vjp

    def cut(*args):
        *cotangents, dcarry_prev = vjp(*args)
        return (*cotangents, reset_carry(mark_t, dcarry_prev))

    return cut


def _masked_step(valid, new, old, y):
    """One step under ``lengths`` or a mask: where ``valid`` (broadcastable to ``y``) the new carry and ``y``, elsewhere the
    old carry and zeros."""
    return _where_valid(valid, new, old), jnp.where(valid, y, jnp.zeros_like(y))


def _masked_vjp(vjp, valid, dcarry, dy):
    """One step's ``vjp(dcarry, dy) -> (*cotangents, dcarry_prev)`` under ``lengths`` or a mask: where ``valid``
    (broadcastable to ``dy``) as is; elsewhere it sees zero cotangents, so its other outputs are zero, and
    ``dcarry`` passes through unchanged."""
    dy = jnp.where(valid, dy, jnp.zeros_like(dy))
    *cotangents, dcarry_prev = vjp(_where_valid(valid, dcarry, jax.tree.map(jnp.zeros_like, dcarry)), dy)
    return (*cotangents, _where_valid(valid, dcarry_prev, dcarry))


def forward_with_residuals(
    rule: StepRule,
    params,
    xs_tm,
    carry,
    lengths=None,
    *,
    reverse=False,
    unroll=1,
    pack: bool = False,
    mask=None,
    marks=None,
):
    """Run the cell over ``xs_tm [T, *batch, D]`` keeping, per step, the carry it started from and the residuals.

    Returns ``(final_carry, ys [T, *batch, H], kept)``: ``kept = (carries_prev, residuals)``, each a pytree stacked
    over time ``[T, ...]``, or with ``pack=True`` those leaves concatenated along their last axis into one
    ``[T, *batch, Σ widths]`` array (one write per step instead of one per leaf; the leaves must share dtype and
    batch shape). With ``lengths`` (or a step ``mask [T, *batch]``), masked steps (``t >= lengths``, or False in
    ``mask``) keep the carry and emit zeros, as :func:`jaxrnn.rnn` does. With ``marks [T, *batch]`` (segment
    starts, from :func:`jaxrnn.driver.reset_marks`) a marked step starts from zeros; ``carries_prev`` holds the
    carry each step actually started from.
    """
    times = jnp.arange(xs_tm.shape[0])

    def body(c, inputs):
        t, x, mask_t, mark_t = inputs
        c_in = reset_carry(mark_t, c)
        new_c, y, res = rule.forward(params, c_in, x)
        valid = step_validity(t, lengths, mask_t)
        if valid is not None:
            new_c, y = _masked_step(valid[..., None], new_c, c, y)
        kept = jnp.concatenate(jax.tree.leaves((c_in, res)), axis=-1) if pack else (c_in, res)
        return new_c, (y, kept)

    final, (ys, kept) = lax.scan(body, carry, (times, xs_tm, mask, marks), reverse=reverse, unroll=unroll)
    return final, ys, kept


def _check_cotangent(value, name: str, expected, hint: str):
    """``value`` as a pytree of arrays matching ``expected`` (ShapeDtypeStructs) in structure and shape."""

    def as_array(v):
        return as_float_array(v, name)

    value = jax.tree.map(as_array, value)
    check_tree_matches(value, expected, name, hint=hint)
    return jax.tree.map(lambda v, e: jnp.asarray(v, e.dtype), value, expected)


def bptt(
    cell: Cell,
    params,
    xs,
    carry0,
    dys,
    dcarry_T=None,
    *,
    lengths=None,
    mask=None,
    resets=None,
    time_major=False,
    reverse=False,
):
    """Backpropagation through time by hand: the exact VJP of ``jaxrnn.rnn(cell, params, xs, carry0, ...)``.

    With ``(final, ys) = rnn(cell, params, xs, carry0, lengths=..., mask=..., resets=..., reverse=..., time_major=...)``
    and a scalar ``L`` with ``∂L/∂ys = dys`` and ``∂L/∂final = dcarry_T``, returns ``(∂L/∂params, ∂L/∂xs,
    ∂L/∂carry0)``. One forward ``lax.scan`` keeps residuals; one reverse ``lax.scan`` runs the cell's step VJP
    (:func:`elman_step_vjp`, :func:`lstm_step_vjp`, :func:`gru_step_vjp`) from the last step to the first::

        dcarry_T given (zeros if None)
        for t = T-1 .. 0:   dparams_t, dcarry_{t-1}, dx_t = step_vjp(params, carry_{t-1}, x_t, res_t, dcarry_t, dy_t)
        dparams = Σ_t dparams_t

    With ``lengths`` or ``mask``, a masked step (``t >= lengths``, or False in ``mask``) passed the carry through and emitted zero, so its VJP passes
    ``dcarry`` through unchanged, ignores ``dy_t`` and contributes nothing to ``dparams`` and ``dx_t`` (zero).
    With ``resets``, a step that started from zeros passes no ``dcarry`` to the step before it. With
    ``reverse=True`` the forward ran from ``T-1`` to 0, so the backward runs from 0 to ``T-1``.

    Args:
      cell: a built-in cell (``jaxrnn.elman`` with tanh or relu, ``jaxrnn.lstm``, ``jaxrnn.gru``).
      params, xs, carry0, lengths, mask, resets, time_major, reverse: as for :func:`jaxrnn.rnn` (``carry0=None``:
        zeros).
      dys: cotangent of ``ys``, shape ``[*batch, T, H]`` (``[T, *batch, H]`` with ``time_major``).
      dcarry_T: cotangent of the final carry (the carry's structure, ``[*batch, H]`` leaves); None means zero.

    Returns:
      ``(dparams, dxs, dcarry0)``: the params' own type; ``dxs`` in the layout of ``xs``; ``dcarry0`` like the carry.
    """
    reverse = check_flag(reverse, "reverse")
    rule = step_rule(cell)
    if rule is None:
        name = getattr(cell, "name", type(cell).__name__)
        raise ValueError(
            f"cell must be a built-in cell (jaxrnn.elman, jaxrnn.lstm, jaxrnn.gru) to have a hand-derived VJP, got "
            f"{name!r}; for your own cells use jax.vjp(lambda p, x: jaxrnn.rnn(cell, p, x), params, xs)"
        )
    prep = prepare(cell, params, xs, carry0, lengths=lengths, time_major=time_major)
    num_steps, batch_shape = prep.xs.shape[0], prep.batch_shape
    hidden = params.w_h.shape[0]
    dtype = params.w_h.dtype
    ys_shape = (num_steps, *batch_shape, hidden) if time_major else (*batch_shape, num_steps, hidden)
    layout = "[time, *batch, H]" if time_major else "[*batch, time, H]"
    dys = as_float_array(dys, "dys", layout=layout)
    if tuple(dys.shape) != ys_shape:
        raise ValueError(f"dys must have the shape of ys, {shape_str(ys_shape)} ({layout}), got {shape_str(dys.shape)}")
    dys_tm = (dys if time_major else jnp.moveaxis(dys, -2, 0)).astype(dtype)
    expected_carry = jax.eval_shape(lambda c: c, prep.carry)
    if dcarry_T is None:
        dcarry_T = jax.tree.map(jnp.zeros_like, prep.carry)
    else:
        dcarry_T = _check_cotangent(
            dcarry_T, "dcarry_T", expected_carry, "It is the cotangent of the final carry, shaped like the carry."
        )
    lengths, mask_tm = _lengths_or_mask(prep, mask, time_major)
    marks = None
    if resets is not None:
        resets_tm = check_resets(resets, batch_shape, num_steps, time_major)
        marks = reset_marks(resets_tm, lengths, reverse=reverse, mask=mask_tm)
    dparams, dxs, dcarry0, _ = _bptt_scan(
        rule, params, prep.xs, prep.carry, dys_tm, dcarry_T, lengths, reverse, mask_tm, marks
    )
    return dparams, (dxs if time_major else jnp.moveaxis(dxs, 0, -2)), dcarry0


def _bptt_scan(rule, params, xs_tm, carry, dys_tm, dcarry_T, lengths, reverse, mask=None, marks=None):
    """The two scans of :func:`bptt` on validated time-major inputs. Returns ``(dparams, dxs_tm, dcarry0,
    dcarries)`` where ``dcarries[t]`` is the cotangent of the carry after step ``t`` (before adding ``dys[t]``)."""
    _, _, (carries, res) = forward_with_residuals(
        rule, params, xs_tm, carry, lengths, reverse=reverse, mask=mask, marks=marks
    )
    times = jnp.arange(xs_tm.shape[0])
    zero_params = jax.tree.map(jnp.zeros_like, params)

    def body(acc, inputs):
        dparams, dcarry = acc
        t, x, c, r, dy, mask_t, mark_t = inputs

        @partial(cut_at_resets, mark_t=mark_t)
        def vjp(dc, dy):
            dp, dcarry_prev, dx = rule.step_vjp(params, c, x, r, dc, dy)
            return dp, dx, dcarry_prev

        valid = step_validity(t, lengths, mask_t)
        if valid is None:
            dp, dx, dcarry_prev = vjp(dcarry, dy)
        else:
            dp, dx, dcarry_prev = _masked_vjp(vjp, valid[..., None], dcarry, dy)
        dparams = jax.tree.map(jnp.add, dparams, dp)
        return (dparams, dcarry_prev), (dx, dcarry)

    (dparams, dcarry0), (dxs, dcarries) = lax.scan(
        body, (zero_params, dcarry_T), (times, xs_tm, carries, res, dys_tm, mask, marks), reverse=not reverse
    )
    return dparams, dxs, dcarry0, dcarries
