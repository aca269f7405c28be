"""Seed 001's single LSTM step, done with jaxrnn, and the gates over a whole sequence.

The seed walks one LSTM step by hand: an 8-unit cell state ``[0.1, -0.3, 1, -1, 0.7, 0.1, 0.02, 0.15]``, the input
vector ``[1, 2, 3, 4, 5, 6]`` scaled from (-2, 9) to (-1, 1), the forget, input ("remember"), candidate and output
gates one at a time, a dense tanh head to 3 outputs, and the inverse scaling back to the target's units (target
``[7, 8, 9]``). We do the same, gate by gate on the concatenated vector ``[x_t, h_{t-1}]`` in numpy (the seed's
``np.dot(W, v) + b`` with ``W [8, 14]``), and check that ``jaxrnn.lstm.step`` gives the same numbers.

(The seed's ``sigmoid`` is ``1 / 1 - e^{-v}``, i.e. ``1 - e^{-v}``, which is why its input gate printed negative
values; here every gate is a true sigmoid.)

Then a heatmap of every gate's activation over a whole sequence: an 8-unit LSTM trained briefly for one-step-ahead
forecasting of the yearly sunspot numbers, read with :func:`jaxrnn.diagnostics.gate_traces`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
from experiments._common import Context
from jaxrnn.datasets import load_sunspots

CELL_STATE = [0.1, -0.3, 1.0, -1.0, 0.7, 0.1, 0.02, 0.15]
INPUT = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
TARGET = [7.0, 8.0, 9.0]
GATE_NAMES = {"i": "input gate i", "f": "forget gate f", "g": "candidate g", "o": "output gate o", "c": "cell state c"}

DEFAULTS = {"hidden": 8, "epochs": 300, "lr": 1e-2, "train_until": 1900}
QUICK = {"epochs": 80}


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def walkthrough(ctx: Context) -> dict:
    from jaxrnn import data

    H = ctx["hidden"]
    scaler = data.MinMaxScaler(feature_range=(-1, 1))
    scaler.fit(np.arange(-2.0, 10.0)[:, None])  # the seed's range: old_min = -2, old_max = 9
    x_scaled = np.asarray(scaler.transform(np.asarray(INPUT)[:, None]))[:, 0]

    with jax.enable_x64(True):
        k_cell, k_h, k_dense = jax.random.split(jax.random.key(ctx.seed), 3)
        # the seed draws every weight with np.random.rand: uniform on [0, 1)
        params = jaxrnn.LSTMParams(
            w_x=jax.random.uniform(jax.random.fold_in(k_cell, 0), (len(INPUT), 4 * H), jnp.float64),
            w_h=jax.random.uniform(jax.random.fold_in(k_cell, 1), (H, 4 * H), jnp.float64),
            b=jax.random.uniform(jax.random.fold_in(k_cell, 2), (4 * H,), jnp.float64),
        )
        h_prev = np.asarray(jax.random.uniform(k_h, (H,), jnp.float64, -0.2, 0.2))
        c_prev = np.asarray(CELL_STATE, np.float64)
        head = jaxrnn.DenseParams(
            w=jax.random.uniform(jax.random.fold_in(k_dense, 0), (H, len(TARGET)), jnp.float64),
            b=jax.random.uniform(jax.random.fold_in(k_dense, 1), (len(TARGET),), jnp.float64),
        )

        # gate by gate, the seed's way: W [H, D+H] acting on the concatenated v = [x_t, h_{t-1}]
        v = np.concatenate([x_scaled, h_prev])
        W = np.concatenate([np.asarray(params.w_x), np.asarray(params.w_h)], axis=0).T  # [4H, D+H]
        b = np.asarray(params.b)
        blocks = {name: (W[k * H : (k + 1) * H], b[k * H : (k + 1) * H]) for k, name in enumerate("ifgo")}
        f_t = _sigmoid(blocks["f"][0] @ v + blocks["f"][1])
        i_t = _sigmoid(blocks["i"][0] @ v + blocks["i"][1])
        g_t = np.tanh(blocks["g"][0] @ v + blocks["g"][1])
        o_t = _sigmoid(blocks["o"][0] @ v + blocks["o"][1])
        c_after_forget = c_prev * f_t
        c_t = c_after_forget + i_t * g_t
        h_t = o_t * np.tanh(c_t)
        dense_out = np.tanh(h_t @ np.asarray(head.w) + np.asarray(head.b))
        manual = {"f": f_t, "i": i_t, "g": g_t, "o": o_t, "c": c_t, "h": h_t}

        # the same with jaxrnn
        carry = jaxrnn.LSTMState(h=jnp.asarray(h_prev), c=jnp.asarray(c_prev))
        gates = jaxrnn.cells.lstm.gates(params, carry, jnp.asarray(x_scaled))
        new_carry, h_lib = jaxrnn.lstm.step(params, carry, jnp.asarray(x_scaled))
        out_lib = jnp.tanh(jaxrnn.dense.apply(head, h_lib))
        lib = {
            "f": gates.f,
            "i": gates.i,
            "g": gates.g,
            "o": gates.o,
            "c": new_carry.c,
            "h": new_carry.h,
        }
        lib = {k: np.asarray(val) for k, val in lib.items()}
        out_lib = np.asarray(out_lib)
    diffs = {k: float(np.max(np.abs(manual[k] - lib[k]))) for k in manual}
    diffs["dense"] = float(np.max(np.abs(dense_out - out_lib)))
    prediction = np.asarray(scaler.inverse_transform(out_lib[:, None]))[:, 0]

    fmt = lambda a: "[" + ", ".join(f"{float(u):6.3f}" for u in a) + "]"  # noqa: E731
    ctx.log("one LSTM step, the seed's walk-through (float64):")
    lines = [
        f"  input [1..6] scaled (-2, 9) -> (-1, 1): {fmt(x_scaled)}",
        f"  h_(t-1) (8 units):                      {fmt(h_prev)}",
        f"  concatenated v = [x_t, h_(t-1)]: {len(v)} values",
        f"  c_(t-1) (the seed's cell state):         {fmt(c_prev)}",
        f"  forget gate   f = σ(W_f v + b_f):        {fmt(f_t)}",
        f"  c after forgetting  c·f:                 {fmt(c_after_forget)}",
        f"  input gate    i = σ(W_i v + b_i):        {fmt(i_t)}",
        f"  candidate     g = tanh(W_g v + b_g):     {fmt(g_t)}",
        f"  new cell state c = c·f + i·g:            {fmt(c_t)}",
        f"  output gate   o = σ(W_o v + b_o):        {fmt(o_t)}",
        f"  output        h = o·tanh(c):             {fmt(h_t)}",
        f"  dense head tanh(h W + b), 3 outputs:     {fmt(dense_out)}",
        f"  inverse scaling to (-2, 9):              {fmt(prediction)}   target {TARGET}",
        "  jaxrnn.lstm.step vs gate by gate, max |difference|: "
        + ", ".join(f"{k} {val:.1e}" for k, val in diffs.items()),
    ]
    for line in lines:
        ctx.log(line)
    return {
        "x_scaled": x_scaled,
        "gates": {k: manual[k] for k in "figo"},
        "c_after_forget": c_after_forget,
        "c_new": c_t,
        "h_new": h_t,
        "dense_output": dense_out,
        "prediction": prediction,
        "max_diff": diffs,
        "max_diff_all": max(diffs.values()),
        "lines": lines,
    }


def gate_heatmap(ctx: Context) -> dict:
    from jaxrnn import data, diagnostics, train

    years, spots = load_sunspots()
    scaler = data.MinMaxScaler(feature_range=(-1, 1))
    n_train = int(np.sum(years < ctx["train_until"]))
    scaler.fit(spots[:n_train, None])
    series = jnp.asarray(np.asarray(scaler.transform(spots[:, None])), jnp.float32)  # [T, 1]
    xs, ys = series[None, :-1], series[None, 1:]
    H = ctx["hidden"]
    k_init, k_head, k_train = jax.random.split(jax.random.key(ctx.seed + 7), 3)
    params = {
        "lstm": jaxrnn.lstm.init(k_init, 1, H, dtype=jnp.float32),
        "head": jaxrnn.dense.init(k_head, H, 1, dtype=jnp.float32),
    }
    cut = n_train - 1

    def loss_fn(p, batch):
        x, y = batch
        _, hs = jaxrnn.rnn(jaxrnn.lstm, p["lstm"], x)
        return jnp.mean((jaxrnn.dense.apply(p["head"], hs) - y) ** 2)

    optimizer = optax.adam(ctx["lr"])
    state = train.init_state(params, optimizer, k_train)
    step = train.make_train_step(loss_fn, optimizer, clip_norm=1.0)
    state, history = train.fit(state, step, [(xs[:, :cut], ys[:, :cut])], epochs=ctx["epochs"])
    test_mse = float(loss_fn(state.params, (xs[:, cut:], ys[:, cut:])))
    ctx.log(
        f"8-unit LSTM, one-step-ahead sunspots: train MSE {history[-1]['train_loss']:.4f}, later years {test_mse:.4f}"
    )
    traces = diagnostics.gate_traces(jaxrnn.lstm, state.params["lstm"], xs)
    traces = {name: np.asarray(getattr(traces, name))[0] for name in "ifgoc"}  # [T, H]
    return {"years": years[:-1], "series": spots[:-1], "traces": traces, "test_mse": test_mse, "cut_year": years[cut]}


def _figures(ctx: Context, step: dict, heat: dict) -> None:
    plt = ctx.plt()
    # the single step
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [2.2, 1]})
    ax = axes[0]
    rows = [
        ("c_(t-1)", np.asarray(CELL_STATE)),
        ("f", step["gates"]["f"]),
        ("i", step["gates"]["i"]),
        ("g", step["gates"]["g"]),
        ("o", step["gates"]["o"]),
        ("c_t", step["c_new"]),
        ("h_t", step["h_new"]),
    ]
    mat = np.stack([r[1] for r in rows])
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.grid(False)
    for (r, c), val in np.ndenumerate(mat):
        ax.text(c, r, f"{val:.2f}", ha="center", va="center", fontsize=8, color="white" if abs(val) > 0.6 else "black")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_xticks(range(mat.shape[1]), [f"unit {k}" for k in range(mat.shape[1])])
    ax.set_title(f"One LSTM step (seed 001): jaxrnn.lstm.step = gate by gate (max |diff| {step['max_diff_all']:.0e})")
    fig.colorbar(im, ax=ax, fraction=0.03)
    ax = axes[1]
    xs = np.arange(3)
    ax.bar(xs - 0.2, TARGET, width=0.4, label="target [7, 8, 9]", color="tab:gray")
    ax.bar(xs + 0.2, step["prediction"], width=0.4, label="untrained prediction", color="tab:blue")
    ax.set_xticks(xs, ["output 1", "output 2", "output 3"])
    ax.set(title="Dense head + inverse scaling", ylabel="value (target units)", ylim=(0, 12))
    ax.legend(loc="upper left", ncol=2, fontsize=8)
    ctx.save(fig, "lstm_step.png")

    # heatmap over a whole sequence
    traces, years = heat["traces"], heat["years"]
    fig, axes = plt.subplots(6, 1, figsize=(11, 9.5), sharex=True, gridspec_kw={"height_ratios": [1.3, 1, 1, 1, 1, 1]})
    ax = axes[0]
    ax.plot(years, heat["series"], color="black", lw=1)
    ax.axvline(heat["cut_year"], color="tab:red", ls="--", lw=1, label="end of training data")
    ax.set(ylabel="sunspots", title="Gate activations of a trained 8-unit LSTM reading the yearly sunspot series")
    ax.legend(loc="upper left")
    extent = [years[0] - 0.5, years[-1] + 0.5, traces["i"].shape[1] - 0.5, -0.5]
    for ax, name in zip(axes[1:], "ifgoc"):
        vals = traces[name].T
        signed = name in "gc"
        lim = max(1.0, float(np.abs(vals).max())) if name == "c" else 1.0
        im = ax.imshow(
            vals,
            aspect="auto",
            cmap="RdBu_r" if signed else "viridis",
            vmin=-lim if signed else 0.0,
            vmax=lim,
            extent=extent,
            interpolation="nearest",
        )
        ax.grid(False)
        ax.set_ylabel(f"{name}\nunit")
        ax.set_title(GATE_NAMES[name], fontsize=9, loc="left")
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    spacer = fig.colorbar(im, ax=axes[0], fraction=0.02, pad=0.01)  # keeps the series aligned with the heatmaps
    spacer.ax.set_visible(False)
    axes[0].set_xlim(extent[0], extent[1])
    axes[-1].set_xlabel("year")
    ctx.save(fig, "lstm_gates_heatmap.png")


def run(config: dict | None = None) -> dict:
    ctx = Context("lstm_walkthrough", config, DEFAULTS, QUICK)
    step = walkthrough(ctx)
    heat = gate_heatmap(ctx)
    _figures(ctx, step, heat)
    metrics = {
        "input_scaled": step["x_scaled"],
        "gates": step["gates"],
        "cell_state_new": step["c_new"],
        "h_new": step["h_new"],
        "dense_output": step["dense_output"],
        "prediction_inverse_scaled": step["prediction"],
        "target": TARGET,
        "step_vs_gate_by_gate_max_diff": step["max_diff"],
        "step_equals_gate_by_gate": bool(step["max_diff_all"] < 1e-12),
        "heatmap_model_later_years_mse_scaled": heat["test_mse"],
        "gate_mean": {name: float(np.mean(t)) for name, t in heat["traces"].items()},
    }
    rows = [
        {"quantity": name, "units 0..7": "[" + ", ".join(f"{u:.3f}" for u in step["gates"][name]) + "]"}
        for name in "figo"
    ]
    rows += [
        {"quantity": "c_t", "units 0..7": "[" + ", ".join(f"{u:.3f}" for u in step["c_new"]) + "]"},
        {"quantity": "h_t", "units 0..7": "[" + ", ".join(f"{u:.3f}" for u in step["h_new"]) + "]"},
        {
            "quantity": "prediction (target 7, 8, 9)",
            "units 0..7": "[" + ", ".join(f"{u:.2f}" for u in step["prediction"]) + "]",
        },
        {"quantity": "max |step - gate by gate|", "units 0..7": f"{step['max_diff_all']:.1e}"},
    ]
    return ctx.finish(metrics, rows)
