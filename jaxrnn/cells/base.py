"""The ``Cell`` interface and what the built-in cells share.

A cell is a NamedTuple of pure functions, so that any recurrence, built in or your own, runs under
:func:`jaxrnn.rnn`, :func:`jaxrnn.stack` and the training code unchanged::

    params = cell.init(key, input_size, hidden_size)          # a params pytree (NamedTuple)
    carry = cell.initial_state(params, batch_shape=(B,))       # zeros, [B, H] per leaf
    carry, h = cell.step(params, carry, x)                     # x: [*batch, input_size] -> h: [*batch, H]

``step`` is a ``lax.scan`` body. ``sizes(params) -> (input_size, hidden_size)`` is optional: built-in cells give it,
and the drivers use it to validate params and inputs before tracing. A cell without it is validated by tracing one
``step`` abstractly (``jax.eval_shape``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_tree_matches, shape_str

__all__ = [
    "Cell",
    "add_bias",
    "default_dtype",
    "init_dtype",
    "fused_input_init",
    "fused_recurrent_init",
    "check_float_leaves",
    "fields_by_dtype",
    "check_fused_params",
    "check_batch_shape",
    "check_step_inputs",
]


class Cell(NamedTuple):
    """A recurrent cell: ``init``, ``initial_state`` and ``step`` as pure functions.

    Attributes:
      init: ``init(key, input_size, hidden_size, *, dtype=None, **options) -> params``.
      initial_state: ``initial_state(params, batch_shape=()) -> carry`` (zeros).
      step: ``step(params, carry, x) -> (carry, h)`` with ``x: [*batch, input_size]``, ``h: [*batch, H]``.
      sizes: optional ``sizes(params) -> (input_size, hidden_size)``; raises ``TypeError``/``ValueError`` for
        params that do not belong to this cell.
      name: a short name for messages and reprs.
    """

    init: Callable[..., Any]
    initial_state: Callable[..., Any]
    step: Callable[..., tuple[Any, jax.Array]]
    sizes: Callable[[Any], tuple[int, int]] | None = None
    name: str = "cell"

    def __repr__(self) -> str:
        return f"Cell({self.name})"


def add_bias(z: jax.Array, b: jax.Array) -> jax.Array:
    """``z [*batch, F] + b [F]`` with the broadcast spelled out (works under ``jax_numpy_rank_promotion="raise"``)."""
    return z + jnp.expand_dims(b, tuple(range(z.ndim - 1)))


def default_dtype(dtype=None) -> np.dtype:
    """``dtype`` if given (must be floating), else float64 under ``jax_enable_x64`` and float32 otherwise."""
    if dtype is None:
        return jax.dtypes.canonicalize_dtype(jnp.float64)
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    return dtype


def init_dtype(dtype) -> np.dtype:
    """The dtype to draw initial values in: float32 for half-precision dtypes (no QR in bfloat16), else ``dtype``."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def _check_size(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def fused_input_init(key, input_size: int, hidden_size: int, gates: int, dtype) -> jax.Array:
    """Glorot-uniform ``[D, G*H]`` input kernel (the Keras default, fan computed on the fused matrix)."""
    _check_size(input_size, "input_size")
    _check_size(hidden_size, "hidden_size")
    w = jax.nn.initializers.glorot_uniform()(key, (input_size, gates * hidden_size), init_dtype(dtype))
    return w.astype(dtype)


def fused_recurrent_init(key, hidden_size: int, gates: int, dtype) -> jax.Array:
    """``[H, G*H]`` recurrent kernel: one orthogonal ``[H, H]`` block per gate (Flax's choice; Keras
    orthogonalises the fused matrix, which for G > 1 leaves each gate's block only approximately orthogonal)."""
    keys = jax.random.split(key, gates)
    blocks = [jax.nn.initializers.orthogonal()(k, (hidden_size, hidden_size), init_dtype(dtype)) for k in keys]
    return jnp.concatenate(blocks, axis=1).astype(dtype)


