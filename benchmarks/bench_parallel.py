"""Training-step throughput of an LSTM on 1 vs N host devices (data parallel over the batch).

    python benchmarks/bench_parallel.py [--devices 1 2] [--batch 32 64] [--steps 20] [--repeats 3]

Each device count runs in its own subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (JAX fixes
the device count at start-up). Model: ``stack(lstm)`` (D=32, H=128) over T=100 steps, dense readout of the last
step, MSE, Adam, via ``jaxrnn.train.make_train_step(..., mesh=data_mesh())`` (for N=1: no mesh). Reported: the best
of ``--repeats`` timings of ``--steps`` steps (compilation excluded), as examples/s, and the ratio to 1 device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def worker(devices: int, batch: int, steps: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxrnn
    from jaxrnn.parallel import data_mesh
    from jaxrnn.train import init_state, make_train_step

    assert jax.device_count() == devices, (jax.device_count(), devices)
    T, D, H = 100, 32, 128
    layer = jaxrnn.stack(jaxrnn.lstm)
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"rnn": layer.init(k1, D, H), "head": jaxrnn.dense.init(k2, H, 1)}

    def loss_fn(params, batch):
        x, y = batch
        _, ys = layer.apply(params["rnn"], x)
        return jnp.mean((jaxrnn.dense.apply(params["head"], ys[:, -1]) - y) ** 2)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, T, D)).astype(np.float32)
    y = rng.normal(size=(batch, 1)).astype(np.float32)
    opt = optax.adam(1e-3)
    mesh = data_mesh() if devices > 1 else None
    step = make_train_step(loss_fn, opt, mesh=mesh)
    state = init_state(params, opt, jax.random.key(1))
    if mesh is not None:  # place the data once, as a sharded input pipeline would
        from jaxrnn.parallel import shard_batch

        data = shard_batch((x, y), mesh)
    else:
        data = jax.device_put((x, y))
    for _ in range(3):  # compile and warm up
        state, m = step(state, data)
    jax.block_until_ready(state)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            state, m = step(state, data)
        jax.block_until_ready((state, m))
        best = min(best, time.perf_counter() - t0)
    return {
        "devices": devices,
        "batch": batch,
        "seconds_per_step": best / steps,
        "examples_per_second": batch * steps / best,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        for b in args.batch:
            print(json.dumps(worker(args.devices[0], b, args.steps, args.repeats)), flush=True)
        return
    results = {}
    for n in args.devices:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
        cmd = [sys.executable, __file__, "--worker", "--devices", str(n), "--batch", *map(str, args.batch)]
        cmd += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode:
            sys.exit(f"worker for {n} devices failed:\n{out.stderr[-3000:]}")
        for line in out.stdout.splitlines():
            row = json.loads(line)
            results[(row["devices"], row["batch"])] = row
    print(f"LSTM train step, T=100 D=32 H=128, best of {args.repeats} x {args.steps} steps, {os.cpu_count()} CPU cores")
    print(f"{'batch':>6} {'devices':>8} {'ms/step':>9} {'examples/s':>11} {'vs 1 device':>12}")
    for b in args.batch:
        base = results.get((args.devices[0], b))
        for n in args.devices:
            row = results[(n, b)]
            ratio = row["examples_per_second"] / base["examples_per_second"]
            print(
                f"{b:>6} {n:>8} {1e3 * row['seconds_per_step']:>9.1f} {row['examples_per_second']:>11.0f} {ratio:>11.2f}x"
            )


if __name__ == "__main__":
    main()
