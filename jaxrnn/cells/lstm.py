"""The LSTM cell of seed 001, gates in the order **i, f, g, o** (PyTorch, Keras and Flax use the same order).

    z = x W_x + h W_h + b                       z: [*batch, 4H], split into z_i, z_f, z_g, z_o
    i = σ(z_i)   f = σ(z_f)   g = tanh(z_g)   o = σ(z_o)
    c' = f·c + i·g                             the additive cell-state path that keeps gradients alive
    h' = o·tanh(c')

Shapes: ``w_x [D, 4H]``, ``w_h [H, 4H]``, ``b [4H]``; the carry is ``LSTMState(h, c)``, each ``[*batch, H]``
(Flax orders its carry ``(c, h)``; ours is named, so the order cannot be confused).

With projections (``init(..., proj_size=P)``, Sak et al. 2014; PyTorch's ``nn.LSTM(proj_size=P)``), the params are
:class:`LSTMPParams` and the output is projected to ``P < H`` features before it returns as the recurrent input::

    h' = (o·tanh(c')) W_hr                     W_hr: [H, P]; w_h: [P, 4H]; h: [*batch, P]; c: [*batch, H]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_key, shape_str
from jaxrnn.cells.base import (
    Cell,
    add_bias,
    check_batch_shape,
    check_float_leaves,
    check_fused_params,
    check_step_inputs,
    default_dtype,
    fused_input_init,
    fused_recurrent_init,
    init_dtype,
)

__all__ = [
    "LSTMGates",
    "LSTMPParams",
    "LSTMParams",
    "LSTMState",
    "cell",
    "gate_activations",
    "gates",
    "init",
    "initial_state",
    "output",
    "sizes",
    "step",
]


class LSTMParams(NamedTuple):
    w_x: jax.Array  # [D, 4H], columns i | f | g | o
    w_h: jax.Array  # [H, 4H]
    b: jax.Array  # [4H]


class LSTMPParams(NamedTuple):
    """An LSTM with projections (``lstm.init(..., proj_size=P)``): the hidden state and output have ``P`` features,
    the cell state ``H``."""

    w_x: jax.Array  # [D, 4H], columns i | f | g | o
    w_h: jax.Array  # [P, 4H]
    b: jax.Array  # [4H]
    w_hr: jax.Array  # [H, P], the projection h' = (o·tanh(c')) W_hr

    @property
    def proj_size(self) -> int:
        return self.w_hr.shape[1]


class LSTMState(NamedTuple):
    h: jax.Array  # [*batch, H] hidden state (the output); [*batch, P] with projections
    c: jax.Array  # [*batch, H] cell state


class LSTMGates(NamedTuple):
    """Every gate's activation at one step, each ``[*batch, H]``; ``c`` is the new cell state."""

    i: jax.Array
    f: jax.Array
    g: jax.Array
    o: jax.Array
    c: jax.Array


def init(
    key, input_size: int, hidden_size: int, *, dtype=None, forget_bias: float = 1.0, proj_size: int | None = None
) -> LSTMParams | LSTMPParams:
    """Glorot-uniform ``w_x``, per-gate orthogonal ``w_h``, zero ``b`` except ``forget_bias`` on the f block.

    ``forget_bias=1.0`` is Keras' ``unit_forget_bias`` and the right start for long dependencies
    (Jozefowicz et al. 2015); 0.0 gives PyTorch's and Flax's zero bias.

    ``proj_size=P`` (``0 < P < hidden_size``, PyTorch's rule) gives :class:`LSTMPParams`: ``w_h [P, 4H]`` with
    orthonormal rows in each gate's ``[P, H]`` block and a Glorot-uniform ``w_hr [H, P]``.
    """
    check_key(key)
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float, np.integer, np.floating)):
        raise TypeError(f"forget_bias must be a real number, got {type(forget_bias).__name__} {forget_bias!r}")
    if not np.isfinite(forget_bias):
        raise ValueError(f"forget_bias must be finite, got {forget_bias!r}")
    dtype = default_dtype(dtype)
    k_x, k_h = jax.random.split(key)
    w_x = fused_input_init(k_x, input_size, hidden_size, 4, dtype)
    b = jnp.zeros((4 * hidden_size,), dtype).at[hidden_size : 2 * hidden_size].set(forget_bias)
    if proj_size is None:
        return LSTMParams(w_x=w_x, w_h=fused_recurrent_init(k_h, hidden_size, 4, dtype), b=b)
    if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
        raise TypeError(f"proj_size must be an int or None, got {type(proj_size).__name__}")
    if not 0 < proj_size < hidden_size:
        raise ValueError(f"proj_size must lie in (0, hidden_size={hidden_size}), got {proj_size}")
    proj_size = int(proj_size)
    k_h, k_r = jax.random.split(k_h)
    orthogonal = jax.nn.initializers.orthogonal()
    blocks = [orthogonal(k, (proj_size, hidden_size), init_dtype(dtype)) for k in jax.random.split(k_h, 4)]
    w_h = jnp.concatenate(blocks, axis=1).astype(dtype)
    w_hr = jax.nn.initializers.glorot_uniform()(k_r, (hidden_size, proj_size), init_dtype(dtype)).astype(dtype)
    return LSTMPParams(w_x=w_x, w_h=w_h, b=b, w_hr=w_hr)


