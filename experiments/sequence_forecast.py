"""Seed 001: forecasting a series with an RNN, from the frames example to yearly sunspot numbers.

Part 1, the seed's frames example: the series -3..8 cut into frames of four, past ``[-3..0]``, current ``[1..4]``,
target ``[5..8]``. First the seed's own Elman step with its hand-written weights (``w`` rows of 1, 2, 3, 3, bias 1)
on the scaled frames, exactly as printed in the seed (a bad prediction, ``[-2.76, -2.99, -2.99, -2.99]``); then
Elman, LSTM and GRU networks reading the two frames, with a tanh dense head to four outputs, trained on the scaled
data and read back through the inverse scaling.

Part 2, a real series: the yearly mean sunspot numbers 1700-2008 (shipped with jaxrnn). Each model reads the last
``window`` years (scaled to (-1, 1) with the training years' range) and forecasts the next ``horizon`` years at once.
Chronological split: train up to 1929, validate 1930-1959, test 1960-2008. We report RMSE in sunspot numbers
against the persistence baseline (next years = this year), per lead time, and plot forecast against truth.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
from experiments._common import Context, resolve_config, scan_steps
from jaxrnn.datasets import load_sunspots

CELLS = {"elman": jaxrnn.elman, "lstm": jaxrnn.lstm, "gru": jaxrnn.gru}
COLORS = {"elman": "tab:red", "lstm": "tab:blue", "gru": "tab:green", "persistence": "tab:gray"}
SERIES = np.arange(-3.0, 9.0)  # -3..8
SEED_W = np.array([[1.0] * 8, [2.0] * 8, [3.0] * 8, [3.0] * 8])  # the seed's [4, 8] weight matrix
SEED_B = np.ones(4)

DEFAULTS = {
    "frames_hidden": 8,
    "frames_steps": 300,
    "window": 12,
    "horizon": 5,
    "hidden": 32,
    "batch_size": 32,
    "epochs": 300,  # cosine-decayed Adam; the epoch with the lowest validation loss is kept (no early stop)
    "patience": None,
    "lr": 5e-3,
    "lstm_forget_bias": 1.0,
    "train_end": 1930,
    "val_end": 1960,
}
QUICK = {"frames_steps": 60, "hidden": 16, "epochs": 25, "patience": 10, "lr": 1e-2}


def _split_sizes(years, window: int, horizon: int, train_end: int, val_end: int) -> dict:
    """How many training, validation and test windows the chronological split of ``years`` gives."""
    first = years[window : len(years) - horizon + 1]  # the first target year of each window
    last = first + horizon - 1
    return {
        "training": int(np.sum(last < train_end)),
        "validation": int(np.sum((first >= train_end) & (last < val_end))),
        "test": int(np.sum(first >= val_end)),
    }


def check_config(config: dict) -> None:
    """Raise ValueError, before any work, if ``window``, ``horizon``, ``train_end``, ``val_end`` and ``batch_size``
    leave the sunspot years (1700-2008) without a full training batch or a test window (an empty validation split
    is let through, as it always was)."""
    c = resolve_config(config, DEFAULTS, QUICK)
    years, _ = load_sunspots()
    window, horizon, train_end, val_end = int(c["window"]), int(c["horizon"]), int(c["train_end"]), int(c["val_end"])
    need = {"training": int(c["batch_size"]), "validation": 0, "test": 1}

    def short(h):
        sizes = _split_sizes(years, window, h, train_end, val_end)
        return [f"{sizes[k]} {k} (need >= {need[k]})" for k in sizes if sizes[k] < need[k]]

    problems = short(horizon)
    if problems:
        fits = [h for h in range(1, len(years)) if not short(h)]
        hint = f"at most horizon={fits[-1]} fits" if fits else "no horizon fits them"
        raise ValueError(
            f"horizon={horizon} with window={window}, train_end={train_end}, val_end={val_end} and batch_size="
            f"{need['training']} leaves {', '.join(problems)} windows in the years {years[0]}-{years[-1]}; {hint}"
        )


def _scaler(fit_values):
    from jaxrnn import data

    scaler = data.MinMaxScaler(feature_range=(-1, 1))
    scaler.fit(np.asarray(fit_values, np.float64).reshape(-1, 1))
    return scaler


def _tf(scaler, values):
    values = np.asarray(values, np.float64)
    return np.asarray(scaler.transform(values.reshape(-1, 1))).reshape(values.shape)


def _inv(scaler, values):
    values = np.asarray(values, np.float64)
    return np.asarray(scaler.inverse_transform(values.reshape(-1, 1))).reshape(values.shape)


def _model(cell, key, input_size, hidden, output_size, **options):
    k_rnn, k_head = jax.random.split(key)
    return {
        "rnn": cell.init(k_rnn, input_size, hidden, dtype=jnp.float32, **options),
        "head": jaxrnn.dense.init(k_head, hidden, output_size, dtype=jnp.float32),
    }


def _predict(cell):
    def predict(params, xs):
        _, ys = jaxrnn.rnn(cell, params["rnn"], xs)
        return jnp.tanh(jaxrnn.dense.apply(params["head"], jaxrnn.last_valid(ys)))

    return predict


# ---------------------------------------------------------------------------------------------- part 1: frames
def part_frames(ctx: Context) -> dict:
    from jaxrnn import data, train

    scaler = _scaler(SERIES)
    fr = data.frames(SERIES, 4)  # one window: past [-3..0], current [1..4], future [5..8]
    scaled = _tf(scaler, np.stack([fr.past[0], fr.current[0], fr.future[0]]))
    # the seed's single Elman step: h = tanh(w · [past, current] + b), i.e. w_h = w[:, :4]^T acting on the previous
    # "output" (the past frame) and w_x = w[:, 4:]^T on the current input
    seed_params = jaxrnn.ElmanParams(
        w_x=jnp.asarray(SEED_W[:, 4:].T, jnp.float32),
        w_h=jnp.asarray(SEED_W[:, :4].T, jnp.float32),
        b=jnp.asarray(SEED_B, jnp.float32),
    )
    _, seed_h = jaxrnn.elman.step(seed_params, jnp.asarray(scaled[0], jnp.float32), jnp.asarray(scaled[1], jnp.float32))
    seed_pred = _inv(scaler, np.asarray(seed_h))
    ctx.log(f"frames: scaled -3..8 -> {np.round(_tf(scaler, SERIES), 2).tolist()}")
    ctx.log(
        f"the seed's Elman step with its weights: scaled output {np.round(np.asarray(seed_h, np.float64), 2).tolist()}, "
        f"inverse-scaled {np.round(seed_pred, 2).tolist()} (target [5, 6, 7, 8])"
    )

    xs = jnp.asarray(scaled[None, :2], jnp.float32)  # [1, 2 frames, 4]
    target = jnp.asarray(scaled[None, 2], jnp.float32)  # [1, 4]
    out = {"seed_step_scaled": np.asarray(seed_h), "seed_step_prediction": seed_pred, "cells": {}}
    for j, (name, cell) in enumerate(CELLS.items()):
        key = jax.random.fold_in(jax.random.key(ctx.seed), j)
        params = _model(cell, key, 4, ctx["frames_hidden"], 4)
        predict = _predict(cell)

        def loss_fn(p, batch, predict=predict):
            x, y = batch
            return jnp.mean((predict(p, x) - y) ** 2)

        optimizer = optax.adam(1e-2)
        state = train.init_state(params, optimizer, key)
        state, _ = scan_steps(train.make_train_step(loss_fn, optimizer), state, (xs, target), ctx["frames_steps"], ctx)
        pred = _inv(scaler, np.asarray(predict(state.params, xs))[0])
        out["cells"][name] = pred
        ctx.log(f"frames, trained {name:5s}: prediction {np.round(pred, 2).tolist()} (target [5, 6, 7, 8])")
    return out


# -------------------------------------------------------------------------------------------- part 2: sunspots
def _windows(series_scaled, years, window, horizon):
    """Inputs ``[N, window, 1]``, targets ``[N, horizon]`` and the year of each window's first target."""
    from jaxrnn import data

    xs, ys = data.windows(series_scaled, window, horizon)
    xs, ys = np.asarray(xs), np.asarray(ys)
    if xs.ndim == 2:
        xs = xs[..., None]
    ys = ys.reshape(ys.shape[0], horizon)
    first_year = years[window : window + len(ys)]
    return xs.astype(np.float32), ys.astype(np.float32), first_year


