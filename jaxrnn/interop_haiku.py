"""Weights in and out of Haiku's ``hk.LSTM``, ``hk.GRU``, ``hk.VanillaRNN`` and a ``hk.DeepRNN`` of them: the same
function and states.

Haiku keeps its parameters in a dict of module paths. ``hk.LSTM`` (name ``"lstm"``) has one linear map on the
concatenation ``[x, h]``, gates in the order **i, g, f, o**, and adds 1 to the forget gate's pre-activation inside
the step (``σ(f + 1)``)::

    {"lstm/linear": {"w": [D+H, 4H], "b": [4H]}}
    w_x = w[:D],  w_h = w[D:]        columns reordered i, g, f, o -> i, f, g, o
    b   = b (reordered),  b_f + 1    (so jaxrnn's σ(b_f) is Haiku's σ(b_f + 1))

``hk.VanillaRNN`` is ``h' = relu(x w_i + b_i + h w_h + b_h)`` (``b_h`` absent with ``double_bias=False``), a
ReLU ``jaxrnn.elman``::

    {"vanilla_rnn/linear": {"w": [D, H], "b": [H]}, "vanilla_rnn/linear_1": {"w": [H, H], "b": [H]}}
    w_x = w_i,  w_h = w_h,  b = b_i + b_h

``hk.GRU`` resets *before* its recurrent matmul (``a = tanh(x W_ia + (r·h) W_ha + b_a)``), which is jaxrnn's
reset-before GRU (``b_hn=None``). Its gate blocks are **z, r, a**, and it keeps ``z`` where jaxrnn keeps ``1 − z``
(``h' = (1 − z)·h + z·a``), so its z block changes sign (``1 − σ(v) = σ(−v)``)::

    {"gru": {"w_i": [D, 3H], "w_h": [H, 3H], "b": [3H]}}
    w_x = [w_i_r, −w_i_z, w_i_a],  w_h, b likewise,  b_hn = None

``hk.DeepRNN([core, core, ...])`` (cores only, no skip connections) feeds each core's output to the next: a
``jaxrnn.stack`` of as many layers. Its cores are named ``"lstm"``, ``"lstm_1"``, ...; its state is the tuple of
their states, as jaxrnn's carry is.

The conversion is made of ``jax.numpy`` operations, so it also runs under ``jit`` and ``grad`` (a gradient with
respect to Haiku's parameters flows through it). Haiku is imported only by :func:`carry_to_haiku`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import jax.numpy as jnp

from jaxrnn.cells.elman import ElmanParams
from jaxrnn.cells.gru import GRUParams
from jaxrnn.cells.lstm import LSTMParams, LSTMState
from jaxrnn.interop import _CELLS, _flat_states, _kind_of_layer, _layer_info, _one_dtype, _shape
from jaxrnn.stack import Layer, stack

__all__ = ["carry_from_haiku", "carry_to_haiku", "from_haiku", "to_haiku"]

# Haiku's gate blocks i, g, f, o in jaxrnn's order i, f, g, o (a permutation that is its own inverse).
_GATE_ORDER = (0, 2, 1, 3)
# hk.GRU's blocks z, r, a as jaxrnn's r, z, n with z negated (Haiku keeps z where jaxrnn keeps 1 − z = σ(−v)), and
# back.
_GRU_FROM_HAIKU = ((1, 0, 2), (1, -1, 1))
_GRU_TO_HAIKU = ((1, 0, 2), (-1, 1, 1))
# Haiku's LSTM adds this to the forget gate's pre-activation inside the step.
FORGET_OFFSET = 1.0


def _blocks(a, hidden: int, order, signs=None):
    """``a [..., G·H]`` with its ``H``-wide blocks taken in ``order``, the ``k``-th negated where ``signs[k]`` is -1."""
    blocks = [a[..., k * hidden : (k + 1) * hidden] for k in order]
    return jnp.concatenate([-x if s == -1 else x for x, s in zip(blocks, signs or (1,) * len(order))], axis=-1)


def _array(value, where: str):
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise TypeError(f"{where} must be an array, got {type(value).__name__}")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"{where} must be floating point, got dtype {value.dtype}")
    _one_dtype({where: value}, where)  # float64 needs x64
    return jnp.asarray(value)


def _linear(params: Mapping, path: str, *, bias: bool | None = True) -> tuple:
    """``(w, b or None)`` of the ``hk.Linear`` at ``path``; ``bias=None``: optional."""
    entry = params.get(path)
    if not isinstance(entry, Mapping) or "w" not in entry:
        raise ValueError(f"params has no hk.Linear at {path!r} (expected {{'w': ..., 'b': ...}})")
    unknown = sorted(set(entry) - {"w", "b"})
    if unknown:
        raise ValueError(f"params[{path!r}] has unexpected entries {unknown}; an hk.Linear has 'w' and 'b'")
    if bias and "b" not in entry:
        raise ValueError(f"params[{path!r}] has no bias 'b'; Haiku's recurrent cores create it")
    w = _array(entry["w"], f"params[{path!r}]['w']")
    b = _array(entry["b"], f"params[{path!r}]['b']") if "b" in entry else None
    if w.ndim != 2 or (b is not None and b.shape != (w.shape[1],)):
        got = _shape(w.shape) + ("" if b is None else f" and b {_shape(b.shape)}")
        raise ValueError(f"params[{path!r}] must hold w [in, out] and b [out], got w {got}")
    return w, b


def _core_kind(params: Mapping, name: str) -> str:
    if isinstance(params.get(name), Mapping) and {"w_i", "w_h"} <= set(params[name]):
        return "gru"
    if f"{name}/linear" not in params:
        raise ValueError(
            f"params has no Haiku core named {name!r}: expected {name + '/linear'!r} (hk.LSTM, or with "
            f"{name + '/linear_1'!r} hk.VanillaRNN) or {name!r} with 'w_i', 'w_h', 'b' (hk.GRU); found modules "
            f"{sorted(params)[:8]}"
        )
    return "elman" if f"{name}/linear_1" in params else "lstm"


def _gru_params(entry: Mapping, name: str) -> GRUParams:
    unknown = sorted(set(entry) - {"w_i", "w_h", "b"})
    if unknown or "b" not in entry:
        raise ValueError(f"params[{name!r}] of an hk.GRU must hold 'w_i', 'w_h' and 'b', got {sorted(entry)}")
    w_i, w_h, b = (_array(entry[k], f"params[{name!r}][{k!r}]") for k in ("w_i", "w_h", "b"))
    hidden = w_h.shape[0] if w_h.ndim == 2 else 0
    if (
        hidden == 0
        or w_h.shape != (hidden, 3 * hidden)
        or w_i.ndim != 2
        or w_i.shape[1] != 3 * hidden
        or b.shape != (3 * hidden,)
    ):
        raise ValueError(
            f"params[{name!r}] of an hk.GRU must hold w_i [D, 3H], w_h [H, 3H] and b [3H], got w_i "
            f"{_shape(w_i.shape)}, w_h {_shape(w_h.shape)}, b {_shape(b.shape)}"
        )
    return GRUParams(*(_blocks(v, hidden, *_GRU_FROM_HAIKU) for v in (w_i, w_h, b)), b_hn=None)


def _core_params(params: Mapping, name: str, kind: str):
    if kind == "gru":
        return _gru_params(params[name], name)
    if kind == "elman":
        w_i, b_i = _linear(params, f"{name}/linear")
        w_h, b_h = _linear(params, f"{name}/linear_1", bias=None)
        if w_h.shape != (w_i.shape[1], w_i.shape[1]):
            raise ValueError(
                f"params[{name + '/linear_1'!r}]['w'] must be [H, H] = {_shape((w_i.shape[1],) * 2)}, got "
                f"{_shape(w_h.shape)}"
            )
        return ElmanParams(w_x=w_i, w_h=w_h, b=b_i if b_h is None else b_i + b_h, activation="relu")
    w, b = _linear(params, f"{name}/linear")
    hidden = w.shape[1] // 4
    if w.shape[1] % 4 or w.shape[0] <= hidden:
        raise ValueError(
            f"params[{name + '/linear'!r}]['w'] of an hk.LSTM must be [D+H, 4H] with D >= 1, got {_shape(w.shape)}"
        )
    inputs = w.shape[0] - hidden
    b = _blocks(b, hidden, _GATE_ORDER)
    b = b.at[hidden : 2 * hidden].add(jnp.asarray(FORGET_OFFSET, b.dtype))
    return LSTMParams(w_x=_blocks(w[:inputs], hidden, _GATE_ORDER), w_h=_blocks(w[inputs:], hidden, _GATE_ORDER), b=b)


def _looks_like_core(params: Mapping, name: str) -> bool:
    """Whether the module ``name`` has an ``hk.LSTM``'s, ``hk.GRU``'s or ``hk.VanillaRNN``'s parameter names and
    shapes."""
    entry = params.get(name)
    if isinstance(entry, Mapping) and {"w_i", "w_h"} <= set(entry):
        return True
    first, second = params.get(f"{name}/linear"), params.get(f"{name}/linear_1")
    w = first.get("w") if isinstance(first, Mapping) else None
    if getattr(w, "ndim", 0) != 2:
        return False
    if isinstance(second, Mapping):
        w_h = second.get("w")
        return getattr(w_h, "shape", None) == (w.shape[1], w.shape[1])
    return w.shape[1] % 4 == 0 and w.shape[0] > w.shape[1] // 4


def _default_names(params: Mapping) -> list[str]:
    """The cores in ``params``, in Haiku's creation order (``lstm``, ``lstm_1``, ...; ``gru``, ...;
    ``vanilla_rnn``, ...): the modules with the parameter shapes of one."""
    names = {path.rsplit("/", 1)[0] for path in params if re.search(r"/linear(_\d+)?$", path)}
    names |= set(params)
    names = {name for name in names if _looks_like_core(params, name)}

    def order(name):
        match = re.match(r"^(.*?)(?:_(\d+))?$", name)
        return match.group(1), int(match.group(2) or 0)

    return sorted(names, key=order)


def _names(names, count: int | None = None) -> list[str]:
    """``names`` (one module name, or a sequence of them) as a non-empty list of non-empty strings; with ``count``,
    one name per layer and no name twice (each core writes its own parameters)."""
    listed = [names] if isinstance(names, str) else list(names) if isinstance(names, Sequence) else None
    if not listed or not all(isinstance(n, str) and n for n in listed):
        raise TypeError(f"names must be a module name or a non-empty sequence of them (non-empty str), got {names!r}")
    if count is not None and len(listed) != count:
        raise ValueError(f"names must name the {count} layers, got {len(listed)}: {listed}")
    repeated = sorted({n for n in listed if listed.count(n) > 1})
    if count is not None and repeated:
        raise ValueError(f"names must differ, one module per layer; {repeated} name more than one layer: {listed}")
    return listed


def from_haiku(params: Mapping, names: str | Sequence[str] | None = None) -> tuple[Layer, tuple]:
    """Convert the parameters of an ``hk.LSTM``, an ``hk.GRU`` (to the reset-before ``jaxrnn.gru``, ``b_hn=None``),
    an ``hk.VanillaRNN``, or an ``hk.DeepRNN`` of one of them, to ``(layer, params)``: a :func:`jaxrnn.stack` Layer
    with one layer per core.

    ``layer.apply(params, xs, carry_from_haiku(layer, state))`` on ``xs [B, T, D]`` equals
    ``hk.dynamic_unroll(core, xs, state, time_major=False)`` in outputs and final state. Arrays keep their dtype.

    Args:
      params: Haiku's parameter dict (from ``hk.transform(...).init``), or the part of it that holds the cores.
      names: the core's module name (``"lstm"``, ``"my_model/~/lstm"``), or the names of a ``DeepRNN``'s cores in
        order. None: every module in ``params`` with the parameter shapes of a core, in Haiku's naming order
        (``lstm``, ``lstm_1``, ...); pass ``names`` when the model holds other modules that could look like one.

    Raises:
      ValueError: a name with no core, cores of mixed kinds, or weights whose shapes do not fit (``[D+H, 4H]`` for
        an LSTM; ``[D, 3H]``, ``[H, 3H]``, ``[3H]`` for a GRU; ``[D, H]``, ``[H, H]`` for a VanillaRNN; each layer
        reading the previous one's ``H``).
      TypeError: ``params`` is not a mapping, or holds non-float arrays.
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be Haiku's parameter dict (a mapping of module paths), got {type(params).__name__}"
        )
    if names is None:
        names = _default_names(params)
        if not names:
            raise ValueError(
                f"params holds no Haiku recurrent core (hk.LSTM, hk.GRU, hk.VanillaRNN); found {sorted(params)[:8]}"
            )
    else:
        names = _names(names)
    kinds = [_core_kind(params, name) for name in names]
    if len(set(kinds)) != 1:
        raise ValueError(f"the cores {names} mix kinds {kinds}; a jaxrnn stack has one cell (pass names= to pick)")
    layers = tuple(_core_params(params, name, kinds[0]) for name in names)
    for k in range(1, len(layers)):
        want, got = layers[k - 1].w_h.shape[0], layers[k].w_x.shape[0]
        if got != want:
            raise ValueError(
                f"core {names[k]!r} reads {got} features but {names[k - 1]!r} emits {want}: a DeepRNN without skip "
                f"connections feeds each core's output to the next"
            )
    return stack(_CELLS[kinds[0]], len(layers)), layers


