"""jaxrnn.interop against the real PyTorch and Keras 3: outputs, final states and gradients agree numerically.

Every comparison runs on random weights (biases included), random inputs and ragged lengths (PackedSequence on the
torch side, a right-padding mask on the Keras side); gradients are compared after mapping the peer's gradient through
the same conversion (for the split biases: d b = d bias_ih, and d bias_hh equals it block by block).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import interop

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

B, T, D, H = 3, 6, 3, 4
TOL = {"float32": 1e-5, "float64": 1e-10}
# Keras 3.15 on JAX computes tanh in float32 even for float64 layers (keras.ops.tanh(float64) -> float32, and a
# float64 SimpleRNN fails on its own scan carry), so its float64 layers are accurate to ~1e-8 (outputs) and ~1e-7 (gradients) only. The float64
# mapping is checked to 1e-10 against a NumPy float64 reference of Keras' own equations instead.
KERAS_FLOAT64_TOL = 1e-6


def _lengths(seed=0):
    return np.array([T, 2, 4])[:B].astype(np.int32)


def _assert_trees_close(ours, theirs, tol, what):
    ours_leaves, ours_def = jax.tree.flatten(ours)
    theirs_leaves, theirs_def = jax.tree.flatten(theirs)
    assert ours_def == theirs_def, what
    for a, b in zip(ours_leaves, theirs_leaves):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=0, err_msg=what)


def _zero_bias_grads(grads):
    def zero(p):
        fields = {f: jnp.zeros_like(getattr(p, f)) for f in ("b", "b_hn") if hasattr(p, f)}
        return p._replace(**fields)

    return tuple(jaxrnn.Bidirectional(zero(e.forward), zero(e.backward)) if isinstance(e, jaxrnn.Bidirectional)
                 else zero(e) for e in grads)  # fmt: skip


def _stack_carry(layer, carry):
    """Our final carry as torch's ``h_n`` (and ``c_n``), in JAX (differentiable)."""
    states = []
    for entry in carry:
        states.extend(entry if layer.bidirectional else [entry])
    if layer.cell is jaxrnn.lstm:
        return jnp.stack([s.h for s in states]), jnp.stack([s.c for s in states])
    return (jnp.stack(states),)


# ----------------------------------------------------------------------------------------------------------- PyTorch
TORCH_KINDS = {
    "rnn_tanh": lambda **kw: torch.nn.RNN(nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: torch.nn.RNN(nonlinearity="relu", **kw),
    "lstm": lambda **kw: torch.nn.LSTM(**kw),
    "gru": lambda **kw: torch.nn.GRU(**kw),
    "lstm_proj": lambda **kw: torch.nn.LSTM(proj_size=2, **kw),  # outputs and h of 2 features, c of H
}


def _torch_module(kind, *, num_layers=1, bidirectional=False, dtype="float32", seed=0, **kw):
    torch.manual_seed(seed)
    options = dict(input_size=D, hidden_size=H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    options.update(kw)
    module = TORCH_KINDS[kind](**options)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn_like(p))  # biases nonzero, b_ih != b_hh
    return module.double() if dtype == "float64" else module


def _torch_run(module, x, lengths, batch_first=True):
    """Module output (padded back to T), states and the input tensor, on a PackedSequence."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    x = torch.tensor(x, requires_grad=True)
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    out, hx = module(packed)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    states = hx if isinstance(hx, tuple) else (hx,)
    return x, out, states


def _torch_grads_as_ours(module, kind, tol):
    """Torch's parameter gradients mapped through from_torch: bias_ih carries d b; of bias_hh only GRU's n block
    (d b_hn) is kept, after checking that its other blocks equal bias_ih's (they enter the same sum)."""
    grads = {}
    for name, p in module.named_parameters():
        grads[name] = p.grad.detach().clone()
    for name in list(grads):
        if name.startswith("bias_hh"):
            g_hh, g_ih = grads[name], grads[name.replace("bias_hh", "bias_ih")]
            shared = 2 * H if kind == "gru" else g_hh.shape[0]
            torch.testing.assert_close(g_hh[:shared], g_ih[:shared], rtol=0, atol=tol)
            g_hh[:shared] = 0
    nonlinearity = "relu" if kind == "rnn_relu" else "tanh"
    return interop.from_torch(grads, nonlinearity=nonlinearity)[1]


def _check_against_torch(kind, num_layers, bidirectional, dtype, *, batch_first=True, bias=True):
    tol = TOL[dtype]
    module = _torch_module(kind, num_layers=num_layers, bidirectional=bidirectional, dtype=dtype,
                           batch_first=batch_first, bias=bias)  # fmt: skip
    layer, params = interop.from_torch(module)
    rng = np.random.default_rng(1)
    shape = (B, T, D) if batch_first else (T, B, D)
    x = rng.standard_normal(shape).astype(dtype)
    lengths = _lengths()
    out = module.proj_size if kind == "lstm_proj" else H
    r_out = rng.standard_normal(shape[:2] + ((2 if bidirectional else 1) * out,)).astype(dtype)
    n_states = num_layers * (2 if bidirectional else 1)
    r_states = [
        rng.standard_normal((n_states, B, size)).astype(dtype) for size in (out, H)[: 2 if "lstm" in kind else 1]
    ]

    # torch: forward on a PackedSequence, then backward of a random linear functional of outputs and states
    x_t, out_t, states_t = _torch_run(module, x, lengths, batch_first)
    loss_t = (out_t * torch.tensor(r_out)).sum() + sum((s * torch.tensor(r)).sum() for s, r in zip(states_t, r_states))
    loss_t.backward()

    def loss(params, xs):
        final, ys = layer.apply(params, xs, lengths=lengths, time_major=not batch_first)
        states = _stack_carry(layer, final)
        total = jnp.sum(ys * r_out) + sum(jnp.sum(s * r) for s, r in zip(states, r_states))
        return total, (ys, final)

    (_, (ys, final)), (g_params, g_x) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        params, jnp.asarray(x)
    )
    assert ys.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(np.asarray(ys), out_t.detach().numpy(), atol=tol, rtol=0)
    hx = interop.carry_to_torch(layer, final)
    for ours, theirs in zip(hx if isinstance(hx, tuple) else (hx,), states_t):
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), atol=tol, rtol=0)
    np.testing.assert_allclose(np.asarray(g_x), x_t.grad.numpy(), atol=tol, rtol=0)
    if not bias:  # torch has no bias to differentiate; ours are zeros that it cannot train
        g_params = _zero_bias_grads(g_params)
    _assert_trees_close(g_params, _torch_grads_as_ours(module, kind, tol), tol, "dL/dparams")
    return layer, params, module


