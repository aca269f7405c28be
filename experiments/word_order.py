"""Seed 004: "give me new" against "give new me" -- a bag of words cannot tell them apart, an RNN can.

Part 1: the seed encodes a phrase as a bag of words (``give me new`` -> ``{1, 1, 1, 0}``) and notes that ``give new
me`` gets the same vector. We take a two-sentence corpus where the next word depends on the order, ``give me new
sample`` and ``give new me hope``, and train two next-word predictors on the first three words: a softmax classifier
on the bag-of-words vector, and an Elman RNN reading one-hot words in order. The bag of words must give both
phrases the same prediction (at best 50% accuracy); the RNN's hidden states differ from the second word on, and it
predicts both continuations.

Part 2: the seed's Keras example, ``SimpleRNN(1, activation='tanh', recurrent_initializer='Zeros',
input_shape=(2, 1))`` followed by a sigmoid ``Dense(1)``, reproduced with ``jaxrnn.elman`` (one unit, zero recurrent
weights) on two padded two-word documents whose labels differ only by word order. When Keras is installed, the same
weights are loaded into the Keras model and both give the same outputs.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
from experiments._common import Context, scan_steps

SENTENCES = ["give me new sample", "give new me hope"]
DEFAULTS = {"hidden": 8, "steps": 300, "lr": 0.05, "keras_epochs": 500, "keras_lr": 0.05, "compare_keras": True}
QUICK = {"steps": 200, "keras_epochs": 300}


def _train(ctx, params, loss_fn, batch, steps, lr, key):
    from jaxrnn import train

    optimizer = optax.adam(lr)
    state = train.init_state(params, optimizer, key)
    state, losses = scan_steps(train.make_train_step(loss_fn, optimizer), state, batch, steps, ctx)
    return state.params, np.asarray(losses)


def part_order(ctx: Context) -> dict:
    from jaxrnn import data

    vocab = data.Vocabulary.build([s.split() for s in SENTENCES])
    ids = np.asarray([vocab.encode(s.split()) for s in SENTENCES])  # [2, 4]
    prefix, target = ids[:, :3], jnp.asarray(ids[:, 3])
    V = len(vocab)
    onehot = jax.nn.one_hot(jnp.asarray(prefix), V)  # [2, 3, V]
    bow = jnp.sum(onehot, axis=1)  # [2, V]: identical rows
    ctx.log(f"vocabulary ({V} ids, <pad>=0): {vocab.tokens}")
    ctx.log(f"bag of words  'give me new' = {np.asarray(bow[0]).astype(int).tolist()}")
    ctx.log(f"bag of words  'give new me' = {np.asarray(bow[1]).astype(int).tolist()}  (identical)")

    key = jax.random.key(ctx.seed)
    k_bow, k_rnn, k_head, k_t1, k_t2 = jax.random.split(key, 5)

    # bag-of-words softmax classifier
    bow_params = jaxrnn.dense.init(k_bow, V, V, dtype=jnp.float32)

    def bow_loss(p, batch):
        x, y = batch
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(jaxrnn.dense.apply(p, x), y))

    bow_params, bow_curve = _train(ctx, bow_params, bow_loss, (bow, target), ctx["steps"], ctx["lr"], k_t1)
    bow_probs = np.asarray(jax.nn.softmax(jaxrnn.dense.apply(bow_params, bow)))

    # Elman RNN over one-hot words, predicting the next word at the last step
    H = ctx["hidden"]
    rnn_params = {
        "rnn": jaxrnn.elman.init(k_rnn, V, H, dtype=jnp.float32),
        "head": jaxrnn.dense.init(k_head, H, V, dtype=jnp.float32),
    }

    def rnn_logits(p, x):
        _, hs = jaxrnn.rnn(jaxrnn.elman, p["rnn"], x)
        return hs, jaxrnn.dense.apply(p["head"], jaxrnn.last_valid(hs))

    def rnn_loss(p, batch):
        x, y = batch
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(rnn_logits(p, x)[1], y))

    hs_init, _ = rnn_logits(rnn_params, onehot)
    rnn_params, rnn_curve = _train(ctx, rnn_params, rnn_loss, (onehot, target), ctx["steps"], ctx["lr"], k_t2)
    hs, logits = rnn_logits(rnn_params, onehot)
    rnn_probs = np.asarray(jax.nn.softmax(logits))
    hs, hs_init = np.asarray(hs), np.asarray(hs_init)

    words = list(vocab.tokens)
    bow_pred = [words[k] for k in bow_probs.argmax(-1)]
    rnn_pred = [words[k] for k in rnn_probs.argmax(-1)]
    tgt = [words[k] for k in np.asarray(target)]
    result = {
        "vocab": words,
        "bow": np.asarray(bow),
        "bow_identical": bool(np.array_equal(np.asarray(bow[0]), np.asarray(bow[1]))),
        "bow_probs": bow_probs,
        "rnn_probs": rnn_probs,
        "bow_accuracy": float(np.mean(np.asarray(bow_pred) == np.asarray(tgt))),
        "rnn_accuracy": float(np.mean(np.asarray(rnn_pred) == np.asarray(tgt))),
        "hidden_states": hs,
        "hidden_states_init": hs_init,
        "hidden_diff_per_step": np.linalg.norm(hs[0] - hs[1], axis=-1),
        "hidden_diff_per_step_init": np.linalg.norm(hs_init[0] - hs_init[1], axis=-1),
        "prob_diff_bow": float(np.max(np.abs(bow_probs[0] - bow_probs[1]))),
        "prob_diff_rnn": float(np.max(np.abs(rnn_probs[0] - rnn_probs[1]))),
        "bow_pred": bow_pred,
        "rnn_pred": rnn_pred,
        "targets": tgt,
        "bow_curve": bow_curve,
        "rnn_curve": rnn_curve,
    }
    ctx.log(
        f"next word after 'give me new' / 'give new me': bag of words -> {bow_pred} (p = "
        f"{bow_probs[0].max():.2f} / {bow_probs[1].max():.2f}), RNN -> {rnn_pred} (targets {tgt})"
    )
    ctx.log(
        "‖h(give me new) − h(give new me)‖ per step: "
        + ", ".join(f"{v:.3f}" for v in result["hidden_diff_per_step"])
        + " (step 1 reads 'give' in both)"
    )
    return result


def part_keras(ctx: Context) -> dict:
    """The seed's SimpleRNN(1) with zero recurrent init on (2 docs, 2 steps, 1 feature)."""
    # two padded documents of word ids, each one feature per step; the labels differ only by the order
    docs = jnp.asarray([[1.0, 2.0], [2.0, 1.0]])[..., None]  # [2, 2, 1]
    labels = jnp.asarray([[1.0], [0.0]])
    k_rnn, k_head, k_train = jax.random.split(jax.random.key(ctx.seed + 1), 3)
    rnn = jaxrnn.elman.init(k_rnn, 1, 1, dtype=jnp.float32)
    rnn = rnn._replace(w_h=jnp.zeros_like(rnn.w_h))  # recurrent_initializer='Zeros'
    params = {"rnn": rnn, "head": jaxrnn.dense.init(k_head, 1, 1, dtype=jnp.float32)}

    def forward(p, x):
        _, hs = jaxrnn.rnn(jaxrnn.elman, p["rnn"], x)  # return_sequences=False: the last step
        return jax.nn.sigmoid(jaxrnn.dense.apply(p["head"], jaxrnn.last_valid(hs)))

    def loss_fn(p, batch):
        x, y = batch
        prob = jnp.clip(forward(p, x), 1e-7, 1 - 1e-7)
        return -jnp.mean(y * jnp.log(prob) + (1 - y) * jnp.log(1 - prob))

    before = np.asarray(forward(params, docs))[:, 0]
    params, curve = _train(ctx, params, loss_fn, (docs, labels), ctx["keras_epochs"], ctx["keras_lr"], k_train)
    after = np.asarray(forward(params, docs))[:, 0]
    ctx.log(
        f"SimpleRNN(1) in jaxrnn: P(label 1) for [1, 2] and [2, 1]: before {np.round(before.astype(float), 3).tolist()}, after "
        f"{ctx['keras_epochs']} epochs {np.round(after.astype(float), 3).tolist()} (labels 1, 0)"
    )
    result = {"before": before, "after": after, "curve": curve, "w_h": float(params["rnn"].w_h[0, 0])}
    result["keras_max_diff"] = _compare_keras(ctx, params, docs, after) if ctx["compare_keras"] else None
    return result