def part_sunspots(ctx: Context) -> dict:
    from jaxrnn import train

    years, spots = load_sunspots()
    window, horizon = int(ctx["window"]), int(ctx["horizon"])
    train_mask = years < ctx["train_end"]
    scaler = _scaler(spots[train_mask])
    scaled = _tf(scaler, spots)
    xs, ys, first_year = _windows(scaled, years, window, horizon)
    last_target_year = first_year + horizon - 1
    tr = last_target_year < ctx["train_end"]
    va = (first_year >= ctx["train_end"]) & (last_target_year < ctx["val_end"])
    te = first_year >= ctx["val_end"]
    ctx.log(
        f"sunspots: {len(spots)} years, windows of {window} -> next {horizon}: {tr.sum()} train, {va.sum()} "
        f"validation, {te.sum()} test (forecasts from {int(first_year[te][0])})"
    )
    truth_te = _inv(scaler, ys[te])  # [N, horizon] sunspot units
    last_obs_te = _inv(scaler, xs[te][:, -1, 0])  # persistence: this year's value for every lead
    persistence = np.repeat(last_obs_te[:, None], horizon, axis=1)
    rmse = lambda pred: np.sqrt(np.mean((pred - truth_te) ** 2, axis=0))  # noqa: E731
    results = {"persistence": {"rmse": rmse(persistence), "pred": persistence}}
    for j, (name, cell) in enumerate(CELLS.items()):
        key = jax.random.fold_in(jax.random.key(ctx.seed + 1), j)
        k_init, k_train = jax.random.split(key)
        options = {"forget_bias": float(ctx["lstm_forget_bias"])} if cell is jaxrnn.lstm else {}
        params = _model(cell, k_init, 1, ctx["hidden"], horizon, **options)
        predict = _predict(cell)

        def loss_fn(p, batch, predict=predict):
            x, y = batch
            return jnp.mean((predict(p, x) - y) ** 2)

        schedule = optax.cosine_decay_schedule(ctx["lr"], ctx["epochs"] * (int(tr.sum()) // ctx["batch_size"]), 0.05)
        optimizer = optax.adam(schedule)
        state = train.init_state(params, optimizer, k_train)
        step = train.make_train_step(loss_fn, optimizer, clip_norm=1.0)
        state, history = jaxrnn.train.fit_arrays(
            state,
            step,
            (xs[tr], ys[tr]),
            batch_size=ctx["batch_size"],
            epochs=ctx["epochs"],
            eval_fn=loss_fn,
            eval_arrays=(jnp.asarray(xs[va]), jnp.asarray(ys[va])),
            patience=ctx["patience"],
            seed=ctx.seed * 1000 + j,
            compiler_options=ctx.compiler_options,
        )
        pred = _inv(scaler, np.asarray(predict(state.params, jnp.asarray(xs[te]))))
        results[name] = {"rmse": rmse(pred), "pred": pred, "history": history}
        ctx.log(
            f"sunspots {name:5s}: test RMSE by lead {np.round(rmse(pred), 1).tolist()} vs persistence "
            f"{np.round(results['persistence']['rmse'], 1).tolist()} ({len(history)} epochs)"
        )
    return {
        "results": results,
        "truth": truth_te,
        "first_year": first_year[te],
        "years": years,
        "spots": spots,
        "horizon": horizon,
        "window": window,
    }


# ---------------------------------------------------------------------------------------------------- figures
def _figures(ctx: Context, frames: dict, sun: dict) -> None:
    plt = ctx.plt()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    t = np.arange(len(SERIES))
    ax.plot(t, SERIES, "o-", color="black", lw=1, label="series -3..8")
    ax.axvspan(-0.4, 3.5, color="tab:gray", alpha=0.12)
    ax.axvspan(3.5, 7.5, color="tab:orange", alpha=0.12)
    ax.axvspan(7.5, 11.4, color="tab:green", alpha=0.12)
    for x, label in [(1.5, "past"), (5.5, "current"), (9.5, "target")]:
        ax.text(x, 9.3, label, ha="center")
    ax.plot(t[8:], frames["seed_step_prediction"], "s--", color="tab:purple", label="seed's Elman step (untrained)")
    for (name, pred), dx, marker in zip(frames["cells"].items(), (-0.18, 0.0, 0.18), ("v", "o", "^")):
        ax.plot(t[8:] + dx, pred, marker, ms=7, color=COLORS[name], label=f"{name}, trained, inverse-scaled")
    ax.set(title="Seed 001's frames example", xlabel="position in the series", ylabel="value", ylim=(-4.5, 10.3))
    ax.legend(loc="center left", fontsize=8)
    ctx.save(fig, "frames.png")

    res, first_year, horizon = sun["results"], sun["first_year"], sun["horizon"]
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), gridspec_kw={"height_ratios": [1.4, 1]})
    ax = axes[0]
    years, spots = sun["years"], sun["spots"]
    shown = years >= first_year[0] - 15
    ax.plot(years[shown], spots[shown], color="black", lw=1.8, label="observed")
    lead = horizon - 1
    for name in ("persistence", *CELLS):
        ax.plot(
            first_year + lead,
            res[name]["pred"][:, lead],
            color=COLORS[name],
            lw=1.2,
            ls="--" if name == "persistence" else "-",
            label=f"{name} (RMSE {res[name]['rmse'][lead]:.1f})",
        )
    ax.set(
        title=f"Yearly sunspot numbers: forecasts {horizon} years ahead on the test years (window {sun['window']} years)",
        xlabel="year",
        ylabel="sunspot number",
    )
    ax.legend(ncol=2, fontsize=8, loc="upper right")
    ax = axes[1]
    leads = np.arange(1, horizon + 1)
    w = 0.2
    for k, name in enumerate(("persistence", *CELLS)):
        ax.bar(leads + (k - 1.5) * w, res[name]["rmse"], w, color=COLORS[name], label=name)
    ax.set_xticks(leads)
    ax.set(title="Test RMSE by lead time", xlabel="years ahead", ylabel="RMSE (sunspot number)")
    ax.legend(ncol=4, fontsize=8)
    ctx.save(fig, "sunspots_forecast.png")


