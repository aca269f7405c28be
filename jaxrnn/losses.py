"""Losses over padded sequences, on optax's per-example losses, and the many-to-one readout.

Padding is right padding described by ``lengths [*batch]``: step ``t`` is valid when ``t < lengths``. Every mean
here is over valid steps only, so padding neither adds to the loss nor dilutes it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxrnn._checks import check_lengths, shape_str

__all__ = ["last_valid", "masked_mean", "sequence_cross_entropy", "sequence_mask", "sequence_mse"]


def sequence_mask(lengths, num_steps: int, *, time_major: bool = False) -> jax.Array:
    """Boolean ``[*batch, T]`` (``[T, *batch]`` time-major): True at valid steps."""
    lengths = jnp.asarray(lengths)
    mask = jnp.arange(num_steps).reshape((1,) * lengths.ndim + (num_steps,)) < lengths[..., None]
    return jnp.moveaxis(mask, -1, 0) if time_major else mask


def masked_mean(values: jax.Array, lengths=None, *, time_major: bool = False) -> jax.Array:
    """Mean of per-step ``values [*batch, T]`` over valid steps (all steps when ``lengths`` is None).

    Returns 0 when no step is valid.
    """
    values = jnp.asarray(values)
    if lengths is None:  # no steps at all (T = 0) is "no step valid" too
        return jnp.sum(values) / max(values.size, 1)
    time_axis = 0 if time_major else -1
    num_steps = values.shape[time_axis]
    batch_shape = values.shape[1:] if time_major else values.shape[:-1]
    lengths = check_lengths(lengths, tuple(batch_shape), num_steps)
    mask = sequence_mask(lengths, num_steps, time_major=time_major)
    total = jnp.sum(jnp.where(mask, values, 0.0))
    return total / jnp.maximum(jnp.sum(mask), 1)


def sequence_cross_entropy(logits: jax.Array, labels: jax.Array, lengths=None, *, time_major=False) -> jax.Array:
    """Softmax cross-entropy ``logits [*batch, T, C]`` vs integer ``labels [*batch, T]``, mean over valid steps."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"labels must have shape logits.shape[:-1] = {shape_str(logits.shape[:-1])}, got {shape_str(labels.shape)}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
    per_step = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return masked_mean(per_step, lengths, time_major=time_major)


def sequence_mse(predictions: jax.Array, targets: jax.Array, lengths=None, *, time_major=False) -> jax.Array:
    """Mean squared error ``[*batch, T, F]`` vs ``[*batch, T, F]``, mean over features and valid steps."""
    if predictions.shape != targets.shape:
        raise ValueError(
            f"targets must have the shape of predictions {shape_str(predictions.shape)}, got {shape_str(targets.shape)}"
        )
    per_step = jnp.mean(optax.squared_error(predictions, targets), axis=-1)
    return masked_mean(per_step, lengths, time_major=time_major)


def last_valid(ys: jax.Array, lengths=None, *, time_major: bool = False) -> jax.Array:
    """The output at each sequence's last valid step: ``ys [*batch, T, H] -> [*batch, H]`` (many-to-one).

    Without ``lengths`` this is ``ys[..., -1, :]``; a sequence of length 0 (or ``T = 0``) gives zeros.
    """
    ys = jnp.asarray(ys)
    if ys.ndim < 2:
        raise ValueError(f"ys must have rank >= 2, got shape {shape_str(ys.shape)}")
    if time_major:
        ys = jnp.moveaxis(ys, 0, -2)
    if lengths is None:
        return ys[..., -1, :] if ys.shape[-2] else jnp.zeros(ys.shape[:-2] + ys.shape[-1:], ys.dtype)
    num_steps = ys.shape[-2]
    lengths = check_lengths(lengths, tuple(ys.shape[:-2]), num_steps)
    index = jnp.clip(lengths - 1, 0, num_steps - 1)[..., None, None]
    picked = jnp.take_along_axis(ys, index, axis=-2)[..., 0, :]
    return jnp.where((lengths > 0)[..., None], picked, jnp.zeros_like(picked))
