"""jaxrnn.rnn / truncated_rnn: the driver against plain loops, single sequences, unpadded and flipped runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CELLS, assert_trees_close, loop_rnn, make, per_sequence_rnn, primitive_params, scan_unrolls

import jaxrnn

NAMES = sorted(CELLS)


def random_xs(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("time_major", [False, True])
def test_scan_matches_python_loop(name, time_major):
    cell, params = make(name)
    xs = random_xs((4, 6, 3))
    carry0 = jax.tree.map(lambda z: z + 0.1, cell.initial_state(params, (4,)))
    xs_in = jnp.swapaxes(xs, 0, 1) if time_major else xs
    final, ys = jaxrnn.rnn(cell, params, xs_in, carry0, time_major=time_major)
    ref_final, ref_ys = loop_rnn(cell, params, jnp.swapaxes(xs, 0, 1), carry0)
    assert ys.shape == ((6, 4, 5) if time_major else (4, 6, 5))
    assert_trees_close(final, ref_final)
    assert_trees_close(ys if time_major else jnp.swapaxes(ys, 0, 1), ref_ys)


@pytest.mark.parametrize("name", NAMES)
def test_jit_matches_eager(name):
    cell, params = make(name)
    xs, lengths = random_xs((3, 5, 3)), jnp.array([5, 2, 0])
    eager = jaxrnn.rnn(cell, params, xs, lengths=lengths, reverse=True)
    jitted = jax.jit(lambda p, x, n: jaxrnn.rnn(cell, p, x, lengths=n, reverse=True))(params, xs, lengths)
    assert_trees_close(eager, jitted)


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_each_sequence_alone(name):
    cell, params = make(name)
    xs = random_xs((3, 7, 3))
    final, ys = jaxrnn.rnn(cell, params, xs)
    for i in range(3):
        final_i, ys_i = jaxrnn.rnn(cell, params, xs[i])  # rank 2: [T, D], no batch dims
        assert_trees_close(jax.tree.map(lambda z: z[i], final), final_i)
        assert_trees_close(ys[i], ys_i)


@pytest.mark.parametrize("name", NAMES)
def test_multiple_batch_dims(name):
    cell, params = make(name)
    xs = random_xs((2, 3, 4, 3))
    final, ys = jaxrnn.rnn(cell, params, xs)
    flat_final, flat_ys = jaxrnn.rnn(cell, params, xs.reshape(6, 4, 3))
    assert ys.shape == (2, 3, 4, 5)
    assert_trees_close(ys.reshape(6, 4, 5), flat_ys)
    assert_trees_close(jax.tree.map(lambda z: z.reshape(6, 5), final), flat_final)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reverse", [False, True])
def test_padded_equals_unpadded(name, reverse):
    cell, params = make(name)
    xs, lengths = random_xs((4, 6, 3)), [6, 3, 1, 0]
    carry0 = jax.tree.map(lambda z: z + 0.2, cell.initial_state(params, (4,)))
    final, ys = jaxrnn.rnn(cell, params, xs, carry0, lengths=jnp.array(lengths), reverse=reverse)
    for i, n in enumerate(lengths):
        carry_i = jax.tree.map(lambda z: z[i], carry0)
        if n == 0:
            ref_final, ref_ys = carry_i, jnp.zeros((0, 5))
        else:
            ref_final, ref_ys = jaxrnn.rnn(cell, params, xs[i, :n], carry_i, reverse=reverse)
        assert_trees_close(jax.tree.map(lambda z: z[i], final), ref_final)
        assert_trees_close(ys[i, :n], ref_ys)
        assert np.all(np.asarray(ys[i, n:]) == 0.0), "outputs past a sequence's length must be exactly zero"


@pytest.mark.parametrize("name", NAMES)
def test_reverse_equals_flipped_input(name):
    cell, params = make(name)
    xs = random_xs((2, 5, 3))
    final, ys = jaxrnn.rnn(cell, params, xs, reverse=True)
    ref_final, ref_ys = jaxrnn.rnn(cell, params, xs[:, ::-1])
    assert_trees_close(final, ref_final)
    assert_trees_close(ys, ref_ys[:, ::-1])


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_checkpoint_every_same_values_and_gradients(name, reverse):
    cell, params = make(name)
    xs, lengths = random_xs((3, 11, 3)), jnp.array([11, 7, 4])

    def loss(p, **kw):
        final, ys = jaxrnn.rnn(cell, p, xs, lengths=lengths, reverse=reverse, **kw)
        return jnp.sum(ys**2) + jnp.sum(jax.tree_util.tree_leaves(final)[0])

    assert_trees_close(loss(params), loss(params, checkpoint_every=4), rtol=1e-6)
    assert_trees_close(jax.grad(loss)(params), jax.grad(lambda p: loss(p, checkpoint_every=4))(params), rtol=1e-5)


def test_truncated_rnn_forward_equals_rnn_and_cuts_gradients():
    cell, params = make("lstm")
    xs, lengths = random_xs((2, 10, 3)), jnp.array([10, 6])
    carry0 = jax.tree.map(lambda z: z + 0.3, cell.initial_state(params, (2,)))
    assert_trees_close(
        jaxrnn.truncated_rnn(cell, params, xs, carry0, chunk_size=4, lengths=lengths),
        jaxrnn.rnn(cell, params, xs, carry0, lengths=lengths),
    )

    def last_output(x, c, chunk):
        return jnp.sum(jaxrnn.truncated_rnn(cell, params, x, c, chunk_size=chunk)[1][:, -1])

    dx, dc = jax.grad(last_output, argnums=(0, 1))(xs, carry0, 4)
    # Steps 8..9 form the last chunk: the last output sees nothing before step 8, nor the initial carry.
    assert np.all(np.asarray(dx[:, :8]) == 0.0) and np.any(np.asarray(dx[:, 8:]) != 0.0)
    assert all(np.all(np.asarray(leaf) == 0.0) for leaf in jax.tree_util.tree_leaves(dc))
    dx_full = jax.grad(last_output)(xs, carry0, 10)
    assert np.any(np.asarray(dx_full[:, :8]) != 0.0)


def test_user_cell_works_everywhere():
    """A cell the library has never seen: a leaky integrator with a dict carry."""

    def init(key, input_size, hidden_size, *, dtype=None):
        return {"w": jax.random.normal(key, (input_size, hidden_size)), "decay": jnp.full((hidden_size,), 0.5)}

    def initial_state(params, batch_shape=()):
        return {"s": jnp.zeros((*batch_shape, params["w"].shape[1]))}

    def step(params, carry, x):
        s = jnp.broadcast_to(params["decay"], carry["s"].shape) * carry["s"] + x @ params["w"]
        return {"s": s}, jnp.tanh(s)

    cell = jaxrnn.Cell(init, initial_state, step, name="leaky")
    params = cell.init(jax.random.key(0), 3, 4)
    xs = random_xs((2, 5, 3))
    final, ys = jaxrnn.rnn(cell, params, xs, lengths=jnp.array([5, 2]))
    ref_final, ref_ys = loop_rnn(cell, params, jnp.swapaxes(xs[:1], 0, 1), initial_state(params, (1,)))
    assert_trees_close(ys[:1], jnp.swapaxes(ref_ys, 0, 1))
    layer = jaxrnn.stack(cell, 2, bidirectional=True)
    _, ys2 = layer.apply(layer.init(jax.random.key(1), 3, 4), xs)
    assert ys2.shape == (2, 5, 8)
    with pytest.raises(ValueError, match="leaky.step failed"):
        jaxrnn.rnn(cell, params, random_xs((2, 5, 7)))
    # an empty sequence: the carry comes back unchanged (the step is still checked, abstractly)
    final0, ys0 = jaxrnn.rnn(cell, params, random_xs((2, 0, 3)), final)
    assert ys0.shape == (2, 0, 4)
    assert_trees_close(final0, final)
    with pytest.raises(ValueError, match="leaky.step failed"):
        jaxrnn.rnn(cell, params, random_xs((2, 0, 7)))


def test_bfloat16_and_float64():
    cell, params = make("lstm", dtype=jnp.bfloat16)
    final, ys = jaxrnn.rnn(cell, params, random_xs((2, 4, 3)))
    assert ys.dtype == jnp.bfloat16 and final.c.dtype == jnp.bfloat16
    with jax.enable_x64(True):
        cell, params = make("gru")
        assert params.w_x.dtype == jnp.float64
        _, ys = jaxrnn.rnn(cell, params, np.random.default_rng(0).normal(size=(2, 4, 3)))
        assert ys.dtype == jnp.float64


# --- bad input: each raises before tracing, naming the argument, expected and got ---------------------------------


def test_error_wrong_feature_size():
    cell, params = make("lstm")
    with pytest.raises(ValueError, match=r"xs has 4 features .* expect input_size=3"):
        jaxrnn.rnn(cell, params, jnp.zeros((2, 5, 4)))


def test_error_flags_must_be_bools():
    """A string is truthy: reverse="no" would run the scan backwards without a word."""
    cell, params = make("lstm")
    xs = jnp.zeros((2, 5, 3))
    with pytest.raises(TypeError, match="reverse must be a bool, got str 'no'"):
        jaxrnn.rnn(cell, params, xs, reverse="no")
    with pytest.raises(TypeError, match="time_major must be a bool, got NoneType None"):
        jaxrnn.rnn(cell, params, xs, time_major=None)
    _, ys = jaxrnn.rnn(cell, params, xs, reverse=np.bool_(True), time_major=np.False_)
    assert np.array_equal(ys, jaxrnn.rnn(cell, params, xs, reverse=True)[1])


def test_error_rank_below_two():
    cell, params = make("gru")
    with pytest.raises(ValueError, match=r"xs must have rank >= 2 .* got shape \[3\]"):
        jaxrnn.rnn(cell, params, jnp.zeros((3,)))


def test_error_carry_batch_mismatch():
    cell, params = make("lstm")
    carry = cell.initial_state(params, (3,))
    with pytest.raises(ValueError, match=r"carry has batch shape \[3\] but xs has batch shape \[2\]"):
        jaxrnn.rnn(cell, params, jnp.zeros((2, 5, 3)), carry)


def test_error_carry_structure_and_hidden_size():
    cell, params = make("lstm")
    with pytest.raises(ValueError, match="carry has the wrong structure"):
        jaxrnn.rnn(cell, params, jnp.zeros((2, 5, 3)), jnp.zeros((2, 5)))
    _, small = make("lstm", hidden_size=4)
    with pytest.raises(ValueError, match=r"carry.h has shape \[2, 4\], expected \[2, 5\]"):
        jaxrnn.rnn(cell, params, jnp.zeros((2, 5, 3)), cell.initial_state(small, (2,)))


def test_error_carry_dtype_is_not_floating():
    cell, params = make("lstm")
    carry = cell.initial_state(params, (2,))
    for dtype in (jnp.bool_, jnp.int32, jnp.complex64):
        bad = carry._replace(c=carry.c.astype(dtype))
        with pytest.raises(TypeError, match=rf"carry.c must be floating point .*got dtype {jnp.dtype(dtype)}"):
            jaxrnn.rnn(cell, params, jnp.zeros((2, 5, 3)), bad)


@pytest.mark.parametrize(
    "lengths, error, match",
    [
        (jnp.array([1, 2, 3]), ValueError, r"lengths must have the batch shape of xs, \[2\], got \[3\]"),
        (jnp.array([1, 6]), ValueError, r"lengths must lie in \[0, 5\] .* got values in \[1, 6\]"),
        (jnp.array([-1, 2]), ValueError, r"lengths must lie in \[0, 5\]"),
        (jnp.array([1.0, 2.0]), TypeError, "lengths must be an integer array, got dtype float32"),
    ],
)
def test_error_lengths(lengths, error, match):
    cell, params = make("elman")
    with pytest.raises(error, match=match):
        jaxrnn.rnn(cell, params, jnp.zeros((2, 5, 3)), lengths=lengths)


def test_lengths_checked_under_jit_only_for_shape():
    cell, params = make("elman")
    run = jax.jit(lambda n: jaxrnn.rnn(cell, params, jnp.zeros((2, 5, 3)), lengths=n)[1])
    assert run(jnp.array([5, 1])).shape == (2, 5, 5)
    with pytest.raises(ValueError, match="lengths must have the batch shape"):
        run(jnp.array([5]))


def test_error_integer_xs():
    cell, params = make("lstm")
    with pytest.raises(TypeError, match="xs must be a floating-point array, got dtype int32.*embedding"):
        jaxrnn.rnn(cell, params, jnp.zeros((2, 5, 3), jnp.int32))


def test_error_params_of_another_cell_or_size():
    _, lstm_params = make("lstm")
    with pytest.raises(TypeError, match="params must be GRUParams .* got LSTMParams"):
        jaxrnn.rnn(jaxrnn.gru, lstm_params, jnp.zeros((2, 5, 3)))
    bad = lstm_params._replace(w_h=jnp.zeros((5, 12)))
    with pytest.raises(ValueError, match=r"LSTMParams.w_h must have shape \[H, 4\*H\], got \[5, 12\]"):
        jaxrnn.rnn(jaxrnn.lstm, bad, jnp.zeros((2, 5, 3)))
    bad = lstm_params._replace(b=jnp.zeros((7,)))
    with pytest.raises(ValueError, match=r"LSTMParams.b must have shape \[20\], got \[7\]"):
        jaxrnn.rnn(jaxrnn.lstm, bad, jnp.zeros((2, 5, 3)))
    _, gru_params = make("gru")
    with pytest.raises(ValueError, match=r"GRUParams.b_hn must have shape \[5\], got \[4\]"):
        jaxrnn.rnn(jaxrnn.gru, gru_params._replace(b_hn=jnp.zeros(4)), jnp.zeros((2, 5, 3)))


def test_error_bad_options():
    cell, params = make("elman")
    xs = jnp.zeros((2, 5, 3))
    with pytest.raises(TypeError, match="cell must be a jaxrnn.Cell"):
        jaxrnn.rnn("lstm", params, xs)
    with pytest.raises(ValueError, match="unroll must be a positive int, a bool or None, got 0"):
        jaxrnn.rnn(cell, params, xs, unroll=0)
    with pytest.raises(ValueError, match="unroll must be a positive int, a bool or None, got 2.0"):
        jaxrnn.truncated_rnn(cell, params, xs, chunk_size=2, unroll=2.0)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive int"):
        jaxrnn.rnn(cell, params, xs, checkpoint_every=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        jaxrnn.truncated_rnn(cell, params, xs, chunk_size=-2)


def test_numpy_integers_are_accepted_for_step_counts():
    cell, params = make("lstm")
    xs = jax.random.normal(jax.random.key(5), (2, 7, 3))
    want = jaxrnn.rnn(cell, params, xs)
    assert_trees_close(jaxrnn.rnn(cell, params, xs, unroll=np.int64(3), checkpoint_every=np.int32(2)), want)
    assert_trees_close(jaxrnn.truncated_rnn(cell, params, xs, chunk_size=np.int64(7)), want)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive int, got True"):
        jaxrnn.rnn(cell, params, xs, checkpoint_every=True)
    with pytest.raises(ValueError, match=r"unroll must be a positive int, a bool or None, got np.int64\(-1\)"):
        jaxrnn.rnn(cell, params, xs, unroll=np.int64(-1))


@pytest.mark.parametrize("kind", CELLS)
def test_default_unroll_is_8_on_a_gpu_and_1_elsewhere(kind, monkeypatch):
    cell, params = make(kind)
    xs = jax.random.normal(jax.random.key(3), (2, 11, 3))

    def unrolls():
        return scan_unrolls(jax.make_jaxpr(lambda p, x: jaxrnn.rnn(cell, p, x))(params, xs))

    assert jax.default_backend() != "gpu" or jaxrnn.driver.default_unroll() == 8
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert jaxrnn.driver.default_unroll() == 1
    assert set(unrolls()) == {1}
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert jaxrnn.driver.default_unroll() == jaxrnn.driver.GPU_UNROLL == 8
    assert set(unrolls()) == {8}
    assert set(scan_unrolls(jax.make_jaxpr(lambda p, x: jaxrnn.rnn(cell, p, x, unroll=3))(params, xs))) == {3}


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("num_steps", [0, 3, 11])
def test_unrolled_scan_gives_the_same_values_and_gradients(kind, num_steps):
    """unroll=8 (the GPU default) with T not a multiple of 8, T < 8 and T = 0, lengths and reverse."""
    cell, params = make(kind)
    xs = jax.random.normal(jax.random.key(4), (3, num_steps, 3))
    lengths = jnp.array([num_steps, num_steps // 2, 0])

    def loss(p, x, unroll, reverse):
        final, ys = jaxrnn.rnn(cell, p, x, lengths=lengths, reverse=reverse, unroll=unroll)
        return jnp.sum(ys**2) + sum(jnp.sum(c) for c in jax.tree.leaves(final))

    for reverse in (False, True):
        want = jax.value_and_grad(loss, argnums=(0, 1))(params, xs, 1, reverse)
        got = jax.value_and_grad(loss, argnums=(0, 1))(params, xs, 8, reverse)
        assert_trees_close(got, want, rtol=1e-5, atol=1e-6)


# --- property: masking with any lengths equals each sequence run alone, step by step -------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PROP_CELL, _PROP_PARAMS = make("gru", 2, 3)
_PROP_XS = random_xs((4, 6, 2), seed=7)
_PROP_RUN = jax.jit(
    lambda n, rev: jaxrnn.rnn(_PROP_CELL, _PROP_PARAMS, _PROP_XS, lengths=n, reverse=rev), static_argnums=1
)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(0, 6), min_size=4, max_size=4), reverse=st.booleans())
def test_property_lengths_mask_matches_per_sequence_loop(lengths, reverse):
    final, ys = _PROP_RUN(jnp.array(lengths), reverse)
    for i, n in enumerate(lengths):
        carry, expected = jnp.zeros(3), np.zeros((6, 3), np.float32)
        for t in reversed(range(n)) if reverse else range(n):
            carry, expected[t] = _PROP_CELL.step(_PROP_PARAMS, carry, _PROP_XS[i, t])
        np.testing.assert_allclose(ys[i], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(final[i], carry, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------- resets (segments)
def _segment_reference(cell, params, xs, carry0, resets, lengths, reverse):
    """Each sequence cut at its segment starts and every segment stepped alone, in a plain loop (batch-major)."""
    batch, num_steps = resets.shape
    zeros = cell.initial_state(params, ())
    hidden = jax.tree.leaves(zeros)[0].shape[-1]
    finals, rows = [], []
    for b in range(batch):
        length = num_steps if lengths is None else int(np.asarray(lengths)[b])
        starts = [0] + [t for t in range(1, length) if resets[b, t]]
        bounds = list(zip(starts, starts[1:] + [length])) if length else []
        ys_b = [jnp.zeros((hidden,), xs.dtype)] * num_steps
        carry = jax.tree.map(lambda c: c[b], carry0)
        for n, (lo, hi) in enumerate(reversed(bounds) if reverse else bounds):
            if n > 0 or (not reverse and resets[b, 0]):
                carry = zeros
            for t in range(hi - 1, lo - 1, -1) if reverse else range(lo, hi):
                carry, ys_b[t] = cell.step(params, carry, xs[b, t])
        rows.append(jnp.stack(ys_b))
        finals.append(carry)
    return jax.tree.map(lambda *c: jnp.stack(c), *finals), jnp.stack(rows)


def _segment_case(name):
    """``(cell, params, xs [4, 7, 3], carry0)`` with a nonzero initial carry, for the segment and mask tests."""
    cell, params = make(name)
    carry0 = jax.tree.map(lambda z: z + 0.3, cell.initial_state(params, (4,)))
    return cell, params, random_xs((4, 7, 3)), carry0


RESETS = np.array(
    [
        [False, False, True, False, False, True, False],  # two boundaries
        [True, False, False, False, True, False, True],  # a start at t = 0 drops the given carry
        [False, True, True, False, False, False, False],  # a one-step segment
        [False, False, False, False, False, False, True],  # a mark in the padding (length 4) is ignored
    ]
)


@pytest.mark.parametrize(
    "name, reverse, with_lengths",
    [("elman", False, True), ("elman", True, False), ("lstm", False, False), ("lstm", True, True),
     ("gru", False, True), ("gru", True, True)],
)  # fmt: skip
def test_resets_equal_each_segment_run_alone(name, reverse, with_lengths):
    cell, params, xs, carry0 = _segment_case(name)
    lengths = jnp.array([7, 6, 5, 4]) if with_lengths else None
    final, ys = jaxrnn.rnn(cell, params, xs, carry0, lengths=lengths, resets=RESETS, reverse=reverse)
    ref = jax.jit(lambda p, x: _segment_reference(cell, p, x, carry0, RESETS, lengths, reverse))(params, xs)
    assert_trees_close((final, ys), ref)
    if name != "gru":
        return

    def time_major_run(p, x):
        final, ys = jaxrnn.rnn(cell, p, jnp.swapaxes(x, 0, 1), carry0, lengths=lengths, resets=RESETS.T,
                               reverse=reverse, time_major=True)  # fmt: skip
        return final, jnp.swapaxes(ys, 0, 1)

    assert_trees_close(jax.jit(time_major_run)(params, xs), ref)


@pytest.mark.parametrize("name, reverse", [("lstm", False), ("gru", True)])
def test_resets_gradients_equal_the_segment_reference(name, reverse):
    cell, params, xs, carry0 = _segment_case(name)
    lengths = jnp.array([7, 6, 5, 4])

    def loss(run, p, x):
        final, ys = run(p, x)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))

    def reference(p, x):
        return _segment_reference(cell, p, x, carry0, RESETS, lengths, reverse)

    def ours(p, x, **kw):
        return jaxrnn.rnn(cell, p, x, carry0, lengths=lengths, resets=RESETS, reverse=reverse, **kw)

    want = jax.jit(jax.grad(lambda p, x: loss(reference, p, x), argnums=(0, 1)))(params, xs)
    assert_trees_close(jax.grad(lambda p, x: loss(ours, p, x), argnums=(0, 1))(params, xs), want, atol=1e-5)
    remat = jax.grad(lambda p, x: loss(lambda p, x: ours(p, x, checkpoint_every=3), p, x), argnums=(0, 1))
    assert_trees_close(remat(params, xs), want, atol=1e-5)


def test_resets_and_mask_keep_the_default_analytic_path():
    cell, params = make("lstm")
    xs = random_xs((4, 7, 3))
    none = np.zeros((4, 7), bool)
    assert_trees_close(jaxrnn.rnn(cell, params, xs, resets=none), jaxrnn.rnn(cell, params, xs))

    def uses_analytic(**kw):  # the analytic path is a custom_vjp in the forward program
        jaxpr = jax.make_jaxpr(lambda p: jnp.sum(jaxrnn.rnn(cell, p, xs, **kw)[1]))(params)
        return bool(primitive_params(jaxpr, "custom_vjp_call") or primitive_params(jaxpr, "custom_vjp_call_jaxpr"))

    assert not uses_analytic(resets=RESETS, grad="autodiff")  # so that the checks below can fail
    assert uses_analytic(resets=RESETS) and uses_analytic(resets=RESETS, mask=MASK)
    assert uses_analytic(resets=RESETS, checkpoint_every=3)  # chunk by chunk, under remat


def test_truncated_rnn_with_resets_forward_equals_rnn():
    cell, params = make("gru")
    xs = random_xs((4, 7, 3))
    lengths = jnp.array([7, 6, 5, 4])
    want = jaxrnn.rnn(cell, params, xs, lengths=lengths, resets=RESETS)
    assert_trees_close(jaxrnn.truncated_rnn(cell, params, xs, chunk_size=3, lengths=lengths, resets=RESETS), want)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_truncated_rnn_analytic_gradients_equal_autodiff(name):
    cell, params = make(name)
    xs = random_xs((4, 7, 3))
    lengths = jnp.array([7, 6, 5, 0])

    def loss(p, x, grad):
        final, ys = jaxrnn.truncated_rnn(cell, p, x, chunk_size=3, lengths=lengths, resets=RESETS, grad=grad)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))

    want = jax.grad(loss, argnums=(0, 1))(params, xs, "autodiff")
    assert_trees_close(jax.grad(loss, argnums=(0, 1))(params, xs, None), want, atol=1e-5)  # the default: analytic
    with pytest.raises(ValueError, match="grad='analytic' needs a built-in cell"):
        mine = jaxrnn.Cell(cell.init, cell.initial_state, lambda p, c, x: cell.step(p, c, x), name="mine")
        jaxrnn.truncated_rnn(mine, params, xs, chunk_size=3, grad="analytic")


def test_resets_under_vmap_and_with_several_batch_dims():
    cell, params = make("elman")
    xs = random_xs((2, 2, 7, 3))
    resets = RESETS.reshape(2, 2, 7)
    final, ys = jaxrnn.rnn(cell, params, xs, resets=resets)
    flat = jaxrnn.rnn(cell, params, xs.reshape(4, 7, 3), resets=RESETS)
    assert_trees_close((final.reshape(4, 5), ys.reshape(4, 7, 5)), flat)
    vmapped = jax.vmap(lambda x, r: jaxrnn.rnn(cell, params, x, resets=r))(xs, jnp.asarray(resets))
    assert_trees_close(vmapped, (final, ys))


@pytest.mark.parametrize(
    "resets, time_major, error, match",
    [
        (np.zeros((4, 7), np.int32), False, TypeError, r"resets must be a boolean array .* got dtype int32"),
        (np.zeros((4, 6), bool), False, ValueError, r"resets must have shape \[\*batch, time\] = \[4, 7\] to match xs, got \[4, 6\]"),
        (np.zeros((4, 7), bool), True, ValueError, r"resets must have shape \[time, \*batch\] = \[7, 4\] to match xs, got \[4, 7\]"),
        (np.zeros((7,), bool), False, ValueError, r"got \[7\]"),
    ],
)  # fmt: skip
def test_error_resets(resets, time_major, error, match):
    cell, params = make("gru")
    xs = random_xs((4, 7, 3))
    with pytest.raises(error, match=match):
        jaxrnn.rnn(cell, params, jnp.swapaxes(xs, 0, 1) if time_major else xs, resets=resets, time_major=time_major)


# ------------------------------------------------------------------------------------ mask (padding anywhere)
MASK = np.array(
    [
        [False, False, True, True, True, True, True],  # left padding (Keras' pad_sequences default)
        [True, True, False, True, False, True, True],  # a reset on masked step 4 starts step 5 (RESETS[1])
        [True, True, True, True, True, True, True],  # nothing masked
        [True, True, True, True, True, False, True],  # reversed, the reset at 6 comes before step 4
    ]
)  # a row with nothing valid: test_mask_of_lengths_equals_lengths_in_values_and_gradients


def _compact_reference(cell, params, xs, carry0, mask, resets, reverse):
    """Each row cut down to its valid steps (a reset on a masked step moved to the next valid step), run by
    :func:`_segment_reference`, and its outputs put back in place, zeros at masked steps."""
    finals, rows = [], []
    for b in range(mask.shape[0]):
        steps = np.flatnonzero(mask[b])
        compact_resets, pending = [], False
        for t in range(mask.shape[1]):
            pending |= bool(resets is not None and resets[b, t])
            if mask[b, t]:
                compact_resets.append(pending)
                pending = False
        carry_b = jax.tree.map(lambda c: c[b : b + 1], carry0)
        if not len(steps):  # nothing valid: the carry passes through, every output is zero
            hidden = jax.tree.leaves(carry0)[0].shape[-1]
            rows.append(jnp.zeros(xs.shape[1:2] + (hidden,), xs.dtype))
            finals.append(jax.tree.map(lambda c: c[0], carry_b))
            continue
        final, ys = _segment_reference(
            cell, params, xs[b : b + 1, steps], carry_b, np.array([compact_resets], bool).reshape(1, -1), None, reverse
        )
        rows.append(jnp.zeros(xs.shape[1:2] + ys.shape[-1:], ys.dtype).at[steps].set(ys[0]))
        finals.append(jax.tree.map(lambda c: c[0], final))
    return jax.tree.map(lambda *c: jnp.stack(c), *finals), jnp.stack(rows)


@pytest.mark.parametrize(
    "name, reverse, with_resets",
    [("elman", False, False), ("elman", True, True), ("lstm", False, True), ("lstm", True, False),
     ("gru", False, False), ("gru", True, True)],
)  # fmt: skip
def test_mask_equals_each_row_run_on_its_valid_steps(name, reverse, with_resets):
    cell, params, xs, carry0 = _segment_case(name)
    resets = RESETS if with_resets else None
    final, ys = jaxrnn.rnn(cell, params, xs, carry0, mask=MASK, resets=resets, reverse=reverse)
    ref = _compact_reference(cell, params, xs, carry0, MASK, resets, reverse)
    assert_trees_close((final, ys), ref)
    assert not np.any(np.asarray(ys)[~MASK]), "masked steps emit zeros"

    def time_major_run(p, x):
        final, ys = jaxrnn.rnn(cell, p, jnp.swapaxes(x, 0, 1), carry0, mask=MASK.T, resets=None if resets is None
                               else resets.T, reverse=reverse, time_major=True)  # fmt: skip
        return final, jnp.swapaxes(ys, 0, 1)

    assert_trees_close(jax.jit(time_major_run)(params, xs), ref)


def test_mask_reset_on_a_masked_step_starts_the_next_valid_step():
    cell, params = make("elman")
    xs = random_xs((1, 5, 3))
    carry0 = jax.tree.map(lambda z: z + 0.3, cell.initial_state(params, (1,)))
    mask = np.array([[True, True, False, True, True]])
    resets = np.array([[False, False, True, False, False]])  # the segment starting at 2 begins at step 3
    _, ys = jaxrnn.rnn(cell, params, xs, carry0, mask=mask, resets=resets)
    _, alone = jaxrnn.rnn(cell, params, xs[:, 3:])
    assert_trees_close(ys[:, 3:], alone)
    _, ys_rev = jaxrnn.rnn(cell, params, xs, carry0, mask=mask, resets=resets, reverse=True)
    _, alone_rev = jaxrnn.rnn(cell, params, xs[:, :2], reverse=True)  # segment [0, 2) starts afresh in reverse
    assert_trees_close(ys_rev[:, :2], alone_rev)


@pytest.mark.parametrize("name, reverse", [("lstm", True), ("gru", False)])
def test_mask_gradients_equal_the_compact_reference_and_survive_remat(name, reverse):
    cell, params, xs, carry0 = _segment_case(name)

    def loss(run, p, x, c):
        final, ys = run(p, x, c)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))

    def reference(p, x, c):
        return _compact_reference(cell, p, x, c, MASK, RESETS, reverse)

    def ours(p, x, c, **kw):
        return jaxrnn.rnn(cell, p, x, c, mask=MASK, resets=RESETS, reverse=reverse, **kw)

    want = jax.jit(jax.grad(lambda *a: loss(reference, *a), argnums=(0, 1, 2)))(params, xs, carry0)
    assert_trees_close(jax.grad(lambda *a: loss(ours, *a), argnums=(0, 1, 2))(params, xs, carry0), want, atol=1e-5)
    remat = jax.grad(lambda *a: loss(lambda p, x, c: ours(p, x, c, checkpoint_every=3), *a), argnums=(0, 1, 2))
    assert_trees_close(remat(params, xs, carry0), want, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_mask_of_lengths_equals_lengths_in_values_and_gradients(reverse):
    cell, params = make("lstm")
    xs = random_xs((4, 7, 3))
    lengths = jnp.array([7, 0, 3, 5])

    def loss(p, x, **kw):
        final, ys = jaxrnn.rnn(cell, p, x, reverse=reverse, **kw)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.c**2)

    with_mask = jax.value_and_grad(loss, argnums=(0, 1))(params, xs, mask=jaxrnn.sequence_mask(lengths, 7))
    analytic = jax.value_and_grad(loss, argnums=(0, 1))(params, xs, lengths=lengths)  # the hand-derived BPTT
    assert_trees_close(with_mask, analytic, atol=1e-5)
    both = jaxrnn.rnn(cell, params, xs, mask=MASK, lengths=lengths, reverse=reverse)
    assert_trees_close(both, jaxrnn.rnn(cell, params, xs, mask=MASK & (np.arange(7)[None] < np.asarray(lengths)[:, None]),
                                        reverse=reverse))  # fmt: skip


def test_mask_with_truncated_rnn_vmap_and_several_batch_dims():
    cell, params = make("gru")
    xs = random_xs((4, 7, 3))
    want = jaxrnn.rnn(cell, params, xs, mask=MASK, resets=RESETS)
    assert_trees_close(jaxrnn.truncated_rnn(cell, params, xs, chunk_size=3, mask=MASK, resets=RESETS), want)
    final, ys = jaxrnn.rnn(cell, params, xs.reshape(2, 2, 7, 3), mask=MASK.reshape(2, 2, 7))
    flat = jaxrnn.rnn(cell, params, xs, mask=MASK)
    assert_trees_close((final.reshape(4, 5), ys.reshape(4, 7, 5)), flat)
    vmapped = jax.vmap(lambda x, m: jaxrnn.rnn(cell, params, x[None], mask=m[None]))(xs, jnp.asarray(MASK))
    assert_trees_close(jax.tree.map(lambda a: a[:, 0], vmapped), flat)


def test_mask_of_all_steps_changes_nothing():
    cell, params = make("gru")
    xs = random_xs((4, 7, 3))
    everything = np.ones((4, 7), bool)
    assert_trees_close(jaxrnn.rnn(cell, params, xs, mask=everything), jaxrnn.rnn(cell, params, xs))


@pytest.mark.parametrize(
    "mask, time_major, error, match",
    [
        (np.ones((4, 7), np.float32), False, TypeError, r"mask must be a boolean array \(True at the steps to run.*got dtype float32; from numbers, pass e.g. mask != 0"),
        (np.ones((4, 6), bool), False, ValueError, r"mask must have shape \[\*batch, time\] = \[4, 7\] to match xs, got \[4, 6\]"),
        (np.ones((4, 7), bool), True, ValueError, r"mask must have shape \[time, \*batch\] = \[7, 4\] to match xs, got \[4, 7\]"),
    ],
)  # fmt: skip
def test_error_mask(mask, time_major, error, match):
    cell, params = make("gru")
    xs = random_xs((4, 7, 3))
    with pytest.raises(error, match=match):
        jaxrnn.rnn(cell, params, jnp.swapaxes(xs, 0, 1) if time_major else xs, mask=mask, time_major=time_major)


RANDOM_CELLS = {
    **CELLS,
    "gru_reset_before": (jaxrnn.gru, {"reset_after": False}),
    "lstm_proj": (jaxrnn.lstm, {"proj_size": 2}),
}


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("seed", range(16))
def test_random_padding_and_segments_match_a_per_sequence_loop(seed):
    """Random combinations of cell, lengths, step mask, resets, direction, gradient path and checkpointing: values,
    final carries and gradients (params, xs, carry) equal the documented semantics run one sequence at a time."""
    rng = np.random.default_rng(seed)
    name = sorted(RANDOM_CELLS)[seed % len(RANDOM_CELLS)]
    cell, options = RANDOM_CELLS[name]
    num_seqs, num_steps, size_in, hidden = int(rng.integers(1, 4)), int(rng.choice([1, 4, 6])), 2, 3
    params = jax.tree.map(
        lambda a: a + 0.3 * jnp.asarray(rng.normal(size=a.shape)),
        cell.init(jax.random.key(seed), size_in, hidden, **options),
    )
    xs = jnp.asarray(rng.normal(size=(num_seqs, num_steps, size_in)))
    carry = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), cell.initial_state(params, (num_seqs,)))
    kinds = rng.choice(["lengths", "mask", "resets"], size=int(rng.integers(1, 4)), replace=False)
    steps = {
        "lengths": rng.integers(0, num_steps + 1, num_seqs) if "lengths" in kinds else None,
        "mask": rng.random((num_seqs, num_steps)) < 0.7 if "mask" in kinds else None,
        "resets": rng.random((num_seqs, num_steps)) < 0.35 if "resets" in kinds else None,
    }
    reverse = bool(rng.integers(2))
    options = {"grad": [None, "autodiff"][seed % 2], "checkpoint_every": [None, 2][seed // 2 % 2]}
    weights = jnp.asarray(rng.normal(size=(num_seqs, num_steps, 1)))

    def loss(run):
        def fn(p, x, c):
            final, ys = run(p, x, c)
            return jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final)), (final, ys)

        return jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True)(params, xs, carry)

    library = dict(zip(("lengths", "mask", "resets"), (None if v is None else jnp.asarray(v) for v in steps.values())))
    got = loss(lambda p, x, c: jaxrnn.rnn(cell, p, x, c, reverse=reverse, **library, **options))
    want = loss(lambda p, x, c: per_sequence_rnn(cell, p, x, c, reverse=reverse, **steps))
    assert_trees_close(got, want, rtol=1e-10, atol=1e-12, err_msg=f"{name} {list(kinds)} reverse={reverse} {options}")
