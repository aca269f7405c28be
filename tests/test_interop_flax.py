"""jaxrnn.interop's Flax converters against the real Flax (linen and NNX): outputs, final states and gradients agree.

Every comparison runs on random weights (biases included, so the bias mapping is exercised), random inputs and ragged
``seq_lengths``; outputs are compared within each sequence's length (Flax leaves the padded steps unspecified).
Gradients are compared after mapping Flax's gradient through the same conversion, which is linear.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close

import jaxrnn
from jaxrnn import interop

flax = pytest.importorskip("flax")
nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")

B, T, D, H = 3, 6, 5, 4
TOL = 2e-6
LENGTHS = np.array([T, 2, 4], np.int32)
MASK = (np.arange(T)[None, :] < LENGTHS[:, None])[..., None]
LINEN_CELLS = {
    "LSTMCell": lambda: nn.LSTMCell(features=H),
    "OptimizedLSTMCell": lambda: nn.OptimizedLSTMCell(features=H),
    "GRUCell": lambda: nn.GRUCell(features=H),
    "SimpleCell": lambda: nn.SimpleCell(features=H),
    "SimpleCell-relu": lambda: nn.SimpleCell(features=H, activation_fn=nn.relu),
}
NNX_CELLS = {
    "LSTMCell": lambda seed: nnx.LSTMCell(D, H, rngs=nnx.Rngs(seed)),
    "OptimizedLSTMCell": lambda seed: nnx.OptimizedLSTMCell(D, H, rngs=nnx.Rngs(seed)),
    "GRUCell": lambda seed: nnx.GRUCell(D, H, rngs=nnx.Rngs(seed)),
    "SimpleCell": lambda seed: nnx.SimpleCell(D, H, rngs=nnx.Rngs(seed)),
    "SimpleCell-relu": lambda seed: nnx.SimpleCell(D, H, activation_fn=nnx.relu, rngs=nnx.Rngs(seed)),
}
# every cell one-directional; bidirectional pairs for one cell each (the pairing code is cell-independent)
LINEN_CASES = [(name, False) for name in sorted(LINEN_CELLS)] + [("LSTMCell", True), ("SimpleCell-relu", True)]
NNX_CASES = [(name, False) for name in sorted(NNX_CELLS)] + [("GRUCell", True)]
KIND_OF = {"LSTMCell": jaxrnn.lstm, "OptimizedLSTMCell": jaxrnn.lstm, "GRUCell": jaxrnn.gru, "SimpleCell": jaxrnn.elman}


def _xs(seed=1):
    return jax.random.normal(jax.random.PRNGKey(seed), (B, T, D))


def _jitter(tree, seed=3):
    """Random weights everywhere, zero-initialised biases included."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(treedef, [a + 0.3 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])


def _close(ours, theirs, what, tol=TOL):
    assert_trees_close(ours, theirs, rtol=0, atol=tol, err_msg=what)


def _linen(make_cell, bidirectional=False, seed=0):
    if bidirectional:
        module = nn.Bidirectional(nn.RNN(make_cell()), nn.RNN(make_cell()), return_carry=True)
    else:
        module = nn.RNN(make_cell(), return_carry=True)
    return module, _jitter(module.init(jax.random.PRNGKey(seed), _xs()), seed + 3)


