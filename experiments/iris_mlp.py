"""Seed 000: the sigmoid MLP on Iris, trained by the hand-derived rule and by ``jax.grad``; then what it could not reach.

Part 1 is the seed's network exactly: 4 inputs plus a bias, 10 sigmoid hidden units, 2 sigmoid outputs for 3 classes
(the third class scores ``1 - y1 - y2``), squared error, full-batch gradient descent with eta = 0.02 and the seed's
uniform(-1, 1) initialisation, on the raw features. It is trained twice from the same start, once with
``jaxrnn.analytic.mlp_backprop`` (the seed's layer-by-layer rule) and once with ``jax.grad`` of
``jaxrnn.analytic.mlp_loss``, in float64: the two trajectories agree to rounding.

Part 2 is what the seed could not reach: standardised inputs, a softmax output over 3 classes with cross-entropy,
Adam, a held-out split with early stopping on the validation loss, and the test accuracy on data never trained on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
from experiments._common import Context
from jaxrnn.datasets import IRIS_CLASSES, load_iris
from jaxrnn.layers import DenseParams
from jaxrnn.mlp import MLPParams

DEFAULTS = {
    "seed_iters": 300,  # seed part: full-batch GD iterations (the seed printed iterations 156..161)
    "eta": 0.02,
    "hidden": 16,  # part 2
    "lr": 0.01,
    "batch_size": 16,
    "epochs": 300,
    "patience": 40,
    "fractions": (0.6, 0.2, 0.2),
}
QUICK = {"seed_iters": 200, "epochs": 60, "patience": 20, "lr": 0.02}


def seed_params(key, sizes=(4, 10, 2)) -> MLPParams:
    """The seed's initialisation: every weight and bias uniform in (-1, 1)."""
    layers = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        kw, kb = jax.random.split(k)
        layers.append(
            DenseParams(
                w=jax.random.uniform(kw, (n_in, n_out), minval=-1.0, maxval=1.0),
                b=jax.random.uniform(kb, (n_out,), minval=-1.0, maxval=1.0),
            )
        )
    return MLPParams(layers=tuple(layers), activation="sigmoid")


def seed_scores(params, x):
    """The seed's class scores: two sigmoid outputs and ``1 - sum`` for the third class."""
    y_hat = jax.nn.sigmoid(jaxrnn.mlp.apply(params, x))
    return jnp.concatenate([y_hat, 1.0 - jnp.sum(y_hat, axis=-1, keepdims=True)], axis=-1)


def _gd_trajectory(params, x, y, grad_fn, eta, iters):
    """Full-batch gradient descent, all iterations in one compiled ``lax.scan``.

    Returns the final params and, per iteration (before its update), the loss, the training accuracy and the
    flattened params."""
    from jaxrnn import analytic

    def one(p, _):
        loss = analytic.mlp_loss(p, x, y, loss="squared_error")
        acc = jnp.mean(jnp.argmax(seed_scores(p, x), axis=-1) == y)
        flat = jnp.concatenate([leaf.ravel() for leaf in jax.tree_util.tree_leaves(p)])
        grads = grad_fn(p)
        return jax.tree.map(lambda w, g: w - eta * g, p, grads), (loss, acc, flat)

    final, (losses, accs, snapshots) = jax.jit(lambda p: jax.lax.scan(one, p, None, length=iters))(params)
    return final, np.asarray(losses), np.asarray(accs), np.asarray(snapshots)