def sizes(params) -> tuple[int, int]:
    """``(input_size, hidden_size)``; raises if ``params`` are not valid LSTM params (with or without
    projections; ``hidden_size`` is the cell state's ``H``, ``params.proj_size`` the output's ``P``)."""
    if not isinstance(params, LSTMPParams):
        return check_fused_params(params, LSTMParams, 4, "lstm")
    w_x, w_h, b, w_hr = (np.shape(leaf) for leaf in params)
    if len(w_hr) != 2 or not 0 < w_hr[1] < w_hr[0]:
        raise ValueError(f"LSTMPParams.w_hr must have shape [H, P] with 0 < P < H, got {shape_str(w_hr)}")
    hidden, proj = w_hr
    for name, got, want in (("w_h", w_h, (proj, 4 * hidden)), ("b", b, (4 * hidden,))):
        if got != want:
            raise ValueError(
                f"LSTMPParams.{name} must have shape {shape_str(want)} for H={hidden}, P={proj} (from w_hr), "
                f"got {shape_str(got)}"
            )
    if len(w_x) != 2 or w_x[1] != 4 * hidden:
        raise ValueError(f"LSTMPParams.w_x must have shape [D, {4 * hidden}] for H={hidden}, got {shape_str(w_x)}")
    check_float_leaves(params)
    return w_x[0], hidden


def initial_state(params: LSTMParams | LSTMPParams, batch_shape=()) -> LSTMState:
    """``LSTMState(h=0, c=0)``, each ``[*batch_shape, H]`` (``h`` ``[*batch_shape, P]`` with projections)."""
    sizes(params)
    batch_shape = check_batch_shape(batch_shape)
    dtype = params.w_h.dtype
    h = jnp.zeros((*batch_shape, params.w_h.shape[0]), dtype)
    c = jnp.zeros((*batch_shape, params.w_h.shape[1] // 4), dtype)
    return LSTMState(h=h, c=c)


def gates(params: LSTMParams, carry: LSTMState, x: jax.Array) -> LSTMGates:
    """The gate activations of one step (the seed's walk-through, as arrays).

    ``z = [x, h] [W_x; W_h] + b``: one matmul on the concatenated input, as in seed 001's walk-through. On XLA CPU
    this runs the forward pass up to 2.5x faster than two matmuls at small sizes (``benchmarks/``).
    """
    check_step_inputs(sizes, initial_state, params, carry, x, "lstm")
    xh = jnp.concatenate([x, carry.h.astype(x.dtype)], axis=-1)
    z = add_bias(xh @ jnp.concatenate([params.w_x, params.w_h], axis=0), params.b)
    return gate_activations(z, carry.c)


def gate_activations(z: jax.Array, c: jax.Array, *, axis: int = -1) -> LSTMGates:
    """The gates and new cell state from the pre-activations ``z`` (``[*batch, 4H]``; blocks i | f | g | o along
    ``axis``) and the previous cell state ``c``."""
    z_i, z_f, z_g, z_o = jnp.split(z, 4, axis=axis)
    i, f, g, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)
    return LSTMGates(i=i, f=f, g=g, o=o, c=f * c + i * g)


def output(params: LSTMParams | LSTMPParams, act: LSTMGates) -> jax.Array:
    """The new hidden state from a step's gates: ``h' = o·tanh(c')``, times ``W_hr`` with projections."""
    h = act.o * jnp.tanh(act.c)
    return h @ params.w_hr if isinstance(params, LSTMPParams) else h


def step(params: LSTMParams | LSTMPParams, carry: LSTMState, x: jax.Array) -> tuple[LSTMState, jax.Array]:
    """One step; returns ``(LSTMState(h', c'), h')``."""
    act = gates(params, carry, x)
    h = output(params, act)
    return LSTMState(h=h, c=act.c), h


cell = Cell(init=init, initial_state=initial_state, step=step, sizes=sizes, name="lstm")