# ------------------------------------------------------------------------------------------------------- linen
@pytest.mark.parametrize("name, bidirectional", LINEN_CASES)
def test_from_linen_matches_flax_outputs_states_and_gradients(name, bidirectional):
    module, variables = _linen(LINEN_CELLS[name], bidirectional)
    layer, params = interop.from_flax(variables, module=module)
    assert layer.cell is KIND_OF[name.split("-")[0]] and layer.num_layers == 1
    assert layer.bidirectional is bidirectional and (not bidirectional or layer.merge == "concat")
    if name == "SimpleCell-relu":
        cells = params[0] if bidirectional else [params[0]]
        assert all(p.activation == "relu" for p in cells)
    xs = _xs()

    carry_flax, ys_flax = module.apply(variables, xs, seq_lengths=LENGTHS)
    carry, ys = layer.apply(params, xs, lengths=LENGTHS)
    _close(ys * MASK, ys_flax * MASK, f"{name} outputs")
    np.testing.assert_array_equal(np.asarray(ys) * ~MASK, 0.0)  # jaxrnn zeroes the padding
    _close(interop.carry_to_flax(layer, carry), carry_flax, f"{name} final carry")

    def loss_flax(v):
        carry, ys = module.apply(v, xs, seq_lengths=LENGTHS)
        return jnp.sum(jnp.sin(ys) * MASK) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(carry))

    def loss_ours(p):
        carry, ys = layer.apply(p, xs, lengths=LENGTHS)
        return jnp.sum(jnp.sin(ys) * MASK) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(carry))

    _, mapped = interop.from_flax(jax.grad(loss_flax)(variables), module=module)
    _close(jax.grad(loss_ours)(params), mapped, f"{name} gradients", tol=1e-5)


@pytest.mark.parametrize("name, bidirectional", LINEN_CASES)
def test_to_linen_inverts_from_linen_exactly(name, bidirectional):
    module, variables = _linen(LINEN_CELLS[name], bidirectional)
    layer, params = interop.from_flax(variables, module=module)
    built, back = interop.to_flax(layer, params, optimized_lstm=name == "OptimizedLSTMCell")
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    cell = built.forward_rnn.cell if bidirectional else built.cell
    assert type(cell).__name__ == name.split("-")[0]
    assert cell.activation_fn is (nn.relu if name.endswith("relu") else nn.tanh)
    xs = _xs(4)
    _close(built.apply(back, xs), module.apply(variables, xs)[1], f"{name} built module")


def test_from_linen_reads_a_bare_cell_and_variables_without_the_params_level():
    cell = nn.LSTMCell(features=H)
    variables = _jitter(cell.init(jax.random.PRNGKey(0), cell.initialize_carry(jax.random.PRNGKey(1), (B, D)),
                                  _xs()[:, 0]))  # fmt: skip
    layer, params = interop.from_flax(variables, module=cell)
    _, again = interop.from_flax(variables["params"])
    _close(params, again, "with and without the 'params' level")
    xs = _xs()
    ys_flax = nn.RNN(cell).apply({"params": {"cell": variables["params"]}}, xs)
    _close(layer.apply(params, xs)[1], ys_flax, "a bare cell runs as inside RNN")
    _close(jaxrnn.rnn(layer.cell, params[0], xs)[1], ys_flax, "the cell params with jaxrnn.rnn")


def test_linen_carry_round_trip_and_initial_carry():
    module, variables = _linen(LINEN_CELLS["LSTMCell"])
    layer, params = interop.from_flax(variables, module=module)
    key = jax.random.PRNGKey(7)
    c0, h0 = jax.random.normal(key, (B, H)), jax.random.normal(jax.random.fold_in(key, 1), (B, H))
    carry = interop.carry_from_flax(layer, (c0, h0))
    assert isinstance(carry[0], jaxrnn.LSTMState)
    np.testing.assert_array_equal(np.asarray(carry[0].h), np.asarray(h0))
    np.testing.assert_array_equal(np.asarray(carry[0].c), np.asarray(c0))
    _close(interop.carry_to_flax(layer, carry), (c0, h0), "carry round trip")
    xs = _xs()
    carry_flax, ys_flax = module.apply(variables, xs, initial_carry=(c0, h0), seq_lengths=LENGTHS)
    final, ys = layer.apply(params, xs, carry, lengths=LENGTHS)
    _close(ys * MASK, ys_flax * MASK, "outputs from a given carry")
    _close(interop.carry_to_flax(layer, final), carry_flax, "final carry from a given carry")