@pytest.mark.parametrize("kind", list(TORCH_KINDS))
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_torch_outputs_states_and_gradients_float32(kind, num_layers, bidirectional):
    _check_against_torch(kind, num_layers, bidirectional, "float32")


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru", "lstm_proj"])
def test_torch_float64(kind):
    with jax.enable_x64(True):
        layer, params, _ = _check_against_torch(kind, 2, True, "float64")
        assert params[0].forward.w_x.dtype == jnp.float64


def test_torch_time_major_module_and_no_bias():
    layer, params, _ = _check_against_torch("gru", 2, False, "float32", batch_first=False, bias=False)
    assert not np.any(np.asarray(params[1].b)) and not np.any(np.asarray(params[1].b_hn))
    _check_against_torch("lstm", 1, True, "float32", bias=False)


@pytest.mark.parametrize("kind", list(TORCH_KINDS))
def test_torch_round_trip_is_the_same_function(kind):
    module = _torch_module(kind, num_layers=2, bidirectional=True, dropout=0.25)
    layer, params = interop.from_torch(module)
    assert (layer.num_layers, layer.bidirectional, layer.merge, layer.dropout) == (2, True, "concat", 0.25)
    back = interop.to_torch(layer, params)
    assert type(back) is type(module) and back.batch_first and back.dropout == 0.25
    assert back.nonlinearity == module.nonlinearity if kind.startswith("rnn") else True
    x = np.random.default_rng(2).standard_normal((B, T, D)).astype(np.float32)
    lengths = _lengths()
    _, out_a, states_a = _torch_run(module.eval(), x, lengths)
    _, out_b, states_b = _torch_run(back.eval(), x, lengths)
    torch.testing.assert_close(out_b, out_a, atol=1e-5, rtol=0)
    for a, b in zip(states_a, states_b):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    # ours -> torch -> ours is exact: the combined bias sits in bias_ih, bias_hh holds zeros (GRU: b_hn)
    layer2, params2 = interop.from_torch(back)
    assert layer2 == layer._replace(init=layer2.init, apply=layer2.apply)
    _assert_trees_close(params2, params, 0.0, "round trip")


def test_torch_round_trip_from_jaxrnn_float64():
    with jax.enable_x64(True):
        layer = jaxrnn.stack(jaxrnn.elman, 2, bidirectional=True)
        params = layer.init(jax.random.key(0), D, H, dtype=jnp.float64, activation="relu")
        params = jax.tree.map(lambda p: p + 0.1, params)  # nonzero biases
        module = interop.to_torch(layer, params)
        assert module.nonlinearity == "relu" and module.weight_ih_l0.dtype == torch.float64
        x = np.random.default_rng(3).standard_normal((B, T, D))
        _, out, (h_n,) = _torch_run(module, x, _lengths())
        final, ys = layer.apply(params, x, lengths=_lengths())
        np.testing.assert_allclose(np.asarray(ys), out.detach().numpy(), atol=1e-10, rtol=0)
        np.testing.assert_allclose(interop.carry_to_torch(layer, final).numpy(), h_n.detach().numpy(), atol=1e-10)


def test_torch_state_dict_prefix_and_initial_state():
    module = _torch_module("lstm", num_layers=2, bidirectional=True)
    layer, params = interop.from_torch(module)
    layer_sd, params_sd = interop.from_torch(module.state_dict())
    assert (layer_sd.cell, layer_sd.num_layers, layer_sd.bidirectional) == (jaxrnn.lstm, 2, True)
    _assert_trees_close(params_sd, params, 0.0, "state_dict")
    model = torch.nn.ModuleDict({"encoder": torch.nn.ModuleDict({"rnn": module}), "head": torch.nn.Linear(8, 2)})
    _, params_prefixed = interop.from_torch(model.state_dict(), prefix="encoder.rnn.")
    _assert_trees_close(params_prefixed, params, 0.0, "prefix")

    # an initial state through carry_from_torch, and back through carry_to_torch
    rng = np.random.default_rng(4)
    h0, c0 = (torch.tensor(rng.standard_normal((4, B, H)).astype(np.float32)) for _ in range(2))
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    out, (h_n, c_n) = module(torch.tensor(x), (h0, c0))
    carry = interop.carry_from_torch(layer, (h0, c0))
    assert isinstance(carry[1], jaxrnn.Bidirectional) and isinstance(carry[1].backward, jaxrnn.LSTMState)
    final, ys = layer.apply(params, x, carry)
    np.testing.assert_allclose(np.asarray(ys), out.detach().numpy(), atol=1e-5, rtol=0)
    h, c = interop.carry_to_torch(layer, final)
    torch.testing.assert_close(h, h_n.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(c, c_n.detach(), atol=1e-5, rtol=0)
    h_back, c_back = interop.carry_to_torch(layer, carry)
    assert torch.equal(h_back, h0) and torch.equal(c_back, c0)


TORCH_CELLS = {
    "rnn_tanh": lambda: torch.nn.RNNCell(D, H, nonlinearity="tanh"),
    "rnn_relu": lambda: torch.nn.RNNCell(D, H, nonlinearity="relu"),
    "lstm": lambda: torch.nn.LSTMCell(D, H),
    "gru": lambda: torch.nn.GRUCell(D, H),
}


@pytest.mark.parametrize("kind", list(TORCH_CELLS))
def test_torch_cells_stepped_in_a_loop(kind):
    """nn.RNNCell / LSTMCell / GRUCell called step by step from an initial hx equal one jaxrnn layer: outputs, final
    states and gradients (weights, inputs, initial state); to_torch(cell=True) gives the same weights back."""
    torch.manual_seed(3)
    module = TORCH_CELLS[kind]()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    layer, params = interop.from_torch(module)
    assert layer.num_layers == 1 and not layer.bidirectional
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    hx0 = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(2 if kind == "lstm" else 1)]
    r_out = rng.standard_normal((B, T, H)).astype(np.float32)

    x_t = torch.tensor(x, requires_grad=True)
    hx_t = [torch.tensor(h, requires_grad=True) for h in hx0]
    state, outs = tuple(hx_t) if kind == "lstm" else hx_t[0], []
    for t in range(T):
        state = module(x_t[:, t], state)
        outs.append(state[0] if kind == "lstm" else state)
    out_t = torch.stack(outs, dim=1)
    final_t = state if kind == "lstm" else (state,)
    (out_t * torch.tensor(r_out)).sum().backward()

    def loss(params, xs, h0):
        carry = (jaxrnn.LSTMState(*h0),) if kind == "lstm" else (h0[0],)
        (final,), ys = layer.apply(params, xs, carry)
        return jnp.sum(ys * r_out), (ys, final)

    (_, (ys, final)), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
        params, jnp.asarray(x), [jnp.asarray(h) for h in hx0]
    )
    tol = TOL["float32"]
    np.testing.assert_allclose(np.asarray(ys), out_t.detach().numpy(), atol=tol, rtol=0)
    for ours, theirs in zip(jax.tree.leaves(final), final_t):
        np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), atol=tol, rtol=0)
    np.testing.assert_allclose(np.asarray(grads[1]), x_t.grad.numpy(), atol=tol, rtol=0)
    for ours, theirs in zip(grads[2], hx_t):
        np.testing.assert_allclose(np.asarray(ours), theirs.grad.numpy(), atol=tol, rtol=0)
    _assert_trees_close(grads[0], _torch_grads_as_ours(module, kind, tol), tol, "dL/dparams")

    back = interop.to_torch(layer, params, cell=True)
    assert type(back) is type(module)
    assert getattr(back, "nonlinearity", None) == getattr(module, "nonlinearity", None)
    _assert_trees_close(interop.from_torch(back)[1], params, 1e-7, "round trip")
    _assert_trees_close(interop.from_torch(module.state_dict(), nonlinearity=getattr(module, "nonlinearity", None))[1],
                        params, 0, "from the state_dict")  # fmt: skip