def part_seed(ctx: Context, x_np, y_np):
    from jaxrnn import analytic

    with jax.enable_x64(True):
        x = jnp.asarray(x_np, jnp.float64)
        y = jnp.asarray(y_np)
        p0 = seed_params(jax.random.key(ctx.seed))
        p0 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), p0)
        eta, iters = ctx["eta"], ctx["seed_iters"]
        ctx.log(f"seed network 4-10-2 sigmoid, squared error, GD eta={eta}, {iters} iterations, float64")
        pa, loss_a, acc_a, traj_a = _gd_trajectory(
            p0, x, y, lambda p: analytic.mlp_backprop(p, x, y, loss="squared_error"), eta, iters
        )
        pg, loss_g, acc_g, traj_g = _gd_trajectory(
            p0, x, y, jax.grad(lambda p: analytic.mlp_loss(p, x, y, loss="squared_error")), eta, iters
        )
        g_a = analytic.mlp_backprop(p0, x, y, loss="squared_error")
        g_g = jax.grad(lambda p: analytic.mlp_loss(p, x, y, loss="squared_error"))(p0)
        grad_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_g)))
        scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g_a))
    param_diff = np.max(np.abs(traj_a - traj_g), axis=1)
    ctx.log(
        f"analytic vs jax.grad: max |param difference| over the trajectory {param_diff.max():.2e}, "
        f"first-step gradient difference {grad_diff:.2e} (gradient scale {scale:.2e})"
    )
    ctx.log(f"final training accuracy {acc_a[-1]:.3f} (the seed printed about 0.82), loss {loss_a[-1]:.4f}")
    return {
        "iters": iters,
        "loss_analytic": loss_a,
        "loss_autodiff": loss_g,
        "acc_analytic": acc_a,
        "acc_autodiff": acc_g,
        "param_diff": param_diff,
        "max_param_diff": float(param_diff.max()),
        "max_loss_diff": float(np.max(np.abs(loss_a - loss_g))),
        "first_grad_diff": grad_diff,
        "train_acc": float(acc_a[-1]),
    }


def part_modern(ctx: Context, x_np, y_np):
    from jaxrnn import analytic, data, train

    key = jax.random.key(ctx.seed)
    k_split, k_init, k_train, k_batches = jax.random.split(key, 4)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = _split3(data.split(k_split, x_np, y_np, fractions=ctx["fractions"]))
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    norm = lambda a: jnp.asarray((a - mean) / std, jnp.float32)  # noqa: E731
    x_tr, x_va, x_te = norm(x_tr), norm(x_va), norm(x_te)
    y_tr, y_va, y_te = (jnp.asarray(a) for a in (y_tr, y_va, y_te))
    ctx.log(f"split: {len(y_tr)} train / {len(y_va)} validation / {len(y_te)} test (standardised on train)")

    params = jaxrnn.mlp.init(k_init, [4, ctx["hidden"], 3], activation="tanh", dtype=jnp.float32)

    def loss_fn(p, batch):
        xb, yb = batch
        logits = jaxrnn.mlp.apply(p, xb)
        loss = analytic.mlp_loss(p, xb, yb, loss="softmax_cross_entropy", reduction="mean")
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == yb)}

    optimizer = optax.adam(ctx["lr"])
    state = train.init_state(params, optimizer, k_train)
    step = train.make_train_step(loss_fn, optimizer)

    def epoch_batches(epoch):
        return data.batches(jax.random.fold_in(k_batches, epoch), x_tr, y_tr, batch_size=ctx["batch_size"])

    state, history = train.fit(
        state,
        step,
        epoch_batches,
        epochs=ctx["epochs"],
        eval_data=[(x_va, y_va)],
        eval_fn=loss_fn,
        patience=ctx["patience"],
        restore_best=True,
    )
    p = state.params
    acc = lambda xs, ys: float(jnp.mean(jnp.argmax(jaxrnn.mlp.apply(p, xs), -1) == ys))  # noqa: E731
    pred = np.asarray(jnp.argmax(jaxrnn.mlp.apply(p, x_te), -1))
    confusion = np.zeros((3, 3), int)
    for t, q in zip(np.asarray(y_te), pred):
        confusion[t, q] += 1
    result = {
        "history": history,
        "train_acc": acc(x_tr, y_tr),
        "val_acc": acc(x_va, y_va),
        "test_acc": acc(x_te, y_te),
        "confusion": confusion,
        "n_test": len(y_te),
        "epochs_run": len(history),
    }
    ctx.log(
        f"softmax MLP 4-{ctx['hidden']}-3 + Adam: train {result['train_acc']:.3f}, validation "
        f"{result['val_acc']:.3f}, held-out test {result['test_acc']:.3f} ({len(history)} epochs)"
    )
    return result


def _split3(parts):
    """``data.split`` output as ``((x, y), (x, y), (x, y))`` whichever way it nests them."""
    parts = list(parts)
    if len(parts) == 3 and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in parts):
        return [tuple(np.asarray(a) for a in p) for p in parts]
    if len(parts) == 2 and all(isinstance(p, (tuple, list)) and len(p) == 3 for p in parts):  # (xs, ys)
        xs, ys = parts
        return [(np.asarray(xs[i]), np.asarray(ys[i])) for i in range(3)]
    raise TypeError(f"unexpected layout from jaxrnn.data.split: {type(parts)}")


