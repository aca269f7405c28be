"""Seeds 002 and 004: vanishing gradients, measured, and the adding problem that shows what they cost.

Part 1: the norm of ``dL_T/dh_t`` (how much the loss at the last step depends on the state at step ``t``) for an
Elman (tanh) RNN, an LSTM with forget bias 0 and 1, and a GRU, at initialisation, computed twice: by ``jax.grad``
through the scan and by the hand-derived BPTT of :mod:`jaxrnn.analytic` (``method="analytic"``), in float64. The two
curves coincide. All fall geometrically with distance; at initialisation, with zero biases, the LSTM's and GRU's gates
sit near 0.5 and their curves fall *faster* than the Elman RNN's (whose recurrent matrix is orthogonal); a forget bias
of 1 (f ≈ 0.73) is what makes the LSTM's fall slowest. The rate of that fall is predicted by the forward dynamics
alone: the top Lyapunov exponent λ₁ of the state recurrence (:func:`jaxrnn.diagnostics.lyapunov_spectrum`, the mean
log growth per step of the most-stretched perturbation) equals the fitted slope of ``log ‖dL_T/dh_t‖`` against
``t``, because BPTT multiplies the same Jacobians, transposed.

Part 2: the adding problem (Hochreiter & Schmidhuber 1997). Each input step is ``(value, marker)``; values are
uniform on [0, 1], exactly two markers are 1 (one in each half of the sequence), and the target is the sum of the
two marked values. Predicting the mean (1.0) gives MSE = Var(U1 + U2) = 1/6 ≈ 0.167; a model below that has
carried information across the sequence. We train each cell at several lengths T with the same budget.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
from experiments._common import Context

BASELINE_MSE = 1.0 / 6.0

CELLS = {
    "elman": (jaxrnn.elman, {}),
    "lstm (forget bias 0)": (jaxrnn.lstm, {"forget_bias": 0.0}),
    "lstm (forget bias 1)": (jaxrnn.lstm, {"forget_bias": 1.0}),
    "gru": (jaxrnn.gru, {}),
}
ADDING_CELLS = {
    "elman": (jaxrnn.elman, {}),
    "lstm": (jaxrnn.lstm, {"forget_bias": 1.0}),
    "gru": (jaxrnn.gru, {}),
}

DEFAULTS = {
    "flow_steps": 100,
    "flow_hidden": 64,
    "flow_input": 8,
    "flow_batch": 8,
    "lengths": [25, 50, 100, 200],
    "hidden": 32,
    "batch_size": 64,
    "steps_per_epoch": 50,
    "epochs": 16,
    "lr": 3e-3,
    "clip_norm": 1.0,
    "eval_size": 1000,
    "share_compile": False,
    "adding_cells": list(ADDING_CELLS),
}
QUICK = {
    "flow_steps": 40,
    "flow_hidden": 16,
    "flow_batch": 4,
    "lengths": [10, 30],
    "hidden": 16,
    "batch_size": 32,
    "steps_per_epoch": 40,
    "epochs": 5,
    "lr": 1e-2,
    "eval_size": 256,
    "share_compile": True,
    "adding_cells": ["lstm", "gru"],  # quick: the two that learn it; the full run adds the Elman RNN
}


# ------------------------------------------------------------------------------------------- part 1: gradient flow
def gradient_flows(ctx: Context) -> dict:
    from jaxrnn import diagnostics

    T, H, D, B = ctx["flow_steps"], ctx["flow_hidden"], ctx["flow_input"], ctx["flow_batch"]
    edge = max(T // 10, 1)  # steps of transient at either end: from the zero state, and next to the loss
    out = {}
    with jax.enable_x64(True):
        k_p = jax.random.key(ctx.seed)
        xs = jnp.asarray(np.random.default_rng(ctx.seed).standard_normal((B, T, D)))
        for name, (cell, options) in CELLS.items():
            params = cell.init(k_p, D, H, dtype=jnp.float64, **options)

            # both methods in one compiled function per cell
            @ctx.jit
            def both(p, x, cell=cell):
                auto = diagnostics.gradient_flow(cell, p, x, method="autodiff")
                ana = diagnostics.gradient_flow(cell, p, x, method="analytic")
                lyap = diagnostics.lyapunov_spectrum(cell, p, x, warmup=edge)
                return auto, ana, lyap

            auto, ana, lyap = both(params, xs)
            a, b = np.asarray(auto.dloss_dh, np.float64), np.asarray(ana.dloss_dh, np.float64)
            rel = float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)))
            # gradient decay per step: the slope of log‖dL/dh_t‖ away from the loss (the last `edge` steps are its
            # transient), as a growth rate so that it compares with λ₁ directly
            slope = float(np.polyfit(np.arange(T - edge), np.log(a[: T - edge]), 1)[0])
            spectrum = np.asarray(lyap, np.float64).mean(axis=0)
            out[name] = {
                "autodiff": a,
                "analytic": b,
                "dhT_dh_autodiff": np.asarray(auto.dhT_dh, np.float64),
                "max_rel_diff": rel,
                "ratio_first_last": float(a[0] / a[-1]),
                "grad_log_slope": -slope,
                "lyapunov_top": float(spectrum[0]),
                "lyapunov_spectrum": spectrum,
            }
            ctx.log(
                f"gradient flow {name:22s}: |dL/dh_0| / |dL/dh_T-1| = {a[0] / a[-1]:.3e}, analytic vs autodiff "
                f"max relative difference {rel:.1e}; gradient growth per step back {-slope:+.4f}, top Lyapunov "
                f"exponent {spectrum[0]:+.4f}"
            )
    return out


# ------------------------------------------------------------------------------------------ part 2: adding problem
def adding_batches(rng: np.random.Generator, count: int, batch: int, buffer: int, length: int):
    """``count`` adding-problem batches of length ``length <= buffer``, stacked: ``xs [count, B, buffer, 2]``,
    ``target [count, B, 1]``, ``lengths [count, B]``. One marker in each half of the first ``length`` steps; later
    steps are padding. Drawn with numpy on the host (nothing to compile)."""
    values = rng.uniform(size=(count, batch, buffer)).astype(np.float32)
    half = length // 2
    first = rng.integers(0, half, size=(count, batch))
    second = rng.integers(half, length, size=(count, batch))
    steps = np.arange(buffer)
    markers = ((steps == first[..., None]) | (steps == second[..., None])).astype(np.float32)
    target = np.sum(values * markers, axis=-1, keepdims=True)
    lengths = np.full((count, batch), length, np.int32)
    return np.stack([values, markers], axis=-1), target, lengths


def make_adding_trainer(ctx: Context, cell, options: dict, buffer: int):
    """``train(key, length) -> (train MSE per epoch, validation MSE per epoch)`` for one cell, compiled once for every
    length up to ``buffer``: Adam on fresh random batches, each epoch's steps a ``lax.scan`` followed by the
    validation MSE -- one dispatch per epoch, no host round trip per step."""
    from jaxrnn import train

    hidden, batch_size, steps_per_epoch = int(ctx["hidden"]), int(ctx["batch_size"]), int(ctx["steps_per_epoch"])
    optimizer = optax.adam(ctx["lr"])

    def loss_fn(p, batch):
        xs, target, lengths = batch
        _, ys = jaxrnn.rnn(cell, p["rnn"], xs, lengths=lengths)
        return jnp.mean((jaxrnn.dense.apply(p["head"], jaxrnn.last_valid(ys, lengths)) - target) ** 2)

    step = train.make_train_step(loss_fn, optimizer, clip_norm=ctx["clip_norm"])

    def init(key):
        k_init, k_head, k_train = jax.random.split(key, 3)
        params = {
            "rnn": cell.init(k_init, 2, hidden, dtype=jnp.float32, **options),
            "head": jaxrnn.dense.init(k_head, hidden, 1, dtype=jnp.float32),
        }
        return train.init_state(params, optimizer, k_train)

    @ctx.jit
    def epoch(state, batches, eval_batch):
        def body(s, batch):
            s, metrics = step.jitted(s, batch)
            return s, metrics["loss"]

        state, losses = jax.lax.scan(body, state, batches)
        return state, jnp.mean(losses), loss_fn(state.params, eval_batch)

    def run(key, rng, length):
        state = init(key)
        eval_batch = tuple(a[0] for a in adding_batches(rng, 1, int(ctx["eval_size"]), buffer, length))
        train_curve, curve = [], []
        for _ in range(int(ctx["epochs"])):
            batches = adding_batches(rng, steps_per_epoch, batch_size, buffer, length)
            state, train_mse, eval_mse = epoch(state, batches, eval_batch)
            train_curve.append(train_mse)
            curve.append(eval_mse)
        return np.asarray(jnp.stack(train_curve), np.float64), np.asarray(jnp.stack(curve), np.float64)

    return run


def adding_problem(ctx: Context) -> dict:
    """Every cell at every length. Full runs compile per length (no padding); quick runs pad every length to the
    longest and compile once per cell."""
    results = {}
    base = jax.random.key(ctx.seed + 1)
    lengths = [int(v) for v in ctx["lengths"]]
    buffers = {L: (max(lengths) if ctx["share_compile"] else L) for L in lengths}
    for j, (name, (cell, options)) in enumerate(ADDING_CELLS.items()):
        if name not in ctx["adding_cells"]:
            continue
        trainers = {}
        for length in lengths:
            if buffers[length] not in trainers:
                trainers[buffers[length]] = make_adding_trainer(ctx, cell, options, buffers[length])
            key = jax.random.fold_in(jax.random.fold_in(base, length), j)
            rng = np.random.default_rng([ctx.seed, length, j])
            train_curve, curve = trainers[buffers[length]](key, rng, length)
            final = float(curve[-1])
            ctx.log(f"adding T={length:4d} {name:6s}: validation MSE {final:.4f} (mean predictor {BASELINE_MSE:.3f})")
            results[(name, length)] = {"final_mse": final, "curve": curve, "train_curve": train_curve}
    return results


# --------------------------------------------------------------------------------------------------- figures
COLORS = {
    "elman": "tab:red",
    "lstm (forget bias 0)": "tab:purple",
    "lstm (forget bias 1)": "tab:blue",
    "gru": "tab:green",
    "lstm": "tab:blue",
}


def _figures(ctx: Context, flows: dict, adding: dict) -> None:
    plt = ctx.plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, f in flows.items():
        T = len(f["autodiff"])
        t = np.arange(T)
        ax.semilogy(t, f["autodiff"], color=COLORS[name], lw=2.5, alpha=0.6, label=f"{name}: jax.grad")
        ax.semilogy(t, f["analytic"], color=COLORS[name], lw=1.0, ls="--", label=f"{name}: analytic BPTT")
    ax.set(
        title=f"Gradient flow at initialisation: ‖∂L_T/∂h_t‖ (T = {T}, H = {ctx['flow_hidden']})",
        xlabel="time step t (loss at the last step)",
        ylabel="‖∂L_T/∂h_t‖ (log scale)",
    )
    ax.legend(ncol=2, fontsize=8)
    ctx.save(fig, "gradient_flow.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    ax = axes[0]
    for name, f in flows.items():
        spectrum = f["lyapunov_spectrum"]
        ax.plot(np.arange(1, len(spectrum) + 1), spectrum, "o-", ms=3, color=COLORS[name], label=name)
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set(
        title="Lyapunov spectra at initialisation (state s = h, or [h, c] for the LSTM)",
        xlabel="exponent index i",
        ylabel="λ_i (log growth per step)",
    )
    ax.set_ylim(bottom=max(ax.get_ylim()[0], -6.0))
    ax.legend(fontsize=8)
    ax = axes[1]
    for name, f in flows.items():
        ax.plot(f["lyapunov_top"], f["grad_log_slope"], "o", ms=9, color=COLORS[name], label=name)
    lims = [min(min(f["lyapunov_top"], f["grad_log_slope"]) for f in flows.values()) - 0.05, 0.02]
    ax.plot(lims, lims, color="gray", ls="--", lw=1, label="equal")
    ax.set(
        title="Forward dynamics predict the gradient's decay",
        xlabel="top Lyapunov exponent λ₁ (forward pass only)",
        ylabel="fitted slope of log‖∂L/∂h_t‖ per step back",
    )
    ax.legend(fontsize=8)
    ctx.save(fig, "lyapunov.png")

    lengths = ctx["lengths"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    ax = axes[0]
    shown = [name for name in ADDING_CELLS if name in ctx["adding_cells"]]
    for name in shown:
        ax.plot(lengths, [adding[(name, L)]["final_mse"] for L in lengths], "o-", color=COLORS[name], label=name)
    ax.axhline(BASELINE_MSE, color="gray", ls="--", label="predict the mean (0.167)")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xticks(lengths, [str(L) for L in lengths])
    ax.minorticks_off()
    ax.set(title="Adding problem: validation MSE after equal training", xlabel="sequence length T", ylabel="MSE")
    ax.legend()
    ax = axes[1]
    longest = lengths[-1]
    for name in shown:
        curve = adding[(name, longest)]["curve"]
        steps = np.arange(1, len(curve) + 1) * ctx["steps_per_epoch"]
        ax.plot(steps, curve, color=COLORS[name], label=name)
    ax.axhline(BASELINE_MSE, color="gray", ls="--", label="predict the mean")
    ax.set_yscale("log")
    ax.set(title=f"Learning curves at T = {longest}", xlabel="training step", ylabel="validation MSE")
    ax.legend()
    ctx.save(fig, "adding_problem.png")


def run(config: dict | None = None) -> dict:
    ctx = Context("vanishing_gradients", config, DEFAULTS, QUICK)
    ctx.config["lengths"] = [int(v) for v in ctx["lengths"]]
    flows = gradient_flows(ctx)
    adding = adding_problem(ctx)
    _figures(ctx, flows, adding)

    metrics = {
        "gradient_flow": {
            name: {
                "max_rel_diff_analytic_vs_autodiff": f["max_rel_diff"],
                "norm_first_over_last": f["ratio_first_last"],
                "norm_autodiff": f["autodiff"],
                "grad_log_slope": f["grad_log_slope"],
                "lyapunov_top": f["lyapunov_top"],
                "lyapunov_spectrum": f["lyapunov_spectrum"],
            }
            for name, f in flows.items()
        },
        "max_rel_diff_analytic_vs_autodiff": max(f["max_rel_diff"] for f in flows.values()),
        "adding_baseline_mse": BASELINE_MSE,
        "adding": {
            f"{name}@T={length}": {"mse": r["final_mse"], "below_baseline": r["final_mse"] < BASELINE_MSE}
            for (name, length), r in adding.items()
        },
    }
    rows = [
        {
            "part": "gradient flow",
            "cell": name,
            "T": ctx["flow_steps"],
            "value": f["ratio_first_last"],
            "meaning": "‖dL/dh_0‖ / ‖dL/dh_T-1‖",
            "analytic vs autodiff": f"{f['max_rel_diff']:.1e}",
        }
        for name, f in flows.items()
    ]
    rows += [
        {
            "part": "Lyapunov",
            "cell": name,
            "T": ctx["flow_steps"],
            "value": f["lyapunov_top"],
            "meaning": f"top exponent λ₁; gradient slope {f['grad_log_slope']:+.3f}/step",
            "analytic vs autodiff": "",
        }
        for name, f in flows.items()
    ]
    rows += [
        {
            "part": "adding problem",
            "cell": name,
            "T": length,
            "value": r["final_mse"],
            "meaning": "validation MSE" + (" < 0.167" if r["final_mse"] < BASELINE_MSE else " (no better than mean)"),
            "analytic vs autodiff": "",
        }
        for (name, length), r in adding.items()
    ]
    return ctx.finish(metrics, rows)
