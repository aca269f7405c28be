"""The multi-layer perceptron of seed 000 and its relatives.

    a_0 = x,   a_k = act(a_{k-1} W_k + b_k)  for hidden layers k = 1..L-1,   logits = a_{L-1} W_L + b_L

``apply`` returns the output layer's pre-activations (logits). Seed 000's network is
``init(key, [4, 10, 2], activation="sigmoid")`` read through a sigmoid: ``jax.nn.sigmoid(apply(params, x))``, with the
third class's score ``1 − sum`` of the two outputs (see :mod:`jaxrnn.analytic`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import as_float_array, check_key, shape_str
from jaxrnn._pytree import static_fields
from jaxrnn.cells.base import add_bias
from jaxrnn.layers import DenseParams, check_dense_params, dense_init

__all__ = ["ACTIVATIONS", "MLPParams", "apply", "check_params", "hidden_activations", "init"]

ACTIVATIONS = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu}


@static_fields("activation")
class MLPParams(NamedTuple):
    """One ``DenseParams(w [in, out], b [out])`` per layer; ``activation`` (static) acts on the hidden layers."""

    layers: tuple[DenseParams, ...]
    activation: str = "sigmoid"


def init(key, sizes, *, activation: str = "sigmoid", dtype=None) -> MLPParams:
    """``sizes = [in, hidden..., out]`` (at least two). Glorot-uniform weights (He-normal for relu), zero biases."""
    check_key(key)
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a list of layer sizes [in, hidden..., out], got {type(sizes).__name__}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output size, got {sizes}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    keys = jax.random.split(key, len(sizes) - 1)
    scheme = "he" if activation == "relu" else "glorot"
    layers = tuple(
        dense_init(k, n_in, n_out, dtype=dtype, init=scheme) for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])
    )
    return MLPParams(layers=layers, activation=activation)


def check_params(params) -> None:
    """Shapes and settings of ``params``, before any tracing: a known activation, at least one layer, each layer's
    ``w [in, out]`` and ``b [out]``, and each layer's ``in`` the previous layer's ``out``."""
    if not isinstance(params, MLPParams):
        raise TypeError(f"params must be MLPParams (from jaxrnn.mlp.init), got {type(params).__name__}")
    if params.activation not in ACTIVATIONS:
        raise ValueError(f"params.activation must be one of {sorted(ACTIVATIONS)}, got {params.activation!r}")
    if not isinstance(params.layers, (tuple, list)) or not params.layers:
        raise ValueError(f"params.layers must be a non-empty tuple of DenseParams, got {params.layers!r}")
    for i, layer in enumerate(params.layers):
        check_dense_params(layer, f"params.layers[{i}]")
        if i and np.shape(layer.w)[0] != np.shape(params.layers[i - 1].w)[1]:
            raise ValueError(
                f"params.layers[{i}].w takes {np.shape(layer.w)[0]} inputs, the layer before gives "
                f"{np.shape(params.layers[i - 1].w)[1]}"
            )


def hidden_activations(params: MLPParams, x) -> list[jax.Array]:
    """``[a_0 = x, a_1, ..., a_{L-1}]``: the input and every hidden layer's activations."""
    check_params(params)
    x = as_float_array(x, "x", min_rank=1)
    if x.shape[-1] != params.layers[0].w.shape[0]:
        raise ValueError(
            f"x has {x.shape[-1]} features (shape {shape_str(x.shape)}), the MLP expects {params.layers[0].w.shape[0]}"
        )
    act = ACTIVATIONS[params.activation]
    activations = [x.astype(params.layers[0].w.dtype)]
    for layer in params.layers[:-1]:
        activations.append(act(add_bias(activations[-1] @ layer.w, layer.b)))
    return activations


def apply(params: MLPParams, x) -> jax.Array:
    """Logits ``[*batch, out]`` for inputs ``x [*batch, in]``."""
    hidden = hidden_activations(params, x)[-1]
    last = params.layers[-1]
    return add_bias(hidden @ last.w, last.b)
