"""Weights in and out of PyTorch and Keras 3: the same function, outputs, final states and gradients.

``from_torch``/``to_torch`` convert ``torch.nn.RNN`` (tanh, relu), ``nn.LSTM`` and ``nn.GRU``, multi-layer and
bidirectional, and the cells ``nn.RNNCell``, ``nn.LSTMCell``, ``nn.GRUCell``, and ``from_keras``/``to_keras``
convert Keras 3 ``SimpleRNN``, ``LSTM``, ``GRU`` (``reset_after=True``, or ``False``: jaxrnn's reset-before GRU,
``b_hn=None``) and ``keras.layers.Bidirectional`` around them. The result is a :func:`jaxrnn.stack` :class:`~jaxrnn.Layer` and its
params, so ``layer.apply(params, xs, lengths=lengths)`` computes what the peer computes on a PackedSequence (PyTorch)
or a right-padding mask (Keras). Torch and Keras are optional: they are imported only inside these functions.
Flax's converters (``from_flax``, ``to_flax``, ``carry_from_flax``, ``carry_to_flax``) live in
:mod:`jaxrnn.interop_flax`, Equinox's (``from_equinox``, ...) in :mod:`jaxrnn.interop_equinox`, Haiku's
(``from_haiku``, ...) in :mod:`jaxrnn.interop_haiku`; all are offered here too.

Layout mapping (``T`` = transpose; ``H`` hidden size; blocks of ``H`` columns or entries):

PyTorch (gates i, f, g, o for LSTM; r, z, n for GRU; the same order as jaxrnn)::

    w_x = weight_ih_l{k}{sfx}.T          [D, G·H]   (torch: [G·H, D])
    w_h = weight_hh_l{k}{sfx}.T          [H, G·H]   (torch: [G·H, H])
    b   = bias_ih + bias_hh              Elman, LSTM
    b   = [b_ir + b_hr, b_iz + b_hz, b_in],   b_hn = b_hn          GRU

with ``sfx = "_reverse"`` for the backward direction (``Bidirectional.backward``). ``to_torch`` writes the combined
bias into ``bias_ih`` and zeros into ``bias_hh`` (GRU: ``bias_hh = [0, 0, b_hn]``), which is the same function.
Torch's stacked states ``h_n[k·D + d]`` (``D`` = number of directions, ``d = 0`` forward, ``1`` backward) are our
``carry[k]`` (``.forward``/``.backward`` when bidirectional); see :func:`carry_from_torch`/:func:`carry_to_torch`.

Keras 3 (LSTM gates i, f, c, o = ours; GRU gates **z, r, h**, ours r, z, n; ``swap`` exchanges the first two
``H``-blocks and is its own inverse)::

    SimpleRNN, LSTM:   w_x = kernel,  w_h = recurrent_kernel,  b = bias
    GRU:               w_x = swap(kernel),  w_h = swap(recurrent_kernel),
                       b = swap(bias[0]) + [bias[1]_r, bias[1]_z, 0],   b_hn = bias[1]_h
    GRU, reset_after=False:   b = swap(bias),   b_hn = None (the reset-before GRU)

``to_keras`` writes ``bias = [swap(b), [0, 0, b_hn]]`` for the GRU (``swap(b)`` for the reset-before one). PyTorch's
GRU resets after its recurrent matmul only: a reset-before GRU does not go to PyTorch.

Conventions that are not weights:

- PyTorch ``batch_first=False`` modules map to the same Layer; call ``layer.apply(..., time_major=True)``.
- PyTorch ``dropout`` (between layers) carries over to ``Layer.dropout``. Keras ``recurrent_dropout`` carries over to
  ``Layer.recurrent_dropout``; Keras' input ``dropout`` and a jaxrnn ``recurrent_dropout`` going to PyTorch have no
  counterpart and raise unless ``ignore_dropout=True`` (dropout only acts in training; inference is unchanged).
- Keras masks: a right-padding mask ``mask[b, t] = t < lengths[b]`` equals ``lengths=``. Keras' default
  ``zero_output_for_mask=False`` repeats the last output at masked steps where jaxrnn emits zeros (Bidirectional
  forces True); ``to_keras`` sets ``zero_output_for_mask=True``. Final states agree either way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells import elman as _elman
from jaxrnn.cells import gru as _gru
from jaxrnn.cells import lstm as _lstm
from jaxrnn.cells.base import fields_by_dtype
from jaxrnn.cells.elman import ElmanParams
from jaxrnn.cells.gru import GRUParams
from jaxrnn.cells.lstm import LSTMParams, LSTMPParams, LSTMState
from jaxrnn.stack import MERGES, Bidirectional, Layer, stack

__all__ = ["carry_from_keras", "carry_from_torch", "carry_to_keras", "carry_to_torch", "from_keras", "from_torch",
           "to_keras", "to_torch"]  # fmt: skip

_GATES = {"elman": 1, "gru": 3, "lstm": 4}
_KIND_BY_GATES = {g: k for k, g in _GATES.items()}
_KIND_ALIASES = {"elman": "elman", "rnn": "elman", "simple_rnn": "elman", "simplernn": "elman", "lstm": "lstm",
                 "gru": "gru"}  # fmt: skip
_CELLS = {"elman": _elman.cell, "lstm": _lstm.cell, "gru": _gru.cell}
# Keras Bidirectional merge_mode <-> jaxrnn's merge (merge_mode=None, two separate outputs, has no counterpart).
_MERGE_FROM_KERAS = {"concat": "concat", "sum": "sum", "ave": "mean", "mul": "mul"}
_MERGE_TO_KERAS = {ours: theirs for theirs, ours in _MERGE_FROM_KERAS.items()}
_PARAMS = {"elman": ElmanParams, "lstm": LSTMParams, "gru": GRUParams}
_ACTIVATIONS = ("tanh", "relu")


# ----------------------------------------------------------------------------------------------------------- helpers
def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _canonical_kind(kind, name: str = "kind") -> str:
    if not isinstance(kind, str) or kind.lower() not in _KIND_ALIASES:
        raise ValueError(f"{name} must be one of {sorted(_KIND_ALIASES)}, got {kind!r}")
    return _KIND_ALIASES[kind.lower()]


def _check_activation(activation, name: str) -> str:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{name} must be one of {list(_ACTIVATIONS)} (what jaxrnn.elman supports), got {activation!r}")
    return activation


def _check_rate(rate, name: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {rate!r}")
    return float(rate)


def _to_numpy(value, name: str) -> np.ndarray:
    """A torch tensor, Keras variable, JAX or NumPy array as a NumPy array (bfloat16 kept as ml_dtypes')."""
    if hasattr(value, "detach"):  # torch.Tensor
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            value = np.asarray(tensor.float().numpy()).astype(jnp.bfloat16)
        else:
            value = tensor.numpy()
    elif hasattr(value, "value") and not isinstance(value, np.ndarray) and hasattr(value, "assign"):  # keras Variable
        value = value.value
    try:
        array = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise TypeError(f"{name} must be an array or tensor, got {type(value).__name__}") from err
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{name} must be floating point, got dtype {array.dtype}")
    return array


def _one_dtype(arrays: Mapping[str, np.ndarray], what: str) -> np.dtype:
    """The one dtype of the named arrays; a ``TypeError`` naming them when they mix dtypes, or are float64 while
    ``jax_enable_x64`` is off (JAX would truncate them to float32)."""
    names: dict[str, list[str]] = {}
    for name, array in arrays.items():
        names.setdefault(str(array.dtype), []).append(name)
    if len(names) != 1:
        shown = ", ".join(f"{dtype} ({', '.join(n)})" for dtype, n in sorted(names.items()))
        raise TypeError(f"{what} must share one dtype, got {shown}")
    dtype = np.dtype(next(iter(names)))
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise TypeError(
            f"{what} are {dtype}, which needs jax_enable_x64 (jax.config.update('jax_enable_x64', True)); without it "
            f"JAX would truncate them to {jax.dtypes.canonicalize_dtype(dtype)}. Enable x64 or convert them first"
        )
    return dtype


def _swap_zr(a: np.ndarray, hidden: int) -> np.ndarray:
    """Exchange the first two ``hidden``-blocks of the last axis (Keras z|r|h <-> jaxrnn r|z|n); an involution."""
    return np.concatenate([a[..., hidden : 2 * hidden], a[..., :hidden], a[..., 2 * hidden :]], axis=-1)


def _jnp(a: np.ndarray):
    return jnp.asarray(a, dtype=a.dtype)


# The GRU form each exporter's peer computes: True reset after (b_hn), False reset before, None either.
_GRU_FORM = {"to_torch": ("PyTorch's nn.GRU", True), "to_flax": ("Flax's GRUCell", True),
             "to_equinox": ("Equinox's GRUCell", True), "to_haiku": ("Haiku's hk.GRU", False)}  # fmt: skip

# The LSTM of each exporter's peer other than PyTorch's, none of which projects its output (proj_size).
_LSTM_PEER = {"to_keras": "Keras' LSTM", "to_flax": "Flax's LSTMCell", "to_equinox": "Equinox's LSTMCell",
              "to_haiku": "Haiku's hk.LSTM"}  # fmt: skip


def _layer_info(layer, params, caller: str, *, one_hidden: bool = True) -> tuple[str, str, int, int, list]:
    """Validate a built-in-cell Layer and its params; return ``(kind, activation, input_size, hidden, entries)``
    where ``entries[k]`` is ``[forward]`` or ``[forward, backward]`` cell params of layer ``k`` and ``hidden`` is
    layer 0's. With ``one_hidden=False`` the layers may differ in hidden size (the two directions of one may not).
    GRU params must all be one form (reset after or before), the form ``caller``'s peer computes (``_GRU_FORM``)."""
    if not isinstance(layer, Layer):
        raise TypeError(f"{caller}: layer must be a jaxrnn Layer (from jaxrnn.stack), got {type(layer).__name__}")
    kinds = [k for k, c in _CELLS.items() if layer.cell is c]
    if not kinds:
        raise ValueError(
            f"{caller}: layer.cell must be jaxrnn.elman, jaxrnn.lstm or jaxrnn.gru (the cells the peer has), "
            f"got {layer.cell!r}"
        )
    kind = kinds[0]
    if layer.bidirectional and layer.merge != "concat" and caller == "to_torch":
        raise ValueError(f"to_torch: PyTorch concatenates the two directions; layer.merge must be 'concat', got "
                         f"{layer.merge!r}")  # fmt: skip
    if not isinstance(params, tuple) or isinstance(params, Bidirectional) or len(params) != layer.num_layers:
        got = type(params).__name__ + (f" of length {len(params)}" if isinstance(params, tuple) else "")
        raise TypeError(f"{caller}: params must be a tuple of {layer.num_layers} per-layer entries, got {got}")
    entries, activation, hidden, input_size, proj, below = [], None, None, None, None, None
    width = 2 if layer.bidirectional and layer.merge == "concat" else 1
    for k, entry in enumerate(params):
        if layer.bidirectional != isinstance(entry, Bidirectional):
            want = "Bidirectional(forward, backward)" if layer.bidirectional else f"{kind} params"
            raise TypeError(f"{caller}: params[{k}] must be {want}, got {type(entry).__name__}")
        directions = list(entry) if layer.bidirectional else [entry]
        layer_hidden = None
        for p in directions:
            d_in, h = layer.cell.sizes(p)
            p_size = p.proj_size if isinstance(p, LSTMPParams) else None
            if hidden is None:
                hidden, input_size, proj = h, d_in, p_size
            if layer_hidden is None:
                layer_hidden = h
            if one_hidden and h != hidden:
                raise ValueError(f"{caller}: every layer must have hidden size {hidden}, params[{k}] has {h}")
            if h != layer_hidden:
                raise ValueError(f"{caller}: params[{k}]'s two directions must have one hidden size, got "
                                 f"{layer_hidden} and {h}")  # fmt: skip
            if p_size != proj:
                raise ValueError(
                    f"{caller}: every layer must have one proj_size (None: no projection), params[0] has {proj}, "
                    f"params[{k}] has {p_size}"
                )
            if k > 0 and d_in != width * below:
                raise ValueError(f"{caller}: params[{k}] must read {width * below} features, got input size {d_in}")
            if kind == "elman":
                if activation is not None and p.activation != activation:
                    raise ValueError(
                        f"{caller}: the peer has one activation per layer stack; params mix {activation!r} and "
                        f"{p.activation!r}"
                    )
                activation = p.activation
        below = layer_hidden if proj is None else proj
        entries.append(directions)
    if kind == "gru":
        _check_gru_form([p for directions in entries for p in directions], caller)
    if proj is not None and caller != "to_torch":
        raise ValueError(
            f"{caller}: {_LSTM_PEER.get(caller, 'the peer')} has no output projection; these params are an LSTM "
            f"with projections (LSTMPParams, proj_size={proj}), which only PyTorch's nn.LSTM(proj_size=...) computes"
        )
    return kind, activation or "tanh", input_size, hidden, entries


def _check_gru_form(params: list, caller: str) -> None:
    forms = {p.reset_after for p in params}
    if len(forms) != 1:
        raise ValueError(
            f"{caller}: the GRU params mix reset-after (b_hn an array) and reset-before (b_hn=None) cells; one peer "
            f"layer computes one form"
        )
    peer, want = _GRU_FORM.get(caller, (None, None))
    if want is not None and forms.pop() != want:
        form = "resets after" if want else "resets before"
        got = "reset-before (b_hn=None)" if want else "reset-after (b_hn an array)"
        raise ValueError(
            f"{caller}: {peer} {form} its recurrent matmul; these params are a {got} GRU, a different function that "
            f"it cannot compute"
        )


def _dtype_of(entries) -> np.dtype:
    """The one dtype of every array field of every layer's params (``w_hr`` and ``b_hn`` included)."""
    fields = fields_by_dtype(p for directions in entries for p in directions)
    if len(fields) != 1:
        shown = ", ".join(f"{dtype} ({', '.join(sorted(names))})" for dtype, names in sorted(fields.items()))
        raise TypeError(f"params must share one dtype, got {shown}")
    return np.dtype(next(iter(fields)))


# ----------------------------------------------------------------------------------------------------------- PyTorch
# nn.RNN/LSTM/GRU name their tensors weight_ih_l0, bias_hh_l1_reverse, ...; the cells nn.RNNCell/LSTMCell/GRUCell
# plain weight_ih, ..., which are read as layer 0.
_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)(?:_l(0|[1-9]\d*)(_reverse)?)?$")
_TORCH_MODES = {"RNN_TANH": ("elman", "tanh"), "RNN_RELU": ("elman", "relu"), "LSTM": ("lstm", None),
                "GRU": ("gru", None)}  # fmt: skip