def _history_series(history, key):
    return np.array([float(h[key]) if key in h and h[key] is not None else np.nan for h in history])


def _figures(ctx: Context, seed, modern):
    plt = ctx.plt()
    it = np.arange(seed["iters"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    ax.plot(it, seed["loss_analytic"], lw=2.5, color="tab:blue", label="analytic rule (mlp_backprop)")
    ax.plot(it, seed["loss_autodiff"], lw=1.2, ls="--", color="tab:orange", label="jax.grad")
    ax.set(title="Seed network: training loss", xlabel="gradient-descent iteration", ylabel="squared error")
    ax.legend()
    ax = axes[1]
    ax.plot(it, 100 * seed["acc_analytic"], lw=2.5, color="tab:blue", label="analytic rule")
    ax.plot(it, 100 * seed["acc_autodiff"], lw=1.2, ls="--", color="tab:orange", label="jax.grad")
    ax.axhline(82, color="gray", ls=":", label="seed's printout (~82%)")
    ax.set(title="Seed network: training accuracy", xlabel="gradient-descent iteration", ylabel="accuracy (%)")
    ax.legend(loc="lower right")
    ax = axes[2]
    diff = np.maximum(seed["param_diff"], 1e-18)
    ax.semilogy(it, diff, color="tab:green")
    ax.set(
        title="Analytic vs jax.grad: max |Δparams|",
        xlabel="gradient-descent iteration",
        ylabel="max abs difference (float64)",
        ylim=(1e-18, 1e-6),
    )
    ctx.save(fig, "iris_seed_trajectories.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    hist = modern["history"]
    epochs = np.arange(1, len(hist) + 1)
    ax = axes[0]
    ax.plot(epochs, _history_series(hist, "train_loss"), label="train")
    ax.plot(epochs, _history_series(hist, "eval_loss"), label="validation")
    ax.set_yscale("log")
    ax.set(title="Softmax MLP + Adam: cross-entropy", xlabel="epoch", ylabel="loss (log scale)")
    ax.legend()
    ax = axes[1]
    cm = modern["confusion"]
    ax.imshow(cm, cmap="Blues")
    ax.grid(False)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(3), IRIS_CLASSES)
    ax.set_yticks(range(3), IRIS_CLASSES)
    ax.set(
        title=f"Held-out test: accuracy {100 * modern['test_acc']:.1f}% (n={modern['n_test']})",
        xlabel="predicted",
        ylabel="true",
    )
    ctx.save(fig, "iris_softmax_adam.png")


def run(config: dict | None = None) -> dict:
    ctx = Context("iris_mlp", config, DEFAULTS, QUICK)
    x, y = load_iris()
    seed = part_seed(ctx, x, y)
    modern = part_modern(ctx, x, y)
    _figures(ctx, seed, modern)
    metrics = {
        "seed_train_accuracy": seed["train_acc"],
        "seed_final_loss": float(seed["loss_analytic"][-1]),
        "analytic_vs_autodiff_max_param_diff": seed["max_param_diff"],
        "analytic_vs_autodiff_max_loss_diff": seed["max_loss_diff"],
        "analytic_vs_autodiff_first_grad_diff": seed["first_grad_diff"],
        "trajectories_identical": bool(seed["max_param_diff"] < 1e-9),
        "seed_loss_curve": seed["loss_analytic"][:: max(1, seed["iters"] // 50)],
        "softmax_train_accuracy": modern["train_acc"],
        "softmax_val_accuracy": modern["val_acc"],
        "test_accuracy": modern["test_acc"],
        "test_confusion": modern["confusion"],
        "epochs_run": modern["epochs_run"],
    }
    rows = [
        {
            "model": "seed: 4-10-2 sigmoid, SE, GD 0.02 (analytic)",
            "data": "all 150 (train)",
            "accuracy": seed["train_acc"],
            "note": f"jax.grad trajectory max |diff| {seed['max_param_diff']:.1e}",
        },
        {
            "model": f"4-{ctx['hidden']}-3 softmax, CE, Adam",
            "data": f"held-out test (n={modern['n_test']})",
            "accuracy": modern["test_acc"],
            "note": f"train {modern['train_acc']:.3f}, val {modern['val_acc']:.3f}",
        },
    ]
    return ctx.finish(metrics, rows)
