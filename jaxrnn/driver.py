"""The sequence driver: runs any :class:`~jaxrnn.Cell` over a sequence with ``lax.scan``.

``rnn(cell, params, xs)`` is the one entry point; stacks, bidirectional layers and the training code build on it.
Layouts: ``xs`` is ``[*batch, time, D]`` (batch-major, the default) or ``[time, *batch, D]`` with
``time_major=True``; any number of batch dims (including none) works.

Variable lengths (right padding): with ``lengths [*batch]``, step ``t`` of a sequence is valid when
``t < lengths``. Invalid steps leave the carry unchanged and emit exact zeros, so ``final_carry`` is the state after
each sequence's last valid step. With ``reverse=True`` the scan runs from ``t = T-1`` down to 0 and the same mask
makes each sequence start at its own last valid step ``lengths-1``: each sequence is read backwards within its own
length, and its outputs stay aligned with its inputs.

Segments (episode boundaries): with ``resets [*batch, T]`` booleans, ``resets[..., t]`` marks step ``t`` as the
first step of a new segment, so the recurrence does not cross from ``t-1`` to ``t``: running forward, the carry is
reset to ``cell.initial_state`` (zeros) before step ``t``; running in reverse, before step ``t-1`` (the step the
reversed scan reaches next). Each segment is then computed exactly as if it were a sequence of its own, in either
direction, which is what a bidirectional layer over concatenated episodes needs (Haiku's ``ResetCore``, forward only).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrnn._checks import (
    as_float_array,
    check_flag,
    check_lengths,
    check_mask,
    check_resets,
    check_step_flags,
    check_tree_matches,
    shape_str,
)
from jaxrnn.cells.base import Cell

__all__ = [
    "Prepared",
    "batch_mesh",
    "match_varying",
    "prepare",
    "reset_marks",
    "rnn",
    "scan_cell",
    "step_input",
    "sum_to_varying",
    "truncated_rnn",
]


class Prepared(NamedTuple):
    """Validated driver inputs, time-major: ``xs [T, *batch, D]``, ``carry`` (batch ``batch_shape``),
    ``lengths [*batch]`` or None."""

    xs: jax.Array
    carry: Any
    lengths: jax.Array | None
    batch_shape: tuple[int, ...]


def _check_cell(cell) -> None:
    if not isinstance(cell, Cell):
        raise TypeError(
            f"cell must be a jaxrnn.Cell (e.g. jaxrnn.lstm, or Cell(init, initial_state, step)), got "
            f"{type(cell).__name__}"
        )


def prepare(cell: Cell, params, xs, carry=None, *, lengths=None, time_major: bool = False) -> Prepared:
    """Validate the inputs of :func:`rnn` on static shapes (before tracing) and bring ``xs`` to time-major.

    Raises ``TypeError``/``ValueError`` naming the argument for: a non-Cell, params of another cell or of mixed
    dtypes, a wrong feature size, ``xs`` that is not floating point or has rank < 2, a carry whose batch or
    structure does not match, ``lengths`` of the wrong shape or (when concrete) outside ``[0, T]``, a
    ``time_major`` that is not a bool.
    """
    _check_cell(cell)
    time_major = check_flag(time_major, "time_major")
    layout = "[time, *batch, features]" if time_major else "[*batch, time, features]"
    xs = as_float_array(xs, "xs", min_rank=2, layout=layout)
    if time_major:
        num_steps, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
        xs_tm = xs
    else:
        num_steps, batch_shape = xs.shape[-2], tuple(xs.shape[:-2])
        xs_tm = jnp.moveaxis(xs, -2, 0)

    if cell.sizes is not None:
        input_size, _ = cell.sizes(params)
        if xs.shape[-1] != input_size:
            raise ValueError(
                f"xs has {xs.shape[-1]} features (last axis of shape {shape_str(xs.shape)}), but the {cell.name} "
                f"params expect input_size={input_size}"
            )
        param_dtype = jax.tree_util.tree_leaves(params)[0].dtype
        if xs_tm.dtype != param_dtype:
            xs_tm = xs_tm.astype(param_dtype)

    expected = jax.eval_shape(lambda p: cell.initial_state(p, batch_shape), params)
    if carry is None:
        carry = cell.initial_state(params, batch_shape)
    else:
        _check_carry(carry, expected, batch_shape)
        carry = jax.tree.map(lambda c, e: jnp.asarray(c, e.dtype), carry, expected)

    if cell.sizes is None:
        _check_user_step(cell, params, carry, step_input(xs_tm))

    if lengths is not None:
        lengths = check_lengths(lengths, batch_shape, num_steps)
    return Prepared(xs=xs_tm, carry=carry, lengths=lengths, batch_shape=batch_shape)


def check_time_major_scan(cell: Cell, params, xs_tm, carry, lengths=None, *, mask=None, marks=None, unroll=1) -> None:
    """The inputs of the lower-level scans (:func:`jaxrnn.fastpath.analytic_scan`, :mod:`jaxrnn.feature_major`),
    checked as :func:`rnn` checks its own: ``xs_tm [T, *batch, D]`` in the params' dtype, a ``carry`` (required)
    of the cell's structure and ``xs_tm``'s batch shape, ``lengths``, ``mask`` and ``marks`` (segment starts)
    ``[T, *batch]``, and ``unroll``."""
    if carry is None:
        raise ValueError("carry is required here (cell.initial_state(params, batch_shape) for zeros)")
    prep = prepare(cell, params, xs_tm, carry, lengths=lengths, time_major=True)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    if jnp.result_type(xs_tm) != dtype:
        raise TypeError(f"xs_tm must have the params' dtype {dtype}, got {jnp.result_type(xs_tm)}")
    for name, flags in (("mask", mask), ("marks", marks)):
        if flags is not None:
            check_step_flags(flags, name, "per step", prep.batch_shape, prep.xs.shape[0], time_major=True)
    resolve_unroll(unroll)


def _check_carry(carry, expected, batch_shape) -> None:
    got_leaves = jax.tree_util.tree_leaves(carry)
    if jax.tree_util.tree_structure(carry) == jax.tree_util.tree_structure(expected):
        for got, want in zip(got_leaves, jax.tree_util.tree_leaves(expected)):
            got_batch = tuple(jnp.shape(got))[: len(batch_shape)]
            if jnp.ndim(got) == len(want.shape) and got_batch != batch_shape:
                raise ValueError(
                    f"carry has batch shape {shape_str(got_batch)} but xs has batch shape {shape_str(batch_shape)}"
                    f" (carry leaf shape {shape_str(jnp.shape(got))}, expected {shape_str(want.shape)})"
                )
    check_tree_matches(carry, expected, "carry", hint="Make it with cell.initial_state(params, batch_shape).")
    for path, leaf in jax.tree_util.tree_flatten_with_path(carry)[0]:
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"carry{jax.tree_util.keystr(path)} must be floating point (it is cast to the params' dtype), got "
                f"dtype {dtype}"
            )


def step_input(xs_tm) -> jax.ShapeDtypeStruct:
    """One step's input ``x [*batch, D]`` of ``xs_tm [T, *batch, D]``, abstractly: ``xs_tm[0]`` fails at T = 0."""
    return jax.ShapeDtypeStruct(xs_tm.shape[1:], xs_tm.dtype)


