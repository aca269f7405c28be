"""Haiku interop (jaxrnn.interop_haiku): hk.LSTM, hk.GRU, hk.VanillaRNN and hk.DeepRNN against hk.dynamic_unroll."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close

import jaxrnn
from jaxrnn import interop

hk = pytest.importorskip("haiku")

B, T, D, H = 3, 6, 4, 5


def _core(kind, double_bias=True):
    if kind == "lstm":
        return hk.LSTM(H)
    if kind == "vanilla":
        return hk.VanillaRNN(H, double_bias=double_bias)
    if kind == "deep_lstm":
        return hk.DeepRNN([hk.LSTM(H), hk.LSTM(H)])
    if kind == "deep_gru":
        return hk.DeepRNN([hk.GRU(H), hk.GRU(H)])
    return hk.GRU(H)


def _haiku(kind, double_bias=True):
    """``(params, unroll)``: Haiku's params (every leaf perturbed, biases nonzero) and ``unroll(params, xs, state)
    -> (ys, final)`` batch-major, and a nonzero initial state."""

    def run(xs, state):
        return hk.dynamic_unroll(_core(kind, double_bias), xs, state, time_major=False)

    def initial():
        return _core(kind, double_bias).initial_state(B)

    init_state = hk.without_apply_rng(hk.transform(initial))
    state = init_state.apply(init_state.init(None))
    state = jax.tree.map(lambda s: s + 0.3 * jax.random.normal(jax.random.key(7), s.shape), state)
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    model = hk.without_apply_rng(hk.transform(run))
    params = model.init(jax.random.key(0), xs, state)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    return params, model.apply, xs, state


@pytest.mark.parametrize("kind, double_bias", [("lstm", True), ("vanilla", True), ("vanilla", False),
                                               ("deep_lstm", True), ("gru", True), ("deep_gru", True)])  # fmt: skip
def test_outputs_states_and_gradients_equal_haiku(kind, double_bias):
    hk_params, unroll, xs, state = _haiku(kind, double_bias)
    layer, params = interop.from_haiku(hk_params)
    assert layer.num_layers == (2 if kind.startswith("deep") else 1)
    assert layer.cell is {"vanilla": jaxrnn.elman, "gru": jaxrnn.gru, "deep_gru": jaxrnn.gru}.get(kind, jaxrnn.lstm)
    if layer.cell is jaxrnn.gru:  # hk.GRU is the reset-before GRU
        assert all(p.b_hn is None for p in params)
    r = jax.random.normal(jax.random.key(3), (B, T, H))

    def haiku_loss(p, x, s):
        ys, final = unroll(p, x, s)
        return jnp.sum(ys * r) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final)), (ys, final)

    def our_loss(p, x, s):  # differentiated with respect to Haiku's params, through the converters
        layer, ours = interop.from_haiku(p)
        final, ys = layer.apply(ours, x, interop.carry_from_haiku(layer, s))
        final = interop.carry_to_haiku(layer, final)
        return jnp.sum(ys * r) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final)), (ys, final)

    (_, want), g_want = jax.value_and_grad(haiku_loss, argnums=(0, 1, 2), has_aux=True)(hk_params, xs, state)
    (_, got), g_got = jax.jit(jax.value_and_grad(our_loss, argnums=(0, 1, 2), has_aux=True))(hk_params, xs, state)
    assert jax.tree.structure(got[1]) == jax.tree.structure(want[1])  # hk.LSTMState, or a DeepRNN tuple of them
    assert_trees_close(got, want, atol=2e-6)
    assert_trees_close(g_got, g_want, atol=1e-5)

    back = interop.to_haiku(layer, params, double_bias=double_bias)
    assert jax.tree.structure(back) == jax.tree.structure(hk_params)
    if kind == "vanilla" and double_bias:  # the two biases fold into one: the round trip keeps their sum
        back["vanilla_rnn/linear"]["b"] = back["vanilla_rnn/linear"]["b"] - hk_params["vanilla_rnn/linear_1"]["b"]
        back["vanilla_rnn/linear_1"]["b"] = hk_params["vanilla_rnn/linear_1"]["b"]
    assert_trees_close(back, hk_params, atol=1e-6)


def test_the_forget_offset_and_gate_order():
    """Haiku's σ(f + 1) with zero weights: jaxrnn's forget bias is 1; gates i, g, f, o land as i, f, g, o."""
    hk_params, *_ = _haiku("lstm")
    w = hk_params["lstm/linear"]["w"]
    zero = {"lstm/linear": {"w": jnp.zeros_like(w), "b": jnp.arange(4.0 * H)}}
    _, (p,) = interop.from_haiku(zero)
    i, f, g, o = np.split(np.asarray(p.b), 4)
    np.testing.assert_array_equal(i, np.arange(H))
    np.testing.assert_array_equal(g, np.arange(H, 2 * H))
    np.testing.assert_array_equal(f, np.arange(2 * H, 3 * H) + 1.0)
    np.testing.assert_array_equal(o, np.arange(3 * H, 4 * H))


def test_the_gru_gate_order_and_sign():
    """hk.GRU's blocks z, r, a land as r, z, n, z negated (Haiku keeps z where jaxrnn keeps 1 − z = σ(−v))."""
    zero = {"gru": {"w_i": jnp.zeros((D, 3 * H)), "w_h": jnp.zeros((H, 3 * H)), "b": jnp.arange(3.0 * H)}}
    layer, (p,) = interop.from_haiku(zero)
    r, z, n = np.split(np.asarray(p.b), 3)
    np.testing.assert_array_equal(r, np.arange(H, 2 * H))
    np.testing.assert_array_equal(z, -np.arange(H))
    np.testing.assert_array_equal(n, np.arange(2 * H, 3 * H))
    assert_trees_close(interop.to_haiku(layer, (p,)), zero, rtol=0, atol=0)