def _params_from_torch(kind: str, activation: str, w_ih, w_hh, b_ih, b_hh, w_hr=None):
    w_x, w_h = w_ih.T, w_hh.T
    hidden = w_hh.shape[1]
    if b_ih is None:
        b_ih = np.zeros((w_ih.shape[0],), w_ih.dtype)
        b_hh = np.zeros_like(b_ih)
    if kind == "gru":
        b = b_ih + np.concatenate([b_hh[: 2 * hidden], np.zeros((hidden,), b_hh.dtype)])
        return GRUParams(w_x=_jnp(w_x), w_h=_jnp(w_h), b=_jnp(b), b_hn=_jnp(b_hh[2 * hidden :]))
    b = b_ih + b_hh
    if kind == "lstm" and w_hr is not None:
        return LSTMPParams(w_x=_jnp(w_x), w_h=_jnp(w_h), b=_jnp(b), w_hr=_jnp(w_hr.T))
    if kind == "lstm":
        return LSTMParams(w_x=_jnp(w_x), w_h=_jnp(w_h), b=_jnp(b))
    return ElmanParams(w_x=_jnp(w_x), w_h=_jnp(w_h), b=_jnp(b), activation=activation)


def _parse_state_dict(state_dict: Mapping, prefix: str) -> tuple[dict, list, bool]:
    """``({(name, layer, reverse): array}, unknown keys, cell)`` from the keys under ``prefix``; ``cell``: the keys
    are a torch cell's (``weight_ih``, no layer suffix). Raises when cell and layer keys are mixed."""
    found, unexpected, styles = {}, [], set()
    for key, value in state_dict.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            if not prefix:
                unexpected.append(key)
            continue
        match = _TORCH_KEY.match(key[len(prefix) :])
        if match is None:
            unexpected.append(key)
            continue
        styles.add(match.group(2) is None)
        name, k, rev = match.group(1), int(match.group(2) or 0), bool(match.group(3))
        found[(name, k, rev)] = _to_numpy(value, f"state_dict[{key!r}]")
    if len(styles) == 2:
        raise ValueError(
            "the state_dict mixes a cell's keys (weight_ih, ...) with a layer's (weight_ih_l0, ...); expected one "
            "module's (pass prefix= to pick one submodule)"
        )
    return found, unexpected, styles == {True}