def _check_user_step(cell: Cell, params, carry, x) -> None:
    """Trace one step abstractly so that a user cell's shape errors surface here, with context."""
    try:
        out = jax.eval_shape(cell.step, params, carry, x)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"{cell.name}.step failed on one step of xs (x shape {shape_str(x.shape)}, dtype {x.dtype}); "
            f"check that params and carry fit the input: {err}"
        ) from err
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"{cell.name}.step must return (carry, output), got {type(out).__name__}")
    new_carry = out[0]
    check_tree_matches(new_carry, carry, f"the carry returned by {cell.name}.step")
    for got, want in zip(jax.tree_util.tree_leaves(new_carry), jax.tree_util.tree_leaves(carry)):
        if got.dtype != want.dtype:
            raise TypeError(
                f"{cell.name}.step changed a carry leaf's dtype from {want.dtype} to {got.dtype}; cast xs or the "
                f"params so that the carry keeps its dtype"
            )


def _where_valid(valid: jax.Array, new, old):
    """Per leaf: ``new`` where ``valid`` (shape ``[*batch]``, broadcast over trailing dims), else ``old``."""

    def pick(n, o):
        mask = valid.reshape(valid.shape + (1,) * (n.ndim - valid.ndim))
        return jnp.where(mask, n, o)

    return jax.tree.map(pick, new, old)