def _is_cell_params(node) -> bool:
    """A leaf for jax.tree.map over a stack's params: one direction's GRU or projected-LSTM params."""
    return isinstance(node, jaxrnn.cells.gru.GRUParams | jaxrnn.LSTMPParams)


def test_torch_errors():
    with pytest.raises(ValueError, match=r"mixes a cell's keys \(weight_ih, ...\) with a layer's"):
        interop.from_torch({**torch.nn.LSTMCell(D, H).state_dict(), **torch.nn.LSTM(D, H).state_dict()})
    with pytest.raises(ValueError, match=r"missing keys in the state_dict: bias_hh \("):
        interop.from_torch({k: v for k, v in torch.nn.GRUCell(D, H).state_dict().items() if k != "bias_hh"})
    with pytest.raises(ValueError, match=r"to_torch\(cell=True\): a torch cell is one layer in one direction"):
        layer = jaxrnn.stack(jaxrnn.gru, 2)
        interop.to_torch(layer, layer.init(jax.random.key(0), D, H), cell=True)
    # every array field counts, the GRU's b_hn and the projection w_hr too (they used to be cast silently)
    gru_layer, lstm_layer = jaxrnn.stack(jaxrnn.gru), jaxrnn.stack(jaxrnn.lstm)
    gru_params = gru_layer.init(jax.random.key(0), D, H)
    gru_params = jax.tree.map(
        lambda p: p._replace(b_hn=p.b_hn.astype(jnp.float16)), gru_params, is_leaf=_is_cell_params
    )
    with pytest.raises(TypeError, match=r"share one dtype, got float16 \(b_hn\), float32 \(w_x, w_h, b\)"):
        interop.to_torch(gru_layer, gru_params)
    lstmp = lstm_layer.init(jax.random.key(0), D, H, proj_size=2)
    lstmp = jax.tree.map(lambda p: p._replace(w_hr=p.w_hr.astype(jnp.bfloat16)), lstmp, is_leaf=_is_cell_params)
    with pytest.raises(TypeError, match=r"got bfloat16 \(w_hr\), float32 \(w_x, w_h, b\)"):
        interop.to_torch(lstm_layer, lstmp)
    # and every layer: one torch module has one dtype
    deep = jaxrnn.stack(jaxrnn.gru, 2)
    deep_params = deep.init(jax.random.key(0), D, H)
    deep_params = (deep_params[0], jax.tree.map(lambda a: a.astype(jnp.float16), deep_params[1]))
    with pytest.raises(TypeError, match=r"params must share one dtype, got float16 \(b, b_hn, w_h, w_x\), float32"):
        interop.to_torch(deep, deep_params)
    # projections: the state dict's shapes must fit together; a torch cell has none; one proj_size per stack
    proj = torch.nn.LSTM(D, H, num_layers=2, proj_size=2).state_dict()
    with pytest.raises(
        ValueError, match=r"weight_hr_l0 \(an LSTM's projection\) must have shape \[P, H\] with 0 < P < H, got missing"
    ):
        interop.from_torch({k: v for k, v in proj.items() if k != "weight_hr_l0"})
    with pytest.raises(ValueError, match=r"missing keys in the state_dict: weight_hr_l1"):
        interop.from_torch({k: v for k, v in proj.items() if k != "weight_hr_l1"})
    with pytest.raises(ValueError, match=r"weight_hh_l0 must have shape \[16, 2\] for an LSTM with projections"):
        interop.from_torch({**proj, "weight_hh_l0": torch.zeros(16, 4)})
    with pytest.raises(ValueError, match=r"weight_hr_l1 must have shape \[2, 4\], got \[3, 4\]"):
        interop.from_torch({**proj, "weight_hr_l1": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match=r"weight_ih_l1 must have shape \[16, 2\], got \[16, 4\]"):
        interop.from_torch({**proj, "weight_ih_l1": torch.zeros(16, 4)})
    layer, params = interop.from_torch(torch.nn.LSTM(D, H, proj_size=2))
    with pytest.raises(ValueError, match=r"torch.nn.LSTMCell has no projection; these params have proj_size=2"):
        interop.to_torch(layer, params, cell=True)
    mixed = (params[0], jaxrnn.lstm.init(jax.random.key(0), 2, H))
    with pytest.raises(
        ValueError,
        match=r"every layer must have one proj_size \(None: no projection\), params\[0\] has 2, params\[1\] has None",
    ):
        interop.to_torch(jaxrnn.stack(jaxrnn.lstm, 2), mixed)
    with pytest.raises(
        TypeError, match="torch.nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell or nn.GRUCell.*got Linear"
    ):
        interop.from_torch(torch.nn.Linear(D, H))
    sd = _torch_module("gru", num_layers=2, bidirectional=True).state_dict()
    with pytest.raises(ValueError, match="missing keys.*bias_hh_l1_reverse"):
        interop.from_torch({k: v for k, v in sd.items() if k != "bias_hh_l1_reverse"})
    with pytest.raises(ValueError, match="missing key.*weight_hh_l0"):
        interop.from_torch({k: v for k, v in sd.items() if k != "weight_hh_l0"})
    with pytest.raises(ValueError, match="unexpected keys.*'head.weight'.*prefix="):
        interop.from_torch({**sd, "head.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="kind='lstm' expects weight_hh_l0 of shape \\[4\\*4, 4\\], got \\[12, 4\\]"):
        interop.from_torch(sd, kind="lstm")
    with pytest.raises(ValueError, match="weight_ih_l1 must have shape \\[12, 8\\], got \\[12, 4\\]"):
        interop.from_torch({**sd, "weight_ih_l1": torch.zeros(12, 4)})
    with pytest.raises(ValueError, match="bias_ih_l0 must have shape \\[12\\], got \\[4\\]"):
        interop.from_torch({**sd, "bias_ih_l0": torch.zeros(4)})
    with pytest.raises(ValueError, match="2 gate blocks"):
        interop.from_torch({"weight_ih_l0": torch.zeros(8, D), "weight_hh_l0": torch.zeros(8, H)})
    with pytest.raises(ValueError, match="kind='gru' contradicts the module"):
        interop.from_torch(torch.nn.LSTM(D, H), kind="gru")
    with pytest.raises(ValueError, match="nonlinearity='tanh' contradicts the module's nonlinearity 'relu'"):
        interop.from_torch(torch.nn.RNN(D, H, nonlinearity="relu"), nonlinearity="tanh")
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        interop.from_torch(sd, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="kind must be one of"):
        interop.from_torch(sd, kind="transformer")

    layer = jaxrnn.stack(jaxrnn.gru, 1, bidirectional=True, merge="sum")
    params = layer.init(jax.random.key(0), D, H)
    with pytest.raises(ValueError, match="layer.merge must be 'concat', got 'sum'"):
        interop.to_torch(layer, params)
    layer = jaxrnn.stack(jaxrnn.lstm, 1, recurrent_dropout=0.1)
    params = layer.init(jax.random.key(0), D, H)
    with pytest.raises(ValueError, match="recurrent_dropout=0.1 has no PyTorch counterpart"):
        interop.to_torch(layer, params)
    assert isinstance(interop.to_torch(layer, params, ignore_dropout=True), torch.nn.LSTM)
    custom = jaxrnn.stack(jaxrnn.Cell(jaxrnn.lstm.init, jaxrnn.lstm.initial_state, jaxrnn.lstm.step, name="mine"))
    with pytest.raises(ValueError, match="layer.cell must be jaxrnn.elman, jaxrnn.lstm or jaxrnn.gru"):
        interop.to_torch(custom, params)
    with pytest.raises(TypeError, match="params must be a tuple of 1"):
        interop.to_torch(layer, params[0])
    with pytest.raises(ValueError, match="hx must have shape \\[num_layers \\* num_directions = 1"):
        interop.carry_from_torch(jaxrnn.stack(jaxrnn.gru), torch.zeros(2, B, H))


# ------------------------------------------------------------------------------------------------------------- Keras
def _keras_broadcasts():
    """Keras itself relies on rank promotion (Orthogonal init, bias adds), which tests/conftest.py makes raise."""
    return jax.numpy_rank_promotion("allow")


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def _keras_rnn(keras, kind, **kw):
    options = dict(return_sequences=True, return_state=True, zero_output_for_mask=True)
    options.update(kw)
    if kind == "simple_rnn_relu":
        return keras.layers.SimpleRNN(H, activation="relu", **options)
    return {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind](
        H, **options
    )


def _randomize(klayer, seed, dtype):
    rng = np.random.default_rng(seed)
    klayer.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(dtype) for w in klayer.get_weights()])


def _keras_grads_as_ours(kind, grads, merge, tol):
    """Keras' weight gradients mapped through from_keras: of the GRU's recurrent bias row only the h block
    (d b_hn) is kept, after checking that its z, r blocks equal the input row's (they enter the same sum)."""
    grads = [np.array(g) for g in grads]
    if kind == "gru":
        for bias in (b for b in grads[2::3] if b.ndim == 2):  # reset_after=True
            np.testing.assert_allclose(bias[1, : 2 * H], bias[0, : 2 * H], rtol=0, atol=tol)
            bias[1, : 2 * H] = 0
    return interop.from_keras(grads, merge=merge, activation="relu" if kind == "simple_rnn_relu" else "tanh")[1]


# Keras' mask with padding anywhere: left padding (pad_sequences' default), a gap, nothing masked.
KERAS_MASK = np.array([[False, False, True, True, True, True], [True, False, False, True, True, False], [True] * T])


def _check_against_keras(keras, kind, merge, dtype, *, mask_anywhere=False, **kw):
    tol = KERAS_FLOAT64_TOL if dtype == "float64" else TOL[dtype]
    inner = _keras_rnn(keras, kind, dtype=dtype, **kw)
    klayer = keras.layers.Bidirectional(inner, merge_mode=merge) if merge else inner
    with _keras_broadcasts():
        klayer.build((None, T, D))
    _randomize(klayer, 5, dtype)
    layer, params = interop.from_keras(klayer)
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal((B, T, D)).astype(dtype))
    lengths = None if mask_anywhere else _lengths()
    mask = jnp.asarray(KERAS_MASK) if mask_anywhere else jnp.arange(T)[None, :] < jnp.asarray(lengths)[:, None]
    width = 2 * H if merge == "concat" else H
    r_out = jnp.asarray(rng.standard_normal((B, T, width)).astype(dtype))
    n_states = (2 if kind == "lstm" else 1) * (2 if merge else 1)
    r_states = [jnp.asarray(rng.standard_normal((B, H)).astype(dtype)) for _ in range(n_states)]

    def keras_loss(weights, xs):
        with _keras_broadcasts():
            outputs, _ = klayer.stateless_call(weights, state, xs, mask=mask)
        total = jnp.sum(outputs[0] * r_out) + sum(jnp.sum(s * r) for s, r in zip(outputs[1:], r_states))
        return total, outputs

    def our_loss(params, xs):
        final, ys = layer.apply(params, xs, lengths=lengths, mask=KERAS_MASK if mask_anywhere else None)
        states = interop.carry_to_keras(layer, final)
        return jnp.sum(ys * r_out) + sum(jnp.sum(s * r) for s, r in zip(states, r_states)), (ys, states)

    weights = [v.value for v in klayer.trainable_variables]
    state = [v.value for v in klayer.non_trainable_variables]  # the seed generator of recurrent_dropout
    (_, k_out), (k_gw, k_gx) = jax.jit(jax.value_and_grad(keras_loss, argnums=(0, 1), has_aux=True))(weights, x)
    (_, (ys, states)), (g_params, g_x) = jax.jit(jax.value_and_grad(our_loss, argnums=(0, 1), has_aux=True))(params, x)
    assert ys.dtype == jnp.dtype(dtype)  # (Keras may return float32 from a float64 layer, see above)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(k_out[0]), atol=tol, rtol=0)
    assert len(states) == len(k_out) - 1
    for ours, theirs in zip(states, k_out[1:]):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=tol, rtol=0)
    np.testing.assert_allclose(np.asarray(g_x), np.asarray(k_gx), atol=tol, rtol=0)
    if not kw.get("use_bias", True):
        g_params = _zero_bias_grads(g_params)
    ours_merge = {"ave": "mean"}.get(merge, merge) if merge else None  # a one-direction list takes no merge
    _assert_trees_close(g_params, _keras_grads_as_ours(kind, k_gw, ours_merge, tol), tol, "dL/dW")
    return klayer, layer, params