def from_torch(
    module_or_state_dict,
    *,
    kind: str | None = None,
    nonlinearity: str | None = None,
    dropout: float | None = None,
    prefix: str = "",
) -> tuple[Layer, tuple]:
    """Convert a PyTorch ``nn.RNN``/``nn.LSTM``/``nn.GRU``, or a cell ``nn.RNNCell``/``nn.LSTMCell``/``nn.GRUCell``
    (or its ``state_dict``), to ``(layer, params)``.

    ``layer.apply(params, xs, lengths=lengths)`` then equals the module on ``xs`` (a PackedSequence of those
    lengths) in outputs and final states (:func:`carry_to_torch` gives torch's ``h_n`` layout). The weights map as
    ``w_x = W_ih.T``, ``w_h = W_hh.T``, ``b = b_ih + b_hh`` (GRU: ``b = [b_ir+b_hr, b_iz+b_hz, b_in]``,
    ``b_hn = b_hn``); ``bias=False`` gives zero biases. An ``nn.LSTM(proj_size=P)`` gives
    :class:`~jaxrnn.LSTMPParams` with ``w_hr = W_hr.T``. A ``batch_first=False`` module maps to the same layer: call
    ``layer.apply(..., time_major=True)``. Arrays keep the module's dtype (float64 needs ``jax_enable_x64``). A cell
    gives a one-layer ``layer``: ``layer.apply`` equals calling the cell at every step of a Python loop, with the
    carry ``(h,)`` or ``(LSTMState(h, c),)`` for its ``hx``.

    Args:
      module_or_state_dict: an ``nn.RNN``, ``nn.LSTM``, ``nn.GRU``, ``nn.RNNCell``, ``nn.LSTMCell`` or
        ``nn.GRUCell``, or a mapping of their parameter names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...; a
        cell's ``weight_ih``, ``bias_hh``, ...) to tensors or arrays. From a state dict, ``num_layers``,
        ``bidirectional``, the sizes and ``bias`` are read off the keys and shapes.
      kind: ``"rnn"`` (= ``"elman"``), ``"lstm"`` or ``"gru"``. Inferred from the gate count (1, 4 or 3 blocks of
        ``weight_hh_l0``) when None; checked against the module or the shapes when given.
      nonlinearity: ``"tanh"`` or ``"relu"`` for ``nn.RNN`` (an LSTM's or GRU's is ``"tanh"``). A state dict does not
        record it: it defaults to ``"tanh"`` (PyTorch's default); a module's own setting is used (and must match
        when given).
      dropout: the layer's between-layer dropout; the module's ``dropout`` when None (0 for a state dict).
      prefix: for a state dict: read only keys that start with ``prefix`` (e.g. ``"encoder.rnn."`` in a whole
        model's ``state_dict()``), which is stripped; other keys are then ignored.

    Returns:
      ``(layer, params)``: a :func:`jaxrnn.stack` Layer and a tuple with one params entry per layer
      (``Bidirectional(forward, backward)`` when bidirectional).

    Raises:
      ValueError: missing or unexpected keys, shapes that do not fit together, ``weight_hr`` keys of a non-LSTM,
        or a ``kind``/``nonlinearity`` that contradicts the module or the weights.
      TypeError: tensors that are not floating point, of more than one dtype, or float64 without
        ``jax_enable_x64``.
    """
    if kind is not None:
        kind = _canonical_kind(kind)
    if nonlinearity is not None:
        _check_activation(nonlinearity, "nonlinearity")
    if isinstance(module_or_state_dict, Mapping):
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        state_dict, source = module_or_state_dict, "state_dict"
        module_dropout = 0.0
    else:
        state_dict, module_kind, module_act, module_dropout = _read_torch_module(module_or_state_dict)
        source, prefix = type(module_or_state_dict).__name__, ""
        if kind is not None and kind != module_kind:
            raise ValueError(f"kind={kind!r} contradicts the module, a {source} (kind {module_kind!r})")
        if nonlinearity is not None and module_act is not None and nonlinearity != module_act:
            raise ValueError(f"nonlinearity={nonlinearity!r} contradicts the module's nonlinearity {module_act!r}")
        kind, nonlinearity = module_kind, module_act or nonlinearity
    dropout = _check_rate(module_dropout if dropout is None else dropout, "dropout")

    found, unexpected, cell_keys = _parse_state_dict(state_dict, prefix)
    suffix = (lambda k, rev: "") if cell_keys else (lambda k, rev: f"_l{k}{'_reverse' if rev else ''}")
    projected = any(name == "weight_hr" for name, _, _ in found)
    if unexpected:
        shown = ", ".join(repr(k) for k in unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        hint = "" if prefix else " (for a whole model's state_dict, pass prefix='<submodule name>.')"
        raise ValueError(
            f"unexpected keys in the {source}: {shown}; expected weight_ih_l<k>, weight_hh_l<k>, bias_ih_l<k>, "
            f"bias_hh_l<k>, weight_hr_l<k> (optionally with _reverse){hint}"
        )
    if ("weight_hh", 0, False) not in found:
        where = f" under prefix {prefix!r}" if prefix else ""
        raise ValueError(f"missing key in the {source}{where}: {prefix}weight_hh_l0 (a cell's: weight_hh)")

    w_hh0 = found[("weight_hh", 0, False)]
    proj = None
    if projected:
        w_hr0 = found.get(("weight_hr", 0, False))
        if w_hr0 is None or w_hr0.ndim != 2 or not 0 < w_hr0.shape[0] < w_hr0.shape[1]:
            got = "missing" if w_hr0 is None else f"shape {_shape(w_hr0.shape)}"
            raise ValueError(
                f"{prefix}weight_hr{suffix(0, False)} (an LSTM's projection) must have shape [P, H] with 0 < P < H, "
                f"got {got}"
            )
        proj, hidden = w_hr0.shape
        if w_hh0.shape != (4 * hidden, proj):
            raise ValueError(
                f"{prefix}weight_hh{suffix(0, False)} must have shape {_shape((4 * hidden, proj))} for an LSTM "
                f"with projections (weight_hr{suffix(0, False)} {_shape(w_hr0.shape)}), got {_shape(w_hh0.shape)}"
            )
    elif w_hh0.ndim != 2 or w_hh0.shape[1] == 0 or w_hh0.shape[0] % w_hh0.shape[1]:
        raise ValueError(f"{prefix}weight_hh{suffix(0, False)} must have shape [G*H, H], got {_shape(w_hh0.shape)}")
    else:
        hidden = w_hh0.shape[1]
    gates = w_hh0.shape[0] // hidden
    if gates not in _KIND_BY_GATES:
        raise ValueError(
            f"{prefix}weight_hh_l0 has shape {_shape(w_hh0.shape)}: {gates} gate blocks of H={hidden}, but nn.RNN, "
            f"nn.GRU and nn.LSTM have 1, 3 and 4"
        )
    inferred = _KIND_BY_GATES[gates]
    if kind is not None and kind != inferred:
        raise ValueError(
            f"kind={kind!r} expects weight_hh_l0 of shape [{_GATES[kind]}*{hidden}, {hidden}], got "
            f"{_shape(w_hh0.shape)} ({gates} gate blocks: {inferred!r})"
        )
    kind = inferred
    if nonlinearity not in (None, "tanh") and kind != "elman":
        raise ValueError(
            f"nonlinearity={nonlinearity!r} applies to nn.RNN and nn.RNNCell; the {source} holds kind {kind!r}, "
            f"whose activation is 'tanh'"
        )
    activation = (nonlinearity or "tanh") if kind == "elman" else "tanh"

    num_layers = 1 + max(k for _, k, _ in found)
    bidirectional = any(rev for _, _, rev in found)
    has_bias = any(name.startswith("bias") for name, _, _ in found)
    names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if has_bias else ()) + (("weight_hr",) if proj else ())
    missing = [
        f"{prefix}{name}{suffix(k, rev)}"
        for k in range(num_layers)
        for rev in ((False, True) if bidirectional else (False,))
        for name in names
        if (name, k, rev) not in found
    ]
    if missing:
        shown = ", ".join(missing[:6]) + (", ..." if len(missing) > 6 else "")
        raise ValueError(
            f"missing keys in the {source}: {shown} (found layers 0..{num_layers - 1}, "
            f"{'bidirectional' if bidirectional else 'one direction'}, bias={has_bias})"
        )

    _one_dtype({f"{prefix}{name}{suffix(k, rev)}": a for (name, k, rev), a in found.items()},
               f"the {source}'s tensors")  # fmt: skip
    width = 2 if bidirectional else 1
    out = hidden if proj is None else proj
    layers = []
    for k in range(num_layers):
        directions = []
        for rev in (False, True) if bidirectional else (False,):
            sfx = suffix(k, rev)
            w_ih, w_hh = found[("weight_ih", k, rev)], found[("weight_hh", k, rev)]
            want_in = None if k == 0 else width * out
            if w_hh.shape != (gates * hidden, out):
                raise ValueError(
                    f"{prefix}weight_hh{sfx} must have shape {_shape((gates * hidden, out))}, got {_shape(w_hh.shape)}"
                )
            w_hr = found.get(("weight_hr", k, rev))
            if proj is not None and w_hr.shape != (proj, hidden):
                raise ValueError(f"{prefix}weight_hr{sfx} must have shape {_shape((proj, hidden))}, got "
                                 f"{_shape(w_hr.shape)}")  # fmt: skip
            if w_ih.ndim != 2 or w_ih.shape[0] != gates * hidden or (want_in is not None and w_ih.shape[1] != want_in):
                want = _shape((gates * hidden, "D" if want_in is None else want_in))
                raise ValueError(f"{prefix}weight_ih{sfx} must have shape {want}, got {_shape(w_ih.shape)}")
            if k == 0 and not rev:
                input_size = w_ih.shape[1]
            elif k == 0 and w_ih.shape[1] != input_size:
                raise ValueError(
                    f"{prefix}weight_ih{sfx} must have shape {_shape((gates * hidden, input_size))}, got "
                    f"{_shape(w_ih.shape)}"
                )
            b_ih = b_hh = None
            if has_bias:
                b_ih, b_hh = found[("bias_ih", k, rev)], found[("bias_hh", k, rev)]
                for name, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
                    if b.shape != (gates * hidden,):
                        raise ValueError(
                            f"{prefix}{name}{sfx} must have shape [{gates * hidden}], got {_shape(b.shape)}"
                        )
            directions.append(_params_from_torch(kind, activation, w_ih, w_hh, b_ih, b_hh, w_hr))
        layers.append(Bidirectional(*directions) if bidirectional else directions[0])
    layer = stack(_CELLS[kind], num_layers, bidirectional=bidirectional, merge="concat", dropout=dropout)
    return layer, tuple(layers)


