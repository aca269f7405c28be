"""Weights in and out of Flax (linen and NNX) recurrent cells: the same function, outputs and final states.

``from_flax`` reads a linen variables dict (from ``module.init``) or an NNX module; ``to_flax`` builds the linen
module and its variables, or the NNX module with the weights in it. Supported: ``LSTMCell`` and
``OptimizedLSTMCell``, ``GRUCell`` and ``SimpleCell``, alone, inside ``RNN`` or in a ``Bidirectional`` pair of
``RNN``. The result is a one-layer :func:`jaxrnn.stack` :class:`~jaxrnn.Layer` and its params, so
``layer.apply(params, xs, lengths=seq_lengths)`` computes what Flax computes. Flax is imported only by the functions
that build or read NNX modules; a linen variables dict is read without it.

Layout mapping (``H`` hidden size; ``[a | b]`` joins along the last axis; linen names, NNX in brackets)::

    LSTM   w_x = [ii | if | ig | io].kernel            [D, 4H]  (OptimizedLSTMCell NNX: dense_i.kernel)
           w_h = [hi | hf | hg | ho].kernel            [H, 4H]  (dense_h.kernel)
           b   = [hi | hf | hg | ho].bias              [4H]     (dense_h.bias; the input denses have no bias)
    GRU    w_x = [ir | iz | in].kernel,  b = [ir | iz | in].bias      (NNX: dense_i.kernel, dense_i.bias)
           w_h = [hr | hz | hn].kernel,  b_hn = hn.bias               (NNX: dense_h.kernel; NNX has no b_hn: 0)
    Simple w_x = i.kernel,  w_h = h.kernel,  b = i.bias              (NNX: dense_i, dense_h)

(NNX's ``LSTMCell`` names the forget-gate input dense ``if_``.) The LSTM carry is ``(c, h)`` in Flax and
``LSTMState(h, c)`` here: :func:`carry_from_flax` and :func:`carry_to_flax` swap it.

What the weights cannot show is checked on a module and assumed for a bare variables dict: ``gate_fn`` is
``sigmoid``, ``activation_fn`` is ``tanh`` (``SimpleCell``: ``tanh`` or ``relu``, kept as the Elman activation),
``SimpleCell(residual=False)``, an ``RNN`` that runs forward, and ``Bidirectional`` with its default ``merge_fn``
(concatenation). Pass the linen module as ``module=`` to have them checked. Flax's ``RNN(seq_lengths=...)`` leaves
outputs past a sequence's length unspecified where jaxrnn writes zeros; outputs within the lengths and final states
agree. ``MGUCell`` and ``ConvLSTMCell`` have no jaxrnn counterpart and are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells.elman import ElmanParams
from jaxrnn.cells.gru import GRUParams
from jaxrnn.cells.lstm import LSTMParams, LSTMState
from jaxrnn.interop import (
    _CELLS,
    _dtype_of,
    _flat_states,
    _jnp,
    _kind_of_layer,
    _layer_info,
    _one_dtype,
    _shape,
    _to_numpy,
)
from jaxrnn.stack import Bidirectional, Layer, stack

__all__ = ["carry_from_flax", "carry_to_flax", "from_flax", "to_flax"]

# linen submodule names per gate, in jaxrnn's gate order; which of them hold a bias.
_LINEN_INPUT = {"lstm": ("ii", "if", "ig", "io"), "gru": ("ir", "iz", "in"), "elman": ("i",)}
_LINEN_HIDDEN = {"lstm": ("hi", "hf", "hg", "ho"), "gru": ("hr", "hz", "hn"), "elman": ("h",)}
_LINEN_BIASED = {"lstm": {"hi", "hf", "hg", "ho"}, "gru": {"ir", "iz", "in", "hn"}, "elman": {"i"}}
_LINEN_KEYS = {kind: frozenset(_LINEN_INPUT[kind] + _LINEN_HIDDEN[kind]) for kind in _LINEN_INPUT}
_UNSUPPORTED = {
    frozenset({"if", "hf", "in", "hn"}): "MGUCell",
    frozenset({"ih", "hh"}): "ConvLSTMCell",
}
_CELL_CLASSES = {"LSTMCell": "lstm", "OptimizedLSTMCell": "lstm", "GRUCell": "gru", "SimpleCell": "elman"}
_KIND_PARAMS = {"lstm": LSTMParams, "gru": GRUParams, "elman": ElmanParams}
_KIND_NAMES = {LSTMParams: "LSTM cell", GRUParams: "GRU cell", ElmanParams: "SimpleCell"}


# ------------------------------------------------------------------------------------------------------ reading
def _sorted_keys(tree: Mapping) -> list[str]:
    return sorted(str(k) for k in tree)


def _dense(tree: Mapping, name: str, biased: bool, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    entry = tree[name]
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where}{name} must be a dict with 'kernel'{' and bias' if biased else ''}, got "
                        f"{type(entry).__name__}")  # fmt: skip
    expected = {"kernel", "bias"} if biased else {"kernel"}
    if set(entry) != expected:
        raise ValueError(f"{where}{name} must hold exactly {sorted(expected)}, got {_sorted_keys(entry)}")
    kernel = _to_numpy(entry["kernel"], f"{where}{name}.kernel")
    bias = _to_numpy(entry["bias"], f"{where}{name}.bias") if biased else None
    return kernel, bias


def _cell_from_linen(tree: Mapping, where: str):
    """Cell params from one linen cell's params dict (``{'ii': {'kernel': ...}, ...}``); a SimpleCell's activation
    is taken to be tanh (the weights cannot show it)."""
    keys, label = frozenset(str(k) for k in tree), where or "params"
    if keys in _UNSUPPORTED:
        raise ValueError(f"{label}: these are the params of a Flax {_UNSUPPORTED[keys]}, which jaxrnn has no cell "
                         f"for; expected LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell params")  # fmt: skip
    kinds = [kind for kind, expected in _LINEN_KEYS.items() if keys == expected]
    if not kinds:
        expected = "; ".join(f"{kind}: {sorted(names)}" for kind, names in _LINEN_KEYS.items())
        raise ValueError(f"{label}: not the params of a Flax LSTMCell, GRUCell or SimpleCell: got keys "
                         f"{_sorted_keys(tree)}, expected one of ({expected})")  # fmt: skip
    kind = kinds[0]
    pre = f"{where}." if where else ""
    inputs = [_dense(tree, n, n in _LINEN_BIASED[kind], pre) for n in _LINEN_INPUT[kind]]
    hiddens = [_dense(tree, n, n in _LINEN_BIASED[kind], pre) for n in _LINEN_HIDDEN[kind]]
    for name, (kernel, _) in zip(_LINEN_INPUT[kind] + _LINEN_HIDDEN[kind], inputs + hiddens):
        if kernel.ndim != 2:
            raise ValueError(f"{pre}{name}.kernel must be a matrix, got shape {_shape(kernel.shape)}")
    first_in, first_h = _LINEN_INPUT[kind][0], _LINEN_HIDDEN[kind][0]
    d_in, hidden = inputs[0][0].shape[0], hiddens[0][0].shape[1]
    kernel_rules = {"input": ((d_in, hidden), f"[D, H] = {_shape((d_in, hidden))} like {first_in}.kernel and "
                              f"{first_h}.kernel"), "hidden": ((hidden, hidden), f"[H, H] = {_shape((hidden, hidden))}")}  # fmt: skip
    named = [(n, d, "input") for n, d in zip(_LINEN_INPUT[kind], inputs)]
    named += [(n, d, "hidden") for n, d in zip(_LINEN_HIDDEN[kind], hiddens)]
    for name, (kernel, bias), role in named:
        shape, text = kernel_rules[role]
        if kernel.shape != shape:
            raise ValueError(f"{pre}{name}.kernel must have shape {text}, got {_shape(kernel.shape)}")
        if bias is not None and bias.shape != (hidden,):
            raise ValueError(f"{pre}{name}.bias must have shape [{hidden}], got {_shape(bias.shape)}")
    names = _LINEN_INPUT[kind] + _LINEN_HIDDEN[kind]
    arrays = {f"{n}.{field}": a for n, dense in zip(names, inputs + hiddens)
              for field, a in zip(("kernel", "bias"), dense) if a is not None}  # fmt: skip
    _one_dtype(arrays, f"{label}: every kernel and bias")
    w_x = np.concatenate([k for k, _ in inputs], axis=-1)
    w_h = np.concatenate([k for k, _ in hiddens], axis=-1)
    if kind == "lstm":
        return LSTMParams(w_x=_jnp(w_x), w_h=_jnp(w_h), b=_jnp(np.concatenate([b for _, b in hiddens])))
    if kind == "gru":
        b = np.concatenate([b for _, b in inputs])
        return GRUParams(w_x=_jnp(w_x), w_h=_jnp(w_h), b=_jnp(b), b_hn=_jnp(hiddens[2][1]))
    return ElmanParams(w_x=_jnp(w_x), w_h=_jnp(w_h), b=_jnp(inputs[0][1]))


def _linen_structure(variables: Mapping) -> tuple[list[Mapping], list[str]]:
    """``(cell_trees, wheres)``: one cell dict (an ``RNN`` or a bare cell) or two (``Bidirectional``)."""
    tree = variables
    if "params" in tree:
        tree = tree["params"]
        if not isinstance(tree, Mapping):
            raise TypeError(f"variables['params'] must be a dict, got {type(tree).__name__}")
    keys = set(map(str, tree))
    if keys == {"forward_rnn", "backward_rnn"}:
        cells, wheres = [], []
        for name in ("forward_rnn", "backward_rnn"):
            sub = tree[name]
            if not isinstance(sub, Mapping) or set(map(str, sub)) != {"cell"}:
                got = _sorted_keys(sub) if isinstance(sub, Mapping) else type(sub).__name__
                raise ValueError(f"{name} must hold one 'cell' (a Flax RNN), got {got}")
            cells.append(sub["cell"])
            wheres.append(f"{name}.cell")
        return cells, wheres
    if keys == {"cell"}:
        return [tree["cell"]], ["cell"]
    return [tree], [""]


def _cell_activation(cell, where: str, hidden: int | None = None) -> str:
    """Check a Flax cell's configuration (and, given ``hidden``, its ``features``); return its Elman activation."""
    name = type(cell).__name__
    if name not in _CELL_CLASSES:
        raise ValueError(f"{where} must be a Flax LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell, got {name}")
    if hidden is not None and cell.features != hidden:
        raise ValueError(f"{where} has {cell.features} features but the params have hidden size {hidden}")
    if name != "SimpleCell" and cell.gate_fn is not jax.nn.sigmoid:
        raise ValueError(f"{where}.gate_fn must be sigmoid (what jaxrnn's {name} counterpart computes), got "
                         f"{cell.gate_fn!r}")  # fmt: skip
    activations = {jnp.tanh: "tanh", jax.nn.relu: "relu"} if name == "SimpleCell" else {jnp.tanh: "tanh"}
    activation = next((act for fn, act in activations.items() if cell.activation_fn is fn), None)
    if activation is None:
        raise ValueError(f"{where}.activation_fn must be {' or '.join(activations.values())}, got "
                         f"{cell.activation_fn!r}")  # fmt: skip
    if name == "SimpleCell" and getattr(cell, "residual", False):
        raise ValueError(f"{where}.residual must be False: a residual SimpleCell has no jaxrnn counterpart")
    return activation


