"""Seed 002's aim, recognising hand-written digits, with a recurrent network reading the image row by row.

scikit-learn's bundled 8x8 digits (1797 images, the UCI optdigits test set; no download): each image is a sequence of
8 time steps, one row of 8 pixels per step, scaled to [0, 1]. A many-to-one model reads the rows in order and a
dense softmax head classifies the last hidden state. Elman, LSTM and GRU get the same size, budget and split
(70% train, 15% validation for early stopping, 15% test).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
from experiments._common import Context
from jaxrnn.datasets import load_digits

CELLS = {"elman": jaxrnn.elman, "lstm": jaxrnn.lstm, "gru": jaxrnn.gru}
COLORS = {"elman": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
DEFAULTS = {"hidden": 64, "batch_size": 64, "epochs": 40, "patience": 8, "lr": 5e-3, "fractions": (0.7, 0.15, 0.15)}
QUICK = {"hidden": 32, "epochs": 5, "patience": None, "lr": 1e-2}


def train_cell(ctx: Context, name: str, cell, split, key) -> dict:
    from jaxrnn import train

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = split
    k_init, k_head, k_train = jax.random.split(key, 3)
    params = {
        "rnn": cell.init(k_init, 8, ctx["hidden"], dtype=jnp.float32),
        "head": jaxrnn.dense.init(k_head, ctx["hidden"], 10, dtype=jnp.float32),
    }

    def logits_fn(p, xs):
        _, ys = jaxrnn.rnn(cell, p["rnn"], xs)
        return jaxrnn.dense.apply(p["head"], jaxrnn.last_valid(ys))

    def loss_fn(p, batch):
        xs, y = batch
        logits = logits_fn(p, xs)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}

    optimizer = optax.adam(ctx["lr"])
    state = train.init_state(params, optimizer, k_train)
    step = train.make_train_step(loss_fn, optimizer, clip_norm=1.0)

    state, history = jaxrnn.train.fit_arrays(
        state,
        step,
        (x_tr, y_tr),
        batch_size=ctx["batch_size"],
        epochs=ctx["epochs"],
        eval_fn=loss_fn,
        eval_arrays=(x_va, y_va),
        patience=ctx["patience"],
        seed=ctx.seed * 1000 + list(CELLS).index(name),
        compiler_options=ctx.compiler_options,
    )
    pred = np.asarray(jnp.argmax(logits_fn(state.params, x_te), -1))
    acc = float(np.mean(pred == np.asarray(y_te)))
    ctx.log(f"{name:5s}: test accuracy {acc:.4f} after {len(history)} epochs")
    return {
        "test_acc": acc,
        "pred": pred,
        "val_acc_curve": np.array([h.get("eval_accuracy", np.nan) for h in history], float),
        "train_loss_curve": np.array([h.get("train_loss", np.nan) for h in history], float),
        "epochs_run": len(history),
        "params": int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(state.params))),
    }


def _figures(ctx: Context, results: dict, x_te, y_te) -> None:
    plt = ctx.plt()
    fig = plt.figure(figsize=(13, 4.2))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.3, 0.9, 1.1])
    ax = fig.add_subplot(grid[0])
    for name, r in results.items():
        ax.plot(np.arange(1, len(r["val_acc_curve"]) + 1), 100 * r["val_acc_curve"], color=COLORS[name], label=name)
    ax.set(title="Validation accuracy while training", xlabel="epoch", ylabel="accuracy (%)")
    ax.legend()
    ax = fig.add_subplot(grid[1])
    names = list(results)
    errors = [100 * (1 - results[n]["test_acc"]) for n in names]
    bars = ax.bar(names, errors, color=[COLORS[n] for n in names])
    for bar, err in zip(bars, errors):
        ax.text(bar.get_x() + bar.get_width() / 2, err, f"{err:.1f}%\n(acc {100 - err:.1f}%)", ha="center", va="bottom")
    ax.set(title=f"Test error (n={len(y_te)}; chance 90%)", ylabel="error rate (%)", ylim=(0, 1.35 * max(errors) + 0.5))
    sub = grid[2].subgridspec(3, 4, hspace=0.5, wspace=0.15)
    best = max(results, key=lambda n: results[n]["test_acc"])
    pred = results[best]["pred"]
    wrong = np.flatnonzero(pred != np.asarray(y_te))
    right = np.flatnonzero(pred == np.asarray(y_te))
    show = np.concatenate([wrong[:6], right[: 12 - min(6, len(wrong))]])[:12]
    for k, idx in enumerate(show):
        a = fig.add_subplot(sub[k // 4, k % 4])
        a.imshow(np.asarray(x_te[idx]), cmap="gray_r", vmin=0, vmax=1)
        ok = pred[idx] == int(y_te[idx])
        a.set_title(
            f"{pred[idx]}" + ("" if ok else f" (true {int(y_te[idx])})"), fontsize=8, color="black" if ok else "red"
        )
        a.axis("off")
    fig.text(
        0.82,
        0.01,
        f"{best} on test images (red: wrong); one pixel row per time step",
        ha="center",
        va="bottom",
        fontsize=9,
    )
    ctx.save(fig, "sequential_digits.png")


def run(config: dict | None = None) -> dict:
    from jaxrnn import data

    ctx = Context("sequential_digits", config, DEFAULTS, QUICK)
    images, labels = load_digits()
    xs = (images / 16.0).astype(np.float32)  # [N, 8 rows = time steps, 8 pixels = features]
    split = data.split(jax.random.key(ctx.seed), xs, labels.astype(np.int32), fractions=ctx["fractions"])
    split = [tuple(jnp.asarray(a) for a in part) for part in split]
    ctx.log(f"digits: {len(labels)} images as 8-step sequences of 8 pixels; split {[len(p[1]) for p in split]}")
    results = {}
    for j, (name, cell) in enumerate(CELLS.items()):
        results[name] = train_cell(ctx, name, cell, split, jax.random.fold_in(jax.random.key(ctx.seed + 1), j))
    x_te, y_te = split[2]
    _figures(ctx, results, x_te, y_te)
    metrics = {
        "test_accuracy": {n: r["test_acc"] for n, r in results.items()},
        "epochs_run": {n: r["epochs_run"] for n, r in results.items()},
        "n_test": len(y_te),
    }
    rows = [
        {
            "cell": n,
            "hidden": ctx["hidden"],
            "parameters": r["params"],
            "epochs": r["epochs_run"],
            "test accuracy": r["test_acc"],
        }
        for n, r in results.items()
    ]
    return ctx.finish(metrics, rows)