def _read_torch_module(module):
    """``(state_dict, kind, nonlinearity or None, dropout)`` of an nn.RNN/LSTM/GRU or nn.RNNCell/LSTMCell/GRUCell;
    raises for other objects."""
    import torch

    cells = {torch.nn.LSTMCell: "lstm", torch.nn.GRUCell: "gru", torch.nn.RNNCell: "elman"}
    if type(module) in cells:
        return module.state_dict(), cells[type(module)], getattr(module, "nonlinearity", None), 0.0
    if not isinstance(module, torch.nn.RNNBase) or getattr(module, "mode", None) not in _TORCH_MODES:
        raise TypeError(
            f"module_or_state_dict must be a torch.nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell or nn.GRUCell, "
            f"or a state_dict mapping, got {type(module).__name__}"
        )
    kind, act = _TORCH_MODES[module.mode]
    return module.state_dict(), kind, act, float(module.dropout)


def _torch_tensor(array: np.ndarray, torch):
    if array.dtype == jnp.bfloat16:
        return torch.from_numpy(np.array(array, np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(array))


def to_torch(layer: Layer, params, *, ignore_dropout: bool = False, cell: bool = False):
    """The exact inverse of :func:`from_torch`: a ``batch_first=True`` ``nn.RNN``/``nn.LSTM``/``nn.GRU``, or with
    ``cell=True`` an ``nn.RNNCell``/``nn.LSTMCell``/``nn.GRUCell`` (one step; ``layer`` must be one layer in one
    direction).

    ``W_ih = w_x.T``, ``W_hh = w_h.T``, ``bias_ih = b``, ``bias_hh = 0`` (GRU: ``bias_hh = [0, 0, b_hn]``); the
    module has ``layer``'s ``num_layers``, ``bidirectional`` and ``dropout``, and the params' dtype. LSTM params
    with projections (:class:`~jaxrnn.LSTMPParams`) give ``nn.LSTM(proj_size=P)`` with ``W_hr = w_hr.T``. Call
    ``module.batch_first = False`` for time-major inputs.

    Raises:
      ValueError: a cell other than jaxrnn.elman/lstm/gru, a merge other than ``"concat"`` (torch concatenates), mixed
        Elman activations, ``layer.recurrent_dropout > 0`` (torch has none) unless ``ignore_dropout=True``,
        ``cell=True`` for more than one layer or direction or with projections (``nn.LSTMCell`` has none), layers
        of different ``proj_size``, or a reset-before GRU (``b_hn=None``; torch's GRU resets after its recurrent
        matmul).
    """
    import torch

    kind, activation, input_size, hidden, entries = _layer_info(layer, params, "to_torch")
    if layer.recurrent_dropout > 0.0 and not ignore_dropout:
        raise ValueError(
            f"to_torch: layer.recurrent_dropout={layer.recurrent_dropout} has no PyTorch counterpart; expected 0.0, "
            f"or pass ignore_dropout=True to drop it (it acts only in training)"
        )
    if cell and (layer.num_layers != 1 or layer.bidirectional):
        raise ValueError(
            f"to_torch(cell=True): a torch cell is one layer in one direction, got num_layers={layer.num_layers}, "
            f"bidirectional={layer.bidirectional}"
        )
    dtype = _dtype_of(entries)
    proj = entries[0][0].proj_size if isinstance(entries[0][0], LSTMPParams) else 0
    if cell and proj:
        raise ValueError(
            f"to_torch(cell=True): torch.nn.LSTMCell has no projection; these params have proj_size={proj} (leave "
            f"cell=False for an nn.LSTM(proj_size={proj}))"
        )
    if cell:
        options = dict(input_size=input_size, hidden_size=hidden, bias=True)
        module = {"elman": lambda **kw: torch.nn.RNNCell(nonlinearity=activation, **kw), "lstm": torch.nn.LSTMCell,
                  "gru": torch.nn.GRUCell}[kind](**options)  # fmt: skip
    else:
        options = dict(input_size=input_size, hidden_size=hidden, num_layers=layer.num_layers, bias=True,
                       batch_first=True, dropout=layer.dropout, bidirectional=layer.bidirectional)  # fmt: skip
        if kind == "elman":
            module = torch.nn.RNN(nonlinearity=activation, **options)
        elif kind == "lstm":
            module = torch.nn.LSTM(proj_size=proj, **options)
        else:
            module = torch.nn.GRU(**options)
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
                   "float64": torch.float64}.get(str(dtype))  # fmt: skip
    if torch_dtype is None:
        raise TypeError(f"to_torch: params dtype must be float16, bfloat16, float32 or float64, got {dtype}")
    module = module.to(torch_dtype)

    state = {}
    for k, directions in enumerate(entries):
        for d, p in enumerate(directions):
            sfx = "" if cell else f"_l{k}{'_reverse' if d else ''}"
            state[f"weight_ih{sfx}"] = np.asarray(p.w_x).T
            state[f"weight_hh{sfx}"] = np.asarray(p.w_h).T
            state[f"bias_ih{sfx}"] = np.asarray(p.b)
            b_hh = np.zeros_like(np.asarray(p.b))
            if kind == "gru":
                b_hh[2 * hidden :] = np.asarray(p.b_hn)
            state[f"bias_hh{sfx}"] = b_hh
            if proj:
                state[f"weight_hr{sfx}"] = np.asarray(p.w_hr).T
    module.load_state_dict({key: _torch_tensor(value, torch) for key, value in state.items()})
    return module