def test_bidirectional_carry_round_trip():
    module, variables = _linen(LINEN_CELLS["GRUCell"], bidirectional=True)
    layer, params = interop.from_flax(variables, module=module)
    fwd, bwd = jnp.ones((B, H)), 2 * jnp.ones((B, H))
    carry = interop.carry_from_flax(layer, (fwd, bwd))
    assert isinstance(carry[0], jaxrnn.Bidirectional)
    _close(interop.carry_to_flax(layer, carry), (fwd, bwd), "bidirectional carry round trip")
    carry_flax, ys_flax = module.apply(variables, _xs(), initial_carry=(fwd, bwd), seq_lengths=LENGTHS)
    final, ys = layer.apply(params, _xs(), carry, lengths=LENGTHS)
    _close(ys * MASK, ys_flax * MASK, "bidirectional outputs from a given carry")
    _close(interop.carry_to_flax(layer, final), carry_flax, "bidirectional final carry")


def test_time_major_flax_rnn_maps_to_time_major_apply():
    module, variables = _linen(LINEN_CELLS["GRUCell"])
    layer, params = interop.from_flax(variables)
    xs = jnp.swapaxes(_xs(), 0, 1)
    ys_flax = nn.RNN(nn.GRUCell(features=H), time_major=True).apply(variables, xs)
    _close(layer.apply(params, xs, time_major=True)[1], ys_flax, "time-major")


def test_dtypes_are_kept():
    module = nn.RNN(nn.GRUCell(features=H))
    variables = jax.tree.map(lambda a: a.astype(jnp.bfloat16), module.init(jax.random.PRNGKey(0), _xs()))
    layer, params = interop.from_flax(variables)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    module, back = interop.to_flax(layer, params)
    assert module.cell.param_dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree.leaves(back)} == {jnp.dtype(jnp.bfloat16)}
    built = interop.to_flax(layer, params, api="nnx")
    assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(built, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}
    xs = _xs().astype(jnp.bfloat16)  # Flax's carry takes param_dtype, so its scan needs bfloat16 inputs
    _close(built(xs).astype(jnp.float32), layer.apply(params, xs)[1].astype(jnp.float32), "bfloat16", tol=0.05)


# --------------------------------------------------------------------------------------------------------- NNX
@pytest.mark.parametrize("name, bidirectional", NNX_CASES)
def test_from_nnx_matches_flax_and_to_nnx_inverts_it(name, bidirectional):
    def make(seed):
        cell = NNX_CELLS[name](seed)
        state = nnx.state(cell, nnx.Param)
        nnx.update(cell, _jitter(state, seed + 5))
        return nnx.RNN(cell, return_carry=True)

    module = nnx.Bidirectional(make(0), make(1), return_carry=True) if bidirectional else make(0)
    layer, params = interop.from_flax(module)
    assert layer.cell is KIND_OF[name.split("-")[0]] and layer.bidirectional is bidirectional
    xs = _xs()
    carry_flax, ys_flax = module(xs, seq_lengths=LENGTHS)
    carry, ys = layer.apply(params, xs, lengths=LENGTHS)
    _close(ys * MASK, ys_flax * MASK, f"nnx {name} outputs")
    _close(interop.carry_to_flax(layer, carry), carry_flax, f"nnx {name} final carry")

    built = interop.to_flax(layer, params, api="nnx", optimized_lstm=name == "OptimizedLSTMCell")
    assert type(built).__name__ == ("Bidirectional" if bidirectional else "RNN")
    _, again = interop.from_flax(built)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _close(built(xs, seq_lengths=LENGTHS) * MASK, ys_flax * MASK, f"nnx {name} built module")


