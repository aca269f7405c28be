"""Multi-layer and bidirectional recurrent layers over any cell, with dropout between layers and variational
recurrent dropout.

``stack(cell, num_layers, bidirectional=..., merge=...)`` returns a :class:`Layer` ``(init, apply)``. Its params
are a tuple with one entry per layer: the cell's params, or ``Bidirectional(forward, backward)``. Its carry has the
same shape: one cell carry per layer (per direction). Layer ``k > 0`` reads the (merged) outputs of layer
``k − 1``: ``2H`` features for ``merge="concat"`` (PyTorch's and Flax's only merge), ``H`` for ``"sum"``, ``"mean"``
and ``"mul"`` (Keras' ``merge_mode`` ``"sum"``, ``"ave"`` and ``"mul"``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import as_float_array, check_flag, check_key
from jaxrnn.cells.base import Cell
from jaxrnn.driver import _check_chunk, _check_grad, resolve_unroll, rnn
from jaxrnn.layers import check_rate
from jaxrnn.layers import dropout as apply_dropout

__all__ = ["Bidirectional", "Layer", "stack"]

# How the two directions' outputs y_f, y_b [.., H] become one: [y_f, y_b] [.., 2H], or elementwise [.., H].
MERGE_FNS = {
    "concat": lambda f, b: jnp.concatenate([f, b], axis=-1),
    "sum": lambda f, b: f + b,
    "mean": lambda f, b: 0.5 * (f + b),
    "mul": lambda f, b: f * b,
}
MERGES = tuple(MERGE_FNS)


class Bidirectional(NamedTuple):
    """A pair for the two directions of a layer: params, or carries."""

    forward: Any
    backward: Any


class Layer(NamedTuple):
    """A recurrent layer made by :func:`stack`: ``init``/``apply`` plus the configuration they close over."""

    init: Callable
    apply: Callable
    cell: Cell
    num_layers: int
    bidirectional: bool
    merge: str
    dropout: float
    recurrent_dropout: float
    unroll: int | bool | None = None
    checkpoint_every: int | None = None
    grad: str | None = None

    def __repr__(self) -> str:
        scan = "".join(
            f", {name}={value!r}"
            for name, value in (
                ("unroll", self.unroll),
                ("checkpoint_every", self.checkpoint_every),
                ("grad", self.grad),
            )
            if value is not None
        )
        return (
            f"Layer({self.cell.name}, num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
            f"merge={self.merge!r}, dropout={self.dropout}, recurrent_dropout={self.recurrent_dropout}{scan})"
        )


def _mask_h(carry, mask):
    if hasattr(carry, "shape") and hasattr(carry, "dtype"):
        return carry * mask
    return carry._replace(h=carry.h * mask)


def _hidden_of(carry):
    """The hidden state ``h`` of a carry: the carry itself when it is one array, else its ``h`` field."""
    if hasattr(carry, "shape") and hasattr(carry, "dtype"):
        return carry
    if hasattr(carry, "_replace") and hasattr(carry, "h"):
        return carry.h
    raise TypeError(f"recurrent_dropout needs a carry that is an array or has an `h` field, got {type(carry).__name__}")


@functools.lru_cache(maxsize=64)
def _with_recurrent_dropout(cell: Cell) -> Cell:
    """The cell with a dropout mask on the recurrent input ``h`` (Gal & Ghahramani 2016), run with params
    ``(params, mask)``: the same mask at every step; the stored carry stays undropped, as in Keras. One such cell per
    ``cell`` (cached), so that a new mask is a new argument, not a new function to compile."""

    def initial_state(params_and_mask, batch_shape=()):
        return cell.initial_state(params_and_mask[0], batch_shape)

    def step(params_and_mask, carry, x):
        params, mask = params_and_mask
        return cell.step(params, _mask_h(carry, mask), x)

    sizes = None if cell.sizes is None else (lambda params_and_mask: cell.sizes(params_and_mask[0]))
    return Cell(init=cell.init, initial_state=initial_state, step=step, sizes=sizes, name=cell.name)


def _output_size(cell: Cell, params, input_size: int) -> int:
    """The feature size of ``cell``'s outputs with ``params`` (one direction's, for a ``Bidirectional`` pair) and
    inputs of ``input_size`` features: the hidden size, or the projected LSTM's ``P``."""
    one = params.forward if isinstance(params, Bidirectional) else params
    x = jax.ShapeDtypeStruct((input_size,), jax.tree.leaves(one)[0].dtype)
    return jax.eval_shape(lambda p, x: cell.step(p, cell.initial_state(p, ()), x)[1], one, x).shape[-1]


