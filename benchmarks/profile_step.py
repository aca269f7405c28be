"""Where a jaxrnn training step spends its time: XLA's own per-thunk trace of one config, per loop iteration.

    python -m benchmarks.profile_step                          # medium LSTM, the library defaults
    python -m benchmarks.profile_step --config gru_medium --grad autodiff --top 15

Runs the benchmark's training step (MSE loss, optax Adam, ``jaxrnn.rnn`` with the library defaults unless
``--grad``/``--unroll`` say otherwise) under ``jax.profiler``, reads the trace it writes, and prints, for every
``while`` loop of the step (the forward and the backward scan), the time of each operation inside one loop
iteration, plus the step's other operations. Times come from the profiler's events, so they run 10–20% above an
unprofiled step; the split between operations is what to read. XLA CPU and GPU both emit the events.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import tempfile
import time

from benchmarks.bench_rnn import CONFIGS


def _events(trace_dir: str) -> list[dict]:
    files = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))
    if not files:
        raise RuntimeError(f"jax.profiler wrote no trace under {trace_dir}")
    with gzip.open(files[-1]) as f:
        return [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]


def _table(rows: dict, per: float, unit: str, top: int) -> list[str]:
    lines = []
    for name, (count, dur) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"  {dur / per:10.2f} {unit}  {count / per:7.2f}x  {name[:90]}")
    return lines


def profile(config: str, steps: int, grad: str | None, unroll: int | None, top: int, forward: bool = False) -> str:
    import jax
    import jax.numpy as jnp
    import optax

    import jaxrnn

    cfg = CONFIGS[config]
    cell = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru}[cfg["cell"]]
    key = jax.random.key(0)
    xs = jax.random.normal(key, (cfg["B"], cfg["T"], cfg["D"]))
    target = jax.random.normal(jax.random.fold_in(key, 1), (cfg["B"], cfg["T"], cfg["H"]))
    params = cell.init(key, cfg["D"], cfg["H"])
    optimizer = optax.adam(1e-3)
    options = {k: v for k, v in (("grad", grad), ("unroll", unroll)) if v is not None}

    def loss_fn(p, x, t):
        return jnp.mean((jaxrnn.rnn(cell, p, x, **options)[1] - t) ** 2)

    @jax.jit
    def train(p, s, x, t):
        loss, g = jax.value_and_grad(loss_fn)(p, x, t)
        updates, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    if forward:

        @jax.jit
        def train(p, s, x, t):  # the forward pass alone, run as the training step is, for the same timing code
            return p, s, jaxrnn.rnn(cell, p, x, **options)[1]

    state = (params, optimizer.init(params))
    for _ in range(3):
        *state, loss = train(*state, xs, target)
        loss.block_until_ready()
    t0 = time.perf_counter()
    for _ in range(steps):
        *state, loss = train(*state, xs, target)
        loss.block_until_ready()
    unprofiled = (time.perf_counter() - t0) / steps

    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(steps):
            *state, loss = train(*state, xs, target)
            loss.block_until_ready()
        jax.profiler.stop_trace()
        events = _events(trace_dir)

    skip = ("ThunkExecutor", "end: ", "$", "PjitFunction")
    ops = [e for e in events if not e["name"].startswith(skip)]
    loops = [e for e in ops if e["name"].startswith("while")]
    iterations = cfg["T"]
    lines = [
        f"{config}: {cell.name} B={cfg['B']} T={cfg['T']} D={cfg['D']} H={cfg['H']}, options {options or 'defaults'}, "
        f"backend {jax.default_backend()}",
        f"{'forward pass' if forward else 'training step'}: {unprofiled * 1e3:.2f} ms unprofiled (mean of {steps})",
    ]
    inside_any = set()
    for name in sorted({e["name"] for e in loops}):
        spans = [(e["ts"], e["ts"] + e["dur"]) for e in loops if e["name"] == name]
        total = sum(end - start for start, end in spans) / steps
        rows = collections.defaultdict(lambda: [0, 0.0])
        for i, e in enumerate(ops):
            if e["name"] == name:
                continue
            if any(start <= e["ts"] and e["ts"] + e["dur"] <= end for start, end in spans):
                rows[e["name"]][0] += 1
                rows[e["name"]][1] += e["dur"]
                inside_any.add(i)
        lines.append(
            f"{name}: {total / 1e3:.2f} ms per step, {total / iterations:.1f} µs per iteration (of {iterations})"
        )
        lines += _table(rows, steps * iterations, "µs/iter", top)
    outside = collections.defaultdict(lambda: [0, 0.0])
    for i, e in enumerate(ops):
        if i not in inside_any and not e["name"].startswith("while"):
            outside[e["name"]][0] += 1
            outside[e["name"]][1] += e["dur"] / 1e3
    lines.append("outside the loops:")
    lines += _table(outside, steps, "ms/step", top)
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="medium")
    ap.add_argument("--steps", type=int, default=10, help="training steps traced (and timed unprofiled)")
    ap.add_argument("--grad", choices=["autodiff", "analytic"], default=None, help="default: the library's")
    ap.add_argument("--unroll", type=int, default=None, help="default: the library's")
    ap.add_argument("--top", type=int, default=12, help="operations listed per loop")
    ap.add_argument("--forward", action="store_true", help="profile the forward pass alone, not the training step")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.top < 1:
        ap.error("--steps and --top must be positive")
    print(profile(args.config, args.steps, args.grad, args.unroll, args.top, args.forward))


if __name__ == "__main__":
    main()
