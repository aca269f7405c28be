"""Feed-forward pieces around the recurrent core: a dense readout, an embedding lookup, dropout.

Each is a :class:`Module` ``(init, apply)`` of pure functions, like the cells::

    head = jaxrnn.dense.init(key, hidden_size, num_classes)       # DenseParams(w [H, C], b [C])
    logits = jaxrnn.dense.apply(head, ys)                         # [*batch, H] -> [*batch, C]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import as_float_array, check_key, concrete_range, shape_str
from jaxrnn.cells.base import add_bias, check_float_leaves, default_dtype, init_dtype

__all__ = [
    "DenseParams",
    "EmbeddingParams",
    "Module",
    "check_dense_params",
    "check_rate",
    "dense",
    "dropout",
    "embedding",
]


class Module(NamedTuple):
    """A parameterised function as a pair of pure functions."""

    init: Callable
    apply: Callable


class DenseParams(NamedTuple):
    w: jax.Array  # [in, out]
    b: jax.Array  # [out]


class EmbeddingParams(NamedTuple):
    table: jax.Array  # [vocab_size, features]


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def dense_init(key, input_size: int, output_size: int, *, dtype=None, init: str = "glorot") -> DenseParams:
    """``w [in, out]`` (Glorot-uniform, or ``init="he"`` for ReLU, ``"lecun"``), ``b`` zeros."""
    check_key(key)
    _positive(input_size, "input_size")
    _positive(output_size, "output_size")
    makers = {
        "glorot": jax.nn.initializers.glorot_uniform(),
        "he": jax.nn.initializers.he_normal(),
        "lecun": jax.nn.initializers.lecun_normal(),
    }
    if init not in makers:
        raise ValueError(f"init must be one of {sorted(makers)}, got {init!r}")
    dtype = default_dtype(dtype)
    w = makers[init](key, (input_size, output_size), init_dtype(dtype)).astype(dtype)
    return DenseParams(w=w, b=jnp.zeros((output_size,), dtype))


def check_dense_params(params, name: str = "params") -> None:
    """``params`` (named ``name`` in messages) must be :class:`DenseParams` with ``w [in, out]`` and ``b [out]``."""
    if not isinstance(params, DenseParams):
        raise TypeError(f"{name} must be DenseParams (from jaxrnn.dense.init), got {type(params).__name__}")
    w, b = np.shape(params.w), np.shape(params.b)
    if len(w) != 2 or b != w[1:]:
        raise ValueError(f"{name} must be DenseParams(w [in, out], b [out]), got w {shape_str(w)}, b {shape_str(b)}")


def dense_apply(params: DenseParams, x) -> jax.Array:
    """``x w + b``: ``[*batch, in] -> [*batch, out]``."""
    check_dense_params(params)
    check_float_leaves(params)
    x = as_float_array(x, "x", min_rank=1)
    if x.shape[-1] != params.w.shape[0]:
        raise ValueError(
            f"x has {x.shape[-1]} features (shape {shape_str(x.shape)}), dense params expect {params.w.shape[0]}"
        )
    return add_bias(x @ params.w, params.b)


def embedding_init(key, vocab_size: int, features: int, *, dtype=None) -> EmbeddingParams:
    """``table [vocab_size, features]`` drawn from N(0, 1) (PyTorch's and Flax's default)."""
    check_key(key)
    _positive(vocab_size, "vocab_size")
    _positive(features, "features")
    dtype = default_dtype(dtype)
    return EmbeddingParams(table=jax.random.normal(key, (vocab_size, features), init_dtype(dtype)).astype(dtype))


def embedding_apply(params: EmbeddingParams, ids) -> jax.Array:
    """Look up rows: ``ids [*batch]`` integers in ``[0, vocab_size)`` -> ``[*batch, features]``.

    Concrete ids out of range raise ``ValueError``; under ``jit`` they give NaN rows (``mode="fill"``), which the
    training step's non-finite guard catches, rather than a silently clamped row.
    """
    if not isinstance(params, EmbeddingParams):
        raise TypeError(f"params must be EmbeddingParams (from jaxrnn.embedding.init), got {type(params).__name__}")
    check_float_leaves(params)
    if np.ndim(params.table) != 2:
        raise ValueError(
            f"EmbeddingParams.table must be [vocab_size, features], got {shape_str(np.shape(params.table))}"
        )
    if not hasattr(ids, "dtype"):
        ids = np.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"ids must be integer token ids, got dtype {ids.dtype}")
    vocab = params.table.shape[0]
    bounds = concrete_range(ids)
    if bounds is not None:
        lo, hi = bounds
        if lo < 0 or hi >= vocab:
            raise ValueError(f"ids must lie in [0, {vocab}) (the vocabulary size), got values in [{lo}, {hi}]")
    ids = jnp.asarray(ids)
    ids = jnp.where(ids < 0, vocab, ids)  # take() would count a negative id from the end: make it out of range
    return jnp.take(params.table, ids, axis=0, mode="fill", fill_value=jnp.nan)


def check_rate(rate, name: str = "rate") -> float:
    """``rate`` as a float in ``[0, 1)``: a Python or NumPy number, fixed when the function is traced."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1) (a static setting, not an array), got {rate!r}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {rate!r}")
    return float(rate)


def dropout(key, x: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout: zero each element with probability ``rate``, scale the rest by ``1 / (1 - rate)``.

    ``x`` is any floating array; ``rate`` a number in ``[0, 1)`` (static under ``jit``)."""
    rate = check_rate(rate)
    x = as_float_array(x, "x")
    if rate == 0.0:
        return x
    check_key(key)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


dense = Module(init=dense_init, apply=dense_apply)
embedding = Module(init=embedding_init, apply=embedding_apply)