def _is_default_merge(merge_fn) -> bool:
    return getattr(merge_fn, "__name__", None) == "_concatenate" and "flax" in getattr(merge_fn, "__module__", "")


def _check_rnn(rnn, where: str):
    """The cell of a Flax ``RNN`` that runs forward (linen or NNX)."""
    if type(rnn).__name__ != "RNN" or not hasattr(rnn, "cell"):
        raise ValueError(f"{where} must be a Flax RNN, got {type(rnn).__name__}")
    if getattr(rnn, "reverse", False):
        raise ValueError(f"{where}.reverse must be False (a lone reversed RNN has no Layer counterpart; use "
                         f"jaxrnn.rnn(..., reverse=True) with the cell params)")  # fmt: skip
    return rnn.cell


def _rnn_cells(module, where: str) -> tuple[list, list[str]]:
    """``(cells, paths)`` of a linen or NNX module: a ``Bidirectional`` of two forward ``RNN`` (default merge), an
    ``RNN``, or a bare cell."""
    name = type(module).__name__
    if name == "Bidirectional":
        if not _is_default_merge(module.merge_fn):
            raise ValueError(f"{where}.merge_fn must be Flax's default (concatenation), got {module.merge_fn!r}")
        sides = ("forward_rnn", "backward_rnn")
        cells = [_check_rnn(getattr(module, side), f"{where}.{side}") for side in sides]
        return cells, [f"{where}.{side}.cell" for side in sides]
    if name == "RNN":
        return [_check_rnn(module, where)], [f"{where}.cell"]
    return [module], [where]