def _compare_keras(ctx: Context, params, docs, ours) -> float | None:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except Exception as err:  # noqa: BLE001 - Keras is optional
        ctx.log(f"Keras not available ({type(err).__name__}); skipping the side-by-side check")
        return None
    # Keras adds a [B, 1] and a [1] array inside SimpleRNNCell: allow rank promotion (which the tests make raise)
    # for Keras alone
    with jax.numpy_rank_promotion("allow"):
        model = keras.Sequential(
            [
                keras.Input(shape=(2, 1)),
                keras.layers.SimpleRNN(
                    1, activation="tanh", return_sequences=False, recurrent_initializer="Zeros", unroll=True
                ),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
        rnn = params["rnn"]
        model.layers[0].set_weights([np.asarray(rnn.w_x), np.asarray(rnn.w_h), np.asarray(rnn.b)])
        model.layers[1].set_weights([np.asarray(params["head"].w), np.asarray(params["head"].b)])
        theirs = np.asarray(model(np.asarray(docs), training=False))[:, 0]
    diff = float(np.max(np.abs(theirs - ours)))
    ctx.log(
        f"Keras SimpleRNN(1) + Dense(1, sigmoid) with the same weights: {np.round(theirs.astype(float), 6).tolist()} (max |diff| {diff:.1e})"
    )
    return diff


def _figures(ctx: Context, order: dict, ker: dict) -> None:
    plt = ctx.plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    phrases = ["give me new", "give new me"]
    ax = axes[0]
    H = order["hidden_states"].shape[-1]
    both = np.concatenate([order["hidden_states"][0], order["hidden_states"][1]], axis=0)  # [6, H]
    im = ax.imshow(both, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.grid(False)
    labels = [f"{phrases[0]}: t{t + 1} '{phrases[0].split()[t]}'" for t in range(3)] + [
        f"{phrases[1]}: t{t + 1} '{phrases[1].split()[t]}'" for t in range(3)
    ]
    ax.set_yticks(range(6), labels, fontsize=8)
    ax.set_xticks(range(H), [str(k) for k in range(H)])
    ax.axhline(2.5, color="black", lw=1.5)
    ax.set(title="Elman hidden states h_t (trained)", xlabel="hidden unit")
    fig.colorbar(im, ax=ax, fraction=0.04)

    ax = axes[1]
    shown = order["vocab"][2:]  # the words (not <pad>, <unk>)
    xs = np.arange(len(shown))
    w = 0.2
    for k, (probs, name, color) in enumerate(
        [(order["bow_probs"], "bag of words", "tab:gray"), (order["rnn_probs"], "Elman RNN", "tab:blue")]
    ):
        ax.bar(xs + (2 * k - 1.5) * w, probs[0][2:], w, color=color, label=f"{name}: '{phrases[0]} …'")
        ax.bar(
            xs + (2 * k - 0.5) * w,
            probs[1][2:],
            w,
            color=color,
            alpha=0.45,
            hatch="//",
            label=f"{name}: '{phrases[1]} …'",
        )
    ax.set_xticks(xs, shown)
    ax.set(title="Next-word probabilities", ylabel="P(next word)", ylim=(0, 1.05))
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[2]
    steps = np.arange(1, len(ker["curve"]) + 1)
    ax.semilogy(steps, ker["curve"], color="tab:purple")
    ax.set(
        title="Seed's SimpleRNN(1), zero recurrent init",
        xlabel="epoch (full batch)",
        ylabel="binary cross-entropy (log scale)",
    )
    note = f"P(1) for [1,2]: {ker['after'][0]:.2f}\nP(1) for [2,1]: {ker['after'][1]:.2f}"
    if ker.get("keras_max_diff") is not None:
        note += f"\nKeras, same weights: |diff| {ker['keras_max_diff']:.0e}"
    ax.text(0.97, 0.62, note, transform=ax.transAxes, ha="right", va="top", fontsize=9)
    ctx.save(fig, "word_order.png")


def run(config: dict | None = None) -> dict:
    ctx = Context("word_order", config, DEFAULTS, QUICK)
    order = part_order(ctx)
    ker = part_keras(ctx)
    _figures(ctx, order, ker)
    metrics = {
        "bag_of_words_identical": order["bow_identical"],
        "bow_next_word_accuracy": order["bow_accuracy"],
        "rnn_next_word_accuracy": order["rnn_accuracy"],
        "bow_prediction_max_diff": order["prob_diff_bow"],
        "rnn_prediction_max_diff": order["prob_diff_rnn"],
        "hidden_state_diff_per_step": order["hidden_diff_per_step"],
        "hidden_state_diff_per_step_at_init": order["hidden_diff_per_step_init"],
        "bow_probs": order["bow_probs"],
        "rnn_probs": order["rnn_probs"],
        "vocab": order["vocab"],
        "simple_rnn_before": ker["before"],
        "simple_rnn_after": ker["after"],
        "simple_rnn_keras_max_diff": ker["keras_max_diff"],
    }
    rows = [
        {
            "model": "bag of words + softmax",
            "input": "{give, me, new} (same for both)",
            "next-word accuracy": order["bow_accuracy"],
            "P differs by": order["prob_diff_bow"],
        },
        {
            "model": f"Elman RNN (H={ctx['hidden']})",
            "input": "one-hot words in order",
            "next-word accuracy": order["rnn_accuracy"],
            "P differs by": order["prob_diff_rnn"],
        },
        {
            "model": "seed's SimpleRNN(1), w_h=0",
            "input": "[1,2] vs [2,1], labels 1/0",
            "next-word accuracy": float(np.mean((ker["after"] > 0.5) == np.array([True, False]))),
            "P differs by": float(abs(ker["after"][0] - ker["after"][1])),
        },
    ]
    return ctx.finish(metrics, rows)
