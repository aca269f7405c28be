"""Losses over padded sequences, on optax's per-example losses, and the many-to-one readout.

Padding is right padding described by ``lengths [*batch]`` (step ``t`` is valid when ``t < lengths``), or padding
anywhere described by a boolean ``mask [*batch, T]`` (True at valid steps), as for :func:`jaxrnn.rnn`; with both,
a step is valid when both allow it. Every mean here is over valid steps only, so padding neither adds to the loss
nor dilutes it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn._checks import as_array, check_flag, check_lengths, check_mask, is_concrete, shape_str

__all__ = ["last_valid", "masked_mean", "sequence_cross_entropy", "sequence_mask", "sequence_mse", "valid_steps"]


PADDINGS = ("post", "pre")


def sequence_mask(lengths, num_steps: int, *, padding: str = "post", time_major: bool = False) -> jax.Array:
    """Boolean ``[*batch, T]`` (``[T, *batch]`` time-major): True at the ``lengths`` valid steps of each sequence,
    the first ones with ``padding="post"`` (right padding, ``t < lengths``), the last ones with ``padding="pre"``
    (left padding, Keras' ``pad_sequences`` default: ``t >= T - lengths``). The ``"pre"`` mask goes to
    :func:`jaxrnn.rnn` as ``mask=``."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    time_major = check_flag(time_major, "time_major")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative integer, got {num_steps!r}")
    lengths = check_lengths(lengths, np.shape(lengths), int(num_steps))
    steps = jnp.arange(num_steps).reshape((1,) * lengths.ndim + (num_steps,))
    mask = steps < lengths[..., None] if padding == "post" else steps >= num_steps - lengths[..., None]
    return jnp.moveaxis(mask, -1, 0) if time_major else mask


def valid_steps(lengths, mask, batch_shape, num_steps: int, *, time_major: bool = False) -> jax.Array | None:
    """Boolean ``[*batch, T]`` (``[T, *batch]`` time-major) from ``lengths`` and/or ``mask``, both checked against
    ``batch_shape`` and ``num_steps``; None when both are None (every step valid)."""
    valid = None
    if lengths is not None:
        lengths = check_lengths(lengths, tuple(batch_shape), num_steps)
        valid = sequence_mask(lengths, num_steps, time_major=time_major)
    if mask is not None:
        mask_tm = check_mask(mask, tuple(batch_shape), num_steps, time_major)
        mask = mask_tm if time_major else jnp.moveaxis(mask_tm, 0, -1)
        valid = mask if valid is None else valid & mask
    return valid


def masked_mean(values: jax.Array, lengths=None, *, mask=None, time_major: bool = False) -> jax.Array:
    """Mean of per-step ``values [*batch, T]`` over valid steps (all steps when ``lengths`` and ``mask`` are None).

    Returns 0 when no step is valid.
    """
    values = jnp.asarray(values)
    time_major = check_flag(time_major, "time_major")
    if lengths is None and mask is None:  # no steps at all (T = 0) is "no step valid" too
        return jnp.sum(values) / max(values.size, 1)
    if values.ndim < 1:
        raise ValueError("values must have rank >= 1 ([*batch, T]) to take lengths or mask, got a scalar")
    time_axis = 0 if time_major else -1
    num_steps = values.shape[time_axis]
    batch_shape = values.shape[1:] if time_major else values.shape[:-1]
    valid = valid_steps(lengths, mask, batch_shape, num_steps, time_major=time_major)
    total = jnp.sum(jnp.where(valid, values, 0.0))
    return total / jnp.maximum(jnp.sum(valid), 1)


def sequence_cross_entropy(
    logits: jax.Array, labels: jax.Array, lengths=None, *, mask=None, time_major=False
) -> jax.Array:
    """Softmax cross-entropy ``logits [*batch, T, C]`` vs integer ``labels [*batch, T]``, mean over valid steps."""
    logits, labels = as_array(logits, "logits"), as_array(labels, "labels")
    if logits.ndim < 2:
        raise ValueError(f"logits must have rank >= 2 ([*batch, T, C]), got shape {shape_str(logits.shape)}")
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"labels must have shape logits.shape[:-1] = {shape_str(logits.shape[:-1])}, got {shape_str(labels.shape)}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
    _check_label_range(labels, logits.shape[-1], lengths, mask, time_major)
    per_step = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return masked_mean(per_step, lengths, mask=mask, time_major=time_major)


