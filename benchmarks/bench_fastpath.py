"""Training-step throughput: autodiff through ``lax.scan`` vs the analytic fast path (``jaxrnn.rnn(grad=...)``).

One step = forward + backward + an optax Adam update of the cell and a dense readout, jitted, loss = mean squared
error of the readout at every step. Timings are medians over ``--reps`` runs after two warm-up runs (compile
excluded), the two paths interleaved run by run; XLA's memory figure of each compiled step beside them. Prints a markdown table; "speed-up" is autodiff time / analytic time (> 1: analytic is faster).

    python benchmarks/bench_fastpath.py              # all configs
    python benchmarks/bench_fastpath.py --quick      # small configs only, fewer reps
    python benchmarks/bench_fastpath.py --padding mask   # Keras-style left padding, as a step mask
    python benchmarks/bench_fastpath.py --long --checkpoint-every 100   # T = 10,000, rematerialised in chunks
    python benchmarks/bench_fastpath.py --cells gru gru_reset_before    # only these cells' configs

``--padding lengths`` / ``mask`` gives every sequence a length drawn from ``[T/2, T]``: right padding described by
``lengths``, or left padding (Keras' ``pad_sequences`` default) described by ``mask``; the loss is then the mean
over valid steps. ``--padding resets`` packs episodes into each row instead: a segment starts at each step with
probability 0.05.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import jaxrnn

# (cell, B, T, D, H, reps)
CONFIGS = [
    ("lstm", 1, 1000, 8, 32, 20),
    ("lstm", 32, 100, 32, 128, 20),
    ("gru", 32, 100, 32, 128, 20),
    ("gru_reset_before", 1, 1000, 8, 32, 20),
    ("gru_reset_before", 32, 100, 32, 128, 20),
    ("lstm_proj", 32, 100, 32, 256, 20),
    ("elman", 32, 100, 32, 128, 20),
    ("lstm", 64, 200, 64, 512, 5),
]
LONG = ("lstm", 8, 10000, 32, 256, 3)  # with --long only: the benchmark's memory config
# name: (cell, init options)
CELLS = {"elman": (jaxrnn.elman, {}), "lstm": (jaxrnn.lstm, {}), "gru": (jaxrnn.gru, {}),
         "gru_reset_before": (jaxrnn.gru, {"reset_after": False}),
         "lstm_proj": (jaxrnn.lstm, {"proj_size": 64})}  # fmt: skip


PADDINGS = ("none", "lengths", "mask", "resets")


def make_step(cell, grad: str, optimizer, checkpoint_every=None):
    def loss_fn(params, xs, targets, steps):
        cell_params, readout = params
        _, ys = jaxrnn.rnn(cell, cell_params, xs, grad=grad, checkpoint_every=checkpoint_every, **steps)
        pred = jnp.einsum("bth,ho->bto", ys, readout)
        return jaxrnn.sequence_mse(pred, targets, **{k: v for k, v in steps.items() if k != "resets"})

    @jax.jit
    def step(params, opt_state, xs, targets, steps):
        loss, grads = jax.value_and_grad(loss_fn)(params, xs, targets, steps)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def step_options(padding: str, batch: int, steps: int, key) -> dict:
    """``{}``, ``{"lengths": ...}`` or ``{"mask": ...}`` (left padding) for lengths drawn from ``[T/2, T]``, or
    ``{"resets": ...}`` with a segment start at each step with probability 0.05."""
    if padding == "none":
        return {}
    if padding == "resets":
        return {"resets": jax.random.bernoulli(key, 0.05, (batch, steps))}
    lengths = jax.random.randint(key, (batch,), steps // 2, steps + 1)
    if padding == "lengths":
        return {"lengths": lengths}
    return {"mask": jaxrnn.sequence_mask(lengths, steps, padding="pre")}


def time_config(name, batch, steps, features, hidden, reps, dtype=jnp.float32, padding="none", checkpoint_every=None):
    cell, init_options = CELLS[name]
    k_p, k_r, k_x, k_y, k_n = jax.random.split(jax.random.key(0), 5)
    cell_params = cell.init(k_p, features, hidden, dtype=dtype, **init_options)
    width = cell_params.proj_size if isinstance(cell_params, jaxrnn.LSTMPParams) else hidden
    params = (cell_params, 0.1 * jax.random.normal(k_r, (width, 1), dtype))
    xs = jax.random.normal(k_x, (batch, steps, features), dtype)
    targets = jax.random.normal(k_y, (batch, steps, 1), dtype)
    options = step_options(padding, batch, steps, k_n)
    optimizer = optax.adam(1e-3)
    runs, memory = {}, {}
    for grad in ("autodiff", "analytic"):
        state = [params, optimizer.init(params)]
        step = make_step(cell, grad, optimizer, checkpoint_every).lower(*state, xs, targets, options).compile()
        m = step.memory_analysis()  # XLA's figure for the whole step: arguments, outputs and temporaries
        memory[grad] = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
        for _ in range(2):  # warm-up
            state[0], state[1], loss = step(state[0], state[1], xs, targets, options)
        loss.block_until_ready()
        runs[grad] = (step, state, [])
    for _ in range(reps):  # interleaved, so that load from other processes hits both alike
        for step, state, times in runs.values():
            t0 = time.perf_counter()
            state[0], state[1], loss = step(state[0], state[1], xs, targets, options)
            loss.block_until_ready()
            times.append(time.perf_counter() - t0)
    result = {grad: statistics.median(times) for grad, (_, _, times) in runs.items()}
    return result, memory


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the large config; 5 reps each")
    parser.add_argument("--reps", type=int, default=None, help="override the number of timed runs")
    parser.add_argument("--padding", choices=PADDINGS, default="none", help="variable lengths as lengths or a mask")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="rematerialise in chunks of K steps")
    parser.add_argument("--long", action="store_true", help="only the T = 10,000 LSTM (B=8, H=256)")
    parser.add_argument("--cells", nargs="+", choices=sorted(CELLS), default=None, help="only these cells' configs")
    args = parser.parse_args(argv)
    configs = [LONG] if args.long else [c for c in CONFIGS if not (args.quick and c[4] >= 512)]
    if args.cells:
        configs = [c for c in configs if c[0] in args.cells]
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}, padding {args.padding}, "
        f"checkpoint_every {args.checkpoint_every}"
    )
    print()
    print("| cell | B | T | D | H | autodiff ms/step | analytic ms/step | speed-up | XLA MiB autodiff / analytic |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, batch, steps, features, hidden, reps in configs:
        reps = args.reps or (5 if args.quick else reps)
        r, mem = time_config(
            name, batch, steps, features, hidden, reps, padding=args.padding, checkpoint_every=args.checkpoint_every
        )
        ad, an = 1e3 * r["autodiff"], 1e3 * r["analytic"]
        mib = f"{mem['autodiff'] / 2**20:.0f} / {mem['analytic'] / 2**20:.0f}"
        print(f"| {name} | {batch} | {steps} | {features} | {hidden} | {ad:.2f} | {an:.2f} | {ad / an:.2f}x | {mib} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