def _layer_for(params: list) -> tuple[Layer, tuple]:
    kind = {cls: kind for kind, cls in _KIND_PARAMS.items()}[type(params[0])]
    if len(params) == 2:
        sizes = [_CELLS[kind].sizes(p) for p in params]
        if sizes[0] != sizes[1] or type(params[0]) is not type(params[1]):
            raise ValueError(f"forward and backward cells must match, got (input, hidden) sizes {sizes[0]} and "
                             f"{sizes[1]}")  # fmt: skip
        if kind == "elman" and params[0].activation != params[1].activation:
            raise ValueError(f"forward and backward cells must share an activation, got {params[0].activation!r} "
                             f"and {params[1].activation!r}")  # fmt: skip
        return stack(_CELLS[kind], bidirectional=True, merge="concat"), (Bidirectional(*params),)
    return stack(_CELLS[kind]), (params[0],)


def _nnx_value(variable) -> np.ndarray:
    return _to_numpy(variable[...], "an NNX Param")


def _cell_from_nnx(cell, where: str):
    name = type(cell).__name__
    if name not in _CELL_CLASSES or not type(cell).__module__.startswith("flax.nnx"):
        raise ValueError(f"{where} must be a Flax NNX LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell, got "
                         f"{type(cell).__module__}.{name}")  # fmt: skip
    hidden = int(cell.hidden_features)
    activation = _cell_activation(cell, where)
    if name == "LSTMCell":
        w_x = np.concatenate([_nnx_value(getattr(cell, n).kernel) for n in ("ii", "if_", "ig", "io")], axis=-1)
        w_h = np.concatenate([_nnx_value(getattr(cell, n).kernel) for n in ("hi", "hf", "hg", "ho")], axis=-1)
        b = np.concatenate([_nnx_value(getattr(cell, n).bias) for n in ("hi", "hf", "hg", "ho")])
        return LSTMParams(w_x=_jnp(w_x), w_h=_jnp(w_h), b=_jnp(b))
    w_x, w_h = _nnx_value(cell.dense_i.kernel), _nnx_value(cell.dense_h.kernel)
    if name == "OptimizedLSTMCell":
        return LSTMParams(w_x=_jnp(w_x), w_h=_jnp(w_h), b=_jnp(_nnx_value(cell.dense_h.bias)))
    b = _nnx_value(cell.dense_i.bias)
    if name == "GRUCell":
        return GRUParams(w_x=_jnp(w_x), w_h=_jnp(w_h), b=_jnp(b), b_hn=_jnp(np.zeros((hidden,), b.dtype)))
    return ElmanParams(w_x=_jnp(w_x), w_h=_jnp(w_h), b=_jnp(b), activation=activation)