def carry_from_torch(layer: Layer, hx):
    """Torch's ``h_n`` (or ``(h_n, c_n)`` for LSTM), ``[num_layers * D, *batch, H]``, as ``layer``'s carry
    (with ``proj_size=P``, ``h_n`` is ``[num_layers * D, *batch, P]``).

    ``carry[k] = h_n[k]`` (LSTM: ``LSTMState(h=h_n[k], c=c_n[k])``); bidirectional:
    ``carry[k] = Bidirectional(forward=h_n[2k], backward=h_n[2k+1])``. Use it for ``apply(params, xs, carry)``.
    """
    kind = _kind_of_layer(layer, "carry_from_torch")
    directions = 2 if layer.bidirectional else 1
    if kind == "lstm":
        if not (isinstance(hx, tuple) and len(hx) == 2):
            raise TypeError(f"carry_from_torch: an LSTM's hx must be a tuple (h, c), got {type(hx).__name__}")
        h, c = (_to_numpy(a, name) for a, name in zip(hx, ("h", "c")))
        if h.shape[:-1] != c.shape[:-1] or h.shape[-1:] > c.shape[-1:]:
            raise ValueError(
                f"carry_from_torch: h and c must have one shape (h's last axis P < H with projections), got "
                f"{_shape(h.shape)} and {_shape(c.shape)}"
            )
        _one_dtype({"h": h, "c": c}, "carry_from_torch: h and c")
        h, c = _jnp(h), _jnp(c)
    else:
        h, c = _to_numpy(hx, "hx"), None
        _one_dtype({"hx": h}, "carry_from_torch: hx")
        h = _jnp(h)
    if h.ndim < 2 or h.shape[0] != layer.num_layers * directions:
        raise ValueError(
            f"carry_from_torch: hx must have shape [num_layers * num_directions = {layer.num_layers * directions}, "
            f"*batch, H], got {_shape(h.shape)}"
        )

    def one(i):
        return LSTMState(h=h[i], c=c[i]) if kind == "lstm" else h[i]

    if layer.bidirectional:
        return tuple(Bidirectional(one(2 * k), one(2 * k + 1)) for k in range(layer.num_layers))
    return tuple(one(k) for k in range(layer.num_layers))


def carry_to_torch(layer: Layer, carry):
    """``layer``'s carry (e.g. the final carry of ``apply``) in torch's layout: ``h_n`` or, for LSTM,
    ``(h_n, c_n)``, as torch tensors ``[num_layers * D, *batch, H]`` of the carry's dtype (the inverse of
    :func:`carry_from_torch`)."""
    import torch

    kind = _kind_of_layer(layer, "carry_to_torch")
    states = _flat_states(layer, carry, "carry_to_torch")
    fields = ("h", "c") if kind == "lstm" else (None,)
    stacked = []
    for field in fields:
        arrays = [np.asarray(s if field is None else getattr(s, field)) for s in states]
        for i, a in enumerate(arrays[1:], 1):
            if (a.shape, a.dtype) != (arrays[0].shape, arrays[0].dtype):
                where, first = (f"{_state_where(layer, j)}{'' if field is None else '.' + field}" for j in (i, 0))
                raise ValueError(
                    f"carry_to_torch: torch stacks every layer's state into one tensor, so they must share one shape "
                    f"and dtype; {where} is {a.dtype}{_shape(a.shape)}, {first} {arrays[0].dtype}"
                    f"{_shape(arrays[0].shape)}"
                )
        stacked.append(_torch_tensor(np.stack(arrays), torch))
    return tuple(stacked) if kind == "lstm" else stacked[0]


def _kind_of_layer(layer, caller: str) -> str:
    if not isinstance(layer, Layer):
        raise TypeError(f"{caller}: layer must be a jaxrnn Layer (from jaxrnn.stack), got {type(layer).__name__}")
    for kind, cell in _CELLS.items():
        if layer.cell is cell:
            return kind
    raise ValueError(f"{caller}: layer.cell must be jaxrnn.elman, jaxrnn.lstm or jaxrnn.gru, got {layer.cell!r}")


def _state_where(layer: Layer, i: int) -> str:
    """The name of the ``i``-th cell carry of ``_flat_states``: ``carry[k]`` or ``carry[k].forward``/``.backward``."""
    return f"carry[{i // 2}].{('forward', 'backward')[i % 2]}" if layer.bidirectional else f"carry[{i}]"


def _flat_states(layer: Layer, carry, caller: str) -> list:
    """The cell carries of ``layer``'s carry, forward before backward, each checked to be the cell's carry (an
    ``LSTMState(h [*batch, H or P], c [*batch, H])``, else an array ``[*batch, H]``) of one batch shape."""
    if not isinstance(carry, tuple) or isinstance(carry, (Bidirectional, LSTMState)) or len(carry) != layer.num_layers:
        raise TypeError(f"{caller}: carry must be a tuple of {layer.num_layers} per-layer carries, got "
                        f"{type(carry).__name__}")  # fmt: skip
    states = []
    for k, entry in enumerate(carry):
        if layer.bidirectional != isinstance(entry, Bidirectional):
            want = "Bidirectional(forward, backward)" if layer.bidirectional else "a cell carry"
            raise TypeError(f"{caller}: carry[{k}] must be {want}, got {type(entry).__name__}")
        states.extend(entry if layer.bidirectional else [entry])
    lstm = _kind_of_layer(layer, caller) == "lstm"
    batch = None
    for i, state in enumerate(states):
        where = _state_where(layer, i)
        if lstm != isinstance(state, LSTMState):
            want = "an LSTMState(h, c)" if lstm else "an array [*batch, H]"
            raise TypeError(f"{caller}: {where} must be {want} ({layer.cell.name}'s carry), got {type(state).__name__}")
        arrays = {f"{where}.h": state.h, f"{where}.c": state.c} if lstm else {where: state}
        for name, a in arrays.items():
            if not hasattr(a, "shape") or not hasattr(a, "dtype") or not jnp.issubdtype(a.dtype, jnp.floating):
                got = f"dtype {a.dtype}" if hasattr(a, "dtype") else type(a).__name__
                raise TypeError(f"{caller}: {name} must be a floating-point array [*batch, H], got {got}")
            if a.ndim < 1:
                raise ValueError(f"{caller}: {name} must have shape [*batch, H], got a scalar")
        h = state.h if lstm else state
        if lstm and (h.shape[:-1] != state.c.shape[:-1] or h.shape[-1] > state.c.shape[-1]):
            raise ValueError(
                f"{caller}: {where}.h and .c must have one shape (h's last axis P < H with projections), got "
                f"{_shape(h.shape)} and {_shape(state.c.shape)}"
            )
        if batch is None:
            batch = h.shape[:-1]
        elif h.shape[:-1] != batch:
            raise ValueError(
                f"{caller}: every layer's carry must have one batch shape; {where} has {_shape(h.shape[:-1])}, "
                f"{_state_where(layer, 0)} {_shape(batch)}"
            )
    return states


# ------------------------------------------------------------------------------------------------------------- Keras
def _import_keras():
    try:
        import keras
    except ImportError as err:
        raise ImportError(
            f"to_keras needs Keras 3 with a working backend (for jaxrnn, set KERAS_BACKEND=jax before importing "
            f"keras): {err}"
        ) from err
    return keras