def test_from_nnx_reads_a_bare_cell_and_the_gru_has_no_recurrent_n_bias():
    cell = nnx.GRUCell(D, H, rngs=nnx.Rngs(0))
    layer, params = interop.from_flax(cell)
    np.testing.assert_array_equal(np.asarray(params[0].b_hn), 0.0)
    _close(layer.apply(params, _xs())[1], nnx.RNN(cell)(_xs()), "bare nnx cell")
    with_bias = (params[0]._replace(b_hn=jnp.ones((H,))),)
    with pytest.raises(ValueError, match=r"nnx.GRUCell has no recurrent n bias.*api='linen'"):
        interop.to_flax(layer, with_bias, api="nnx")
    module, variables = interop.to_flax(layer, with_bias, api="linen")  # linen has hn.bias
    np.testing.assert_array_equal(np.asarray(variables["params"]["cell"]["hn"]["bias"]), 1.0)
    reset_before = layer.init(jax.random.key(0), D, H, reset_after=False)
    for api in ("linen", "nnx"):
        with pytest.raises(ValueError, match=r"Flax's GRUCell resets after its recurrent matmul; these params are a "
                                             r"reset-before \(b_hn=None\) GRU"):  # fmt: skip
            interop.to_flax(layer, reset_before, api=api)
    lstm = jaxrnn.stack(jaxrnn.lstm)
    for api in ("linen", "nnx"):
        with pytest.raises(ValueError, match=r"to_flax: Flax's LSTMCell has no output projection"):
            interop.to_flax(lstm, lstm.init(jax.random.key(0), D, H, proj_size=2), api=api)


# ------------------------------------------------------------------------------------------------------ errors
def _lstm_tree():
    return jax.tree.map(np.asarray, nn.LSTMCell(features=H).init(
        jax.random.PRNGKey(0), (jnp.zeros((1, H)), jnp.zeros((1, H))), jnp.zeros((1, D)))["params"])  # fmt: skip


@pytest.mark.parametrize(
    "keys, match",
    [
        (("if", "hf", "in", "hn"), r"Flax MGUCell, which jaxrnn has no cell for"),
        (("ih", "hh"), r"Flax ConvLSTMCell, which jaxrnn has no cell for"),
    ],
)
def test_from_flax_refuses_cells_jaxrnn_lacks(keys, match):
    """The parameter names of ``nn.MGUCell`` and ``nn.ConvLSTMCell`` (as their ``init`` makes them)."""
    dense = {"kernel": np.zeros((H, H), np.float32), "bias": np.zeros(H, np.float32)}
    with pytest.raises(ValueError, match=match):
        interop.from_flax({"params": {"cell": {k: dense for k in keys}}})


def test_from_flax_reports_bad_linen_params():
    tree = _lstm_tree()
    missing = {k: v for k, v in tree.items() if k != "hg"}
    with pytest.raises(ValueError, match=r"not the params of a Flax LSTMCell, GRUCell or SimpleCell: got keys"):
        interop.from_flax(missing)
    extra_bias = dict(tree, ii={"kernel": tree["ii"]["kernel"], "bias": np.zeros(H, np.float32)})
    with pytest.raises(ValueError, match=r"ii must hold exactly \['kernel'\], got \['bias', 'kernel'\]"):
        interop.from_flax(extra_bias)
    bad_shape = dict(tree, ig={"kernel": np.zeros((D + 1, H), np.float32)})
    with pytest.raises(ValueError, match=r"ig.kernel must have shape \[D, H\] = \[5, 4\].*got \[6, 4\]"):
        interop.from_flax(bad_shape)
    bad_hidden = dict(tree, hf={"kernel": np.zeros((H, H + 1), np.float32), "bias": np.zeros(H, np.float32)})
    with pytest.raises(ValueError, match=r"hf.kernel must have shape \[H, H\] = \[4, 4\], got \[4, 5\]"):
        interop.from_flax(bad_hidden)
    bad_bias = dict(tree, ho={"kernel": tree["ho"]["kernel"], "bias": np.zeros(H + 2, np.float32)})
    with pytest.raises(ValueError, match=r"ho.bias must have shape \[4\], got \[6\]"):
        interop.from_flax(bad_bias)
    integer = dict(tree, ii={"kernel": np.zeros((D, H), np.int32)})
    with pytest.raises(TypeError, match=r"ii.kernel must be floating point, got dtype int32"):
        interop.from_flax(integer)
    scalar = dict(tree, io={"kernel": np.float32(1.0)})
    with pytest.raises(ValueError, match=r"io.kernel must be a matrix, got shape \[\]"):
        interop.from_flax(scalar)
    mixed = dict(tree, ig={"kernel": tree["ig"]["kernel"].astype(np.float64)})
    with pytest.raises(
        TypeError,
        match=r"params: every kernel and bias must share one dtype, got float32 \(ii.kernel, .*\), float64 "
        r"\(ig.kernel\)",
    ):
        interop.from_flax(mixed)
    bidirectional = {"params": {"forward_rnn": {"cell": tree}, "backward_rnn": {"cell": bad_bias}}}
    with pytest.raises(ValueError, match=r"backward_rnn.cell.ho.bias must have shape \[4\], got \[6\]"):
        interop.from_flax(bidirectional)
    with pytest.raises(ValueError, match=r"forward_rnn must hold one 'cell'"):
        interop.from_flax({"forward_rnn": tree, "backward_rnn": {"cell": tree}})
    with pytest.raises(TypeError, match=r"source must be a linen variables dict or a Flax NNX module, got list"):
        interop.from_flax([tree])