def run(config: dict | None = None) -> dict:
    check_config(config or {})
    ctx = Context("sequence_forecast", config, DEFAULTS, QUICK)
    frames = part_frames(ctx)
    sun = part_sunspots(ctx)
    _figures(ctx, frames, sun)
    res = sun["results"]
    best = min(CELLS, key=lambda n: float(np.mean(res[n]["rmse"])))
    metrics = {
        "frames_seed_step_prediction": frames["seed_step_prediction"],
        "frames_trained_prediction": frames["cells"],
        "frames_max_abs_error": max(float(np.max(np.abs(p - SERIES[8:]))) for p in frames["cells"].values()),
        "horizon": sun["horizon"],
        "window": sun["window"],
        "rmse_by_lead": {name: r["rmse"] for name, r in res.items()},
        "rmse_mean": {name: float(np.mean(r["rmse"])) for name, r in res.items()},
        "best_cell": best,
        "best_beats_persistence": bool(np.mean(res[best]["rmse"]) < np.mean(res["persistence"]["rmse"])),
        # per cell: below persistence at every lead (lead 1, where persistence is strongest, included)
        "beats_persistence_every_lead": {n: bool(np.all(res[n]["rmse"] < res["persistence"]["rmse"])) for n in CELLS},
    }
    rows = [
        {
            "model": name,
            "RMSE lead 1": r["rmse"][0],
            f"RMSE lead {sun['horizon']}": r["rmse"][-1],
            "RMSE mean": float(np.mean(r["rmse"])),
        }
        for name, r in res.items()
    ]
    return ctx.finish(metrics, rows)
