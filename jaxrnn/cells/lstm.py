"""The LSTM cell of seed 001, gates in the order **i, f, g, o** (PyTorch, Keras and Flax use the same order).

    z = x W_x + h W_h + b                       z: [*batch, 4H], split into z_i, z_f, z_g, z_o
    i = σ(z_i)   f = σ(z_f)   g = tanh(z_g)   o = σ(z_o)
    c' = f·c + i·g                             the additive cell-state path that keeps gradients alive
    h' = o·tanh(c')

Shapes: ``w_x [D, 4H]``, ``w_h [H, 4H]``, ``b [4H]``; the carry is ``LSTMState(h, c)``, each ``[*batch, H]``
(Flax orders its carry ``(c, h)``; ours is named, so the order cannot be confused).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Cell, add_bias, check_fused_params, default_dtype, fused_input_init, fused_recurrent_init

__all__ = [
    "LSTMGates",
    "LSTMParams",
    "LSTMState",
    "cell",
    "gate_activations",
    "gates",
    "init",
    "initial_state",
    "sizes",
    "step",
]


class LSTMParams(NamedTuple):
    w_x: jax.Array  # [D, 4H], columns i | f | g | o
    w_h: jax.Array  # [H, 4H]
    b: jax.Array  # [4H]


class LSTMState(NamedTuple):
    h: jax.Array  # [*batch, H] hidden state (the output)
    c: jax.Array  # [*batch, H] cell state


class LSTMGates(NamedTuple):
    """Every gate's activation at one step, each ``[*batch, H]``; ``c`` is the new cell state."""

    i: jax.Array
    f: jax.Array
    g: jax.Array
    o: jax.Array
    c: jax.Array


def init(key, input_size: int, hidden_size: int, *, dtype=None, forget_bias: float = 1.0) -> LSTMParams:
    """Glorot-uniform ``w_x``, per-gate orthogonal ``w_h``, zero ``b`` except ``forget_bias`` on the f block.

    ``forget_bias=1.0`` is Keras' ``unit_forget_bias`` and the right start for long dependencies
    (Jozefowicz et al. 2015); 0.0 gives PyTorch's and Flax's zero bias.
    """
    dtype = default_dtype(dtype)
    k_x, k_h = jax.random.split(key)
    b = jnp.zeros((4 * hidden_size,), dtype).at[hidden_size : 2 * hidden_size].set(forget_bias)
    return LSTMParams(
        w_x=fused_input_init(k_x, input_size, hidden_size, 4, dtype),
        w_h=fused_recurrent_init(k_h, hidden_size, 4, dtype),
        b=b,
    )


def sizes(params) -> tuple[int, int]:
    """``(input_size, hidden_size)``; raises if ``params`` are not valid LSTM params."""
    return check_fused_params(params, LSTMParams, 4, "lstm")


def initial_state(params: LSTMParams, batch_shape=()) -> LSTMState:
    """``LSTMState(h=0, c=0)``, each ``[*batch_shape, H]``."""
    zeros = jnp.zeros((*batch_shape, params.w_h.shape[0]), params.w_h.dtype)
    return LSTMState(h=zeros, c=zeros)


def gates(params: LSTMParams, carry: LSTMState, x: jax.Array) -> LSTMGates:
    """The gate activations of one step (the seed's walk-through, as arrays).

    ``z = [x, h] [W_x; W_h] + b``: one matmul on the concatenated input, as in seed 001's walk-through. On XLA CPU
    this runs the forward pass up to 2.5x faster than two matmuls at small sizes (``benchmarks/``).
    """
    xh = jnp.concatenate([x, carry.h.astype(x.dtype)], axis=-1)
    z = add_bias(xh @ jnp.concatenate([params.w_x, params.w_h], axis=0), params.b)
    return gate_activations(z, carry.c)


def gate_activations(z: jax.Array, c: jax.Array, *, axis: int = -1) -> LSTMGates:
    """The gates and new cell state from the pre-activations ``z`` (``[*batch, 4H]``; blocks i | f | g | o along
    ``axis``) and the previous cell state ``c``."""
    z_i, z_f, z_g, z_o = jnp.split(z, 4, axis=axis)
    i, f, g, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)
    return LSTMGates(i=i, f=f, g=g, o=o, c=f * c + i * g)


def step(params: LSTMParams, carry: LSTMState, x: jax.Array) -> tuple[LSTMState, jax.Array]:
    """One step; returns ``(LSTMState(h', c'), h')``."""
    act = gates(params, carry, x)
    h = act.o * jnp.tanh(act.c)
    return LSTMState(h=h, c=act.c), h


cell = Cell(init=init, initial_state=initial_state, step=step, sizes=sizes, name="lstm")
