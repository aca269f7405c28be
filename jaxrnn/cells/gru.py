"""The GRU cell, gates in the order **r, z, n**: "reset after" by default (PyTorch, cuDNN, Flax and Keras 3's
default), or "reset before" (Cho et al. 2014, the textbook form; Keras' ``reset_after=False``, Haiku's ``hk.GRU``).

Reset after (``init(..., reset_after=True)``, ``b_hn [H]``)::

    a = x W_x + b                a: [*batch, 3H] = a_r | a_z | a_n
    u = h W_h                    u: [*batch, 3H] = u_r | u_z | u_n
    r = σ(a_r + u_r)   z = σ(a_z + u_z)
    n = tanh(a_n + r·(u_n + b_hn))
    h' = (1 − z)·n + z·h

Reset before (``init(..., reset_after=False)``, ``b_hn = None``): the reset gate scales ``h`` before its matmul
with the n block of ``W_h``, so that matmul waits for ``r``::

    n = tanh(a_n + (r·h) W_hn)              W_hn = W_h[:, 2H:]

Shapes: ``w_x [D, 3H]``, ``w_h [H, 3H]``, ``b [3H]``, ``b_hn [H]`` or None. From PyTorch: ``b = [b_ir+b_hr,
b_iz+b_hz, b_in]`` and ``b_hn = b_hn`` (the recurrent n bias sits inside the reset product, so it cannot be folded
into ``b``). The two forms are different functions: neither converts to the other.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_flag, check_key
from jaxrnn.cells.base import (
    Cell,
    add_bias,
    check_batch_shape,
    check_fused_params,
    check_step_inputs,
    default_dtype,
    fused_input_init,
    fused_recurrent_init,
)

__all__ = ["GRUGates", "GRUParams", "cell", "gate_activations", "gates", "init", "initial_state", "sizes", "step"]


class GRUParams(NamedTuple):
    """GRU parameters; ``b_hn=None`` makes the reset-before GRU (see the module docstring)."""

    w_x: jax.Array  # [D, 3H], columns r | z | n
    w_h: jax.Array  # [H, 3H]
    b: jax.Array  # [3H]
    b_hn: jax.Array | None  # [H]; None: reset before

    @property
    def reset_after(self) -> bool:
        """True for the reset-after GRU (``b_hn`` an array), False for reset-before (``b_hn`` None)."""
        return self.b_hn is not None


class GRUGates(NamedTuple):
    """Every gate's activation at one step, each ``[*batch, H]``."""

    r: jax.Array
    z: jax.Array
    n: jax.Array


def init(key, input_size: int, hidden_size: int, *, dtype=None, reset_after: bool = True) -> GRUParams:
    """Glorot-uniform ``w_x``, per-gate orthogonal ``w_h``, zero biases; ``reset_after=False`` gives the
    reset-before GRU (``b_hn=None``)."""
    check_key(key)
    reset_after = check_flag(reset_after, "reset_after")
    dtype = default_dtype(dtype)
    k_x, k_h = jax.random.split(key)
    return GRUParams(
        w_x=fused_input_init(k_x, input_size, hidden_size, 3, dtype),
        w_h=fused_recurrent_init(k_h, hidden_size, 3, dtype),
        b=jnp.zeros((3 * hidden_size,), dtype),
        b_hn=jnp.zeros((hidden_size,), dtype) if reset_after else None,
    )


def sizes(params) -> tuple[int, int]:
    """``(input_size, hidden_size)``; raises if ``params`` are not valid GRU params."""
    extra = {"b_hn": "[H]"} if isinstance(params, GRUParams) and params.reset_after else None
    return check_fused_params(params, GRUParams, 3, "gru", extra=extra)


def initial_state(params: GRUParams, batch_shape=()) -> jax.Array:
    """Zeros ``[*batch_shape, H]``."""
    sizes(params)
    batch_shape = check_batch_shape(batch_shape)
    return jnp.zeros((*batch_shape, params.w_h.shape[0]), params.w_h.dtype)


def gates(params: GRUParams, carry: jax.Array, x: jax.Array) -> GRUGates:
    """The gate activations of one step."""
    check_step_inputs(sizes, initial_state, params, carry, x, "gru")
    hidden = params.w_h.shape[0]
    a = add_bias(x @ params.w_x, params.b)
    u = carry @ (params.w_h if params.reset_after else params.w_h[:, : 2 * hidden])
    return gate_activations(params, a, u, carry)[0]


def gate_activations(params: GRUParams, a: jax.Array, u: jax.Array, h: jax.Array, *, axis: int = -1):
    """The gates from the pre-activations ``a = x W_x + b`` (``[*batch, 3H]``, blocks r | z | n along ``axis``),
    ``u = h W_h`` (``[*batch, 3H]``; reset before: ``h W_h[:, :2H]``, ``[*batch, 2H]``) and the carry ``h``.
    ``axis=0`` is the feature-major layout (``[3H, n]``, ``h [H, n]``). Returns ``(GRUGates(r, z, n), hn)``, where
    ``hn = u_n + b_hn`` (reset after) or ``r ⊙ h``, the input of ``W_hn`` (reset before)."""
    if axis not in (0, -1):
        raise ValueError(f"axis must be -1 (features last) or 0 (features first), got {axis}")
    hidden = params.w_h.shape[0]
    a_r, a_z, a_n = jnp.split(a, 3, axis=axis)
    u_r, u_z, u_n = jnp.split(u, [hidden, 2 * hidden], axis=axis)  # u_n is empty for the reset-before GRU
    r = jax.nn.sigmoid(a_r + u_r)
    z = jax.nn.sigmoid(a_z + u_z)
    if params.reset_after:
        hn = u_n + params.b_hn[:, None] if axis == 0 else add_bias(u_n, params.b_hn)
        n = jnp.tanh(a_n + r * hn)
    else:
        hn = r * h
        w_hn = params.w_h[:, 2 * hidden :]
        n = jnp.tanh(a_n + (w_hn.T @ hn if axis == 0 else hn @ w_hn))
    return GRUGates(r=r, z=z, n=n), hn


def step(params: GRUParams, carry: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step; returns ``(h', h')`` with ``h' = (1 − z)·n + z·h``."""
    act = gates(params, carry, x)
    h = (1.0 - act.z) * act.n + act.z * carry
    return h, h


cell = Cell(init=init, initial_state=initial_state, step=step, sizes=sizes, name="gru")
