"""Seed 004's next-word prediction, at the character level: an LSTM language model on real text.

Default text: the docstrings of a fixed list of standard-library modules (English prose that every Python install
has offline; :func:`jaxrnn.datasets.stdlib_docstrings`); ``--text FILE`` models any UTF-8 file instead. The first
90% of the characters train the model, the last 10% are held out. The model: character embedding, an LSTM, a dense
softmax over the characters, trained on random windows with ``sequence_cross_entropy``.

Reported: bits per character on the held-out text (the carry runs through it, in parallel streams), against the
unigram baseline (each character's training frequency, add-one smoothed), and samples at a chosen temperature.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
from experiments._common import Context, resolve_config
from jaxrnn.datasets import stdlib_docstrings

DEFAULTS = {
    "text": None,
    "max_chars": None,
    "embed": 32,
    "hidden": 256,
    "seq_len": 100,
    "batch_size": 32,
    "steps": 2000,
    "steps_per_epoch": 100,
    "lr": 3e-3,
    "temperature": 0.7,
    "sample_len": 400,
    "prompt": "Return the ",
    "eval_streams": 16,
}
QUICK = {
    "max_chars": 60_000,
    "hidden": 64,
    "seq_len": 48,
    "steps": 150,
    "steps_per_epoch": 50,
    "lr": 1e-2,
    "sample_len": 160,
}


MIN_CHARS = 2000  # the least text a language model here trains and evaluates on


def _text_of(config: dict) -> tuple[str, str]:
    """``(text, source)``: the ``text`` file (UTF-8) or the standard library's docstrings, cut to ``max_chars``;
    a ``ValueError`` when it is not UTF-8 or is shorter than :data:`MIN_CHARS`."""
    if config.get("text"):
        path = Path(config["text"])
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"text file {str(path)!r} is not UTF-8 ({err.reason} at byte {err.start})") from None
        source = str(path)
    else:
        text = stdlib_docstrings()
        source = "standard-library docstrings"
    if config.get("max_chars"):
        text = text[: int(config["max_chars"])]
    _check_length(len(text), config)
    return text, source


def _check_length(length: int, config: dict) -> None:
    if length < MIN_CHARS:
        raise ValueError(
            f"the text is too short for a language model: {length} characters (need >= {MIN_CHARS}; "
            f"max_chars={config.get('max_chars')})"
        )


def check_config(config: dict) -> None:
    """Raise ValueError, before any work, when the text cannot be read as UTF-8 or is too short. The standard
    library's docstrings are far longer than MIN_CHARS, so without a text file only ``max_chars`` is checked."""
    config = resolve_config(config, DEFAULTS, QUICK)
    if config.get("text"):
        _text_of(config)
    elif config.get("max_chars"):
        _check_length(int(config["max_chars"]), config)


def _read_text(ctx: Context) -> tuple[str, str]:
    return _text_of(ctx.config)