def stack(
    cell: Cell,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    merge: str = "concat",
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    unroll: int | bool | None = None,
    checkpoint_every: int | None = None,
    grad: str | None = None,
) -> Layer:
    """A ``num_layers``-deep (optionally bidirectional) recurrent layer of ``cell``.

    Args:
      cell: any :class:`~jaxrnn.Cell`.
      num_layers: depth.
      bidirectional: run a second, reversed copy of each layer and merge the two outputs.
      merge: how the two directions' outputs combine: ``"concat"`` (``[.., 2H]``), or ``"sum"``, ``"mean"``,
        ``"mul"`` (elementwise, ``[.., H]``).
      dropout: inverted dropout on each layer's outputs before the next layer (not after the last), with
        ``train=True``.
      recurrent_dropout: variational dropout of the recurrent input ``h``: one mask per sequence and layer,
        the same at every step, with ``train=True``.
      unroll, checkpoint_every, grad: passed to :func:`~jaxrnn.rnn` for every layer and direction (``None``: its
        defaults; ``unroll=None`` is 8 steps per loop trip on a GPU, 1 elsewhere). With ``recurrent_dropout`` and
        ``train=True`` the masked cell is differentiated by autodiff, so ``grad="analytic"`` cannot be combined
        with ``recurrent_dropout``.

    Returns:
      ``Layer``: ``layer.init(key, input_size, hidden_size, *, dtype=None, **cell_options)`` and
      ``layer.apply(params, xs, carry=None, *, lengths=None, mask=None, resets=None, time_major=False, key=None,
      train=False) -> (final_carry, ys)``, ``ys [*batch, T, H or 2H]`` (``P`` for the LSTM with projections,
      ``layer.init(..., proj_size=P)``; each layer above the first reads what the one below outputs).
      ``lengths``, ``mask`` (steps to run, ``[*batch, T]`` booleans) and ``resets`` (segment starts, ``[*batch,
      T]`` booleans) act as in :func:`~jaxrnn.rnn` in every layer and direction.
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be a jaxrnn.Cell, got {type(cell).__name__}")
    if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    num_layers = int(num_layers)
    bidirectional = check_flag(bidirectional, "bidirectional")
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    dropout = check_rate(dropout, "dropout")
    recurrent_dropout = check_rate(recurrent_dropout, "recurrent_dropout")
    if unroll is not None:
        unroll = resolve_unroll(unroll)
    if checkpoint_every is not None:
        checkpoint_every = _check_chunk(checkpoint_every, "checkpoint_every")
    _check_grad(cell, grad)
    if grad == "analytic" and recurrent_dropout > 0.0:
        raise ValueError(
            "grad='analytic' cannot be combined with recurrent_dropout: the cell with a dropout mask on h has no "
            "hand-derived backward; leave grad=None (analytic without dropout, autodiff with it) or pass 'autodiff'"
        )
    scan_options = {"unroll": unroll, "checkpoint_every": checkpoint_every}
    width = 2 if bidirectional and merge == "concat" else 1

    def init(key, input_size: int, hidden_size: int, *, dtype=None, **cell_options):
        keys = jax.random.split(key, num_layers)
        layers = []
        size_in = input_size
        for k, layer_key in enumerate(keys):
            if k > 0:
                size_in = width * _output_size(cell, layers[-1], size_in)
            if bidirectional:
                k_f, k_b = jax.random.split(layer_key)
                layers.append(
                    Bidirectional(
                        cell.init(k_f, size_in, hidden_size, dtype=dtype, **cell_options),
                        cell.init(k_b, size_in, hidden_size, dtype=dtype, **cell_options),
                    )
                )
            else:
                layers.append(cell.init(layer_key, size_in, hidden_size, dtype=dtype, **cell_options))
        return tuple(layers)

    def _check_params(params):
        if not isinstance(params, tuple) or isinstance(params, Bidirectional) or len(params) != num_layers:
            raise TypeError(
                f"params must be a tuple of {num_layers} per-layer entries (from layer.init), got "
                f"{type(params).__name__}" + (f" of length {len(params)}" if isinstance(params, tuple) else "")
            )
        for k, entry in enumerate(params):
            if bidirectional != isinstance(entry, Bidirectional):
                want = "Bidirectional(forward, backward)" if bidirectional else f"{cell.name} params"
                raise TypeError(f"params[{k}] must be {want}, got {type(entry).__name__}")

    def _one_direction(params, xs, carry, steps, time_major, reverse, key, batch_shape):
        run_cell, run_params = cell, params
        if key is not None:
            h0 = _hidden_of(jax.eval_shape(lambda p: cell.initial_state(p, batch_shape), params))
            keep = jax.random.bernoulli(key, 1.0 - recurrent_dropout, h0.shape)
            run_cell = _with_recurrent_dropout(cell)
            run_params = (params, keep.astype(h0.dtype) / (1.0 - recurrent_dropout))
        return rnn(
            run_cell,
            run_params,
            xs,
            carry,
            **steps,
            reverse=reverse,
            time_major=time_major,
            grad=grad,  # never "analytic" with a dropout mask: refused above
            **scan_options,
        )

    def apply(
        params,
        xs,
        carry=None,
        *,
        lengths=None,
        mask=None,
        resets=None,
        time_major: bool = False,
        key=None,
        train: bool = False,
    ):
        _check_params(params)
        time_major, train = check_flag(time_major, "time_major"), check_flag(train, "train")
        layout = "[time, *batch, features]" if time_major else "[*batch, time, features]"
        xs = as_float_array(xs, "xs", min_rank=2, layout=layout)
        batch_shape = tuple(xs.shape[1:-1] if time_major else xs.shape[:-2])
        if carry is not None and (not isinstance(carry, tuple) or len(carry) != num_layers):
            raise ValueError(f"carry must be a tuple of {num_layers} per-layer carries, got {type(carry).__name__}")
        use_dropout = train and (dropout > 0.0 or recurrent_dropout > 0.0)
        if use_dropout and key is None:
            raise ValueError("train=True with dropout or recurrent_dropout needs a PRNG key: apply(..., key=key)")
        if use_dropout:
            check_key(key)
        keys = jax.random.split(key, 3 * num_layers) if use_dropout else None
        rec_key = (lambda i: keys[i]) if use_dropout and recurrent_dropout > 0.0 else (lambda i: None)
        steps = {"lengths": lengths, "mask": mask, "resets": resets}

        finals, ys = [], xs
        for k, layer_params in enumerate(params):
            layer_carry = None if carry is None else carry[k]
            if bidirectional:
                if layer_carry is not None and not isinstance(layer_carry, Bidirectional):
                    raise TypeError(
                        f"carry[{k}] must be Bidirectional(forward, backward) for a bidirectional layer, got "
                        f"{type(layer_carry).__name__}"
                    )
                fwd_carry = None if layer_carry is None else layer_carry.forward
                bwd_carry = None if layer_carry is None else layer_carry.backward
                f_final, f_ys = _one_direction(
                    layer_params.forward, ys, fwd_carry, steps, time_major, False, rec_key(3 * k), batch_shape
                )
                b_final, b_ys = _one_direction(
                    layer_params.backward, ys, bwd_carry, steps, time_major, True, rec_key(3 * k + 1), batch_shape
                )
                finals.append(Bidirectional(f_final, b_final))
                ys = MERGE_FNS[merge](f_ys, b_ys)
            else:
                final, ys = _one_direction(
                    layer_params, ys, layer_carry, steps, time_major, False, rec_key(3 * k), batch_shape
                )
                finals.append(final)
            if use_dropout and dropout > 0.0 and k < num_layers - 1:
                ys = apply_dropout(keys[3 * k + 2], ys, dropout)
        return tuple(finals), ys

    return Layer(
        init=init,
        apply=apply,
        cell=cell,
        num_layers=num_layers,
        bidirectional=bidirectional,
        merge=merge,
        dropout=dropout,
        recurrent_dropout=recurrent_dropout,
        unroll=unroll,
        checkpoint_every=checkpoint_every,
        grad=grad,
    )