def _gru_from_keras(kernel, recurrent, bias, hidden: int, reset_after, where: str) -> GRUParams:
    """``reset_after``: the layer's setting, or None to read it from the bias shape (``[2, 3H]`` after, ``[3H]``
    before; no bias: after)."""
    shapes = {True: (2, 3 * hidden), False: (3 * hidden,)}
    if reset_after is None:
        reset_after = bias is None or bias.shape != shapes[False]
    if bias is None:
        bias = np.zeros(shapes[reset_after], kernel.dtype)
    if bias.shape != shapes[reset_after]:
        raise ValueError(
            f"{where}bias must have shape {_shape(shapes[reset_after])} (reset_after={reset_after}), got "
            f"{_shape(bias.shape)}"
        )
    w_x, w_h = _jnp(_swap_zr(kernel, hidden)), _jnp(_swap_zr(recurrent, hidden))
    if not reset_after:  # one bias, outside the reset product
        return GRUParams(w_x=w_x, w_h=w_h, b=_jnp(_swap_zr(bias, hidden)), b_hn=None)
    rec_bias = np.concatenate([bias[1, : 2 * hidden], np.zeros((hidden,), bias.dtype)])
    return GRUParams(w_x=w_x, w_h=w_h, b=_jnp(_swap_zr(bias[0] + rec_bias, hidden)), b_hn=_jnp(bias[1, 2 * hidden :]))


def _params_from_keras(kind: str, activation: str, kernel, recurrent, bias, where: str, reset_after=None):
    hidden = recurrent.shape[0] if recurrent.ndim == 2 else None
    gates = _GATES[kind]
    if hidden is None or recurrent.shape != (hidden, gates * hidden):
        raise ValueError(
            f"{where}recurrent_kernel must have shape [H, {gates}*H] for a {kind} layer, got {_shape(recurrent.shape)}"
        )
    if kernel.ndim != 2 or kernel.shape[1] != gates * hidden:
        raise ValueError(f"{where}kernel must have shape [D, {gates * hidden}], got {_shape(kernel.shape)}")
    if kind == "gru":
        return _gru_from_keras(kernel, recurrent, bias, hidden, reset_after, where)
    if bias is None:
        bias = np.zeros((gates * hidden,), kernel.dtype)
    if bias.shape != (gates * hidden,):
        raise ValueError(f"{where}bias must have shape [{gates * hidden}], got {_shape(bias.shape)}")
    if kind == "lstm":
        return LSTMParams(w_x=_jnp(kernel), w_h=_jnp(recurrent), b=_jnp(bias))
    return ElmanParams(w_x=_jnp(kernel), w_h=_jnp(recurrent), b=_jnp(bias), activation=activation)


def _params_to_keras(kind: str, p) -> list[np.ndarray]:
    w_x, w_h, b = np.asarray(p.w_x), np.asarray(p.w_h), np.asarray(p.b)
    if kind != "gru":
        return [w_x, w_h, b]
    hidden = w_h.shape[0]
    if not p.reset_after:
        return [_swap_zr(w_x, hidden), _swap_zr(w_h, hidden), _swap_zr(b, hidden)]
    rec = np.concatenate([np.zeros((2 * hidden,), b.dtype), np.asarray(p.b_hn)])
    return [_swap_zr(w_x, hidden), _swap_zr(w_h, hidden), np.stack([_swap_zr(b, hidden), rec])]


def _activation_name(value) -> Any:
    """A serialized Keras activation: a name for the built-ins, else the config itself (shown in errors)."""
    return value if isinstance(value, str) else getattr(value, "__name__", value)


def _read_keras_rnn(rnn, ignore_dropout: bool, where: str) -> dict:
    """The configuration of one Keras RNN layer, checked; raises for what jaxrnn cannot represent."""
    keras = _import_keras()
    cell = getattr(rnn, "cell", None)
    cells = {"elman": keras.layers.SimpleRNNCell, "lstm": keras.layers.LSTMCell, "gru": keras.layers.GRUCell}
    kinds = [k for k, cls in cells.items() if isinstance(cell, cls)]
    if not isinstance(rnn, keras.layers.RNN) or not kinds:
        raise TypeError(
            f"{where}must be a Keras SimpleRNN, LSTM or GRU (or keras.layers.RNN around their cells, or "
            f"keras.layers.Bidirectional around one), got {type(rnn).__name__}"
            + (f" with cell {type(cell).__name__}" if cell is not None else "")
        )
    kind = kinds[0]
    config = cell.get_config()
    name = type(rnn).__name__
    activation = _activation_name(config.get("activation"))
    allowed = _ACTIVATIONS if kind == "elman" else ("tanh",)
    if activation not in allowed:
        raise ValueError(
            f"{where}{name} has activation={activation!r}; jaxrnn.{kind} supports {' or '.join(map(repr, allowed))}"
        )
    if kind != "elman":
        recurrent_activation = _activation_name(config.get("recurrent_activation"))
        if recurrent_activation != "sigmoid":
            raise ValueError(
                f"{where}{name} has recurrent_activation={recurrent_activation!r}; jaxrnn.{kind} uses 'sigmoid' "
                f"(Keras 3's 'hard_sigmoid' is a different function)"
            )
    rate = float(config.get("dropout", 0.0))
    if rate > 0.0 and not ignore_dropout:
        raise ValueError(
            f"{where}{name} has dropout={rate} (dropout on its inputs), which a jaxrnn Layer does not have; "
            f"expected 0.0, or pass ignore_dropout=True to drop it (it acts only in training) and apply "
            f"jaxrnn.dropout to the inputs yourself"
        )
    if not rnn.built or getattr(cell, "kernel", None) is None:
        raise ValueError(f"{where}{name} is not built; call it on an input or layer.build(input_shape) first")
    use_bias = bool(config.get("use_bias", True))
    weights = [_to_numpy(v, f"{where}{name}.{n}") for v, n in ((cell.kernel, "kernel"),
                                                                (cell.recurrent_kernel, "recurrent_kernel"))]  # fmt: skip
    weights.append(_to_numpy(cell.bias, f"{where}{name}.bias") if use_bias else None)
    return dict(kind=kind, activation=activation, units=int(config["units"]), weights=weights,
                recurrent_dropout=float(config.get("recurrent_dropout", 0.0)), go_backwards=bool(rnn.go_backwards),
                name=name, reset_after=bool(config.get("reset_after", True)) if kind == "gru" else None)  # fmt: skip