def from_flax(source, *, module=None) -> tuple[Layer, tuple]:
    """Convert Flax recurrent weights to ``(layer, params)``: a one-layer :func:`jaxrnn.stack` Layer.

    ``layer.apply(params, xs, lengths=seq_lengths)`` then equals the Flax ``RNN`` (or ``Bidirectional``) on ``xs``
    within each sequence's length, and in final states (:func:`carry_to_flax` gives Flax's carry). A bare cell maps
    as if wrapped in ``RNN``; ``layer.cell`` and ``params[0]`` are then the cell and its params for
    :func:`jaxrnn.rnn`. A ``time_major=True`` Flax RNN maps to the same layer: call
    ``layer.apply(..., time_major=True)``. Arrays keep their dtype.

    Args:
      source: a linen variables dict (``module.init(key, xs)``, with or without its ``'params'`` level) of an
        ``RNN``, a ``Bidirectional`` of two ``RNN`` or a bare cell; or an NNX ``LSTMCell``,
        ``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``, or an ``nnx.RNN``/``nnx.Bidirectional`` of them.
      module: for a linen variables dict, the linen module it came from, so that its configuration is checked
        (``gate_fn``, ``activation_fn``, ``SimpleCell.residual``, ``reverse``, ``merge_fn``) and a ``SimpleCell``'s
        ``relu`` is carried over. Without it the Flax defaults are assumed. Not allowed with an NNX ``source``,
        which is checked itself.

    Returns:
      ``(layer, params)``: a Layer with ``num_layers=1`` (``bidirectional=True, merge="concat"`` for a
      ``Bidirectional``) and a 1-tuple of cell params (``Bidirectional(forward, backward)`` when bidirectional).

    Raises:
      ValueError: params of a cell jaxrnn lacks (``MGUCell``, ``ConvLSTMCell``), missing or unexpected keys,
        shapes that do not fit together, or a module configuration that jaxrnn cannot compute.
      TypeError: ``source`` is neither a mapping nor a Flax NNX module.
    """
    if isinstance(source, Mapping):
        trees, wheres = _linen_structure(source)
        cells = [None] * len(trees)
        if module is not None:
            cells, _ = _rnn_cells(module, "module")
            if len(cells) != len(trees):
                raise ValueError(f"module is a {type(module).__name__} ({len(cells)} cell(s)) but the variables hold "
                                 f"{len(trees)} cell(s)")  # fmt: skip
        params = []
        for tree, where, cell in zip(trees, wheres, cells):
            if not isinstance(tree, Mapping):
                raise TypeError(
                    f"{where or 'params'} must be a dict of a Flax cell's params, got {type(tree).__name__}"
                )
            p = _cell_from_linen(tree, where)
            if cell is not None:
                path = "module" + (f".{where}" if where else "")
                activation = _cell_activation(cell, path, p.w_h.shape[0])
                if not isinstance(p, _KIND_PARAMS[_CELL_CLASSES[type(cell).__name__]]):
                    raise ValueError(f"{path} is a {type(cell).__name__} but the variables hold the params of a "
                                     f"{_KIND_NAMES[type(p)]}")  # fmt: skip
                if isinstance(p, ElmanParams):
                    p = p._replace(activation=activation)
            params.append(p)
        return _layer_for(params)
    if module is not None:
        raise TypeError("module= is for a linen variables dict; an NNX source is checked itself")
    if not type(source).__module__.startswith("flax.nnx"):
        raise TypeError(f"source must be a linen variables dict or a Flax NNX module, got {type(source).__name__}")
    cells, wheres = _rnn_cells(source, "source")
    return _layer_for([_cell_from_nnx(cell, where) for cell, where in zip(cells, wheres)])


