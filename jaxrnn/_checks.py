"""Input validation shared by the drivers: every check runs on static shapes and dtypes, before tracing.

Messages follow one pattern: the argument, the rule, what came, and (where there is one) the likely fix.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_array",
    "as_float_array",
    "concrete_range",
    "check_lengths",
    "check_mask",
    "check_resets",
    "check_finite",
    "check_finite_leaves",
    "check_flag",
    "check_key",
    "check_step_flags",
    "check_tree_matches",
    "is_concrete",
    "shape_str",
]


def shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_flag(value, name: str) -> bool:
    """``value`` as a Python bool; a ``TypeError`` naming ``name`` for anything but a bool (NumPy's included):
    a string such as ``"no"`` would otherwise count as True, and a traced array cannot choose a code path."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_key(key, name: str = "key") -> None:
    """A ``TypeError`` naming ``name`` unless ``key`` is one PRNG key: a typed key of shape ``()``
    (``jax.random.key``) or a raw ``uint32[2]`` (``jax.random.PRNGKey``)."""
    ok = hasattr(key, "dtype") and (
        (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and np.shape(key) == ())
        or (key.dtype == jnp.uint32 and tuple(np.shape(key)) == (2,))
    )
    if not ok:
        raise TypeError(
            f"{name} must be a single PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), got "
            f"{type(key).__name__}"
            + (f" of dtype {key.dtype} and shape {list(np.shape(key))}" if hasattr(key, "dtype") else "")
        )


def is_concrete(x) -> bool:
    """True when ``x`` holds values we can read on the host (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def concrete_range(x) -> tuple | None:
    """``(min, max)`` of ``x`` when its values can be read on the host, else None (under tracing)."""
    if not is_concrete(x) or not np.size(x):
        return None
    try:
        values = np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None
    return values.min().item(), values.max().item()


def check_finite(x, name: str, hint: str = "") -> None:
    """A ``ValueError`` naming ``name`` when the floating array ``x`` holds NaN or ±inf: how many, the first index
    and its value, then ``hint``. Integer arrays, and tracers (whose values are unknown), pass."""
    if not is_concrete(x) or not jnp.issubdtype(x.dtype, jnp.inexact) or not np.size(x):
        return
    values = np.asarray(x)
    bad = ~np.isfinite(values.astype(np.float64) if values.dtype == jnp.bfloat16 else values)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must be finite, got {int(bad.sum())} non-finite value(s) (NaN/inf) in shape "
            f"{shape_str(values.shape)}, the first at index {list(first)}: {values[first]}"
            + (f". {hint}" if hint else "")
        )


def check_finite_leaves(tree, name: str, *, host_only: bool = False, hint: str = "") -> None:
    """:func:`check_finite` on every array leaf of ``tree``, each named ``name`` plus its path (``batch[0]``,
    ``batch['x']``). ``host_only``: check NumPy arrays only and leave ``jax.Array`` leaves unread, so that a loop
    that calls this per step never waits for the device."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if host_only and not isinstance(leaf, np.ndarray):
            continue
        if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
            check_finite(leaf, name + jax.tree_util.keystr(path), hint)


def as_array(x, name: str):
    """``x`` if it is an array (anything with ``shape`` and ``dtype``), else ``np.asarray(x)``; either way not an
    object array (ragged input)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as err:  # noqa: BLE001 - re-raised with context
            raise TypeError(f"{name} must be an array, got {type(x).__name__}") from err
    if x.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got an object array (ragged input?)")
    return x


def as_float_array(x, name: str, *, min_rank: int = 0, layout: str = "") -> jax.Array:
    """``x`` as a JAX array, which must be floating point and of rank >= ``min_rank``."""
    x = as_array(x, name)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must be a floating-point array, got dtype {x.dtype}. Token ids go through an embedding "
            f"first (jaxrnn.embedding); numeric data can be cast with {name}.astype(jnp.float32)."
        )
    if x.ndim < min_rank:
        raise ValueError(
            f"{name} must have rank >= {min_rank}{' (' + layout + ')' if layout else ''}, "
            f"got shape {shape_str(x.shape)} (rank {x.ndim})"
        )
    return jnp.asarray(x)


def check_lengths(lengths, batch_shape: tuple[int, ...], num_steps: int, name: str = "lengths") -> jax.Array:
    """Validate per-sequence lengths: integer, shape ``batch_shape``, values in ``[0, num_steps]`` when concrete."""
    if not hasattr(lengths, "shape"):
        lengths = np.asarray(lengths)
    if not (jnp.issubdtype(lengths.dtype, jnp.integer)):
        raise TypeError(f"{name} must be an integer array, got dtype {lengths.dtype}")
    if tuple(lengths.shape) != tuple(batch_shape):
        raise ValueError(
            f"{name} must have the batch shape of xs, {shape_str(batch_shape)}, got {shape_str(lengths.shape)}"
        )
    bounds = concrete_range(lengths)
    if bounds is not None:
        lo, hi = bounds
        if lo < 0 or hi > num_steps:
            raise ValueError(
                f"{name} must lie in [0, {num_steps}] (the number of time steps), got values in [{lo}, {hi}]"
            )
    return jnp.asarray(lengths)


def check_step_flags(
    flags, name: str, meaning: str, batch_shape: tuple[int, ...], num_steps: int, time_major: bool
) -> jax.Array:
    """Validate per-step booleans (``resets``, ``mask``): boolean, shape ``[*batch, T]`` (``[T, *batch]`` when
    ``time_major``). ``meaning`` says what True stands for, for the dtype error. Returns them time-major."""
    if not hasattr(flags, "shape"):
        flags = np.asarray(flags)
    if flags.dtype != np.bool_:
        raise TypeError(
            f"{name} must be a boolean array (True {meaning}), got dtype {flags.dtype}; from numbers, pass e.g. "
            f"{name} != 0"
        )
    expected = (num_steps, *batch_shape) if time_major else (*batch_shape, num_steps)
    if tuple(flags.shape) != expected:
        layout = "[time, *batch]" if time_major else "[*batch, time]"
        raise ValueError(
            f"{name} must have shape {layout} = {shape_str(expected)} to match xs, got {shape_str(flags.shape)}"
        )
    flags = jnp.asarray(flags)
    return flags if time_major else jnp.moveaxis(flags, -1, 0)


def check_resets(resets, batch_shape: tuple[int, ...], num_steps: int, time_major: bool) -> jax.Array:
    """Validate segment-start marks ``[*batch, T]`` (``[T, *batch]`` when ``time_major``); returns them
    time-major."""
    return check_step_flags(resets, "resets", "where a new segment starts", batch_shape, num_steps, time_major)


def check_mask(mask, batch_shape: tuple[int, ...], num_steps: int, time_major: bool) -> jax.Array:
    """Validate a step mask ``[*batch, T]`` (``[T, *batch]`` when ``time_major``); returns it time-major."""
    return check_step_flags(mask, "mask", "at the steps to run, False at padding", batch_shape, num_steps, time_major)


def check_tree_matches(got: Any, expected: Any, name: str, hint: str = "") -> None:
    """Raise if pytree ``got`` differs from ``expected`` (arrays or ShapeDtypeStructs) in structure or shape."""
    got_struct = jax.tree_util.tree_structure(got)
    expected_struct = jax.tree_util.tree_structure(expected)
    if got_struct != expected_struct:
        raise ValueError(
            f"{name} has the wrong structure: expected {expected_struct}, got {got_struct}"
            + (f". {hint}" if hint else "")
        )
    got_leaves = jax.tree_util.tree_flatten_with_path(got)[0]
    expected_leaves = jax.tree_util.tree_leaves(expected)
    for (path, leaf), want in zip(got_leaves, expected_leaves):
        shape = tuple(np.shape(leaf))
        if shape != tuple(want.shape):
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} has shape {shape_str(shape)}, expected "
                f"{shape_str(want.shape)}" + (f". {hint}" if hint else "")
            )