def from_keras(
    layer_or_weights,
    *,
    kind: str | None = None,
    activation: str | None = None,
    merge: str | None = None,
    ignore_dropout: bool = False,
    reset_after: bool | None = None,
) -> tuple[Layer, tuple]:
    """Convert a Keras 3 ``SimpleRNN``/``LSTM``/``GRU`` (or ``Bidirectional`` around one, or a weight list) to
    ``(layer, params)`` with ``layer.num_layers == 1``.

    ``layer.apply(params, xs, lengths=lengths)`` equals the Keras layer on ``xs`` with
    ``mask = arange(T) < lengths[:, None]`` (outputs at masked steps: see the module docstring). Weights map as
    ``w_x = kernel``, ``w_h = recurrent_kernel``, ``b = bias`` (GRU: z|r blocks swapped to r|z,
    ``b = swap(bias[0]) + [bias[1]_r, bias[1]_z, 0]``, ``b_hn = bias[1]_h``; with ``reset_after=False``, the
    reset-before GRU: ``b = swap(bias)``, ``b_hn = None``). ``use_bias=False`` gives zero biases;
    ``recurrent_dropout`` carries over; ``unit_forget_bias`` (an initializer) and ``return_sequences``/
    ``return_state``/``stateful`` (which outputs are read) do not matter.

    Args:
      layer_or_weights: a built Keras layer, or its ``get_weights()`` list: ``[kernel, recurrent_kernel(, bias)]``,
        or for a Bidirectional the forward list followed by the backward one (4 or 6 arrays).
      kind: for a weight list: ``"simple_rnn"`` (= ``"elman"``), ``"lstm"`` or ``"gru"``; inferred from the gate
        count (kernel columns / units: 1, 4, 3) when None. Checked against a layer when given.
      activation: for a SimpleRNN weight list: ``"tanh"`` (the Keras default, also for None) or ``"relu"``; an
        LSTM's or GRU's is ``"tanh"``. Checked against a layer when given.
      merge: for a Bidirectional weight list: ``"concat"`` (also for None), ``"sum"``, ``"mean"`` (Keras'
        ``"ave"``) or ``"mul"``. A layer's ``merge_mode`` is read, and checked against ``merge`` when given; a
        one-direction layer or weight list takes no ``merge``.
      ignore_dropout: drop Keras' input ``dropout`` instead of raising (it acts only in training).
      reset_after: for a GRU weight list: None reads it from the bias shape (``[2, 3H]``: True, ``[3H]``: False;
        no bias: True, Keras 3's default). Checked against a layer's ``reset_after`` when given.

    Raises:
      ValueError: ``activation`` other than tanh (tanh/relu for SimpleRNN),
        ``recurrent_activation`` other than sigmoid (``hard_sigmoid`` included), ``go_backwards=True`` (Keras then
        returns outputs in reversed time order; run ``jaxrnn.rnn(..., reverse=True)`` on flipped inputs instead),
        ``merge_mode=None`` (two outputs), input ``dropout > 0``, an unbuilt layer, or an ``activation`` that
        contradicts the layer or (other than tanh) is given for an LSTM or GRU.
      TypeError: weights that are not floating point, of more than one dtype, or float64 without
        ``jax_enable_x64``.
    """
    if kind is not None:
        kind = _canonical_kind(kind)
    if reset_after is not None and not isinstance(reset_after, bool):
        raise TypeError(f"reset_after must be None or a bool, got {type(reset_after).__name__}")
    if activation is not None:
        _check_activation(activation, "activation")
    if merge is not None and merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES} (jaxrnn's names; Keras' 'ave' is 'mean'), got {merge!r}")
    if isinstance(layer_or_weights, (list, tuple)):
        return _from_keras_weights(list(layer_or_weights), kind, activation, merge, reset_after)
    keras = _import_keras()
    obj = layer_or_weights
    if isinstance(obj, keras.layers.Bidirectional):
        if obj.merge_mode not in _MERGE_FROM_KERAS:
            raise ValueError(
                f"Bidirectional has merge_mode={obj.merge_mode!r}; jaxrnn merges the two directions into one output, "
                f"expected one of {sorted(_MERGE_FROM_KERAS)}"
            )
        merge_mode = _MERGE_FROM_KERAS[obj.merge_mode]
        fwd = _read_keras_rnn(obj.forward_layer, ignore_dropout, "Bidirectional.forward_layer: ")
        bwd = _read_keras_rnn(obj.backward_layer, ignore_dropout, "Bidirectional.backward_layer: ")
        if fwd["go_backwards"] or not bwd["go_backwards"]:
            raise ValueError(
                "Bidirectional must have forward_layer.go_backwards=False and backward_layer.go_backwards=True, got "
                f"{fwd['go_backwards']} and {bwd['go_backwards']}"
            )
        for key in ("kind", "activation", "units", "recurrent_dropout", "reset_after"):
            if fwd[key] != bwd[key]:
                raise ValueError(
                    f"Bidirectional's forward and backward layers must agree in {key} (one jaxrnn cell for both), got "
                    f"{fwd[key]!r} and {bwd[key]!r}"
                )
        configs = [fwd, bwd]
    else:
        one = _read_keras_rnn(obj, ignore_dropout, "layer_or_weights: ")
        if one["go_backwards"]:
            raise ValueError(
                f"{one['name']} has go_backwards=True: Keras reads the sequence backwards and returns outputs in "
                f"reversed time order (masked steps first); expected go_backwards=False. Convert the same layer with "
                f"go_backwards=False and run jaxrnn.rnn(..., reverse=True) for a right-to-left reading"
            )
        configs, merge_mode = [one], "concat"
    if merge is not None and (len(configs) == 1 or merge != merge_mode):
        got = "a one-direction layer" if len(configs) == 1 else f"merge_mode {obj.merge_mode!r}"
        raise ValueError(f"merge={merge!r} contradicts the Keras layer ({configs[0]['name']}: {got})")
    if kind is not None and kind != configs[0]["kind"]:
        raise ValueError(
            f"kind={kind!r} contradicts the Keras layer ({configs[0]['name']}, kind {configs[0]['kind']!r})"
        )
    if activation is not None and activation != configs[0]["activation"]:
        raise ValueError(
            f"activation={activation!r} contradicts the Keras layer ({configs[0]['name']}, activation="
            f"{configs[0]['activation']!r})"
        )
    if reset_after is not None and configs[0]["kind"] != "gru":
        raise ValueError(f"reset_after applies to a GRU; got a {configs[0]['name']} layer")
    if reset_after is not None and reset_after != configs[0]["reset_after"]:
        raise ValueError(
            f"reset_after={reset_after} contradicts the Keras layer ({configs[0]['name']}, reset_after="
            f"{configs[0]['reset_after']})"
        )
    params = [
        _params_from_keras(
            c["kind"], c["activation"], *c["weights"], where=f"{c['name']}.", reset_after=c["reset_after"]
        )
        for c in configs
    ]
    layer = stack(
        _CELLS[configs[0]["kind"]],
        1,
        bidirectional=len(configs) == 2,
        merge=merge_mode,
        recurrent_dropout=configs[0]["recurrent_dropout"],
    )
    return layer, (Bidirectional(*params) if len(params) == 2 else params[0],)


def _from_keras_weights(weights: list, kind, activation, merge, reset_after) -> tuple[Layer, tuple]:
    if len(weights) not in (2, 3, 4, 6):
        raise ValueError(
            f"layer_or_weights: a weight list must have 2 or 3 arrays ([kernel, recurrent_kernel(, bias)]), or 4 or "
            f"6 for a Bidirectional (forward then backward), got {len(weights)}"
        )
    arrays = [_to_numpy(w, f"weights[{i}]") for i, w in enumerate(weights)]
    bidirectional = len(arrays) in (4, 6)
    if merge is not None and not bidirectional:
        raise ValueError(
            f"merge applies to a Bidirectional weight list (4 or 6 arrays); these {len(arrays)} are one direction"
        )
    merge = merge or "concat"
    per = len(arrays) // 2 if bidirectional else len(arrays)
    groups = [arrays[:per], arrays[per:]] if bidirectional else [arrays]
    kernel, recurrent = groups[0][0], groups[0][1]
    if recurrent.ndim != 2 or recurrent.shape[0] == 0 or kernel.ndim != 2 or kernel.shape[1] % recurrent.shape[0]:
        raise ValueError(
            f"weights must start with kernel [D, G*H] and recurrent_kernel [H, G*H], got {_shape(kernel.shape)} and "
            f"{_shape(recurrent.shape)}"
        )
    gates = kernel.shape[1] // recurrent.shape[0]
    if gates not in _KIND_BY_GATES:
        raise ValueError(
            f"kernel {_shape(kernel.shape)} has {gates} gate blocks of units={recurrent.shape[0]}, but SimpleRNN, GRU "
            f"and LSTM have 1, 3 and 4"
        )
    if kind is not None and kind != _KIND_BY_GATES[gates]:
        raise ValueError(
            f"kind={kind!r} expects a kernel of {_GATES[kind]}*units columns, got {_shape(kernel.shape)} with "
            f"units={recurrent.shape[0]} ({_KIND_BY_GATES[gates]!r})"
        )
    kind = _KIND_BY_GATES[gates]
    if reset_after is not None and kind != "gru":
        raise ValueError(f"reset_after applies to a GRU weight list; these weights are a {kind!r} layer")
    if activation not in (None, "tanh") and kind != "elman":
        raise ValueError(
            f"activation={activation!r} applies to a SimpleRNN weight list; these weights are a {kind!r} layer, "
            f"whose activation is 'tanh'"
        )
    activation = activation or "tanh"
    _one_dtype({f"weights[{i}]": a for i, a in enumerate(arrays)}, "weights")
    params = []
    for d, group in enumerate(groups):
        where = f"weights ({'backward' if d else 'forward'} layer) " if bidirectional else "weights "
        bias = group[2] if per == 3 else None
        params.append(_params_from_keras(kind, activation, group[0], group[1], bias, where, reset_after))
    if kind == "gru":
        _check_gru_form(params, "from_keras")
    if bidirectional and params[0].w_x.shape != params[1].w_x.shape:
        raise ValueError(
            f"the forward and backward kernels must have one shape, got {_shape(params[0].w_x.shape)} and "
            f"{_shape(params[1].w_x.shape)}"
        )
    layer = stack(_CELLS[kind], 1, bidirectional=bidirectional, merge=merge)
    return layer, (Bidirectional(*params) if bidirectional else params[0],)


