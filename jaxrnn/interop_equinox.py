"""Weights in and out of Equinox's ``eqx.nn.LSTMCell`` and ``eqx.nn.GRUCell``: the same function and states.

Equinox keeps PyTorch's output-major layout with one bias, and the same gate orders as jaxrnn (i, f, g, o; r, z, n)::

    w_x = weight_ih.T     [D, G·H]   (Equinox: [G·H, D])
    w_h = weight_hh.T     [H, G·H]   (Equinox: [G·H, H])
    b   = bias            [G·H]      (use_bias=False: zeros)
    b_hn = bias_n         [H]        GRU: the recurrent n bias, inside the reset product, as in jaxrnn

The LSTM state is ``(h, c)`` in both, so a carry converts by wrapping it in :class:`~jaxrnn.LSTMState`. Equinox cells
act on one example (``x [D]``) and are ``vmap``-ed over a batch and scanned by the user; the jaxrnn layer does both.
Equinox is imported only by :func:`to_equinox`.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxrnn.cells.lstm import LSTMState
from jaxrnn.interop import (
    _CELLS,
    _dtype_of,
    _flat_states,
    _jnp,
    _kind_of_layer,
    _layer_info,
    _one_dtype,
    _params_from_torch,
    _shape,
    _to_numpy,
)
from jaxrnn.stack import Layer, stack

__all__ = ["carry_from_equinox", "carry_to_equinox", "from_equinox", "to_equinox"]

_GATES = {"LSTMCell": ("lstm", 4), "GRUCell": ("gru", 3)}


def from_equinox(cell) -> tuple[Layer, tuple]:
    """Convert an ``eqx.nn.LSTMCell`` or ``eqx.nn.GRUCell`` to ``(layer, params)``, a one-layer
    :func:`jaxrnn.stack` Layer (``layer.cell`` and ``params[0]`` drive :func:`jaxrnn.rnn` directly).

    ``layer.apply(params, xs)`` on ``xs [B, T, D]`` equals scanning ``jax.vmap(cell)`` over time, and the final
    carry equals the last state (``LSTMState(h, c)`` for Equinox's ``(h, c)``). Arrays keep their dtype.

    Raises:
      TypeError: ``cell`` is not an Equinox LSTMCell or GRUCell.
      ValueError: weights whose shapes do not fit ``[G·H, D]``, ``[G·H, H]``, ``[G·H]`` (and ``bias_n [H]``).
    """
    name = type(cell).__name__
    if name not in _GATES or not type(cell).__module__.startswith("equinox"):
        raise TypeError(f"cell must be an equinox.nn.LSTMCell or equinox.nn.GRUCell, got {type(cell).__module__}."
                        f"{name}")  # fmt: skip
    kind, gates = _GATES[name]
    w_ih = _to_numpy(cell.weight_ih, "cell.weight_ih")
    w_hh = _to_numpy(cell.weight_hh, "cell.weight_hh")
    if w_hh.ndim != 2 or w_hh.shape[0] != gates * w_hh.shape[1]:
        raise ValueError(f"cell.weight_hh must have shape [{gates}*H, H] for a {kind}, got {_shape(w_hh.shape)}")
    hidden = w_hh.shape[1]
    if w_ih.ndim != 2 or w_ih.shape[0] != gates * hidden:
        raise ValueError(f"cell.weight_ih must have shape [{gates * hidden}, D], got {_shape(w_ih.shape)}")
    if cell.bias is None:
        bias = np.zeros((gates * hidden,), w_ih.dtype)
    else:
        bias = _to_numpy(cell.bias, "cell.bias")
    if bias.shape != (gates * hidden,):
        raise ValueError(f"cell.bias must have shape [{gates * hidden}], got {_shape(bias.shape)}")
    arrays = [w_ih, w_hh, bias]
    b_hh = np.zeros_like(bias)  # Equinox's one bias is torch's bias_ih; the GRU's bias_n is torch's b_hn
    if kind == "gru":
        bias_n = np.zeros((hidden,), w_ih.dtype) if cell.bias_n is None else _to_numpy(cell.bias_n, "cell.bias_n")
        if bias_n.shape != (hidden,):
            raise ValueError(f"cell.bias_n must have shape [{hidden}], got {_shape(bias_n.shape)}")
        arrays.append(bias_n)
        b_hh[2 * hidden :] = bias_n
    _one_dtype(dict(zip(("weight_ih", "weight_hh", "bias", "bias_n"), arrays)), "cell's weights")
    params = _params_from_torch(kind, "tanh", w_ih, w_hh, bias, b_hh)
    return stack(_CELLS[kind]), (params,)


def to_equinox(layer: Layer, params):
    """The inverse of :func:`from_equinox`: an ``eqx.nn.LSTMCell``/``eqx.nn.GRUCell`` (``use_bias=True``) holding
    ``layer``'s weights, in their dtype.

    Raises:
      ValueError: a cell other than jaxrnn.lstm/gru (Equinox has no Elman cell), more than one layer, a
        bidirectional layer (Equinox has cells only: convert each direction), ``recurrent_dropout > 0``, or a
        reset-before GRU (``b_hn=None``; Equinox's GRUCell resets after its recurrent matmul).
    """
    import equinox as eqx

    kind, _, input_size, hidden, entries = _layer_info(layer, params, "to_equinox")
    if kind == "elman":
        raise ValueError("to_equinox: Equinox has no Elman (simple RNN) cell; layer.cell must be jaxrnn.lstm or "
                         "jaxrnn.gru")  # fmt: skip
    if layer.num_layers != 1 or layer.bidirectional:
        raise ValueError(
            f"to_equinox: Equinox has single cells, no stacks; layer must have num_layers=1 and bidirectional=False, "
            f"got num_layers={layer.num_layers}, bidirectional={layer.bidirectional}. Convert each cell: "
            f"to_equinox(jaxrnn.stack(layer.cell), (params[k].forward,))"
        )
    if layer.recurrent_dropout > 0.0:
        raise ValueError(f"to_equinox: layer.recurrent_dropout={layer.recurrent_dropout} has no Equinox counterpart; "
                         f"expected 0.0")  # fmt: skip
    dtype = _dtype_of(entries)
    (p,) = entries[0]
    make = eqx.nn.LSTMCell if kind == "lstm" else eqx.nn.GRUCell
    cell = make(input_size, hidden, use_bias=True, dtype=dtype, key=jax.random.PRNGKey(0))
    weights = [np.asarray(p.w_x).T, np.asarray(p.w_h).T, np.asarray(p.b)]

    def where(c):
        return (c.weight_ih, c.weight_hh, c.bias) + ((c.bias_n,) if kind == "gru" else ())

    if kind == "gru":
        weights.append(np.asarray(p.b_hn))
    return eqx.tree_at(where, cell, tuple(_jnp(np.ascontiguousarray(w)) for w in weights))


def _single_cell(layer, caller: str) -> str:
    kind = _kind_of_layer(layer, caller)
    if layer.num_layers != 1 or layer.bidirectional:
        raise ValueError(f"{caller}: an Equinox cell's state is one layer, one direction; got num_layers="
                         f"{layer.num_layers}, bidirectional={layer.bidirectional}")  # fmt: skip
    return kind


def carry_from_equinox(layer: Layer, hidden) -> tuple:
    """An Equinox state (LSTM ``(h, c)``, GRU ``h``; ``[H]`` or batched ``[*batch, H]``) as ``layer``'s carry."""
    kind = _single_cell(layer, "carry_from_equinox")
    if kind == "lstm":
        if not (isinstance(hidden, tuple) and len(hidden) == 2):
            raise TypeError(f"carry_from_equinox: an LSTM state must be a tuple (h, c), got {type(hidden).__name__}")
        h, c = (_to_numpy(a, name) for a, name in zip(hidden, ("h", "c")))
        _one_dtype({"h": h, "c": c}, "carry_from_equinox: h and c")
        h, c = _jnp(h), _jnp(c)
        if h.shape != c.shape:
            raise ValueError(f"carry_from_equinox: h and c must have one shape, got {_shape(h.shape)} and "
                             f"{_shape(c.shape)}")  # fmt: skip
        return (LSTMState(h=h, c=c),)
    if isinstance(hidden, (tuple, list)):
        raise TypeError(f"carry_from_equinox: a GRU state must be one array [*batch, H], got a {type(hidden).__name__}")
    array = _to_numpy(hidden, "hidden")
    _one_dtype({"hidden": array}, "carry_from_equinox: hidden")
    return (_jnp(array),)


def carry_to_equinox(layer: Layer, carry):
    """``layer``'s carry as an Equinox state: ``(h, c)`` for an LSTM, ``h`` for a GRU."""
    kind = _single_cell(layer, "carry_to_equinox")
    (state,) = _flat_states(layer, carry, "carry_to_equinox")
    return (state.h, state.c) if kind == "lstm" else state