# ------------------------------------------------------------------------------------------------------ writing
def _linen_cell_params(kind: str, p) -> dict:
    hidden = p.w_h.shape[0]
    w_x, w_h, b = np.asarray(p.w_x), np.asarray(p.w_h), np.asarray(p.b)

    def block(a, j):
        return jnp.asarray(a[..., j * hidden : (j + 1) * hidden])

    out = {}
    for j, name in enumerate(_LINEN_INPUT[kind]):
        out[name] = {"kernel": block(w_x, j)}
    for j, name in enumerate(_LINEN_HIDDEN[kind]):
        out[name] = {"kernel": block(w_h, j)}
    if kind == "lstm":
        for j, name in enumerate(_LINEN_HIDDEN[kind]):
            out[name]["bias"] = block(b, j)
    elif kind == "gru":
        for j, name in enumerate(_LINEN_INPUT[kind]):
            out[name]["bias"] = block(b, j)
        out["hn"]["bias"] = jnp.asarray(np.asarray(p.b_hn))
    else:
        out["i"]["bias"] = jnp.asarray(b)
    return out


def _set(variable, value) -> None:
    value = jnp.asarray(np.asarray(value))
    if tuple(variable[...].shape) != value.shape:
        raise AssertionError(f"shape {value.shape} for an NNX Param of shape {variable[...].shape}")
    variable[...] = value.astype(variable[...].dtype)