KERAS_CASES = [
    ("simple_rnn", None),
    ("simple_rnn_relu", None),
    ("lstm", None),
    ("gru", None),
    ("lstm", "concat"),
    ("gru", "sum"),
    ("simple_rnn", "concat"),
    ("gru", "ave"),
    ("lstm", "mul"),
]


@pytest.mark.parametrize("kind,merge", KERAS_CASES)
def test_keras_outputs_states_and_gradients_float32(keras, kind, merge):
    _check_against_keras(keras, kind, merge, "float32")


@pytest.mark.parametrize("kind,merge", [("lstm", "concat"), ("gru", None), ("simple_rnn", "sum")])
def test_keras_mask_with_padding_anywhere(keras, kind, merge):
    """Keras' ``mask=`` with left padding and gaps is jaxrnn's ``mask=``: outputs (Keras'
    ``zero_output_for_mask=True``), final states and gradients, in both directions."""
    _check_against_keras(keras, kind, merge, "float32", mask_anywhere=True)


@pytest.mark.parametrize("kind,merge", [("gru", "concat")])
def test_keras_float64(keras, kind, merge):
    with jax.enable_x64(True):
        klayer, layer, params = _check_against_keras(keras, kind, merge, "float64")
        assert jax.tree.leaves(params)[0].dtype == jnp.float64
        layer2, params2 = interop.from_keras(interop.to_keras(layer, params))
        _assert_trees_close(params2, params, 0.0, "float64 round trip")