def step_validity(t, lengths, mask_t):
    """Which sequences run step ``t``: ``mask_t [*batch]`` (this step's row of a step mask) when given, else
    ``t < lengths``; None when every step runs."""
    if mask_t is not None:
        return mask_t
    return None if lengths is None else t < lengths


def _varying_axes(x) -> frozenset:
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10
    if manual is not None:
        return frozenset(manual.varying)
    return frozenset(getattr(aval, "vma", ()))  # jax 0.6 - 0.9


def match_varying(tree, *like):
    """``tree`` with each leaf marked as varying over every ``shard_map`` mesh axis that any leaf of ``like`` varies
    over (``jax.lax.pcast(..., to="varying")``). Inside ``shard_map`` a ``lax.scan`` needs its initial carry to vary
    like the carry its body returns: a default zero carry does not vary, a step on batch-sharded ``xs`` does. A
    no-op outside ``shard_map``."""
    axes = set()
    for leaf in jax.tree.leaves(like):
        axes |= _varying_axes(leaf)
    if not axes:
        return tree

    def cast(x):
        missing = tuple(sorted(axes - _varying_axes(x)))
        return lax.pcast(x, missing, to="varying") if missing else x

    return jax.tree.map(cast, tree)


def sum_to_varying(cotangent, primal):
    """The transpose of :func:`match_varying`: each leaf of ``cotangent`` summed (``lax.psum``) over the
    ``shard_map`` axes it varies over and the matching leaf of ``primal`` does not, as a custom VJP must return
    for a replicated input (the parameters) used on sharded data."""

    def reduce(ct, x):
        extra = tuple(sorted(_varying_axes(ct) - _varying_axes(x)))
        return lax.psum(ct, extra) if extra else ct

    return jax.tree.map(reduce, cotangent, primal)


def scan_cell(
    step,
    params,
    xs_tm,
    carry,
    lengths=None,
    *,
    reverse=False,
    unroll=1,
    t_offset=0,
    marks=None,
    reset_carry=None,
    mask=None,
):
    """The scan itself, on validated time-major inputs: ``step(params, carry, x)`` over ``xs_tm [T, *batch, D]``.

    A step is valid when ``t < lengths`` (``lengths [*batch]``) or where ``mask [T, *batch]`` is True (one or the
    other, not both); an invalid step keeps the carry and emits zeros (``ys`` may be any pytree). ``t_offset`` is the absolute time of
    ``xs_tm[0]`` (for chunked runs), used only with ``lengths``. ``marks [T, *batch]`` (from :func:`reset_marks`,
    in the scan's own direction) replace the carry by ``reset_carry`` before each marked step. Returns
    ``(final_carry, ys [T, *batch, H])``.
    """
    if lengths is None and marks is None and mask is None:
        return lax.scan(lambda c, x: step(params, c, x), carry, xs_tm, reverse=reverse, unroll=unroll)

    def body(c, inputs):
        t, x, mark, valid = inputs
        c_in = c if mark is None else _where_valid(mark, reset_carry, c)
        new_c, y = step(params, c_in, x)
        valid = step_validity(t, lengths, valid)
        if valid is None:
            return new_c, y
        return _where_valid(valid, new_c, c), _where_valid(valid, y, jax.tree.map(jnp.zeros_like, y))

    times = t_offset + jnp.arange(xs_tm.shape[0])
    return lax.scan(body, carry, (times, xs_tm, marks, mask), reverse=reverse, unroll=unroll)


