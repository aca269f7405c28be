"""XLA CPU compiler options against jaxrnn's default training step and forward pass, interleaved in one process.

Each variant compiles the same jitted training step (forward, analytic backward, Adam) and forward pass with
``jax.jit(..., compiler_options=...)``, checks that it computes the same update as the first variant (max abs
difference printed, and whether the optimised HLO is the same as the first variant's: then only options that act
in code generation, such as fast math, vector width or flush-to-zero, can change the machine code; for the others
any timing difference is noise), then all variants are timed round-robin so that load from other processes hits them alike.
Prints the minimum and median ms per call and the ratio of medians to the first variant (> 1: slower).

    python benchmarks/probe_compiler_options.py                       # medium LSTM, the default variants
    python benchmarks/probe_compiler_options.py --config small --rounds 30
    python benchmarks/probe_compiler_options.py --variants '{"base": {}, "fast": {"xla_cpu_enable_fast_math": true}}'

The default variants are the options of jaxlib 0.10's CPU compiler that could plausibly speed up a small-matmul
recurrence: the YNNPACK fusions (on for dots by default; off, or extended to element-wise ops), oneDNN and XNNPACK,
fast math, 512-bit vectors, flush-to-zero, single-threaded Eigen, the concurrency-optimised scheduler, the elemental
(pre-MLIR) fusion emitters, and the XNNPACK and oneDNN library fusions in place of YNNPACK's. An
option name that this jaxlib does not know is reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import jaxrnn

CONFIGS = {"small": (1, 1000, 8, 32), "medium": (32, 100, 32, 128), "large": (64, 200, 64, 512)}
VARIANTS = {
    "default": {},
    "ynn_off": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "ynn_dot_bias": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    "ynn_dot_eltwise": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE"},
    "onednn": {"xla_cpu_use_onednn": True},
    "xnnpack": {"xla_cpu_use_xnnpack": True},
    "fast_math": {"xla_cpu_enable_fast_math": True},
    "vector_512": {"xla_cpu_prefer_vector_width": 512},
    "ftz": {"xla_cpu_ftz": True},
    "eigen_1_thread": {"xla_cpu_multi_thread_eigen": False},
    "concurrency_scheduler": {"xla_cpu_enable_concurrency_optimized_scheduler": True},
    "elemental_emitters": {"xla_cpu_use_fusion_emitters": False},
    "ynn_individual_dot": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "xnn_dot": {
        "xla_cpu_experimental_ynn_fusion_type": "",
        "xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
    },
    "xnn_graph_greedy": {
        "xla_cpu_experimental_ynn_fusion_type": "",
        "xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE",
        "xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY",
    },
    "onednn_dot": {
        "xla_cpu_experimental_ynn_fusion_type": "",
        "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
    },
}


def build(config: str, cell_name: str):
    batch, steps, features, hidden = CONFIGS[config]
    cell = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru}[cell_name]
    k_p, k_x, k_y = jax.random.split(jax.random.key(0), 3)
    params = cell.init(k_p, features, hidden)
    xs = jax.random.normal(k_x, (batch, steps, features))
    targets = jax.random.normal(k_y, (batch, steps, hidden))
    optimizer = optax.adam(1e-3)

    def train(params, opt_state, xs, targets):
        loss = lambda p: jnp.mean((jaxrnn.rnn(cell, p, xs)[1] - targets) ** 2)  # noqa: E731
        grads = jax.grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def forward(params, xs):
        return jaxrnn.rnn(cell, params, xs)[1]

    return train, forward, (params, optimizer.init(params), xs, targets)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="medium")
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--rounds", type=int, default=15, help="timed calls per variant")
    parser.add_argument("--variants", type=json.loads, default=None, help="JSON {name: compiler_options}")
    args = parser.parse_args(argv)
    variants = args.variants or VARIANTS
    train, forward, (params, opt_state, xs, targets) = build(args.config, args.cell)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {args.cell} {args.config} {CONFIGS[args.config]}")
    compiled, reference, programs = {}, None, []
    for name, options in variants.items():
        try:
            start = time.perf_counter()
            step = jax.jit(train, compiler_options=options).lower(params, opt_state, xs, targets).compile()
            fwd = jax.jit(forward, compiler_options=options).lower(params, xs).compile()
            compile_s = time.perf_counter() - start
        except Exception as err:  # an option this jaxlib does not know, or a value it refuses
            print(f"{name}: skipped ({str(err).splitlines()[0][:160]})")
            continue
        new_params = jax.block_until_ready(step(params, opt_state, xs, targets)[0])
        reference = new_params if reference is None else reference
        diff = max(
            float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(reference))
        )
        program = re.sub(r"metadata=\{[^}]*\}", "", step.as_text() + fwd.as_text())
        same = ", the same HLO as the first variant" if programs and program == programs[0] else ""
        programs.append(program)
        print(f"{name}: compiled in {compile_s:.2f} s, max |params - first variant's| after one step {diff:.1e}{same}")
        compiled[name] = (step, fwd, [], [])
    for _ in range(args.rounds):
        for step, fwd, train_times, fwd_times in compiled.values():
            start = time.perf_counter()
            jax.block_until_ready(step(params, opt_state, xs, targets))
            train_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            jax.block_until_ready(fwd(params, xs))
            fwd_times.append(time.perf_counter() - start)
    print()
    print("| variant | train min ms | train median ms | ÷ first | forward min ms | forward median ms | ÷ first |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    first = None
    for name, (_, _, train_times, fwd_times) in compiled.items():
        medians = statistics.median(train_times), statistics.median(fwd_times)
        first = first or medians
        print(
            f"| {name} | {1e3 * min(train_times):.2f} | {1e3 * medians[0]:.2f} | {medians[0] / first[0]:.2f} | "
            f"{1e3 * min(fwd_times):.2f} | {1e3 * medians[1]:.2f} | {medians[1] / first[1]:.2f} |"
        )


if __name__ == "__main__":
    main()