def check_fused_params(params, cls: type, gates: int, cell_name: str, extra: dict[str, str] | None = None):
    """Validate a fused-gate params NamedTuple and return ``(input_size, hidden_size)``.

    Expected: ``w_x [D, G*H]``, ``w_h [H, G*H]``, ``b [G*H]``, plus each ``extra`` field of shape ``[H]``.
    """
    if not isinstance(params, cls):
        raise TypeError(
            f"params must be {cls.__name__} (made by jaxrnn.{cell_name}.init), got {type(params).__name__}. "
            f"Were these params made for another cell?"
        )
    w_x, w_h, b = (np.shape(params.w_x), np.shape(params.w_h), np.shape(params.b))
    if len(w_h) != 2 or w_h[1] != gates * w_h[0]:
        raise ValueError(f"{cls.__name__}.w_h must have shape [H, {gates}*H], got {shape_str(w_h)}")
    hidden = w_h[0]
    if len(w_x) != 2 or w_x[1] != gates * hidden:
        raise ValueError(
            f"{cls.__name__}.w_x must have shape [D, {gates * hidden}] for hidden size {hidden}, got {shape_str(w_x)}"
        )
    if b != (gates * hidden,):
        raise ValueError(f"{cls.__name__}.b must have shape [{gates * hidden}], got {shape_str(b)}")
    for field in extra or {}:
        got = np.shape(getattr(params, field))
        if got != (hidden,):
            raise ValueError(f"{cls.__name__}.{field} must have shape [{hidden}], got {shape_str(got)}")
    check_float_leaves(params)
    return w_x[0], hidden


def fields_by_dtype(params_list) -> dict[str, list[str]]:
    """The array fields of params NamedTuples grouped by dtype: ``{"float32": ["w_x", "w_h", "b"], ...}``, each
    field named once, in the order met."""
    fields: dict[str, list[str]] = {}
    for params in params_list:
        for name, leaf in zip(params._fields, params):
            names = fields.setdefault(str(np.dtype(leaf.dtype)), []) if hasattr(leaf, "dtype") else None
            if names is not None and name not in names:
                names.append(name)
    return fields


def check_float_leaves(params) -> None:
    """Raise ``TypeError`` unless every array leaf of the params NamedTuple is floating point, all of one dtype
    (mixed dtypes would change the carry's dtype from step to step, or give a gradient of another dtype)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not (hasattr(leaf, "dtype") and hasattr(leaf, "shape")):
            where = f"{type(params).__name__}{jax.tree_util.keystr(path)}"
            raise TypeError(f"{where} must be an array, got {type(leaf).__name__}")
    dtypes = {jnp.dtype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(params)}
    if any(not jnp.issubdtype(d, jnp.floating) for d in dtypes):
        raise TypeError(f"{type(params).__name__} leaves must be floating point, got dtypes {sorted(map(str, dtypes))}")
    if len(dtypes) > 1:
        shown = ", ".join(f"{dtype} ({', '.join(names)})" for dtype, names in sorted(fields_by_dtype([params]).items()))
        raise TypeError(
            f"{type(params).__name__} leaves must share one dtype, got {shown}; cast them together, e.g. "
            f"jax.tree.map(lambda a: a.astype(jnp.float32), params)"
        )


def check_batch_shape(batch_shape) -> tuple[int, ...]:
    """``batch_shape`` as a tuple of non-negative ints (``()`` for one unbatched sequence)."""
    if isinstance(batch_shape, (int, np.integer)) and not isinstance(batch_shape, bool):
        raise TypeError(f"batch_shape must be a tuple of ints, got the int {batch_shape!r}; pass ({batch_shape},)")
    try:
        dims = tuple(batch_shape)
    except TypeError:
        raise TypeError(f"batch_shape must be a tuple of ints, got {type(batch_shape).__name__}") from None
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0 for d in dims):
        raise ValueError(f"batch_shape must hold non-negative ints, got {batch_shape!r}")
    return tuple(int(d) for d in dims)


def check_step_inputs(sizes: Callable, initial_state: Callable, params, carry, x, cell_name: str) -> None:
    """Before a built-in cell's step is traced: valid ``params`` (``sizes``), ``x [*batch, D]`` with the params' ``D``
    and dtype, and a ``carry`` of the cell's structure with ``x``'s batch shape (no silent broadcast)."""
    input_size, _ = sizes(params)
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(f"x must be an array [*batch, {input_size}], got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != input_size:
        raise ValueError(
            f"x must be [*batch, {input_size}] (the {cell_name} params' input size), got shape {shape_str(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be floating point, got dtype {x.dtype}")
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    if x.dtype != dtype:
        raise TypeError(
            f"x must have the params' dtype {dtype} (else the carry would change dtype), got {x.dtype}: cast it, "
            f"x.astype(params.w_x.dtype); jaxrnn.rnn does that for you"
        )
    expected = jax.eval_shape(lambda p: initial_state(p, tuple(x.shape[:-1])), params)
    check_tree_matches(
        carry,
        expected,
        "carry",
        hint=f"A {cell_name} step takes the carry of x's batch shape {shape_str(x.shape[:-1])}: "
        f"{cell_name}.initial_state(params, batch_shape)",
    )