@pytest.mark.parametrize(("merge", "mask_anywhere"), [(None, False), ("concat", True)])
def test_keras_gru_reset_before(keras, merge, mask_anywhere):
    """Keras' ``GRU(reset_after=False)`` is jaxrnn's reset-before GRU (``b_hn=None``): outputs, final states and
    gradients, one direction with lengths and both with padding anywhere; and back to Keras exactly."""
    klayer, layer, params = _check_against_keras(
        keras, "gru", merge, "float32", mask_anywhere=mask_anywhere, reset_after=False
    )
    cells = list(params[0]) if merge else [params[0]]
    assert all(p.b_hn is None and p.b.shape == (3 * H,) for p in cells)
    back = interop.to_keras(layer, params)
    assert (back.forward_layer if merge else back).cell.reset_after is False
    _assert_trees_close(interop.from_keras(back)[1], params, 0.0, "round trip")
    weights = klayer.get_weights()
    _assert_trees_close(interop.from_keras(weights)[1], params, 0.0, "weight list, reset_after from the bias shape")
    # without a bias the form cannot be read from the weights: reset_after says it (default True, Keras 3's)
    no_bias = interop.from_keras(weights[:2], reset_after=False)[1][0]
    assert no_bias.b_hn is None and not np.any(np.asarray(no_bias.b))
    assert interop.from_keras(weights[:2])[1][0].reset_after
    with pytest.raises(ValueError, match=r"bias must have shape \[2, 12\] \(reset_after=True\), got \[12\]"):
        interop.from_keras(weights[:3], reset_after=True)
    with pytest.raises(ValueError, match="reset_after=True contradicts the Keras layer"):
        interop.from_keras(klayer, reset_after=True)
    with pytest.raises(ValueError, match="reset_after applies to a GRU"):
        interop.from_keras([np.zeros((D, 4 * H)), np.zeros((H, 4 * H))], reset_after=False)
    with pytest.raises(ValueError, match=r"to_torch: PyTorch's nn.GRU resets after its recurrent matmul; these params "
                                         r"are a reset-before \(b_hn=None\) GRU"):  # fmt: skip
        interop.to_torch(layer, params)
    mixed = (jaxrnn.Bidirectional(cells[0], jaxrnn.gru.init(jax.random.key(0), D, H)),)
    with pytest.raises(ValueError, match="to_keras: the GRU params mix reset-after"):
        interop.to_keras(jaxrnn.stack(jaxrnn.gru, bidirectional=True), mixed)


def _keras_reference(kind, weights, x, mask):
    """Keras' documented LSTM (i, f, c, o) and GRU (z, r, h; reset_after=True) in NumPy float64, masked steps
    keeping the state; returns (outputs zeroed at masked steps, final states)."""
    kernel, recurrent, bias = weights
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    h = np.zeros((x.shape[0], recurrent.shape[0]))
    c = np.zeros_like(h)
    ys = []
    for t in range(x.shape[1]):
        if kind == "lstm":
            i, f, g, o = np.split(x[:, t] @ kernel + h @ recurrent + bias, 4, axis=-1)
            c_new = sig(f) * c + sig(i) * np.tanh(g)
            h_new = sig(o) * np.tanh(c_new)
        else:
            a_z, a_r, a_h = np.split(x[:, t] @ kernel + bias[0], 3, axis=-1)
            u_z, u_r, u_h = np.split(h @ recurrent + bias[1], 3, axis=-1)
            z, r = sig(a_z + u_z), sig(a_r + u_r)
            h_new, c_new = z * h + (1 - z) * np.tanh(a_h + r * u_h), c
        m = mask[:, t, None]
        h, c = np.where(m, h_new, h), np.where(m, c_new, c)
        ys.append(np.where(m, h, 0.0))
    return np.stack(ys, axis=1), (h, c)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_keras_float64_mapping_against_numpy_reference(keras, kind):
    with jax.enable_x64(True):
        klayer = _keras_rnn(keras, kind, dtype="float64")
        with _keras_broadcasts():
            klayer.build((None, T, D))
        _randomize(klayer, 11, "float64")
        layer, params = interop.from_keras(klayer)
        x = np.random.default_rng(12).standard_normal((B, T, D))
        mask = np.arange(T)[None, :] < _lengths()[:, None]
        ref_ys, (ref_h, ref_c) = _keras_reference(kind, klayer.get_weights(), x, mask)
        final, ys = layer.apply(params, x, lengths=_lengths())
        np.testing.assert_allclose(np.asarray(ys), ref_ys, atol=1e-10, rtol=0)
        states = interop.carry_to_keras(layer, final)
        np.testing.assert_allclose(np.asarray(states[0]), ref_h, atol=1e-10, rtol=0)
        if kind == "lstm":
            np.testing.assert_allclose(np.asarray(states[1]), ref_c, atol=1e-10, rtol=0)