def reset_marks(resets_tm, lengths=None, *, reverse=False, mask=None):
    """Where a scan resets its carry, from segment starts ``resets_tm [T, *batch]`` (time-major booleans).

    Forward, step ``t`` starts afresh when ``resets_tm[t]``. In reverse the boundary before ``t+1`` is met just
    before step ``t``: ``marks[t] = resets_tm[t+1]`` (False at ``T-1``), and, with ``lengths``, only where ``t+1``
    is a valid step, so a mark in the padding cannot reset the carry a sequence starts from. With a step ``mask
    [T, *batch]`` the carry skips the masked steps, so a boundary is met at the next valid step in the scan's
    direction: see :func:`_masked_marks`.
    """
    if mask is not None:
        return _masked_marks(resets_tm, mask, reverse=reverse)
    if not reverse:
        return resets_tm
    marks = jnp.concatenate([resets_tm[1:], jnp.zeros_like(resets_tm[:1])], axis=0)
    if lengths is not None:
        next_step = jnp.arange(1, resets_tm.shape[0] + 1).reshape((-1,) + (1,) * lengths.ndim)
        marks = marks & (next_step < lengths[None])
    return marks


def _masked_marks(resets_tm, valid_tm, *, reverse):
    """:func:`reset_marks` under a step mask ``valid_tm [T, *batch]``: a valid step ``t`` is marked when a segment
    boundary lies between it and the valid step the carry last came from. Forward, that is a reset in ``(u, t]``,
    ``u`` the last valid step before ``t`` (any reset in ``[0, t]`` when there is none: the first valid step
    replaces ``carry``). In reverse, a reset in ``(t, v]``, ``v`` the first valid step after ``t`` (none when there
    is no such ``v``: the carry a sequence starts from is kept)."""
    num_steps = resets_tm.shape[0]
    steps = jnp.arange(num_steps, dtype=jnp.int32).reshape((-1,) + (1,) * (resets_tm.ndim - 1))
    seen = jnp.cumsum(resets_tm, axis=0, dtype=jnp.int32)  # resets in [0, t]

    def seen_through(index):  # resets in [0, index]; 0 for index < 0 (and for index >= T, never read)
        picked = jnp.take_along_axis(seen, jnp.clip(index, 0, max(num_steps - 1, 0)), axis=0)
        return jnp.where(index >= 0, picked, 0)

    if not reverse:
        last = lax.cummax(jnp.where(valid_tm, steps, -1), axis=0)  # last valid step <= t
        before = jnp.concatenate([jnp.full_like(last[:1], -1), last[:-1]], axis=0)
        return valid_tm & (seen - seen_through(before) > 0)
    first = lax.cummin(jnp.where(valid_tm, steps, num_steps), axis=0, reverse=True)  # first valid step >= t
    after = jnp.concatenate([first[1:], jnp.full_like(first[:1], num_steps)], axis=0)
    return valid_tm & (after < num_steps) & (seen_through(after) - seen > 0)


def _to_layout(ys_tm: jax.Array, time_major: bool) -> jax.Array:
    return ys_tm if time_major else jnp.moveaxis(ys_tm, 0, -2)


# Steps per loop trip on a GPU when ``unroll=None``. Each trip of an XLA while loop on a GPU ends in a device-to-host
# copy of its predicate; unrolling 8 steps per trip trained 1.4-2.5x faster on an H200 than 1 (benchmarks/README.md,
# "GPU"). On XLA CPU unrolling only slowed the step (unroll=16 halved it), so CPUs keep 1.
GPU_UNROLL = 8


def default_unroll() -> int:
    """The ``unroll`` that ``unroll=None`` (the default of :func:`rnn`) stands for: ``GPU_UNROLL`` (8) when JAX's
    default backend (``jax.default_backend()``) is a GPU, else 1. The choice is made when the call is traced."""
    return GPU_UNROLL if jax.default_backend() == "gpu" else 1