def test_names_pick_cores_and_errors():
    hk_params, *_ = _haiku("deep_lstm")
    nested = {f"model/~/{k}": v for k, v in hk_params.items()}
    layer, params = interop.from_haiku(nested, names=["model/~/lstm", "model/~/lstm_1"])
    assert_trees_close(params, interop.from_haiku(hk_params)[1])
    with_head = {**hk_params, "model/~/linear": {"w": jnp.ones((H, 3)), "b": jnp.zeros(3)}}
    assert_trees_close(interop.from_haiku(with_head)[1], params)  # a readout is not taken for a core
    one, (p,) = interop.from_haiku(hk_params, "lstm_1")
    assert one.num_layers == 1 and p.w_x.shape == (H, 4 * H)

    gru_params, *_ = _haiku("gru")
    with pytest.raises(ValueError, match=r"params\['gru'\] of an hk.GRU must hold w_i \[D, 3H\], w_h \[H, 3H\] and b "
                                         r"\[3H\], got w_i \[4, 15\], w_h \[5, 15\], b \[14\]"):  # fmt: skip
        interop.from_haiku({"gru": {**gru_params["gru"], "b": jnp.zeros(14)}})
    with pytest.raises(ValueError, match=r"params\['gru'\] of an hk.GRU must hold 'w_i', 'w_h' and 'b'"):
        interop.from_haiku({"gru": {**gru_params["gru"], "extra": jnp.zeros(3)}}, "gru")
    with pytest.raises(ValueError, match=r"params has no Haiku core named 'encoder'"):
        interop.from_haiku(hk_params, "encoder")
    with pytest.raises(ValueError, match=r"core 'lstm' reads 4 features but 'lstm_1' emits 5"):
        interop.from_haiku(hk_params, ["lstm_1", "lstm"])
    vanilla, *_ = _haiku("vanilla")
    with pytest.raises(ValueError, match=r"mix kinds \['lstm', 'elman'\]"):
        interop.from_haiku({**hk_params, **vanilla}, ["lstm", "vanilla_rnn"])
    with pytest.raises(TypeError, match="params must be Haiku's parameter dict"):
        interop.from_haiku([1, 2])
    with pytest.raises(ValueError, match=r"must be \[D\+H, 4H\] with D >= 1, got \[5, 20\]"):
        interop.from_haiku({"lstm/linear": {"w": jnp.zeros((5, 20)), "b": jnp.zeros(20)}}, "lstm")
    with pytest.raises(ValueError, match=r"params holds no Haiku recurrent core .* found \['lstm/linear'\]"):
        interop.from_haiku({"lstm/linear": {"w": jnp.zeros((5, 20)), "b": jnp.zeros(20)}})
    with pytest.raises(TypeError, match="must be floating point"):
        interop.from_haiku({"lstm/linear": {"w": jnp.zeros((9, 20), jnp.int32), "b": jnp.zeros(20)}})

    tanh = jaxrnn.stack(jaxrnn.elman)
    with pytest.raises(ValueError, match="hk.VanillaRNN is a ReLU cell"):
        interop.to_haiku(tanh, tanh.init(jax.random.key(0), D, H))
    gru = jaxrnn.stack(jaxrnn.gru)
    with pytest.raises(ValueError, match="to_haiku: Haiku's hk.GRU resets before its recurrent matmul; these params "
                                         "are a reset-after"):  # fmt: skip
        interop.to_haiku(gru, gru.init(jax.random.key(0), D, H))
    lstm = jaxrnn.stack(jaxrnn.lstm)
    with pytest.raises(ValueError, match=r"to_haiku: Haiku's hk.LSTM has no output projection"):
        interop.to_haiku(lstm, lstm.init(jax.random.key(0), D, H, proj_size=2))
    bi = jaxrnn.stack(jaxrnn.lstm, bidirectional=True)
    with pytest.raises(ValueError, match="Haiku has no bidirectional core"):
        interop.to_haiku(bi, bi.init(jax.random.key(0), D, H))
    with pytest.raises(ValueError, match=r"a 2-layer DeepRNN state is a tuple of 2 core states"):
        interop.carry_from_haiku(layer, hk.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H)))[0])