def _nnx_cell(kind: str, p, optimized_lstm: bool, activation: str):
    from flax import nnx

    d_in, hidden = _CELLS[kind].sizes(p)
    dtype = np.dtype(p.w_x.dtype)
    zeros = nnx.initializers.zeros  # every weight is overwritten; and orthogonal init has no bfloat16
    options = dict(param_dtype=dtype, kernel_init=zeros, recurrent_kernel_init=zeros, bias_init=zeros,
                   rngs=nnx.Rngs(0))  # fmt: skip
    if kind == "lstm":
        cell = (nnx.OptimizedLSTMCell if optimized_lstm else nnx.LSTMCell)(d_in, hidden, **options)
        if optimized_lstm:
            _set(cell.dense_i.kernel, p.w_x)
            _set(cell.dense_h.kernel, p.w_h)
            _set(cell.dense_h.bias, p.b)
        else:
            blocks = _linen_cell_params(kind, p)
            for linen_name, attr in zip(_LINEN_INPUT[kind] + _LINEN_HIDDEN[kind],
                                        ("ii", "if_", "ig", "io", "hi", "hf", "hg", "ho")):  # fmt: skip
                dense = getattr(cell, attr)
                _set(dense.kernel, blocks[linen_name]["kernel"])
                if "bias" in blocks[linen_name]:
                    _set(dense.bias, blocks[linen_name]["bias"])
        return cell
    if kind == "gru":
        if np.any(np.asarray(p.b_hn) != 0):
            raise ValueError("to_flax: nnx.GRUCell has no recurrent n bias (b_hn), and these params have a nonzero "
                             "one; use api='linen' (linen's GRUCell has it, as hn.bias)")  # fmt: skip
        cell = nnx.GRUCell(d_in, hidden, **options)
    else:
        act = {"tanh": nnx.tanh, "relu": nnx.relu}[activation]
        cell = nnx.SimpleCell(d_in, hidden, activation_fn=act, **options)
    _set(cell.dense_i.kernel, p.w_x)
    _set(cell.dense_h.kernel, p.w_h)
    _set(cell.dense_i.bias, p.b)
    return cell


def to_flax(layer: Layer, params, *, api: str = "linen", optimized_lstm: bool = False, ignore_dropout: bool = False):
    """The inverse of :func:`from_flax`: the Flax ``RNN`` (``Bidirectional`` when bidirectional) of ``layer``.

    Args:
      layer, params: a one-layer :func:`jaxrnn.stack` Layer of ``jaxrnn.lstm``, ``jaxrnn.gru`` or ``jaxrnn.elman``
        (``merge="concat"`` when bidirectional) and its params. For a deeper stack convert each layer:
        ``to_flax(jaxrnn.stack(layer.cell), (params[k],))``.
      api: ``"linen"`` or ``"nnx"``.
      optimized_lstm: build ``OptimizedLSTMCell`` rather than ``LSTMCell`` (LSTM only; in linen the two share
        one params layout).
      ignore_dropout: drop ``layer.recurrent_dropout`` (Flax's cells have none; it acts only in training).

    Returns:
      linen: ``(module, variables)`` with ``module.apply(variables, xs)`` equal to ``layer.apply(params, xs)``;
      NNX: the module, weights in place, ``module(xs)`` equal to it. Params keep their dtype (``param_dtype``).

    Raises:
      ValueError: more than one layer, a merge other than ``"concat"``, ``recurrent_dropout > 0`` without ``ignore_dropout``,
        an unknown ``api``, ``optimized_lstm`` for a non-LSTM, a reset-before GRU (``b_hn=None``; Flax's GRUCell resets
        after its recurrent matmul), or (NNX only) a GRU with a nonzero ``b_hn``.
    """
    if api not in ("linen", "nnx"):
        raise ValueError(f"api must be 'linen' or 'nnx', got {api!r}")
    kind, activation, _, _, entries = _layer_info(layer, params, "to_flax")
    if layer.num_layers != 1:
        raise ValueError(f"to_flax: Flax has no multi-layer RNN; layer.num_layers must be 1, got {layer.num_layers}. "
                         f"Convert each layer: to_flax(jaxrnn.stack(layer.cell), (params[k],))")  # fmt: skip
    if layer.bidirectional and layer.merge != "concat":
        raise ValueError(f"to_flax: Flax's Bidirectional concatenates the directions by default; layer.merge must "
                         f"be 'concat', got {layer.merge!r}")  # fmt: skip
    if layer.recurrent_dropout > 0.0 and not ignore_dropout:
        raise ValueError(
            f"to_flax: layer.recurrent_dropout={layer.recurrent_dropout} has no Flax counterpart; expected 0.0, or "
            f"pass ignore_dropout=True to drop it (it acts only in training)"
        )
    if not isinstance(optimized_lstm, bool):
        raise TypeError(f"optimized_lstm must be a bool, got {type(optimized_lstm).__name__}")
    if optimized_lstm and kind != "lstm":
        raise ValueError(f"optimized_lstm=True is for an LSTM layer, got a {kind} layer")
    dtype = _dtype_of(entries)
    directions = entries[0]
    if api == "nnx":
        from flax import nnx

        rnns = [nnx.RNN(_nnx_cell(kind, p, optimized_lstm, activation)) for p in directions]
        return nnx.Bidirectional(*rnns) if layer.bidirectional else rnns[0]

    import flax.linen as nn

    hidden = directions[0].w_h.shape[0]
    if kind == "lstm":
        make = nn.OptimizedLSTMCell if optimized_lstm else nn.LSTMCell
        cells = [make(features=hidden, param_dtype=dtype) for _ in directions]
    elif kind == "gru":
        cells = [nn.GRUCell(features=hidden, param_dtype=dtype) for _ in directions]
    else:
        act = {"tanh": nn.tanh, "relu": nn.relu}[activation]
        cells = [nn.SimpleCell(features=hidden, activation_fn=act, param_dtype=dtype) for _ in directions]
    trees = [{"cell": _linen_cell_params(kind, p)} for p in directions]
    if layer.bidirectional:
        module = nn.Bidirectional(nn.RNN(cells[0]), nn.RNN(cells[1]))
        return module, {"params": {"forward_rnn": trees[0], "backward_rnn": trees[1]}}
    return nn.RNN(cells[0]), {"params": trees[0]}


