"""The Elman (vanilla) RNN cell of seeds 001 and 004.

    h_t = act(x_t W_x + h_{t-1} W_h + b),   act = tanh (default) or relu

Shapes: ``x [*batch, D]``, ``h [*batch, H]``, ``w_x [D, H]``, ``w_h [H, H]``, ``b [H]``. The same model as PyTorch
``nn.RNN`` (with ``b = b_ih + b_hh``) and Keras ``SimpleRNN``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._checks import check_key
from jaxrnn._pytree import static_fields
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

__all__ = ["ACTIVATIONS", "ElmanParams", "cell", "init", "initial_state", "sizes", "step"]

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


@static_fields("activation")
class ElmanParams(NamedTuple):
    """Elman parameters. ``activation`` is static configuration, not a leaf."""

    w_x: jax.Array  # [D, H]
    w_h: jax.Array  # [H, H]
    b: jax.Array  # [H]
    activation: str = "tanh"


def init(key, input_size: int, hidden_size: int, *, dtype=None, activation: str = "tanh") -> ElmanParams:
    """Glorot-uniform ``w_x``, orthogonal ``w_h``, zero ``b``."""
    check_key(key)
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    dtype = default_dtype(dtype)
    k_x, k_h = jax.random.split(key)
    return ElmanParams(
        w_x=fused_input_init(k_x, input_size, hidden_size, 1, dtype),
        w_h=fused_recurrent_init(k_h, hidden_size, 1, dtype),
        b=jnp.zeros((hidden_size,), dtype),
        activation=activation,
    )


def sizes(params) -> tuple[int, int]:
    """``(input_size, hidden_size)``; raises if ``params`` are not valid Elman params."""
    result = check_fused_params(params, ElmanParams, 1, "elman")
    if not isinstance(params.activation, str) or params.activation not in ACTIVATIONS:
        raise ValueError(f"ElmanParams.activation must be one of {sorted(ACTIVATIONS)}, got {params.activation!r}")
    return result


def initial_state(params: ElmanParams, batch_shape=()) -> jax.Array:
    """Zeros ``[*batch_shape, H]``."""
    sizes(params)
    batch_shape = check_batch_shape(batch_shape)
    return jnp.zeros((*batch_shape, params.w_h.shape[0]), params.w_h.dtype)


def step(params: ElmanParams, carry: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One step: ``h' = act(x w_x + h w_h + b)``; returns ``(h', h')``."""
    check_step_inputs(sizes, initial_state, params, carry, x, "elman")
    h = ACTIVATIONS[params.activation](add_bias(x @ params.w_x + carry @ params.w_h, params.b))
    return h, h


cell = Cell(init=init, initial_state=initial_state, step=step, sizes=sizes, name="elman")