def _positive_int(value) -> int | None:
    """``value`` as a Python int when it is a positive integer (NumPy integers too, bools not), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = operator.index(value)
    except TypeError:
        return None
    return number if number >= 1 else None


def resolve_unroll(unroll) -> int | bool:
    """``unroll`` checked (a positive int or a bool), with ``None`` replaced by :func:`default_unroll`."""
    if unroll is None:
        return default_unroll()
    if isinstance(unroll, bool):
        return unroll
    number = _positive_int(unroll)
    if number is None:
        raise ValueError(f"unroll must be a positive int, a bool or None, got {unroll!r}")
    return number


def _chunked_scan(
    step,
    params,
    xs_tm,
    carry,
    lengths,
    batch_shape,
    *,
    chunk_size,
    reverse=False,
    unroll=1,
    stop_gradient=False,
    remat=False,
    marks=None,
    reset_carry=None,
    mask=None,
    analytic_cell=None,
):
    """``scan_cell`` over chunks of ``chunk_size`` steps: an outer scan over chunks, an inner one within each.

    ``stop_gradient`` cuts the carry's gradient at every chunk start (truncated BPTT); ``remat`` wraps each chunk
    in ``jax.checkpoint``, so the backward pass stores one carry per chunk and recomputes the chunk's activations
    (memory ~ T/K carries + K steps of activations instead of T steps). A ragged last chunk is padded with masked
    steps, so any T works. ``marks``/``reset_carry``/``mask``: as in :func:`scan_cell`, for the whole sequence.
    With ``analytic_cell`` (a built-in cell) each chunk runs :func:`jaxrnn.fastpath.analytic_scan` instead, whose
    backward is the hand-derived one (recomputing the chunk's forward first, under ``remat``).
    """
    num_steps = xs_tm.shape[0]
    num_chunks = -(-num_steps // chunk_size)
    pad = num_chunks * chunk_size - num_steps
    if pad:
        xs_tm = jnp.concatenate([xs_tm, jnp.zeros((pad,) + xs_tm.shape[1:], xs_tm.dtype)], axis=0)
        marks, mask = (None if m is None else jnp.concatenate([m, jnp.zeros((pad,) + m.shape[1:], m.dtype)], axis=0)
                       for m in (marks, mask))  # fmt: skip
        if lengths is None and mask is None:
            lengths = jnp.full(batch_shape, num_steps, jnp.int32)

    def in_chunks(x):
        return None if x is None else x.reshape((num_chunks, chunk_size) + x.shape[1:])

    def run_chunk(c, inputs):
        chunk_xs, t_offset, chunk_marks, chunk_mask = inputs
        if stop_gradient:
            c = jax.lax.stop_gradient(c)
        if analytic_cell is not None:
            from jaxrnn.fastpath import scan_checked

            chunk_lengths = None if lengths is None else jnp.clip(lengths - t_offset, 0, chunk_size)
            return scan_checked(analytic_cell, params, chunk_xs, c, chunk_lengths, reverse=reverse, unroll=unroll,
                                 mask=chunk_mask, marks=chunk_marks)  # fmt: skip
        return scan_cell(step, params, chunk_xs, c, lengths, reverse=reverse, unroll=unroll, t_offset=t_offset,
                         marks=chunk_marks, reset_carry=reset_carry, mask=chunk_mask)  # fmt: skip

    if remat:
        run_chunk = jax.checkpoint(run_chunk)
    offsets = jnp.arange(num_chunks) * chunk_size
    inputs = (in_chunks(xs_tm), offsets, in_chunks(marks), in_chunks(mask))
    final, ys = lax.scan(run_chunk, carry, inputs, reverse=reverse)
    return final, ys.reshape((num_chunks * chunk_size,) + ys.shape[2:])[:num_steps]


def _check_chunk(value, name) -> int:
    """``value`` as a Python int, or a ValueError naming ``name`` unless it is a positive integer."""
    number = _positive_int(value)
    if number is None:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return number


GRAD_MODES = ("autodiff", "analytic")


def _check_grad(cell, grad) -> bool:
    """Validate ``rnn``'s ``grad`` option; True when the analytic fast path applies."""
    if grad is not None and grad not in GRAD_MODES:
        raise ValueError(f"grad must be one of {GRAD_MODES} or None, got {grad!r}")
    _check_cell(cell)
    from jaxrnn.fastpath import has_rule

    if grad == "analytic" and not has_rule(cell):
        raise ValueError(
            f"grad='analytic' needs a built-in cell (jaxrnn.elman, jaxrnn.lstm, jaxrnn.gru), got {cell.name!r}; "
            f"your own cells are differentiated by autodiff: pass grad='autodiff' or leave grad=None"
        )
    from jaxrnn.fastpath import analytic_by_default

    return grad == "analytic" or (grad is None and analytic_by_default(cell))


def rnn(
    cell: Cell,
    params,
    xs,
    carry=None,
    *,
    lengths=None,
    mask=None,
    resets=None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool | None = None,
    checkpoint_every: int | None = None,
    grad: str | None = None,
):
    """Run ``cell`` over the time axis of ``xs``.

    Args:
      cell: a :class:`~jaxrnn.Cell` (``jaxrnn.elman``, ``jaxrnn.lstm``, ``jaxrnn.gru`` or your own).
      params: the cell's params, from ``cell.init``.
      xs: ``[*batch, T, D]`` floating point (``[T, *batch, D]`` with ``time_major=True``). ``T`` may be 0: ``ys``
          is then empty and the final carry is the initial one.
      carry: initial state, ``cell.initial_state(params, batch_shape)`` (zeros) when None.
      lengths: optional ``[*batch]`` integers in ``[0, T]``: valid steps per sequence (right padding).
      mask: optional ``[*batch, T]`` booleans (``[T, *batch]`` with ``time_major=True``), True at the steps to run:
        padding anywhere (left padding, as Keras' ``pad_sequences`` makes by default, or gaps). A masked step keeps
        the carry and emits zeros, in either direction, as Keras' ``mask=`` (with ``zero_output_for_mask=True``;
        Keras' default repeats the previous output instead). With ``lengths`` too, a step runs when both allow it.
      resets: optional ``[*batch, T]`` booleans (``[T, *batch]`` with ``time_major=True``), True at the first step
        of each new segment (e.g. an episode start): the recurrence does not cross into a marked step. Running
        forward the carry is reset to ``cell.initial_state`` (zeros) before a marked step (at ``t = 0`` this
        replaces ``carry``); with ``reverse=True``, before the step that precedes it. Every segment then gives
        exactly what it gives run alone. With ``mask``, a reset on a masked step starts the next valid step.
      reverse: run from the last step to the first (from each sequence's last valid step, with ``lengths`` or
        ``mask``).
      time_major: the layout of ``xs`` and of the returned ``ys``.
      unroll: steps per loop trip, passed to ``lax.scan`` (``True``: the whole sequence). ``None`` (the default):
        8 on a GPU, 1 elsewhere (:func:`default_unroll`). The same values either way; on a GPU fewer loop trips
        train faster, on a CPU they only cost compile time.
      checkpoint_every: rematerialise in chunks of this many steps: the backward pass keeps one carry per chunk
        and recomputes activations within it, for long sequences that would not fit otherwise. Same values and
        gradients; more compute.
      grad: how reverse-mode gradients are computed: ``"autodiff"`` (JAX differentiates the ``lax.scan``) or
        ``"analytic"`` (the built-in cells' hand-derived BPTT as a ``jax.custom_vjp``, :mod:`jaxrnn.fastpath`,
        which forms ``dW_x`` and ``dW_h`` as one matmul each after the backward loop). ``None`` (the default)
        means ``"analytic"`` for ``jaxrnn.lstm`` and ``jaxrnn.gru``, where it trains 1.1–1.4x faster on CPU
        (``benchmarks/``), and ``"autodiff"`` for every other cell. Same values either way; the analytic path has
        no forward mode of its own (``jax.jvp``, ``jacfwd`` of the outputs): pass ``grad="autodiff"`` for those;
        ``jax.hessian`` (forward over reverse) works on it. With
        ``checkpoint_every`` the analytic backward runs chunk by chunk, after recomputing each chunk's forward.
        ``grad="analytic"`` on a user cell raises ``ValueError``.

    Returns:
      ``(final_carry, ys)``: the carry after the last (valid) step, and ``ys [*batch, T, H]`` (or time-major), the
      output at every step, exactly zero past each sequence's length and at masked steps.

    Example::

        params = jaxrnn.lstm.init(jax.random.key(0), 3, 16)
        carry, ys = jaxrnn.rnn(jaxrnn.lstm, params, xs)          # xs: [B, T, 3] -> ys: [B, T, 16]
    """
    unroll = resolve_unroll(unroll)
    use_analytic = _check_grad(cell, grad)
    reverse = check_flag(reverse, "reverse")
    if checkpoint_every is not None:
        checkpoint_every = _check_chunk(checkpoint_every, "checkpoint_every")
    prep = prepare(cell, params, xs, carry, lengths=lengths, time_major=time_major)
    resets_tm = None if resets is None else check_resets(resets, prep.batch_shape, prep.xs.shape[0], time_major)
    lengths, mask_tm = _lengths_or_mask(prep, mask, time_major)
    final, ys = _run_scan(
        cell,
        params,
        prep.xs,
        prep.carry,
        lengths,
        resets_tm,
        mask_tm,
        reverse=reverse,
        unroll=unroll,
        checkpoint_every=checkpoint_every,
        analytic=use_analytic,
        mesh=batch_mesh(prep.batch_shape),
    )
    return final, _to_layout(ys, time_major)


def _lengths_or_mask(prep, mask, time_major):
    """``(lengths, mask_tm)`` for the scan: ``(prep.lengths, None)`` without ``mask``; with it, ``(None, mask
    [T, *batch])``, where ``lengths`` (if any) is folded into the mask."""
    if mask is None:
        return prep.lengths, None
    num_steps = prep.xs.shape[0]
    mask_tm = check_mask(mask, prep.batch_shape, num_steps, time_major)
    if prep.lengths is not None:
        steps = jnp.arange(num_steps).reshape((-1,) + (1,) * len(prep.batch_shape))
        mask_tm = mask_tm & (steps < prep.lengths[None])
    return None, mask_tm


def batch_mesh(batch_shape):
    """The mesh the scan's batch is split over, or None: the mesh set with ``jax.set_mesh`` when it has an axis
    named ``jaxrnn.parallel.AXIS`` (``"batch"``) of more than one device, not already manual (inside
    ``shard_map``), that divides the first batch dim. Otherwise the scan runs whole (and, under ``jit`` with sharded
    inputs, XLA partitions it as it sees fit)."""
    from jaxrnn.parallel import AXIS

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or AXIS not in mesh.axis_names or not batch_shape:
        return None
    size = mesh.shape[AXIS]
    manual = mesh.axis_types[mesh.axis_names.index(AXIS)] == jax.sharding.AxisType.Manual
    if manual or size < 2 or batch_shape[0] % size:
        return None
    return mesh


def _shard_over_batch(scan, mesh):
    """``scan(params, xs_tm, carry, lengths, resets_tm, mask_tm)`` run by ``shard_map`` on each device's slice of the first
    batch dim:
    the whole recurrence, forward and backward, stays on one device, and the only communication is the sum of the
    parameter gradients (the transpose of replicating the params), once per call."""
    from jax.sharding import PartitionSpec as P

    from jaxrnn.parallel import AXIS

    def specs(tree, spec):
        return jax.tree.map(lambda _: spec, tree)

    def run(params, xs_tm, carry, lengths, resets_tm, mask_tm):
        in_specs = (specs(params, P()), P(None, AXIS), specs(carry, P(AXIS)), None if lengths is None else P(AXIS),
                    None if resets_tm is None else P(None, AXIS), None if mask_tm is None else P(None, AXIS))  # fmt: skip
        out_specs = (specs(carry, P(AXIS)), P(None, AXIS))
        sharded = jax.shard_map(scan, mesh=mesh, in_specs=in_specs, out_specs=out_specs, axis_names={AXIS})
        return sharded(params, xs_tm, carry, lengths, resets_tm, mask_tm)

    return run


@functools.partial(
    jax.jit, static_argnums=0, static_argnames=("reverse", "unroll", "checkpoint_every", "analytic", "mesh")
)
def _run_scan(
    cell,
    params,
    xs_tm,
    carry,
    lengths,
    resets_tm=None,
    mask_tm=None,
    *,
    reverse,
    unroll,
    checkpoint_every,
    analytic,
    mesh=None,
):
    """The scan under ``jit`` with the cell static, so that eager calls hit the compilation cache (a bare
    ``lax.scan`` outside ``jit`` retraces and recompiles its body on every call). Inside an outer ``jit`` this
    inlines. With ``mesh`` (from :func:`batch_mesh`) it runs under ``shard_map`` over the batch."""

    def scan(params, xs_tm, carry, lengths, resets_tm, mask_tm):
        return _scan_whole(
            cell, params, xs_tm, carry, lengths, resets_tm, mask_tm, reverse, unroll, checkpoint_every, analytic
        )

    if mesh is not None:
        return _shard_over_batch(scan, mesh)(params, xs_tm, carry, lengths, resets_tm, mask_tm)
    return scan(params, xs_tm, carry, lengths, resets_tm, mask_tm)


def _reset_inputs(cell, params, xs_tm, carry, lengths, resets_tm, mask_tm, reverse):
    """``(marks, reset_carry)`` for :func:`scan_cell`, or ``(None, None)`` without resets."""
    if resets_tm is None:
        return None, None
    reset_carry = cell.initial_state(params, tuple(xs_tm.shape[1:-1]))
    reset_carry = jax.tree.map(lambda z, c: z.astype(c.dtype), reset_carry, carry)
    return reset_marks(resets_tm, lengths, reverse=reverse, mask=mask_tm), match_varying(reset_carry, carry)


def _scan_whole(cell, params, xs_tm, carry, lengths, resets_tm, mask_tm, reverse, unroll, checkpoint_every, analytic):
    carry = match_varying(carry, params, xs_tm, carry, lengths, resets_tm, mask_tm)
    marks, reset_carry = _reset_inputs(cell, params, xs_tm, carry, lengths, resets_tm, mask_tm, reverse)
    if analytic and checkpoint_every is None:
        from jaxrnn.fastpath import scan_checked

        return scan_checked(
            cell, params, xs_tm, carry, lengths, reverse=reverse, unroll=unroll, mask=mask_tm, marks=marks
        )
    if checkpoint_every is None:
        return scan_cell(cell.step, params, xs_tm, carry, lengths, reverse=reverse, unroll=unroll, marks=marks,
                         reset_carry=reset_carry, mask=mask_tm)  # fmt: skip
    return _chunked_scan(
        cell.step,
        params,
        xs_tm,
        carry,
        lengths,
        tuple(xs_tm.shape[1:-1]),
        chunk_size=checkpoint_every,
        reverse=reverse,
        unroll=unroll,
        remat=True,
        marks=marks,
        reset_carry=reset_carry,
        mask=mask_tm,
        analytic_cell=cell if analytic else None,
    )


def truncated_rnn(
    cell: Cell,
    params,
    xs,
    carry=None,
    *,
    chunk_size: int,
    lengths=None,
    mask=None,
    resets=None,
    time_major: bool = False,
    unroll: int | bool | None = None,
    grad: str | None = None,
):
    """:func:`rnn` with truncated backpropagation through time.

    The forward pass equals ``rnn(cell, params, xs, carry, lengths=lengths)``. The sequence is cut into chunks of
    ``chunk_size`` steps (the last one may be shorter); the carry passes from chunk to chunk, but its gradient is
    stopped at the start of every chunk (the first included), so gradients flow at most ``chunk_size`` steps back
    and nothing flows into ``carry``. Memory and the backward pass then scale with the chunk, not the sequence.
    ``mask`` (steps to run, padding anywhere), ``resets`` (segment starts) and ``grad`` (the backward within each
    chunk: analytic by default for ``jaxrnn.lstm`` and ``jaxrnn.gru``) act as in :func:`rnn`.
    """
    chunk_size = _check_chunk(chunk_size, "chunk_size")
    unroll = resolve_unroll(unroll)
    use_analytic = _check_grad(cell, grad)
    prep = prepare(cell, params, xs, carry, lengths=lengths, time_major=time_major)
    resets_tm = None if resets is None else check_resets(resets, prep.batch_shape, prep.xs.shape[0], time_major)
    lengths, mask_tm = _lengths_or_mask(prep, mask, time_major)
    carry = match_varying(prep.carry, params, prep.xs, prep.carry, lengths, resets_tm, mask_tm)
    marks, reset_carry = _reset_inputs(cell, params, prep.xs, carry, lengths, resets_tm, mask_tm, False)
    final, ys = _chunked_scan(
        cell.step,
        params,
        prep.xs,
        carry,
        lengths,
        prep.batch_shape,
        chunk_size=chunk_size,
        unroll=unroll,
        stop_gradient=True,
        marks=marks,
        reset_carry=reset_carry,
        mask=mask_tm,
        analytic_cell=cell if use_analytic else None,
    )
    return final, _to_layout(ys, time_major)
