"""The train step, evaluation and the fit loop: skipping non-finite steps, no retracing, early stopping,
history files, progress, and bitwise-exact resume from checkpoints."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
from jaxrnn import checkpoint, data
from jaxrnn.train import (
    NonFiniteError,
    TrainState,
    evaluate,
    fit,
    init_state,
    make_eval_step,
    make_train_step,
)

KEY = jax.random.key(0)


def _regression(n=32, d=3, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(dtype)
    y = (x @ np.array([1.0, -2.0, 0.5][:d], dtype) + 0.3)[:, None].astype(dtype)
    return x, y


def _linear_params(d=3, dtype=jnp.float32):
    return {"w": jnp.zeros((d, 1), dtype), "b": jnp.zeros((1, 1), dtype)}


def _linear_loss(params, batch):
    x, y = batch
    pred = x @ params["w"] + params["b"]
    return jnp.mean((pred - y) ** 2), {"mae": jnp.mean(jnp.abs(pred - y))}


def _leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ---------------------------------------------------------------------------------------------------- the step


def test_init_state_copies_params():
    params = _linear_params()
    state = init_state(params, optax.adam(1e-2), KEY)
    assert isinstance(state, TrainState)
    assert state.step.dtype == jnp.int32 and int(state.step) == 0 and int(state.bad_steps) == 0
    step = make_train_step(_linear_loss, optax.adam(1e-2))
    step(state, _regression())  # donates the state's buffers, not the caller's
    assert float(jnp.sum(params["w"])) == 0.0
    with pytest.raises(TypeError, match="optimizer must be an optax.GradientTransformation .*got str"):
        init_state(params, "adam", KEY)
    with pytest.raises(TypeError, match=r"key must be a single PRNG key \(jax.random.key\(seed\) .*got int"):
        init_state(params, optax.adam(1e-2), 0)


def test_step_trains_reports_metrics_and_compiles_once():
    traces = []

    def loss_fn(params, batch):
        traces.append(1)
        return _linear_loss(params, batch)

    opt = optax.adam(0.1)
    state = init_state(_linear_params(), opt, KEY)
    step = make_train_step(loss_fn, opt)
    batch = _regression()
    first = None
    for _ in range(30):
        state, metrics = step(state, batch)
        first = first if first is not None else float(metrics["loss"])
    assert set(metrics) == {"loss", "grad_norm", "skipped", "mae"}
    assert float(metrics["loss"]) < 0.2 * first
    assert int(state.step) == 30 and int(metrics["skipped"]) == 0
    assert len(traces) == 1 and step.cache_size() == 1


def test_clipping_matches_optax_chain_and_reports_raw_norm():
    opt = optax.sgd(0.1)
    batch = _regression()
    state = init_state(_linear_params(), opt, KEY)
    new, metrics = make_train_step(_linear_loss, opt, clip_norm=0.5)(state, batch)
    params = _linear_params()
    grads = jax.grad(lambda p: _linear_loss(p, batch)[0])(params)
    chain = optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.1))
    updates, _ = chain.update(grads, chain.init(params), params)
    expected = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new.params["w"], expected["w"], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-6)
    assert float(metrics["grad_norm"]) > 0.5


def test_key_is_folded_with_the_step():
    seen = []

    def loss_fn(params, batch, *, key=None):
        noise = jax.random.uniform(key, ())
        return _linear_loss(params, batch)[0] + 0.0 * noise, {"noise": noise}

    opt = optax.sgd(0.01)
    state = init_state(_linear_params(), opt, KEY)
    step = make_train_step(loss_fn, opt)
    for t in range(3):
        state, metrics = step(state, _regression())
        seen.append(float(metrics["noise"]))
        assert seen[-1] == pytest.approx(float(jax.random.uniform(jax.random.fold_in(KEY, t), ())))
    assert len(set(seen)) == 3


def test_non_finite_step_is_skipped_without_leaking():
    opt = optax.adam(0.1)
    step = make_train_step(_linear_loss, opt, donate=False)
    state = init_state(_linear_params(), opt, KEY)
    state, _ = step(state, _regression())
    x, y = _regression()
    bad_x = x.copy()
    bad_x[3, 1] = np.nan
    new, metrics = step(state, (bad_x, y))
    assert int(metrics["skipped"]) == 1 and not np.isfinite(float(metrics["loss"]))
    assert _leaves_equal(new.params, state.params) and _leaves_equal(new.opt_state, state.opt_state)
    assert int(new.step) == 1 and int(new.bad_steps) == 1
    new, _ = step(new, (x * np.float32(np.inf), y))  # inf input: non-finite loss
    assert int(new.bad_steps) == 2 and _leaves_equal(new.params, state.params)
    new, metrics = step(new, (x, y))
    assert int(metrics["skipped"]) == 0 and int(new.bad_steps) == 0 and int(new.step) == 2


def test_bfloat16_params_train():
    opt = optax.adam(0.05)
    x, y = _regression(dtype=np.float32)
    batch = (x.astype(jnp.bfloat16), y.astype(jnp.bfloat16))
    state = init_state(_linear_params(dtype=jnp.bfloat16), opt, KEY)
    step = make_train_step(_linear_loss, opt, clip_norm=1.0)
    losses = []
    for _ in range(20):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert state.params["w"].dtype == jnp.bfloat16 and metrics["loss"].dtype == jnp.float32
    assert losses[-1] < 0.5 * losses[0]


def test_step_errors():
    opt = optax.sgd(0.1)
    state = init_state(_linear_params(), opt, KEY)
    with pytest.raises(ValueError, match=r"loss_fn must return a floating-point scalar loss, got shape \[32, 1\]"):
        make_train_step(lambda p, b: (b[0] @ p["w"]) ** 2, opt)(state, _regression())
    with pytest.raises(ValueError, match="aux keys must be strings other than"):
        make_train_step(lambda p, b: (_linear_loss(p, b)[0], {"loss": 1.0}), opt)(state, _regression())
    with pytest.raises(TypeError, match="aux output must be a dict of scalars, got list"):
        make_train_step(lambda p, b: (_linear_loss(p, b)[0], [1.0]), opt)(state, _regression())
    with pytest.raises(TypeError, match=r"aux\['phase'\] must be real, got dtype complex"):
        make_train_step(lambda p, b: (_linear_loss(p, b)[0], {"phase": jnp.sum(b[0]) * 1j}), opt)(state, _regression())
    with pytest.raises(ValueError, match="clip_norm must be a positive finite number or None, got 0"):
        make_train_step(_linear_loss, opt, clip_norm=0)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        make_train_step(None, opt)
    with pytest.raises(TypeError, match=r"state must be a TrainState \(from init_state\), got dict"):
        make_train_step(_linear_loss, opt)({"params": 1}, _regression())
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        make_train_step(_linear_loss, opt, mesh="cpu")
    with pytest.raises(ValueError, match="clip_norm must be a positive finite number or None, got '1'"):
        make_train_step(_linear_loss, opt, clip_norm="1")
    with pytest.raises(TypeError, match="donate must be a bool, got str"):
        make_train_step(_linear_loss, opt, donate="no")
    with pytest.raises(TypeError, match=r"key must be a single PRNG key .*shape \[3\]"):
        init_state(_linear_params(), opt, jax.random.split(KEY, 3))


def test_step_checks_the_state_against_its_optimizer_and_donation():
    sgd, adam = optax.sgd(0.1), optax.adam(0.1)
    with pytest.raises(ValueError, match="state.opt_state does not match this train step's optimizer"):
        make_train_step(_linear_loss, adam)(init_state(_linear_params(), sgd, KEY), _regression())
    state = init_state(_linear_params(), sgd, KEY)
    with pytest.raises(ValueError, match="state.opt_state does not match"):  # params of another structure
        make_train_step(_linear_loss, optax.adam(0.1))(
            init_state(_linear_params(), adam, KEY)._replace(params={"w": jnp.zeros((3, 1))}), _regression()
        )
    step = make_train_step(_linear_loss, sgd)
    new, _ = step(state, _regression())
    with pytest.raises(ValueError, match="state holds arrays that were donated to an earlier step"):
        step(state, _regression())
    step(new, _regression())  # the returned state is fine
    kept = make_train_step(_linear_loss, sgd, donate=False)
    state = init_state(_linear_params(), sgd, KEY)
    kept(state, _regression())
    kept(state, _regression())  # not donated: reusable


def test_line_search_optimizer_gets_value_and_value_fn():
    x, y = _regression()
    opt = optax.lbfgs()
    step = make_train_step(lambda p, b: _linear_loss(p, b)[0], opt)
    state = init_state(_linear_params(), opt, KEY)
    for _ in range(20):
        state, metrics = step(state, (x, y))
    assert float(metrics["loss"]) < 1e-8 and int(metrics["skipped"]) == 0
    np.testing.assert_allclose(np.asarray(state.params["w"])[:, 0], [1.0, -2.0, 0.5], atol=1e-4)


def test_evaluate_weights_by_batch_size():
    x, y = _regression(n=10)
    params = {"w": jnp.ones((3, 1)), "b": jnp.zeros((1, 1))}
    full = {k: float(v) for k, v in make_eval_step(_linear_loss)(params, (x, y)).items()}
    chunks = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 10, 4)]  # 4, 4, 2
    for fn in (_linear_loss, make_eval_step(_linear_loss)):
        got = evaluate(fn, params, chunks)
        assert got.keys() == {"loss", "mae"}
        assert got["loss"] == pytest.approx(full["loss"], rel=1e-6)
        assert got["mae"] == pytest.approx(full["mae"], rel=1e-6)
    with pytest.raises(ValueError, match="batches must yield at least one batch"):
        evaluate(_linear_loss, params, [])
    with pytest.raises(TypeError, match="loss_fn_or_eval_step must be a loss function or an EvalStep, got int"):
        evaluate(3, params, chunks)


# ------------------------------------------------------------------------------------------------------- fit


def test_fit_history_files_and_no_retracing(tmp_path):
    traces = []

    def loss_fn(params, batch):
        traces.append(1)
        return _linear_loss(params, batch)

    x, y = _regression(n=40)
    opt = optax.adam(0.1)
    step = make_train_step(loss_fn, opt)
    train = lambda epoch: data.batches(jax.random.fold_in(KEY, epoch), x, y, batch_size=8)  # noqa: E731
    val = list(data.batches(None, x, y, batch_size=16, shuffle=False))
    state, history = fit(
        init_state(_linear_params(), opt, KEY), step, train, epochs=4, eval_data=val, eval_fn=_linear_loss,
        history_path=tmp_path / "h.jsonl", progress=False, sync_every=2,
    )  # fmt: skip
    assert len(traces) == 1 and step.cache_size() == 1
    assert [row["epoch"] for row in history] == [0, 1, 2, 3]
    assert history[-1]["step"] == 20 and history[-1]["batches"] == 5
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["eval_loss"] < history[0]["eval_loss"]
    for k in ("train_mae", "train_grad_norm", "eval_mae", "seconds", "examples_per_second", "skipped"):
        assert k in history[0]
    lines = (tmp_path / "h.jsonl").read_text().splitlines()
    assert [json.loads(line)["train_loss"] for line in lines] == [row["train_loss"] for row in history]
    _, history = fit(state, step, [(x, y)], epochs=2, history_path=tmp_path / "h.csv", progress=False)
    rows = list(csv.DictReader((tmp_path / "h.csv").open()))
    assert len(rows) == 2 and float(rows[1]["train_loss"]) == pytest.approx(history[1]["train_loss"])


def test_fit_early_stopping_restores_best():
    # w moves 0 -> 0.2 -> 0.36 -> 0.488 (SGD on (w - 1)^2, lr 0.1); the eval loss (w - 0.3)^2 is best at 0.36
    opt = optax.sgd(0.1)
    train_loss = lambda p, b: jnp.sum((p["w"] - 1.0) ** 2)  # noqa: E731
    eval_loss = lambda p, b: jnp.sum((p["w"] - 0.3) ** 2)  # noqa: E731
    state = init_state({"w": jnp.zeros(())}, opt, KEY)
    state, history = fit(
        state, make_train_step(train_loss, opt), [jnp.zeros(1)], epochs=10, eval_data=[jnp.zeros(1)],
        eval_fn=eval_loss, patience=1, progress=False,
    )  # fmt: skip
    assert len(history) == 3
    assert float(state.params["w"]) == pytest.approx(0.36, abs=1e-6)
    assert int(state.step) == 3  # the optimizer state is the final one


def test_fit_progress_bar(capsys):
    opt = optax.sgd(0.01)
    x, y = _regression()
    batches = [(x, y)] * 3
    fit(init_state(_linear_params(), opt, KEY), make_train_step(_linear_loss, opt), batches, progress=True,
        sync_every=1)  # fmt: skip
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss" in err and "ex/s" in err and "3/3" in err
    fit(init_state(_linear_params(), opt, KEY), make_train_step(_linear_loss, opt), batches)  # not a TTY: silent
    assert capsys.readouterr().err == ""


def test_fit_stops_after_consecutive_bad_steps_and_keeps_checkpoint(tmp_path):
    x, y = _regression()
    bad = (np.full_like(x, np.nan), y)
    good = (x, y)
    opt = optax.adam(0.1)
    step = make_train_step(_linear_loss, opt)
    state = init_state(_linear_params(), opt, KEY)
    # epoch 0: good, bad, good (isolated bad steps are fine); epoch 1: good, then bad forever
    train = lambda e: [good, bad, good] if e == 0 else [good, good] + [bad] * 6  # noqa: E731
    with pytest.raises(NonFiniteError, match=r"stopped at batch 6 of epoch 1 \(optimizer step 4\): 4 consecutive"):
        fit(state, step, train, epochs=2, max_bad_steps=4, checkpoint_dir=tmp_path, every=1, progress=False,
            check_finite=False)  # fmt: skip
    saved = checkpoint.load(tmp_path / "train.ckpt", {"state": init_state(_linear_params(), opt, KEY)})["state"]
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(saved.params))
    assert int(saved.step) == 4


def test_fit_rejects_non_finite_host_data_before_its_step():
    x, y = _regression()
    bad_y = y.copy()
    bad_y[2, 0] = np.inf
    opt = optax.sgd(0.01)
    step = make_train_step(_linear_loss, opt)
    fresh = lambda: init_state(_linear_params(), opt, KEY)  # noqa: E731 - a step donates its state
    with pytest.raises(
        ValueError,
        match=r"epoch 1, batch 1: batch\[1\] must be finite, got 1 non-finite value\(s\) \(NaN/inf\) in shape "
        r"\[\d+, 1\], the first at index \[2, 0\]: inf\. .*pass check_finite=False",
    ):
        fit(fresh(), step, lambda e: [(x, y), (x, bad_y if e == 1 else y)], epochs=2, progress=False)
    with pytest.raises(ValueError, match=r"batch\['x'\] must be finite"):
        fit(fresh(), make_train_step(lambda p, b: _linear_loss(p, (b["x"], b["y"])), opt),
            [{"x": np.where(x > 0, np.nan, x), "y": y}], progress=False)  # fmt: skip
    # device arrays are not read (that would be a host round trip per step): the step skips it instead
    _, history = fit(fresh(), step, [(jnp.asarray(x) * jnp.nan, y)], progress=False)
    assert history[0]["skipped"] == 1
    with pytest.raises(TypeError, match="check_finite must be a bool"):
        fit(fresh(), step, [(x, y)], check_finite="no")


def _resume_setup():
    # a small model (resume is model-agnostic; the RNN path costs only compile time here) with a per-step key
    params = {"w": jnp.full((10, 1), 0.1), "b": jnp.zeros((1, 1))}

    def loss_fn(params, batch, *, key=None):
        xb, yb = batch
        xb = xb.reshape(xb.shape[0], -1)
        if key is not None:  # input noise from the per-step key: resume must reproduce it
            xb = xb + 0.01 * jax.random.normal(key, xb.shape)
        return jnp.mean((jnp.tanh(xb @ params["w"] + params["b"]) - yb) ** 2)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 5, 2)).astype(np.float32)
    y = x.sum(axis=(1, 2))[:, None] / 5
    opt = optax.adam(0.01)
    step = make_train_step(loss_fn, opt, clip_norm=1.0)

    def train(epoch, crash_at=None):
        for i, batch in enumerate(data.batches(jax.random.fold_in(KEY, epoch), x, y, batch_size=6)):
            if crash_at == (epoch, i):
                raise KeyboardInterrupt("simulated crash")
            yield batch

    return params, opt, step, train


def test_resume_is_bitwise_identical(tmp_path):
    params, opt, step, train = _resume_setup()
    full, full_history = fit(init_state(params, opt, KEY), step, train, epochs=3, progress=False)

    ckpt = tmp_path / "ckpt"
    crashing = lambda e: train(e, crash_at=(1, 3))  # noqa: E731 - 4 batches per epoch; every=3 saved at batch 6
    with pytest.raises(KeyboardInterrupt):
        fit(init_state(params, opt, KEY), step, crashing, epochs=3, checkpoint_dir=ckpt, every=3, progress=False)
    assert (
        checkpoint.metadata(ckpt / "train.ckpt")["epoch"] == 1
        and checkpoint.metadata(ckpt / "train.ckpt")["batch"] == 2
    )
    resumed, history = fit(init_state(params, opt, KEY), step, train, epochs=3, checkpoint_dir=ckpt, every=3,
                           progress=False)  # fmt: skip
    assert _leaves_equal(resumed.params, full.params) and _leaves_equal(resumed.opt_state, full.opt_state)
    assert int(resumed.step) == int(full.step) == 12
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in full_history]
    # a finished run loads and returns at once
    again, history2 = fit(init_state(params, opt, KEY), step, train, epochs=3, checkpoint_dir=ckpt, progress=False)
    assert _leaves_equal(again.params, full.params) and len(history2) == 3


def test_resume_from_a_checkpoint_after_an_epochs_last_batch(tmp_path):
    # every=4 with 4 batches per epoch saves after the last batch; a crash in the evaluation that follows
    # leaves that checkpoint: the resumed run must finish the epoch from it, not fail on an empty epoch
    params, opt, step, train = _resume_setup()
    eval_batches = [next(iter(train(0)))]
    full, full_history = fit(init_state(params, opt, KEY), step, train, epochs=2, eval_data=eval_batches,
                             progress=False)  # fmt: skip

    def crashing_eval(epoch):
        raise KeyboardInterrupt("simulated crash during evaluation")

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        fit(init_state(params, opt, KEY), step, train, epochs=2, eval_data=crashing_eval, checkpoint_dir=ckpt,
            every=4, progress=False)  # fmt: skip
    assert checkpoint.metadata(ckpt / "train.ckpt")["batch"] == 4
    resumed, history = fit(init_state(params, opt, KEY), step, train, epochs=2, eval_data=eval_batches,
                           checkpoint_dir=ckpt, every=4, progress=False)  # fmt: skip
    assert _leaves_equal(resumed.params, full.params)
    for key in ("train_loss", "eval_loss", "batches", "step"):
        assert [h[key] for h in history] == [h[key] for h in full_history]


def test_fit_errors(tmp_path):
    opt = optax.sgd(0.1)
    state = init_state(_linear_params(), opt, KEY)
    step = make_train_step(_linear_loss, opt)
    good = [_regression()]
    with pytest.raises(TypeError, match="train_data is a one-shot iterator"):
        fit(state, step, iter(good))
    with pytest.raises(TypeError, match="train_data must be a re-iterable .*got int"):
        fit(state, step, 3)
    with pytest.raises(ValueError, match="every=5 needs checkpoint_dir"):
        fit(state, step, good, every=5)
    with pytest.raises(ValueError, match=r"history_path must end in .jsonl, .json, .ndjson or .csv, got '.*h.txt'"):
        fit(state, step, good, history_path=tmp_path / "h.txt")
    with pytest.raises(ValueError, match="eval_fn was given without eval_data"):
        fit(state, step, good, eval_fn=_linear_loss)
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        fit(state, step, good, epochs=0)
    with pytest.raises(ValueError, match="train_data for epoch 0 yielded no batches"):
        fit(state, step, [], progress=False)
    with pytest.raises(TypeError, match="state must be a TrainState"):
        fit(state.params, step, good)
    with pytest.raises(ValueError, match="history_path's folder .*missing.* does not exist"):
        fit(state, step, good, history_path=tmp_path / "missing" / "h.jsonl")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir must be a directory, got the file"):
        fit(state, step, good, checkpoint_dir=tmp_path / "afile")
    with pytest.raises(ValueError, match="eval_data must hold at least one batch"):
        fit(state, step, good, eval_data=[])
    with pytest.raises(TypeError, match="progress must be a bool, got str"):
        fit(state, step, good, progress="no")
    with pytest.raises(TypeError, match="restore_best must be a bool, got str"):
        fit(state, step, good, restore_best="no")


# --- fit_arrays: in-memory data, one compiled call per epoch ---------------------------------------------------------


def _linear_problem(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    traces = []

    def loss_fn(p, batch):
        traces.append(1)
        xb, yb = batch
        return jnp.mean((xb @ p["w"] + p["b"] - yb) ** 2)

    return x, y, params, loss_fn, traces


def test_fit_arrays_learns_deterministically_and_compiles_once():
    x, y, params, loss_fn, traces = _linear_problem()
    opt = optax.sgd(0.1)
    step = jaxrnn.make_train_step(loss_fn, opt)
    run = lambda: jaxrnn.train.fit_arrays(  # noqa: E731
        jaxrnn.init_state(params, opt, jax.random.key(0)),
        step,
        (x, y),
        batch_size=16,
        epochs=30,
        eval_fn=loss_fn,
        eval_arrays=(x, y),
        seed=3,
    )
    state, history = run()
    assert len(history) == 30 and history[-1]["eval_loss"] < 1e-4 < history[0]["eval_loss"]
    assert history[0]["skipped"] == 0 and int(state.step) == 30 * 4
    assert len(traces) == 2, "one trace of the train step and one of the evaluation, for all 30 epochs"
    state2, history2 = run()
    np.testing.assert_array_equal(state.params["w"], state2.params["w"])
    assert history == history2


def test_fit_arrays_early_stopping_restores_best():
    x, y, params, loss_fn, _ = _linear_problem()
    x_val, y_val = x[:16] + 3.0, y[:16]  # a shifted validation set: its loss soon rises again
    opt = optax.adam(0.3)
    state, history = jaxrnn.train.fit_arrays(
        jaxrnn.init_state(params, opt, jax.random.key(0)),
        jaxrnn.make_train_step(loss_fn, opt),
        (x, y),
        batch_size=8,
        epochs=200,
        eval_fn=loss_fn,
        eval_arrays=(x_val, y_val),
        patience=3,
    )
    losses = [row["eval_loss"] for row in history]
    assert len(history) < 200 and np.argmin(losses) == len(losses) - 4
    assert float(loss_fn(state.params, (x_val, y_val))) == pytest.approx(min(losses), rel=1e-6)


def test_fit_arrays_stops_on_non_finite_data():
    x, y, params, loss_fn, _ = _linear_problem()
    x = np.full_like(x, np.nan)
    opt = optax.sgd(0.1)
    state0 = jaxrnn.init_state(params, opt, jax.random.key(0))
    with pytest.raises(jaxrnn.train.NonFiniteError, match="consecutive steps had a non-finite loss"):
        jaxrnn.train.fit_arrays(
            state0, jaxrnn.make_train_step(loss_fn, opt), (x, y), batch_size=4, max_bad_steps=5, check_finite=False
        )


def test_fit_arrays_rejects_non_finite_data_before_compiling():
    x, y, params, loss_fn, _ = _linear_problem()
    opt = optax.sgd(0.1)
    state, step = jaxrnn.init_state(params, opt, jax.random.key(0)), jaxrnn.make_train_step(loss_fn, opt)
    bad_x = x.copy()
    bad_x[5, 1] = np.nan
    with pytest.raises(
        ValueError, match=r"arrays\[0\] must be finite, got 1 non-finite .*first at index \[5, 1\]: nan"
    ):
        jaxrnn.train.fit_arrays(state, step, (bad_x, y), batch_size=4)
    eval_fn = lambda p, b: loss_fn(p, b)  # noqa: E731
    with pytest.raises(ValueError, match=r"eval_arrays\[1\] must be finite"):
        jaxrnn.train.fit_arrays(state, step, (x, y), batch_size=4, eval_fn=eval_fn, eval_arrays=(x, y * np.inf))
    assert step.cache_size() == 0  # rejected before anything was traced


def test_fit_arrays_errors():
    x, y, params, loss_fn, _ = _linear_problem()
    opt = optax.sgd(0.1)
    state, step = jaxrnn.init_state(params, opt, jax.random.key(0)), jaxrnn.make_train_step(loss_fn, opt)
    with pytest.raises(ValueError, match="arrays must share their leading size"):
        jaxrnn.train.fit_arrays(state, step, (x, y[:10]), batch_size=4)
    with pytest.raises(ValueError, match=r"batch_size must be <= the number of rows \(64\), got 65"):
        jaxrnn.train.fit_arrays(state, step, (x, y), batch_size=65)
    with pytest.raises(ValueError, match="patience needs eval_fn"):
        jaxrnn.train.fit_arrays(state, step, (x, y), batch_size=4, patience=2)
    with pytest.raises(TypeError, match="train_step must come from make_train_step"):
        jaxrnn.train.fit_arrays(state, loss_fn, (x, y), batch_size=4)
    with pytest.raises(ValueError, match="eval_arrays was given without eval_fn"):
        jaxrnn.train.fit_arrays(state, step, (x, y), batch_size=4, eval_arrays=(x, y))
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        jaxrnn.train.fit_arrays(state, step, (x, y), batch_size=4, seed=-1)
    with pytest.raises(TypeError, match="compiler_options must be a dict of XLA options or None, got int"):
        jaxrnn.train.fit_arrays(state, step, (x, y), batch_size=4, compiler_options=3)
    with pytest.raises(TypeError, match="restore_best must be a bool"):
        jaxrnn.train.fit_arrays(state, step, (x, y), batch_size=4, restore_best="no")
    with pytest.raises(ValueError, match="state.opt_state does not match"):
        jaxrnn.train.fit_arrays(jaxrnn.init_state(params, optax.adam(0.1), jax.random.key(0)), step, (x, y),
                                batch_size=4)  # fmt: skip


def test_fit_arrays_catches_a_run_of_bad_steps_inside_an_epoch_and_reports_all_skipped_as_nan():
    x, y, params, _, _ = _linear_problem(n=40)
    flagged = np.zeros(40, np.float32)
    flagged[:20] = 1.0  # a loss of NaN on these rows: with batch_size=1, runs of bad steps mid-epoch

    def loss_fn(p, batch):
        xb, yb, fb = batch
        return jnp.mean((xb @ p["w"] + p["b"] - yb) ** 2) + jnp.where(fb[0] > 0, jnp.nan, 0.0)

    opt = optax.sgd(0.01)
    order = np.random.default_rng(0).permutation(40)
    longest = max(len(run) for run in "".join("b" if flagged[i] else "." for i in order).split("."))
    assert 3 <= longest < 10  # the seed's order ends with good steps, so only a mid-epoch check catches it
    state = jaxrnn.init_state(params, opt, jax.random.key(0))
    with pytest.raises(jaxrnn.train.NonFiniteError, match=f"{longest} consecutive steps had a non-finite"):
        jaxrnn.train.fit_arrays(state, jaxrnn.make_train_step(loss_fn, opt), (x, y, flagged), batch_size=1,
                                max_bad_steps=3, check_finite=False)  # fmt: skip
    all_bad = np.ones(40, np.float32)
    state = jaxrnn.init_state(params, opt, jax.random.key(0))
    _, history = jaxrnn.train.fit_arrays(state, jaxrnn.make_train_step(loss_fn, opt), (x, y, all_bad),
                                         batch_size=8, epochs=1, check_finite=False)  # fmt: skip
    assert np.isnan(history[0]["train_loss"]) and history[0]["skipped"] == 5


def test_fit_arrays_keeps_the_trained_params_when_no_evaluation_loss_is_finite():
    x, y, params, loss_fn, _ = _linear_problem()
    opt = optax.sgd(0.1)
    state = jaxrnn.init_state(params, opt, jax.random.key(0))
    nan_eval = lambda p, b: jnp.float32(jnp.nan) + 0 * jnp.sum(p["w"])  # noqa: E731
    state, history = jaxrnn.train.fit_arrays(state, jaxrnn.make_train_step(loss_fn, opt), (x, y), batch_size=8,
                                             epochs=3, eval_fn=nan_eval, eval_arrays=(x, y))  # fmt: skip
    assert int(state.step) == 24 and float(jnp.abs(state.params["w"]).sum()) > 0.5