_KERAS_FIXED = ("units", "activation", "recurrent_activation", "use_bias", "reset_after", "go_backwards", "dtype",
                "recurrent_dropout", "cell", "kernel_initializer", "recurrent_initializer", "bias_initializer")  # fmt: skip


def to_keras(layer: Layer, params, **keras_kwargs):
    """The inverse of :func:`from_keras`: a built Keras 3 ``SimpleRNN``/``LSTM``/``GRU`` (``Bidirectional`` around
    one when ``layer.bidirectional``) computing ``layer.apply`` for a one-layer ``layer``.

    ``kernel = w_x``, ``recurrent_kernel = w_h``, ``bias = b`` (GRU: ``kernel = swap(w_x)``, ...,
    ``bias = [swap(b), [0, 0, b_hn]]``, ``reset_after=True``; a reset-before GRU, ``b_hn=None``: ``bias = swap(b)``,
    ``reset_after=False``). The layer has the params' dtype,
    ``layer.recurrent_dropout``, ``return_sequences=True`` and ``zero_output_for_mask=True`` (so masked outputs are
    zeros, as in jaxrnn); ``keras_kwargs`` (``return_sequences``, ``return_state``, ``name``, ...) override the last
    two or add to them. ``layer.dropout`` (between layers) has no effect with one layer and is not carried.

    Raises:
      ValueError: ``layer.num_layers > 1`` (convert each layer ``k`` with
        ``to_keras(jaxrnn.stack(layer.cell, 1, ...), (params[k],))`` and stack them in a ``keras.Sequential``), or a
        cell other than jaxrnn.elman/lstm/gru.
      TypeError: a ``keras_kwargs`` key that the conversion itself sets (``units``, ``activation``, ...).
    """
    keras = _import_keras()
    kind, activation, input_size, hidden, entries = _layer_info(layer, params, "to_keras")
    if layer.num_layers != 1:
        raise ValueError(
            f"to_keras: a Keras RNN layer has one layer; expected layer.num_layers=1, got {layer.num_layers}. Convert "
            f"each layer k with to_keras(jaxrnn.stack(layer.cell, 1, ...), (params[k],)) and chain them"
        )
    fixed = sorted(set(keras_kwargs) & set(_KERAS_FIXED))
    if fixed:
        raise TypeError(f"to_keras: {fixed} are set by the conversion (from layer and params) and cannot be passed")
    dtype = str(_dtype_of(entries))
    # Zeros, since every weight is set below, and Keras' Orthogonal initializer (LAPACK) has no float16/bfloat16.
    options = dict(units=hidden, use_bias=True, dtype=dtype, recurrent_dropout=layer.recurrent_dropout,
                   return_sequences=True, zero_output_for_mask=True, kernel_initializer="zeros",
                   recurrent_initializer="zeros", bias_initializer="zeros")  # fmt: skip
    options.update(keras_kwargs)
    if kind == "elman":
        make = lambda **kw: keras.layers.SimpleRNN(activation=activation, **options, **kw)  # noqa: E731
    elif kind == "lstm":
        make = lambda **kw: keras.layers.LSTM(activation="tanh", recurrent_activation="sigmoid", **options, **kw)  # noqa: E731
    else:
        reset_after = entries[0][0].reset_after
        make = lambda **kw: keras.layers.GRU(  # noqa: E731
            activation="tanh", recurrent_activation="sigmoid", reset_after=reset_after, **options, **kw
        )
    directions = entries[0]
    if layer.bidirectional:
        name = options.pop("name", None)
        forward = make()
        backward = make(go_backwards=True)
        result = keras.layers.Bidirectional(
            forward, merge_mode=_MERGE_TO_KERAS[layer.merge], backward_layer=backward, dtype=dtype, name=name
        )
        with jax.numpy_rank_promotion("allow"):  # Keras' Orthogonal initializer broadcasts [H, H] * [H]
            result.build((None, None, input_size))
        rnns = [result.forward_layer, result.backward_layer]
    else:
        result = make()
        with jax.numpy_rank_promotion("allow"):
            result.build((None, None, input_size))
        rnns = [result]
    for rnn, p in zip(rnns, directions):
        for variable, value in zip(
            (rnn.cell.kernel, rnn.cell.recurrent_kernel, rnn.cell.bias), _params_to_keras(kind, p)
        ):
            variable.assign(value)
    return result


def carry_from_keras(layer: Layer, states):
    """The states Keras returns with ``return_state=True`` (the list after the output) as ``layer``'s carry.

    ``[h]`` (SimpleRNN, GRU) or ``[h, c]`` (LSTM) per direction, forward first: ``carry = (h,)``,
    ``(LSTMState(h, c),)`` or ``(Bidirectional(forward, backward),)``. Also the inverse of :func:`carry_to_keras`.
    """
    kind = _kind_of_layer(layer, "carry_from_keras")
    per = 2 if kind == "lstm" else 1
    want = per * (2 if layer.bidirectional else 1)
    if layer.num_layers != 1:
        raise ValueError(f"carry_from_keras: expected a one-layer Layer, got num_layers={layer.num_layers}")
    if not isinstance(states, (list, tuple)) or len(states) != want:
        got = f"{type(states).__name__}" + (f" of length {len(states)}" if isinstance(states, (list, tuple)) else "")
        raise ValueError(f"carry_from_keras: states must be a list of {want} arrays, got {got}")
    arrays = {f"states[{i}]": _to_numpy(s, f"states[{i}]") for i, s in enumerate(states)}
    _one_dtype(arrays, "carry_from_keras: states")
    arrays = [_jnp(a) for a in arrays.values()]
    for i in range(0, want, per) if kind == "lstm" else ():
        if arrays[i].shape != arrays[i + 1].shape:
            raise ValueError(
                f"carry_from_keras: an LSTM's h (states[{i}]) and c (states[{i + 1}]) must have one shape, got "
                f"{_shape(arrays[i].shape)} and {_shape(arrays[i + 1].shape)}"
            )
    one = [LSTMState(h=arrays[i], c=arrays[i + 1]) if kind == "lstm" else arrays[i] for i in range(0, want, per)]
    return (Bidirectional(*one) if layer.bidirectional else one[0],)


def carry_to_keras(layer: Layer, carry) -> list:
    """``layer``'s carry as the list Keras takes as ``initial_state`` (the inverse of :func:`carry_from_keras`)."""
    kind = _kind_of_layer(layer, "carry_to_keras")
    if layer.num_layers != 1:
        raise ValueError(f"carry_to_keras: expected a one-layer Layer, got num_layers={layer.num_layers}")
    out = []
    for state in _flat_states(layer, carry, "carry_to_keras"):
        out.extend([state.h, state.c] if kind == "lstm" else [state])
    return out


# ------------------------------------------------------------------------------------- Flax, Equinox and Haiku
# Defined in their own modules (which reuse the helpers above), offered here beside the PyTorch and Keras converters.
from jaxrnn.interop_equinox import carry_from_equinox, carry_to_equinox, from_equinox, to_equinox  # noqa: E402
from jaxrnn.interop_flax import carry_from_flax, carry_to_flax, from_flax, to_flax  # noqa: E402
from jaxrnn.interop_haiku import carry_from_haiku, carry_to_haiku, from_haiku, to_haiku  # noqa: E402

__all__ += ["carry_from_equinox", "carry_from_flax", "carry_from_haiku", "carry_to_equinox", "carry_to_flax",
            "carry_to_haiku", "from_equinox", "from_flax", "from_haiku", "to_equinox", "to_flax", "to_haiku"]  # fmt: skip