# ------------------------------------------------------------------------------------------------------ carries
def _single_layer(layer, caller: str) -> str:
    kind = _kind_of_layer(layer, caller)
    if layer.num_layers != 1:
        raise ValueError(f"{caller}: Flax RNNs are one layer; layer.num_layers must be 1, got {layer.num_layers}")
    return kind


def _state_from_flax(kind: str, carry, where: str):
    if kind != "lstm":
        if isinstance(carry, (tuple, list)):
            raise TypeError(f"{where} must be one array [*batch, H] (a {kind} carry), got a {type(carry).__name__}")
        array = _to_numpy(carry, where)
        _one_dtype({where: array}, where)
        return _jnp(array)
    if not (isinstance(carry, tuple) and len(carry) == 2):
        raise TypeError(f"{where} must be an LSTM carry (c, h), got {type(carry).__name__}")
    c, h = (_to_numpy(a, f"{where}[{i}]") for i, a in enumerate(carry))
    _one_dtype({f"{where}[0] (c)": c, f"{where}[1] (h)": h}, f"{where}'s c and h")
    c, h = _jnp(c), _jnp(h)
    if c.shape != h.shape:
        raise ValueError(f"{where}: c and h must have one shape, got {_shape(c.shape)} and {_shape(h.shape)}")
    return LSTMState(h=h, c=c)


def carry_from_flax(layer: Layer, carry) -> tuple:
    """A Flax carry as ``layer``'s carry: LSTM ``(c, h)`` becomes ``LSTMState(h, c)``, a ``Bidirectional``'s
    ``(forward, backward)`` becomes ``Bidirectional(forward, backward)``; the result is a 1-tuple (one layer)."""
    kind = _single_layer(layer, "carry_from_flax")
    if layer.bidirectional:
        if not (isinstance(carry, tuple) and len(carry) == 2):
            raise TypeError(f"carry_from_flax: a Bidirectional carry must be (forward, backward), got "
                            f"{type(carry).__name__}")  # fmt: skip
        return (Bidirectional(*(_state_from_flax(kind, c, f"carry[{i}]") for i, c in enumerate(carry))),)
    return (_state_from_flax(kind, carry, "carry"),)


def carry_to_flax(layer: Layer, carry) -> Any:
    """``layer``'s carry (e.g. ``apply``'s final carry) in Flax's layout, the inverse of :func:`carry_from_flax`:
    ``(c, h)`` for an LSTM, ``h`` otherwise, a ``(forward, backward)`` pair when bidirectional; usable as
    ``initial_carry`` of the Flax ``RNN``/``Bidirectional``."""
    kind = _single_layer(layer, "carry_to_flax")
    states = _flat_states(layer, carry, "carry_to_flax")
    flax_states = [(s.c, s.h) if kind == "lstm" else s for s in states]
    return tuple(flax_states) if layer.bidirectional else flax_states[0]
