"""jaxlib 0.10.2's XLA CPU fusion emitters miscompile some float64 backward passes of recurrent scans.

Each case compiles one ``jax.grad`` twice, at XLA's default CPU options and with the older elemental emitters
(``xla_cpu_use_fusion_emitters=False``, backend optimisation off: the tests' settings), and prints the largest
difference between the two gradients. Entries are of order 1, so a difference above about 1e-12 is a miscompile.

    python benchmarks/probe_f64_miscompile.py            # the pure-JAX program and jaxrnn's known cases
    python benchmarks/probe_f64_miscompile.py --sweep    # every cell, both gradient paths, H = 3..12, seven batches

Found 2026-12-07 (README, "A compiler bug to know of"): ``grad="autodiff"`` LSTM and GRU scans at H = 5 with an
innermost batch dim of 4 are wrong at the defaults; the analytic path, Elman and float32 are right.
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxrnn  # noqa: E402

REFERENCE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
CELLS = {
    "elman": (jaxrnn.elman, {}),
    "lstm": (jaxrnn.lstm, {}),
    "lstm_proj": (jaxrnn.lstm, {"proj_size": 2}),
    "gru": (jaxrnn.gru, {}),
    "gru_reset_before": (jaxrnn.gru, {"reset_after": False}),
}


def difference(fn, *args) -> float:
    """Max |grad at the defaults - grad with the reference options| of the jitted ``fn(*args)``."""
    lowered = jax.jit(fn).lower(*args)
    default, reference = lowered.compile()(*args), lowered.compile(compiler_options=REFERENCE)(*args)
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(reference)))


def pure_jax() -> float:
    """The smallest program found: GRU-like gates, ``h' = tanh(a_n + (a_r + u_r) u_n)``, carry ``[1, 4, 5]``."""
    rng = np.random.default_rng(0)
    hidden = 5
    w_x, w_h = jnp.asarray(rng.normal(size=(1, 3 * hidden))), jnp.asarray(0.5 * rng.normal(size=(hidden, 3 * hidden)))
    xs = jnp.asarray(rng.normal(size=(2, 1, 4, 1)))  # [T, 1, 4, D]

    def step(h, x):
        a_r, _, a_n = jnp.split(x @ w_x, 3, axis=-1)
        u_r, _, u_n = jnp.split(h @ w_h, 3, axis=-1)
        h = jnp.tanh(a_n + (a_r + u_r) * u_n)
        return h, h

    def loss(xs):
        ys = jax.lax.scan(step, jnp.zeros((1, 4, hidden)), xs)[1]
        return jnp.sum(ys * jnp.arange(ys.size).reshape(ys.shape) / ys.size)

    return difference(jax.grad(loss), xs)


def rnn_case(name: str, batch: tuple, hidden: int, grad: str | None) -> float:
    cell, options = CELLS[name]
    params = cell.init(jax.random.key(0), 2, hidden, **options)
    xs = jax.random.normal(jax.random.key(1), (*batch, 3, 2))
    weights = jax.random.normal(jax.random.key(2), (*batch, 3, 1))

    def loss(p, x):
        return jnp.sum(jaxrnn.rnn(cell, p, x, grad=grad)[1] * weights)

    return difference(jax.grad(loss, argnums=(0, 1)), params, xs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", action="store_true", help="all cells, both paths, H = 3..12, seven batch shapes")
    args = ap.parse_args(argv)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, float64")
    print(f"pure JAX, carry [1, 4, 5]: {pure_jax():.1e}")
    if args.sweep:
        batches = [(4,), (1, 4), (2, 4), (4, 2), (2, 2, 4), (3, 8), (8,)]
        cases = [(n, b, h) for n in CELLS for b in batches for h in range(3, 13)]
    else:
        cases = [("lstm", (2, 4), 5), ("gru", (2, 4), 5), ("gru_reset_before", (4,), 5), ("lstm", (2, 4), 6)]
    print("| cell | batch | H | grad=autodiff | default (analytic for LSTM and GRU) |\n|---|---|---:|---:|---:|")
    for name, batch, hidden in cases:
        autodiff, default = rnn_case(name, batch, hidden, "autodiff"), rnn_case(name, batch, hidden, None)
        if not args.sweep or max(autodiff, default) > 1e-12:
            print(f"| {name} | {batch} | {hidden} | {autodiff:.1e} | {default:.1e} |", flush=True)


if __name__ == "__main__":
    main()