def to_haiku(layer: Layer, params, names: str | Sequence[str] | None = None, *, double_bias: bool = True) -> dict:
    """The inverse of :func:`from_haiku`: Haiku's parameter dict for ``hk.LSTM``, ``hk.GRU`` or ``hk.VanillaRNN``
    cores (one per layer, for an ``hk.DeepRNN`` of them), in the params' dtype.

    Args:
      names: the module names, one per layer, all different; default ``"lstm"``, ``"lstm_1"``, ... (``"gru"``,
        ``"vanilla_rnn"``, ...): what Haiku names cores created in that order. The layers may differ in hidden
        size (as an ``hk.DeepRNN``'s cores may).
      double_bias: for ``hk.VanillaRNN(double_bias=...)``: with True its second bias is written as zeros.

    Raises:
      ValueError: a reset-after GRU (``hk.GRU`` resets before; make the params with
        ``jaxrnn.gru.init(..., reset_after=False)``), a tanh Elman cell (``hk.VanillaRNN`` is ReLU), a
        bidirectional layer (Haiku has none), ``recurrent_dropout`` or ``dropout`` (Haiku's cores have none), or
        ``names`` of the wrong length or with a name twice.
      TypeError: ``names`` that are not strings.
    """
    kind, activation, _, _, entries = _layer_info(layer, params, "to_haiku", one_hidden=False)
    if kind == "elman" and activation != "relu":
        raise ValueError(f"to_haiku: hk.VanillaRNN is a ReLU cell; the params have activation {activation!r}")
    if layer.bidirectional:
        raise ValueError("to_haiku: Haiku has no bidirectional core; convert each direction on its own")
    if layer.dropout > 0.0 or layer.recurrent_dropout > 0.0:
        raise ValueError(
            f"to_haiku: Haiku's cores have no dropout; layer has dropout={layer.dropout}, "
            f"recurrent_dropout={layer.recurrent_dropout}"
        )
    base = {"lstm": "lstm", "gru": "gru", "elman": "vanilla_rnn"}[kind]
    if names is None:
        names = [base if k == 0 else f"{base}_{k}" for k in range(layer.num_layers)]
    names = _names(names, layer.num_layers)
    out = {}
    for name, (p,) in zip(names, entries):
        hidden = p.w_h.shape[0]
        if kind == "gru":
            out[name] = {k: _blocks(v, hidden, *_GRU_TO_HAIKU) for k, v in (("w_i", p.w_x), ("w_h", p.w_h), ("b", p.b))}
        elif kind == "elman":
            out[f"{name}/linear"] = {"w": p.w_x, "b": p.b}
            out[f"{name}/linear_1"] = {"w": p.w_h} | ({"b": jnp.zeros_like(p.b)} if double_bias else {})
        else:
            b = p.b.at[hidden : 2 * hidden].add(-jnp.asarray(FORGET_OFFSET, p.b.dtype))
            w = jnp.concatenate([p.w_x, p.w_h], axis=0)
            out[f"{name}/linear"] = {"w": _blocks(w, hidden, _GATE_ORDER), "b": _blocks(b, hidden, _GATE_ORDER)}
    return out