def test_to_haiku_rejects_repeated_and_non_string_names():
    """Two layers under one name would write one core (the second overwrote the first); non-strings are no names."""
    layer = jaxrnn.stack(jaxrnn.lstm, 2)
    params = layer.init(jax.random.key(0), D, H)
    with pytest.raises(ValueError, match=r"names must differ, one module per layer; \['lstm'\] name more than one"):
        interop.to_haiku(layer, params, names=["lstm", "lstm"])
    one = jaxrnn.stack(jaxrnn.lstm)
    for names in ([3], 3, [""]):
        with pytest.raises(TypeError, match=r"names must be a module name or a non-empty sequence of them"):
            interop.to_haiku(one, one.init(jax.random.key(0), D, H), names=names)
    assert set(interop.to_haiku(layer, params, names=["a", "b"])) == {"a/linear", "b/linear"}


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_deep_rnn_of_different_hidden_sizes_round_trips(kind):
    """An hk.DeepRNN of cores of hidden sizes 6 and 5: from_haiku gives a stack that computes it, and to_haiku
    writes the same dict back."""
    make = {"lstm": hk.LSTM, "gru": hk.GRU}[kind]

    def run(xs):
        core = hk.DeepRNN([make(6), make(5)])
        return hk.dynamic_unroll(core, xs, core.initial_state(B), time_major=False)

    model = hk.without_apply_rng(hk.transform(run))
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    hk_params = model.init(jax.random.key(0), xs)
    layer, params = interop.from_haiku(hk_params)
    assert [p.w_h.shape[0] for p in params] == [6, 5]
    ys, final = model.apply(hk_params, xs)
    ours_final, ours_ys = layer.apply(params, xs)
    assert_trees_close(ours_ys, ys, atol=2e-6)
    assert_trees_close(interop.carry_to_haiku(layer, ours_final), final, atol=2e-6)
    assert_trees_close(interop.to_haiku(layer, params), hk_params, atol=1e-6)
    with pytest.raises(ValueError, match=r"to_haiku: params\[1\] must read 6 features, got input size 5"):
        interop.to_haiku(layer, (params[0], params[1]._replace(w_x=params[1].w_x[:5])))


def test_carry_from_haiku_checks_dtypes():
    layer = jaxrnn.stack(jaxrnn.lstm)
    h = jnp.zeros((2, 4))
    with pytest.raises(TypeError, match=r"carry_from_haiku: state\[0\] must share one dtype"):
        interop.carry_from_haiku(layer, (h, h.astype(jnp.bfloat16)))
    with pytest.raises(TypeError, match="needs jax_enable_x64"):
        interop.carry_from_haiku(layer, (np.zeros((2, 4)), np.zeros((2, 4))))