def test_from_flax_checks_the_linen_module():
    tree = {"cell": _lstm_tree()}
    with pytest.raises(ValueError, match=r"module.cell is a GRUCell but the variables hold the params of a LSTM"):
        interop.from_flax(tree, module=nn.RNN(nn.GRUCell(features=H)))
    with pytest.raises(ValueError, match=r"module.cell has 8 features but the params have hidden size 4"):
        interop.from_flax(tree, module=nn.RNN(nn.LSTMCell(features=8)))
    with pytest.raises(ValueError, match=r"module.cell.gate_fn must be sigmoid"):
        interop.from_flax(tree, module=nn.RNN(nn.LSTMCell(features=H, gate_fn=nn.hard_sigmoid)))
    with pytest.raises(ValueError, match=r"module.cell.activation_fn must be tanh, got"):
        interop.from_flax(tree, module=nn.RNN(nn.LSTMCell(features=H, activation_fn=nn.relu)))
    with pytest.raises(ValueError, match=r"module.reverse must be False"):
        interop.from_flax(tree, module=nn.RNN(nn.LSTMCell(features=H), reverse=True, keep_order=True))
    with pytest.raises(ValueError, match=r"module is a Bidirectional \(2 cell\(s\)\) but the variables hold 1"):
        interop.from_flax(tree, module=nn.Bidirectional(nn.RNN(nn.LSTMCell(H)), nn.RNN(nn.LSTMCell(H))))
    simple = nn.RNN(nn.SimpleCell(features=H, residual=True))
    simple_vars = simple.init(jax.random.PRNGKey(0), _xs())
    with pytest.raises(ValueError, match=r"module.cell.residual must be False"):
        interop.from_flax(simple_vars, module=simple)
    summed = nn.Bidirectional(nn.RNN(nn.GRUCell(H)), nn.RNN(nn.GRUCell(H)), merge_fn=lambda a, b: a + b)
    with pytest.raises(ValueError, match=r"module.merge_fn must be Flax's default \(concatenation\)"):
        interop.from_flax(summed.init(jax.random.PRNGKey(0), _xs()), module=summed)