def test_keras_no_bias_and_weight_lists(keras):
    klayer, layer, params = _check_against_keras(keras, "gru", None, "float32", use_bias=False)
    assert not np.any(np.asarray(params[0].b)) and not np.any(np.asarray(params[0].b_hn))
    klayer = keras.layers.Bidirectional(_keras_rnn(keras, "gru"), merge_mode="sum")
    with _keras_broadcasts():
        klayer.build((None, T, D))
    _randomize(klayer, 7, "float32")
    layer, params = interop.from_keras(klayer)
    layer_w, params_w = interop.from_keras(klayer.get_weights(), merge="sum")
    assert (layer_w.cell, layer_w.bidirectional, layer_w.merge) == (jaxrnn.gru, True, "sum")
    _assert_trees_close(params_w, params, 0.0, "weight list")


@pytest.mark.parametrize("kind,merge", KERAS_CASES)
def test_keras_round_trip_is_the_same_function(keras, kind, merge):
    inner = _keras_rnn(keras, kind, recurrent_dropout=0.2)
    klayer = keras.layers.Bidirectional(inner, merge_mode=merge) if merge else inner
    with _keras_broadcasts():
        klayer.build((None, T, D))
    _randomize(klayer, 8, "float32")
    layer, params = interop.from_keras(klayer)
    assert layer.recurrent_dropout == pytest.approx(0.2)
    back = interop.to_keras(layer, params, return_state=True)
    x = np.random.default_rng(9).standard_normal((B, T, D)).astype(np.float32)
    mask = np.arange(T)[None, :] < _lengths()[:, None]
    with _keras_broadcasts():
        pairs = list(zip(klayer(x, mask=mask), back(x, mask=mask)))
    for a, b in pairs:
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=0)
    layer2, params2 = interop.from_keras(back)
    assert (layer2.cell, layer2.bidirectional, layer2.merge) == (layer.cell, layer.bidirectional, layer.merge)
    _assert_trees_close(params2, params, 0.0, "round trip")


def test_keras_round_trip_from_jaxrnn_with_masking_layer_and_initial_state(keras):
    with jax.enable_x64(True):
        layer = jaxrnn.stack(jaxrnn.gru, 1, bidirectional=True)
        params = jax.tree.map(lambda p: p + 0.1, layer.init(jax.random.key(1), D, H, dtype=jnp.float64))
        klayer = interop.to_keras(layer, params, return_state=True)
        rng = np.random.default_rng(10)
        x = rng.standard_normal((B, T, D))
        lengths = _lengths()
        x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0  # right padding that keras.layers.Masking detects
        carry0 = (
            jaxrnn.Bidirectional(jnp.asarray(rng.standard_normal((B, H))), jnp.asarray(rng.standard_normal((B, H)))),
        )
        mask = np.arange(T)[None, :] < lengths[:, None]
        with _keras_broadcasts():
            # eager Keras loses a Masking layer's mask when initial_state is passed too, so: one check each
            by_masking = klayer(keras.layers.Masking(0.0)(x))
            with_state = klayer(x, mask=mask, initial_state=interop.carry_to_keras(layer, carry0))
        for carry, outputs in ((None, by_masking), (carry0, with_state)):
            final, ys = layer.apply(params, x, carry, lengths=lengths)
            assert outputs[0].dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(ys), np.asarray(outputs[0]), atol=KERAS_FLOAT64_TOL, rtol=0)
            carry_k = interop.carry_from_keras(layer, outputs[1:])
            _assert_trees_close(final, carry_k, KERAS_FLOAT64_TOL, "final states")


def test_keras_merge_applies_to_two_directions_only(keras):
    def built(klayer):
        with _keras_broadcasts():
            klayer.build((None, T, D))
        return klayer

    weights = built(keras.layers.LSTM(H)).get_weights()
    with pytest.raises(ValueError, match="merge applies to a Bidirectional weight list .* these 3 are one direction"):
        interop.from_keras(weights, merge="sum")
    with pytest.raises(ValueError, match="merge='sum' contradicts the Keras layer .*a one-direction layer"):
        interop.from_keras(built(keras.layers.LSTM(H)), merge="sum")
    both = built(keras.layers.Bidirectional(keras.layers.LSTM(H), merge_mode="sum"))
    with pytest.raises(ValueError, match="merge='concat' contradicts the Keras layer .*merge_mode 'sum'"):
        interop.from_keras(both, merge="concat")
    assert interop.from_keras(both, merge="sum")[0].merge == "sum"
    assert interop.from_keras(both.get_weights())[0].merge == "concat"


