"""The GRU cell, "reset after" (PyTorch, cuDNN and Keras' default), gates in the order **r, z, n**.

    a = x W_x + b                a: [*batch, 3H] = a_r | a_z | a_n
    u = h W_h                    u: [*batch, 3H] = u_r | u_z | u_n
    r = σ(a_r + u_r)   z = σ(a_z + u_z)
    n = tanh(a_n + r·(u_n + b_hn))
    h' = (1 − z)·n + z·h

Shapes: ``w_x [D, 3H]``, ``w_h [H, 3H]``, ``b [3H]``, ``b_hn [H]``. From PyTorch: ``b = [b_ir+b_hr, b_iz+b_hz,
b_in]`` and ``b_hn = b_hn`` (the recurrent n bias sits inside the reset product, so it cannot be folded into ``b``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Cell, add_bias, check_fused_params, default_dtype, fused_input_init, fused_recurrent_init

__all__ = ["GRUGates", "GRUParams", "cell", "gates", "init", "initial_state", "sizes", "step"]


class GRUParams(NamedTuple):
    w_x: jax.Array  # [D, 3H], columns r | z | n
    w_h: jax.Array  # [H, 3H]
    b: jax.Array  # [3H]
    b_hn: jax.Array  # [H]


class GRUGates(NamedTuple):
    """Every gate's activation at one step, each ``[*batch, H]``."""

    r: jax.Array
    z: jax.Array
    n: jax.Array


def init(key, input_size: int, hidden_size: int, *, dtype=None) -> GRUParams:
    """Glorot-uniform ``w_x``, per-gate orthogonal ``w_h``, zero biases."""
    dtype = default_dtype(dtype)
    k_x, k_h = jax.random.split(key)
    return GRUParams(
        w_x=fused_input_init(k_x, input_size, hidden_size, 3, dtype),
        w_h=fused_recurrent_init(k_h, hidden_size, 3, dtype),
        b=jnp.zeros((3 * hidden_size,), dtype),
        b_hn=jnp.zeros((hidden_size,), dtype),
    )


def sizes(params) -> tuple[int, int]:
    """``(input_size, hidden_size)``; raises if ``params`` are not valid GRU params."""
    return check_fused_params(params, GRUParams, 3, "gru", extra={"b_hn": "[H]"})


def initial_state(params: GRUParams, batch_shape=()) -> jax.Array:
    """Zeros ``[*batch_shape, H]``."""
    return jnp.zeros((*batch_shape, params.w_h.shape[0]), params.w_h.dtype)


def gates(params: GRUParams, carry: jax.Array, x: jax.Array) -> GRUGates:
    """The gate activations of one step."""
    a_r, a_z, a_n = jnp.split(add_bias(x @ params.w_x, params.b), 3, axis=-1)
    u_r, u_z, u_n = jnp.split(carry @ params.w_h, 3, axis=-1)
    r = jax.nn.sigmoid(a_r + u_r)
    z = jax.nn.sigmoid(a_z + u_z)
    n = jnp.tanh(a_n + r * add_bias(u_n, params.b_hn))
    return GRUGates(r=r, z=z, n=n)


def step(params: GRUParams, carry: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step; returns ``(h', h')`` with ``h' = (1 − z)·n + z·h``."""
    act = gates(params, carry, x)
    h = (1.0 - act.z) * act.n + act.z * carry
    return h, h


cell = Cell(init=init, initial_state=initial_state, step=step, sizes=sizes, name="gru")