def run(config: dict | None = None) -> dict:
    from jaxrnn import data, train

    ctx = Context("char_lm", config, DEFAULTS, QUICK)
    text, source = _read_text(ctx)
    vocab = data.Vocabulary.build([data.char_tokenize(text)])
    ids = vocab.encode(data.char_tokenize(text))
    n_train = int(0.9 * len(ids))
    train_ids, held_ids = ids[:n_train], ids[n_train:]
    V = len(vocab)
    ctx.log(
        f"text: {source}, {len(text):,} characters, {V} distinct ids; {n_train:,} train / {len(held_ids):,} held out"
    )

    # unigram baseline: training frequencies, add-one smoothed, scored on the held-out text
    counts = np.bincount(train_ids, minlength=V).astype(np.float64) + 1.0
    probs = counts / counts.sum()
    unigram_bpc = float(-np.mean(np.log2(probs[held_ids])))
    ctx.log(f"unigram baseline: {unigram_bpc:.3f} bits per character on the held-out text")

    key = jax.random.key(ctx.seed)
    k_emb, k_rnn, k_head, k_train, k_data, k_sample = jax.random.split(key, 6)
    E, H, L, B = ctx["embed"], ctx["hidden"], ctx["seq_len"], ctx["batch_size"]
    params = {
        "embed": jaxrnn.embedding.init(k_emb, V, E, dtype=jnp.float32),
        "lstm": jaxrnn.lstm.init(k_rnn, E, H, dtype=jnp.float32),
        "head": jaxrnn.dense.init(k_head, H, V, dtype=jnp.float32),
    }

    def logits_fn(p, inputs, carry=None):
        carry, hs = jaxrnn.rnn(jaxrnn.lstm, p["lstm"], jaxrnn.embedding.apply(p["embed"], inputs), carry)
        return carry, jaxrnn.dense.apply(p["head"], hs)

    def loss_fn(p, batch):
        inputs, targets = batch
        _, logits = logits_fn(p, inputs)
        return jaxrnn.sequence_cross_entropy(logits, targets)

    train_arr = jnp.asarray(train_ids)

    @jax.jit
    def random_windows(k):
        starts = jax.random.randint(k, (B,), 0, len(train_ids) - L - 1)
        window = jax.vmap(lambda s: jax.lax.dynamic_slice(train_arr, (s,), (L + 1,)))(starts)
        return window[:, :-1], window[:, 1:]

    def epoch_data(epoch):
        keys = jax.random.split(jax.random.fold_in(k_data, epoch), ctx["steps_per_epoch"])
        return [random_windows(k) for k in keys]

    optimizer = optax.adam(optax.cosine_decay_schedule(ctx["lr"], ctx["steps"], alpha=0.1))
    state = train.init_state(params, optimizer, k_train)
    step = train.make_train_step(loss_fn, optimizer, clip_norm=1.0)
    epochs = max(1, ctx["steps"] // ctx["steps_per_epoch"])
    state, history = train.fit(state, step, epoch_data, epochs=epochs)
    for h in history[:: max(1, len(history) // 5)]:
        ctx.log(f"epoch {h['epoch']}: train loss {h['train_loss']:.3f} nats ({h['train_loss'] / math.log(2):.3f} bpc)")

    # held-out bits per character: the text split into parallel streams, the carry running through each
    S = ctx["eval_streams"]
    n = (len(held_ids) - 1) // S
    inputs = jnp.asarray(held_ids[: S * n].reshape(S, n))
    targets = jnp.asarray(held_ids[1 : S * n + 1].reshape(S, n))
    held_nats = float(jax.jit(loss_fn)(state.params, (inputs, targets)))
    bpc = held_nats / math.log(2)
    train_bpc = history[-1]["train_loss"] / math.log(2)
    ctx.log(f"held-out: {bpc:.3f} bits per character (unigram {unigram_bpc:.3f}); last training epoch {train_bpc:.3f}")

    # samples at the chosen temperature: one lax.scan over the generated characters
    temperature = float(ctx["temperature"])
    prompt_ids = vocab.encode(data.char_tokenize(ctx["prompt"]))

    @jax.jit
    def sample(p, key, prompt):
        carry, logits = logits_fn(p, prompt[None])
        first = jax.random.categorical(key, logits[0, -1] / temperature)

        def body(c, k):
            carry, token = c
            x = jaxrnn.embedding.apply(p["embed"], token[None])
            carry, h = jaxrnn.lstm.step(p["lstm"], carry, x)
            nxt = jax.random.categorical(k, jaxrnn.dense.apply(p["head"], h)[0] / temperature)
            return (carry, nxt), token

        keys = jax.random.split(jax.random.fold_in(key, 1), ctx["sample_len"])
        _, tokens = jax.lax.scan(body, (carry, first), keys)
        return tokens

    samples = []
    for j in range(2):
        tokens = np.asarray(sample(state.params, jax.random.fold_in(k_sample, j), jnp.asarray(prompt_ids)))
        samples.append(ctx["prompt"] + "".join(vocab.decode(tokens)))
    for s in samples:
        ctx.log(f"sample (temperature {temperature}):\n{s}\n")
    (ctx.out / "samples.txt").write_text(
        f"# char_lm samples, temperature {temperature}, seed {ctx.seed}, text: {source}\n\n"
        + "\n\n-----\n\n".join(samples)
        + "\n",
        encoding="utf-8",
    )

    plt = ctx.plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    steps = np.array([h["step"] for h in history])
    ax.plot(steps, [h["train_loss"] / math.log(2) for h in history], color="tab:blue", label="training windows")
    ax.axhline(bpc, color="tab:green", ls="-.", label=f"held-out text, final ({bpc:.2f})")
    ax.axhline(unigram_bpc, color="gray", ls="--", label=f"unigram baseline ({unigram_bpc:.2f})")
    ax.set(
        title=f"Character-level LSTM (H={H}) on {source if len(source) < 40 else Path(source).name}",
        xlabel="training step",
        ylabel="bits per character",
    )
    ax.legend()
    ctx.save(fig, "char_lm_bpc.png")

    metrics = {
        "source": source,
        "characters": len(text),
        "vocab_size": V,
        "held_out_bpc": bpc,
        "unigram_bpc": unigram_bpc,
        "train_bpc_last_epoch": train_bpc,
        "temperature": temperature,
        "samples": samples,
        "steps": int(history[-1]["step"]),
    }
    rows = [
        {"model": "unigram (training frequencies)", "held-out bits/char": unigram_bpc},
        {"model": f"LSTM H={H}, {int(history[-1]['step'])} steps", "held-out bits/char": bpc},
    ]
    return ctx.finish(metrics, rows)