def test_from_flax_checks_nnx_modules():
    with pytest.raises(ValueError, match=r"source.cell.activation_fn must be tanh"):
        interop.from_flax(nnx.RNN(nnx.GRUCell(D, H, activation_fn=nnx.relu, rngs=nnx.Rngs(0))))
    with pytest.raises(ValueError, match=r"source.reverse must be False"):
        interop.from_flax(nnx.RNN(nnx.GRUCell(D, H, rngs=nnx.Rngs(0)), reverse=True))
    with pytest.raises(ValueError, match=r"source must be a Flax NNX LSTMCell, OptimizedLSTMCell, GRUCell or "):
        interop.from_flax(nnx.Linear(D, H, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match=r"module= is for a linen variables dict"):
        interop.from_flax(nnx.GRUCell(D, H, rngs=nnx.Rngs(0)), module=nn.GRUCell(features=H))


def test_to_flax_refuses_what_flax_cannot_hold():
    key = jax.random.PRNGKey(0)
    deep = jaxrnn.stack(jaxrnn.lstm, num_layers=2)
    with pytest.raises(ValueError, match=r"Flax has no multi-layer RNN; layer.num_layers must be 1, got 2"):
        interop.to_flax(deep, deep.init(key, D, H))
    summed = jaxrnn.stack(jaxrnn.gru, bidirectional=True, merge="sum")
    with pytest.raises(ValueError, match=r"layer.merge must be 'concat', got 'sum'"):
        interop.to_flax(summed, summed.init(key, D, H))
    dropped = jaxrnn.stack(jaxrnn.gru, recurrent_dropout=0.25)
    params = dropped.init(key, D, H)
    with pytest.raises(ValueError, match=r"recurrent_dropout=0.25 has no Flax counterpart"):
        interop.to_flax(dropped, params)
    module, _ = interop.to_flax(dropped, params, ignore_dropout=True)
    assert type(module.cell).__name__ == "GRUCell"
    with pytest.raises(ValueError, match=r"api must be 'linen' or 'nnx', got 'haiku'"):
        interop.to_flax(dropped, params, api="haiku", ignore_dropout=True)
    with pytest.raises(ValueError, match=r"optimized_lstm=True is for an LSTM layer, got a gru layer"):
        interop.to_flax(dropped, params, optimized_lstm=True, ignore_dropout=True)
    with pytest.raises(TypeError, match=r"to_flax: layer must be a jaxrnn Layer"):
        interop.to_flax(jaxrnn.lstm, params)


def test_carry_converters_check_their_input():
    layer = jaxrnn.stack(jaxrnn.lstm)
    with pytest.raises(TypeError, match=r"carry must be an LSTM carry \(c, h\), got ndarray"):
        interop.carry_from_flax(layer, np.zeros((B, H), np.float32))
    with pytest.raises(ValueError, match=r"c and h must have one shape, got \[3, 4\] and \[3, 5\]"):
        interop.carry_from_flax(layer, (np.zeros((B, H), np.float32), np.zeros((B, H + 1), np.float32)))
    gru = jaxrnn.stack(jaxrnn.gru)
    with pytest.raises(TypeError, match=r"carry must be one array \[\*batch, H\] \(a gru carry\), got a tuple"):
        interop.carry_from_flax(gru, (np.zeros((B, H), np.float32), np.zeros((B, H), np.float32)))
    bi = jaxrnn.stack(jaxrnn.gru, bidirectional=True)
    with pytest.raises(TypeError, match=r"a Bidirectional carry must be \(forward, backward\)"):
        interop.carry_from_flax(bi, np.zeros((B, H), np.float32))
    deep = jaxrnn.stack(jaxrnn.gru, num_layers=2)
    with pytest.raises(ValueError, match=r"carry_to_flax: Flax RNNs are one layer"):
        interop.carry_to_flax(deep, (jnp.zeros((B, H)), jnp.zeros((B, H))))


def test_carry_from_flax_checks_dtypes():
    layer = jaxrnn.stack(jaxrnn.lstm)
    h = jnp.zeros((2, 4))
    with pytest.raises(TypeError, match="carry's c and h must share one dtype"):
        interop.carry_from_flax(layer, (h, h.astype(jnp.bfloat16)))
    with pytest.raises(TypeError, match="needs jax_enable_x64"):
        interop.carry_from_flax(jaxrnn.stack(jaxrnn.gru), np.zeros((2, 4)))