def test_keras_errors(keras):
    def built(klayer):
        with _keras_broadcasts():
            klayer.build((None, T, D))
        return klayer

    with pytest.raises(ValueError, match="recurrent_activation='hard_sigmoid'"):
        interop.from_keras(built(keras.layers.LSTM(H, recurrent_activation="hard_sigmoid")))
    projected = jaxrnn.stack(jaxrnn.lstm)
    with pytest.raises(ValueError, match=r"to_keras: Keras' LSTM has no output projection"):
        interop.to_keras(projected, projected.init(jax.random.key(0), D, H, proj_size=2))
    with pytest.raises(ValueError, match="activation='relu'; jaxrnn.lstm supports 'tanh'"):
        interop.from_keras(built(keras.layers.LSTM(H, activation="relu")))
    with pytest.raises(ValueError, match="activation='sigmoid'; jaxrnn.elman supports 'tanh' or 'relu'"):
        interop.from_keras(built(keras.layers.SimpleRNN(H, activation="sigmoid")))
    with pytest.raises(ValueError, match="go_backwards=True"):
        interop.from_keras(built(keras.layers.GRU(H, go_backwards=True)))
    with pytest.raises(ValueError, match=r"merge_mode=None; jaxrnn merges the two directions into one output"):
        interop.from_keras(built(keras.layers.Bidirectional(keras.layers.LSTM(H), merge_mode=None)))
    with pytest.raises(ValueError, match=r"merge must be one of .* Keras' 'ave' is 'mean'\), got 'ave'"):
        interop.from_keras(built(keras.layers.Bidirectional(keras.layers.LSTM(H))).get_weights(), merge="ave")
    with pytest.raises(ValueError, match="dropout=0.3 .*ignore_dropout=True"):
        interop.from_keras(built(keras.layers.LSTM(H, dropout=0.3)))
    assert interop.from_keras(built(keras.layers.LSTM(H, dropout=0.3)), ignore_dropout=True)[0].dropout == 0.0
    with pytest.raises(ValueError, match="not built"):
        interop.from_keras(keras.layers.LSTM(H))
    with pytest.raises(TypeError, match="must be a Keras SimpleRNN, LSTM or GRU.*got Dense"):
        interop.from_keras(keras.layers.Dense(H))
    with pytest.raises(ValueError, match="kind='gru' contradicts the Keras layer"):
        interop.from_keras(built(keras.layers.LSTM(H)), kind="gru")
    with pytest.raises(
        ValueError, match=r"activation='relu' contradicts the Keras layer \(SimpleRNN, activation='tanh'"
    ):
        interop.from_keras(built(keras.layers.SimpleRNN(H)), activation="relu")
    with pytest.raises(ValueError, match=r"activation='relu' contradicts the Keras layer \(LSTM, activation='tanh'"):
        interop.from_keras(built(keras.layers.LSTM(H)), activation="relu")
    with pytest.raises(ValueError, match="a weight list must have 2 or 3 arrays"):
        interop.from_keras([np.zeros((D, H))])
    with pytest.raises(ValueError, match="5 gate blocks"):
        interop.from_keras([np.zeros((D, 5 * H)), np.zeros((H, 5 * H))])

    layer = jaxrnn.stack(jaxrnn.lstm, 2)
    with pytest.raises(ValueError, match="expected layer.num_layers=1, got 2"):
        interop.to_keras(layer, layer.init(jax.random.key(0), D, H))
    layer = jaxrnn.stack(jaxrnn.lstm)
    with pytest.raises(TypeError, match="\\['units'\\] are set by the conversion"):
        interop.to_keras(layer, layer.init(jax.random.key(0), D, H), units=8)
    with pytest.raises(ValueError, match="states must be a list of 2 arrays"):
        interop.carry_from_keras(layer, [np.zeros((B, H))])


def test_torch_carry_keeps_bfloat16():
    layer = jaxrnn.stack(jaxrnn.gru)
    params = layer.init(jax.random.key(0), D, H, dtype=jnp.bfloat16)
    carry, _ = layer.apply(params, jnp.ones((B, T, D), jnp.bfloat16))
    h_n = interop.carry_to_torch(layer, carry)
    assert h_n.dtype == torch.bfloat16 and tuple(h_n.shape) == (1, B, H)
    _assert_trees_close(interop.carry_from_torch(layer, h_n), carry, 0, "bfloat16 carry round trip")


def _carry_converter(peer):
    if peer in ("flax", "haiku", "equinox"):
        pytest.importorskip(peer)
    if peer == "keras":
        pytest.importorskip("keras")
    return getattr(interop, f"carry_to_{peer}")


@pytest.mark.parametrize("peer", ["torch", "keras", "flax", "haiku", "equinox"])
def test_carry_to_checks_each_state_is_the_cells_carry(peer):
    """One check for all five: an LSTM layer's states are LSTMState(h, c), a GRU's or Elman's are arrays."""
    convert = _carry_converter(peer)
    z = jnp.zeros((B, H))
    lstm, gru = jaxrnn.stack(jaxrnn.lstm), jaxrnn.stack(jaxrnn.gru)
    with pytest.raises(TypeError, match=rf"carry_to_{peer}: carry\[0\] must be an LSTMState\(h, c\) \(lstm's carry\), "
                                        r"got ArrayImpl"):  # fmt: skip
        convert(lstm, (z,))
    with pytest.raises(TypeError, match=r"carry\[0\] must be an array \[\*batch, H\] \(gru's carry\), got LSTMState"):
        convert(gru, (jaxrnn.LSTMState(z, z),))
    with pytest.raises(TypeError, match=r"carry\[0\].h must be a floating-point array \[\*batch, H\], got NoneType"):
        convert(lstm, (jaxrnn.LSTMState(None, z),))
    with pytest.raises(TypeError, match=r"carry\[0\] must be a floating-point array \[\*batch, H\], got dtype int32"):
        convert(gru, (z.astype(jnp.int32),))
    with pytest.raises(ValueError, match=r"carry\[0\].h and .c must have one shape .*, got \[3, 4\] and \[2, 4\]"):
        convert(lstm, (jaxrnn.LSTMState(z, z[:2]),))


def test_carry_to_torch_names_the_layer_of_a_bad_state():
    z, S = jnp.zeros((B, H)), jaxrnn.LSTMState
    deep = jaxrnn.stack(jaxrnn.lstm, 2)
    with pytest.raises(TypeError, match=r"carry\[0\] must be an LSTMState\(h, c\) \(lstm's carry\), got ArrayImpl"):
        interop.carry_to_torch(deep, (z, z))
    with pytest.raises(ValueError, match=r"every layer's carry must have one batch shape; carry\[1\] has \[2\], "
                                         r"carry\[0\] \[3\]"):  # fmt: skip
        interop.carry_to_torch(deep, (S(z, z), S(z[:2], z[:2])))
    with pytest.raises(TypeError, match=r"carry\[1\] must be an LSTMState\(h, c\) \(lstm's carry\), got NoneType"):
        interop.carry_to_torch(deep, (S(z, z), None))
    gru = jaxrnn.stack(jaxrnn.gru, 2, bidirectional=True)
    with pytest.raises(TypeError, match=r"carry\[1\].backward must be a floating-point array \[\*batch, H\], got "
                                        r"NoneType"):  # fmt: skip
        interop.carry_to_torch(gru, (jaxrnn.Bidirectional(z, z), jaxrnn.Bidirectional(z, None)))
    with pytest.raises(ValueError, match=r"torch stacks every layer's state into one tensor, so they must share one "
                                         r"shape and dtype; carry\[0\].backward is float16\[3, 4\], carry\[0\].forward "
                                         r"float32\[3, 4\]"):  # fmt: skip
        interop.carry_to_torch(gru, (jaxrnn.Bidirectional(z, z.astype(jnp.float16)), jaxrnn.Bidirectional(z, z)))
    with pytest.raises(ValueError, match=r"carry\[1\].h is float32\[3, 5\], carry\[0\].h float32\[3, 4\]"):
        interop.carry_to_torch(deep, (S(z, z), S(jnp.zeros((B, 5)), jnp.zeros((B, 5)))))