def carry_from_haiku(layer: Layer, state) -> tuple:
    """A Haiku state as ``layer``'s carry: ``hk.LSTMState(hidden, cell)`` (or any ``(hidden, cell)`` pair) or a
    VanillaRNN's array for one core; for a ``DeepRNN``, the tuple of its cores' states."""
    kind = _kind_of_layer(layer, "carry_from_haiku")
    if layer.bidirectional:
        raise ValueError("carry_from_haiku: Haiku has no bidirectional core")
    states = (state,) if layer.num_layers == 1 else state
    if not isinstance(states, (tuple, list)) or len(states) != layer.num_layers:
        raise ValueError(
            f"carry_from_haiku: a {layer.num_layers}-layer DeepRNN state is a tuple of {layer.num_layers} core "
            f"states, got {type(state).__name__}"
        )

    def one(s, k):
        if kind != "lstm":
            return _array(s, f"state[{k}]")
        if not (isinstance(s, tuple) and len(s) == 2):
            raise TypeError(f"carry_from_haiku: an LSTM state is hk.LSTMState(hidden, cell), got {type(s).__name__}")
        h, c = _array(s[0], f"state[{k}].hidden"), _array(s[1], f"state[{k}].cell")
        _one_dtype({f"state[{k}].hidden": h, f"state[{k}].cell": c}, f"carry_from_haiku: state[{k}]")
        if h.shape != c.shape:
            raise ValueError(f"carry_from_haiku: hidden and cell must have one shape, got {_shape(h.shape)} and "
                             f"{_shape(c.shape)}")  # fmt: skip
        return LSTMState(h=h, c=c)

    return tuple(one(s, k) for k, s in enumerate(states))


def carry_to_haiku(layer: Layer, carry):
    """``layer``'s carry as Haiku's state: ``hk.LSTMState(hidden, cell)`` or an array per core; a tuple of them
    for more than one layer (a ``DeepRNN`` state)."""
    import haiku as hk

    kind = _kind_of_layer(layer, "carry_to_haiku")
    if layer.bidirectional:
        raise ValueError("carry_to_haiku: Haiku has no bidirectional core")
    states = [hk.LSTMState(hidden=s.h, cell=s.c) if kind == "lstm" else s
              for s in _flat_states(layer, carry, "carry_to_haiku")]  # fmt: skip
    return states[0] if layer.num_layers == 1 else tuple(states)
