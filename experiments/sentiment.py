"""Seed 004's sentiment example: many-to-one classification with an embedding and a bidirectional LSTM.

Default corpus: a real one, Pang & Lee's sentence polarity data (2000 positive and 2000 negative movie-review
sentences, shipped with jaxrnn; source in :func:`jaxrnn.datasets.load_sentence_polarity`). ``--data FILE`` takes any
CSV/TSV of (text, label) rows instead.

Words are tokenised and mapped through a vocabulary of the training split (``<pad>`` = 0, ``<unk>`` = 1), padded
with their lengths; the model embeds them, runs a bidirectional LSTM within each sentence's length, concatenates the
two directions' final states, and a dense softmax head classifies. Dropout on the embeddings regularises it; the
validation loss picks the epoch. Reported: held-out test accuracy against the majority class.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
from experiments._common import Context
from jaxrnn.datasets import load_sentence_polarity, load_text_labels

DEFAULTS = {
    "data": None,
    "embed": 64,
    "hidden": 64,
    "bidirectional": True,
    "max_length": 50,
    "min_freq": 2,
    "dropout": 0.5,
    "batch_size": 32,
    "epochs": 12,
    "patience": 4,
    "lr": 3e-3,
    "fractions": (0.8, 0.1, 0.1),
}
QUICK = {"embed": 32, "hidden": 32, "max_length": 30, "epochs": 3, "patience": None, "lr": 1e-2}


def _load(ctx: Context):
    if ctx.get("data"):
        texts, labels, names = load_text_labels(ctx["data"])
        return texts, labels, names, str(ctx["data"])
    texts, labels = load_sentence_polarity()
    return texts, labels, ["negative", "positive"], "Pang & Lee sentence polarity v1.0 (bundled, real)"


def run(config: dict | None = None) -> dict:
    from jaxrnn import data, train

    ctx = Context("sentiment", config, DEFAULTS, QUICK)
    texts, labels, names, source = _load(ctx)
    K = len(names)
    ctx.log(f"corpus: {source}: {len(texts)} texts, labels {names} ({np.bincount(labels, minlength=K).tolist()})")

    index = np.arange(len(texts))
    parts = data.split(jax.random.key(ctx.seed), index, fractions=ctx["fractions"])
    idx_tr, idx_va, idx_te = (np.asarray(p[0]) for p in parts)
    tokens = [data.word_tokenize(t) for t in texts]
    vocab = data.Vocabulary.build([tokens[i] for i in idx_tr], min_freq=ctx["min_freq"])
    padded, lengths = data.pad_sequences(
        [vocab.encode(t) for t in tokens], max_length=ctx["max_length"], dtype=np.int32
    )
    lengths = np.maximum(lengths, 1)  # an empty text reads one <pad>
    y = np.asarray(labels, np.int32)
    sets = {
        name: (jnp.asarray(padded[i]), jnp.asarray(lengths[i]), jnp.asarray(y[i]))
        for name, i in (("train", idx_tr), ("val", idx_va), ("test", idx_te))
    }
    ctx.log(
        f"vocabulary {len(vocab)} words (min_freq {ctx['min_freq']}, train split), max length {ctx['max_length']}; "
        f"split {len(idx_tr)}/{len(idx_va)}/{len(idx_te)}"
    )

    layer = jaxrnn.stack(jaxrnn.lstm, 1, bidirectional=ctx["bidirectional"])
    k_emb, k_rnn, k_head, k_train, k_batches = jax.random.split(jax.random.key(ctx.seed + 1), 5)
    H = ctx["hidden"]
    width = 2 * H if ctx["bidirectional"] else H
    params = {
        "embed": jaxrnn.embedding.init(k_emb, len(vocab), ctx["embed"], dtype=jnp.float32),
        "rnn": layer.init(k_rnn, ctx["embed"], H, dtype=jnp.float32),
        "head": jaxrnn.dense.init(k_head, width, K, dtype=jnp.float32),
    }

    def logits_fn(p, ids, lens, key=None):
        x = jaxrnn.embedding.apply(p["embed"], ids)
        if key is not None:
            x = jaxrnn.dropout(key, x, ctx["dropout"])
        finals, _ = layer.apply(p["rnn"], x, lengths=lens)
        last = finals[-1]
        if ctx["bidirectional"]:
            feats = jnp.concatenate([last.forward.h, last.backward.h], axis=-1)
        else:
            feats = last.h
        return jaxrnn.dense.apply(p["head"], feats)

    def loss_fn(p, batch, *, key=None):
        ids, lens, yb = batch
        logits = logits_fn(p, ids, lens, key)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == yb)}

    optimizer = optax.adam(ctx["lr"])
    state = train.init_state(params, optimizer, k_train)
    step = train.make_train_step(loss_fn, optimizer, clip_norm=1.0)

    def epoch_data(epoch):
        return data.batches(
            jax.random.fold_in(k_batches, epoch), *sets["train"], batch_size=ctx["batch_size"], drop_last=True
        )

    state, history = train.fit(
        state,
        step,
        epoch_data,
        epochs=ctx["epochs"],
        eval_data=[sets["val"]],
        eval_fn=loss_fn,
        patience=ctx["patience"],
    )
    for h in history:
        ctx.log(
            f"epoch {h['epoch']}: train loss {h['train_loss']:.3f} acc {h.get('train_accuracy', float('nan')):.3f}, "
            f"validation loss {h['eval_loss']:.3f} acc {h.get('eval_accuracy', float('nan')):.3f}"
        )
    results = {name: train.evaluate(loss_fn, state.params, [batch]) for name, batch in sets.items()}
    majority = float(np.max(np.bincount(y[idx_te], minlength=K)) / len(idx_te))
    test_acc = results["test"]["accuracy"]
    ctx.log(f"test accuracy {test_acc:.3f} (majority class {majority:.3f})")

    examples = [
        "a gorgeous , moving film with wonderful performances .",
        "a dull , tedious mess that wastes its talented cast .",
        "not bad at all .",
        "not good at all .",
    ]
    ex_ids, ex_len = data.pad_sequences([vocab.encode(data.word_tokenize(t)) for t in examples], dtype=np.int32)
    ex_probs = np.asarray(
        jax.nn.softmax(logits_fn(state.params, jnp.asarray(ex_ids), jnp.asarray(np.maximum(ex_len, 1))))
    )

    plt = ctx.plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    ax = axes[0]
    ep = np.arange(1, len(history) + 1)
    ax.plot(ep, [100 * h.get("train_accuracy", np.nan) for h in history], "o-", label="train")
    ax.plot(ep, [100 * h.get("eval_accuracy", np.nan) for h in history], "o-", label="validation")
    ax.axhline(100 * test_acc, color="tab:green", ls="-.", label=f"test, chosen epoch ({100 * test_acc:.1f}%)")
    ax.axhline(100 * majority, color="gray", ls="--", label=f"majority class ({100 * majority:.0f}%)")
    kind = "BiLSTM" if ctx["bidirectional"] else "LSTM"
    title_src = "Pang & Lee sentence polarity" if not ctx.get("data") else Path(str(ctx["data"])).name
    ax.set(title=f"Embedding + {kind} (H={H}) on {title_src}", xlabel="epoch", ylabel="accuracy (%)")
    ax.legend(fontsize=8)
    ax = axes[1]
    pos = ex_probs[:, -1] if K == 2 else ex_probs.max(-1)
    ax.barh(range(len(examples)), pos, color=["tab:green" if p > 0.5 else "tab:red" for p in pos])
    ax.set_yticks(range(len(examples)), [f"“{e}”" for e in examples], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.5, color="gray", ls=":")
    ax.set(title=f"P({names[-1]}) for new sentences", xlim=(0, 1), xlabel="probability")
    ctx.save(fig, "sentiment.png")

    metrics = {
        "corpus": source,
        "generated_corpus": False,
        "n_texts": len(texts),
        "vocab_size": len(vocab),
        "test_accuracy": test_acc,
        "val_accuracy": results["val"]["accuracy"],
        "train_accuracy": results["train"]["accuracy"],
        "majority_baseline": majority,
        "epochs_run": len(history),
        "examples": {e: float(p) for e, p in zip(examples, pos)},
    }
    rows = [
        {"model": "majority class", "test accuracy": majority},
        {"model": f"embedding {ctx['embed']} + {kind} {H}", "test accuracy": test_acc},
    ]
    return ctx.finish(metrics, rows)