def test_torch_dtypes_are_checked():
    """Torch tensors get the numpy arrays' rule: floating point, one dtype, float64 only with x64."""
    sd = torch.nn.LSTM(D, H).state_dict()
    for dtype in (torch.long, torch.bool, torch.complex64):
        with pytest.raises(TypeError, match=rf"state_dict\['weight_ih_l0'\] must be floating point, got dtype "
                                            rf"{str(dtype).removeprefix('torch.')}"):  # fmt: skip
            interop.from_torch({k: v.to(dtype) for k, v in sd.items()})
    mixed = {**sd, "bias_ih_l0": sd["bias_ih_l0"].double()}
    with jax.enable_x64(True):
        with pytest.raises(TypeError, match=r"the state_dict's tensors must share one dtype, got float32 "
                                            r"\(weight_ih_l0, weight_hh_l0, bias_hh_l0\), float64 \(bias_ih_l0\)"):  # fmt: skip
            interop.from_torch(mixed)
        assert interop.from_torch({k: v.double() for k, v in sd.items()})[1][0].w_x.dtype == jnp.float64
    with jax.enable_x64(False):
        with pytest.raises(TypeError, match=r"the LSTM's tensors are float64, which needs jax_enable_x64"):
            interop.from_torch(torch.nn.LSTM(D, H).double())
        with pytest.raises(TypeError, match=r"carry_from_torch: hx are float64, which needs jax_enable_x64"):
            interop.carry_from_torch(jaxrnn.stack(jaxrnn.gru), torch.zeros(1, B, H, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"weights\[1\] must be floating point, got dtype int64"):
        interop.from_keras([torch.ones(D, 4 * H), torch.ones(H, 4 * H, dtype=torch.long)])
    with pytest.raises(TypeError, match=r"weights must share one dtype, got float16 \(weights\[1\]\), float32"):
        interop.from_keras([torch.ones(D, 4 * H), torch.ones(H, 4 * H, dtype=torch.float16)])
    gru, lstm = jaxrnn.stack(jaxrnn.gru), jaxrnn.stack(jaxrnn.lstm)
    with pytest.raises(TypeError, match=r"hx must be floating point, got dtype int64"):
        interop.carry_from_torch(gru, torch.zeros(1, B, H, dtype=torch.long))
    with pytest.raises(TypeError, match=r"carry_from_torch: h and c must share one dtype, got float16 \(c\), float32"):
        interop.carry_from_torch(lstm, (torch.zeros(1, B, H), torch.zeros(1, B, H, dtype=torch.float16)))


def test_torch_layer_numbers_have_no_leading_zeros():
    """``_l00`` is not an alias of ``_l0`` (it silently replaced it): it is an unexpected key."""
    sd = torch.nn.LSTM(D, H, num_layers=2).state_dict()
    for key in ("weight_ih_l00", "bias_hh_l01_reverse"):
        with pytest.raises(ValueError, match=rf"unexpected keys in the state_dict: '{key}'"):
            interop.from_torch({**sd, key: torch.zeros(4 * H, D)})
    assert interop.from_torch(torch.nn.GRU(D, H, num_layers=11).state_dict())[0].num_layers == 11


def test_options_that_do_not_apply_are_refused():
    lstm_sd = torch.nn.LSTM(D, H).state_dict()
    with pytest.raises(ValueError, match=r"nonlinearity='relu' applies to nn.RNN and nn.RNNCell; the state_dict holds "
                                         r"kind 'lstm'"):  # fmt: skip
        interop.from_torch(lstm_sd, nonlinearity="relu")
    with pytest.raises(ValueError, match=r"nonlinearity='relu' applies to nn.RNN and nn.RNNCell; the GRUCell holds"):
        interop.from_torch(torch.nn.GRUCell(D, H), nonlinearity="relu")
    assert interop.from_torch(lstm_sd, nonlinearity="tanh")[0].cell is jaxrnn.lstm
    weights = [np.zeros((D, 4 * H), np.float32), np.zeros((H, 4 * H), np.float32)]
    with pytest.raises(ValueError, match=r"activation='relu' applies to a SimpleRNN weight list; these weights are a "
                                         r"'lstm' layer"):  # fmt: skip
        interop.from_keras(weights, activation="relu")
    assert interop.from_keras(weights, activation="tanh")[0].cell is jaxrnn.lstm
    relu = [np.zeros((D, H), np.float32), np.zeros((H, H), np.float32)]
    assert interop.from_keras(relu, activation="relu")[1][0].activation == "relu"
    assert interop.from_keras(relu)[1][0].activation == "tanh"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_to_keras_half_precision(keras, cell, dtype):
    """Built with zeros initializers (Keras' Orthogonal has no float16/bfloat16), then the weights set."""
    layer = jaxrnn.stack(getattr(jaxrnn, cell))
    params = layer.init(jax.random.key(0), D, H, dtype=jnp.dtype(dtype))
    klayer = interop.to_keras(layer, params)
    x = jax.random.normal(jax.random.key(1), (B, T, D)).astype(dtype)
    with _keras_broadcasts():
        out = klayer(x)
    _, ys = layer.apply(params, x)
    assert out.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ys, np.float32), atol=2e-2, rtol=0)
    _assert_trees_close(interop.from_keras(klayer)[1], params, 0, "round trip")


def test_carry_from_keras_checks_h_and_c(keras):
    layer = jaxrnn.stack(jaxrnn.lstm)
    with pytest.raises(ValueError, match=r"carry_from_keras: an LSTM's h \(states\[0\]\) and c \(states\[1\]\) must "
                                         r"have one shape, got \[3, 4\] and \[3, 5\]"):  # fmt: skip
        interop.carry_from_keras(layer, [np.zeros((B, H), np.float32), np.zeros((B, 5), np.float32)])
    with pytest.raises(TypeError, match=r"carry_from_keras: states must share one dtype"):
        interop.carry_from_keras(layer, [np.zeros((B, H), np.float32), np.zeros((B, H), np.float16)])