def _check_label_range(labels, num_classes: int, lengths, mask, time_major) -> None:
    """When the labels (and ``lengths``/``mask``) hold values, every label at a valid step must lie in
    ``[0, num_classes)``: optax gives NaN for any other. Padded steps may hold anything (e.g. -1), as they are
    masked out. Under ``jit`` nothing is checked."""
    if not all(is_concrete(a) for a in (labels, lengths, mask) if a is not None):
        return
    time_axis = 0 if check_flag(time_major, "time_major") else -1
    num_steps = labels.shape[time_axis]
    batch_shape = labels.shape[1:] if time_axis == 0 else labels.shape[:-1]
    valid = valid_steps(lengths, mask, batch_shape, num_steps, time_major=time_major)
    values = np.asarray(labels) if valid is None else np.asarray(labels)[np.asarray(valid)]
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) (the number of classes, logits' last axis) at valid steps, got "
            f"values in [{values.min()}, {values.max()}]"
        )


def sequence_mse(predictions: jax.Array, targets: jax.Array, lengths=None, *, mask=None, time_major=False) -> jax.Array:
    """Mean squared error ``[*batch, T, F]`` vs ``[*batch, T, F]``, mean over features and valid steps."""
    predictions, targets = as_array(predictions, "predictions"), as_array(targets, "targets")
    if predictions.ndim < 1:
        raise ValueError("predictions must have rank >= 1 ([*batch, T, F]), got a scalar")
    if predictions.shape != targets.shape:
        raise ValueError(
            f"targets must have the shape of predictions {shape_str(predictions.shape)}, got {shape_str(targets.shape)}"
        )
    per_step = jnp.mean(optax.squared_error(predictions, targets), axis=-1)
    return masked_mean(per_step, lengths, mask=mask, time_major=time_major)


def last_valid(ys: jax.Array, lengths=None, *, mask=None, time_major: bool = False) -> jax.Array:
    """The output at each sequence's last valid step: ``ys [*batch, T, H] -> [*batch, H]`` (many-to-one).

    Without ``lengths`` and ``mask`` this is ``ys[..., -1, :]``; with ``mask``, the output at the last True step
    (for left padding, the last step). A sequence with no valid step (or ``T = 0``) gives zeros.
    """
    ys = jnp.asarray(ys)
    if ys.ndim < 2:
        raise ValueError(f"ys must have rank >= 2, got shape {shape_str(ys.shape)}")
    if check_flag(time_major, "time_major"):
        ys = jnp.moveaxis(ys, 0, -2)
    num_steps = ys.shape[-2]
    if mask is not None:
        valid = valid_steps(lengths, mask, ys.shape[:-2], num_steps, time_major=time_major)
        valid = jnp.moveaxis(valid, 0, -1) if time_major else valid
        if not num_steps:
            return jnp.zeros(ys.shape[:-2] + ys.shape[-1:], ys.dtype)
        steps = jnp.arange(num_steps, dtype=jnp.int32)
        index = jnp.max(jnp.where(valid, steps, -1), axis=-1, initial=-1)
        picked = jnp.take_along_axis(ys, jnp.clip(index, 0, num_steps - 1)[..., None, None], axis=-2)
        return jnp.where((index >= 0)[..., None], picked[..., 0, :], jnp.zeros_like(picked[..., 0, :]))
    if lengths is None:
        return ys[..., -1, :] if ys.shape[-2] else jnp.zeros(ys.shape[:-2] + ys.shape[-1:], ys.dtype)
    lengths = check_lengths(lengths, tuple(ys.shape[:-2]), num_steps)
    index = jnp.clip(lengths - 1, 0, num_steps - 1)[..., None, None]
    picked = jnp.take_along_axis(ys, index, axis=-2)[..., 0, :]
    return jnp.where((lengths > 0)[..., None], picked, jnp.zeros_like(picked))
