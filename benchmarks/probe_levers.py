"""Probe the performance levers of issue 7 against the current jaxrnn, one config per process.

    python -m benchmarks.probe_levers                      # every lever, configs small medium large gru_medium
    python -m benchmarks.probe_levers --configs medium --variants current concat hoist --repeats 9
    python -m benchmarks.probe_levers --sharding           # the 2-host-device lever (runs in its own subprocess)

Variants (LSTM unless noted; each is a drop-in forward ``apply(params, xs [B,T,D]) -> ys [B,T,H]`` on jaxrnn's
``LSTMParams``/``GRUParams``, checked against the current ``jaxrnn.rnn`` for equal loss and gradients first):

- ``current``: ``jaxrnn.rnn(cell, p, xs)`` with the library's default ``grad`` (the analytic fast path once present).
- ``autodiff``: ``jaxrnn.rnn(..., grad="autodiff")``: autodiff through the scan of ``x @ w_x + h @ w_h + b``; the
  forward-formulation levers below are all autodiff, so compare them with this row.
- ``concat``: one matmul per step on ``[x, h] @ concat([w_x; w_h])``.
- ``hoist``: the input projection ``xs @ w_x + b`` as one whole-sequence matmul before the scan; ``h @ w_h`` inside.
- ``hoist_prefetch`` (LSTM, GRU): ``hoist``, with step t+1's slice of the projection read in step t and carried
  over, so that no ``dynamic-slice`` is fused into the gate nonlinearities' fusions.
- ``hoist_split``: hoisted, and the in-loop recurrent matmul split per gate (four ``[H, H]`` matmuls).
- ``unroll2`` .. ``unroll16``: ``current`` with ``unroll=k``.
- ``halves``: ``current`` on each half of the batch, two independent scans in one program, in case XLA CPU's
  runtime ran them on the two cores at once (it did not: 2026-12-01, see benchmarks/README.md).
- ``analytic_hoist`` / ``analytic_inloop``: a probe ``jax.custom_vjp``: hoisted (or in-loop) input projection, a backward scan that emits only ``dz`` per step, and the
  weight gradients formed after the loop as one matmul each (``dW_h = H_prevᵀ dZ``, ``dW_x = Xᵀ dZ``).
- ``fastpath``: ``jaxrnn.rnn(..., grad="analytic")`` (jaxrnn/fastpath.py) when the library has it; compare the
  analytic_* probes with this row.
- ``transpose_per_step`` (LSTM, GRU): ``current``, traced with the analytic backward's ``dh_prev = da W_hᵀ`` taking
  ``params.w_h.T`` inside the loop, as before 2026-12-07, which XLA folds into a transposed-operand matmul, instead
  of ``W_hᵀ`` made once before the loop (``jaxrnn.analytic.transposed_recurrent_weights``).
- ``row_major`` (LSTM, GRU): ``current``, traced with ``jaxrnn.feature_major``'s thresholds out of reach, so that
  a wide scan stays row-major (the A/B of the feature-major path; for the GRU, of its forward pass).
- GRU: ``current``, ``autodiff``, ``hoist``, ``hoist_prefetch``, ``concat``, ``split``, ``feature_major``, ``fastpath``,
  ``unroll*``, ``halves``, ``transpose_per_step``, ``row_major``.

Every variant is timed forward-only and as the full training step (MSE loss, optax Adam), samples interleaved across
variants round-robin; medians in sequence-steps/s. Results: benchmarks/results/probe_levers_<tag>.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._peers import ROW_MAJOR_THRESHOLDS
from benchmarks.bench_rnn import CONFIGS, _interleaved

LSTM_VARIANTS = [
    "current",
    "autodiff",
    "concat",
    "hoist",
    "hoist_prefetch",
    "hoist_split",
    "fastpath",
    "analytic_hoist",
    "analytic_inloop",
    "unroll2",
    "unroll4",
    "unroll8",
    "unroll16",
    "halves",
    "transpose_per_step",
    "row_major",
]
GRU_VARIANTS = [
    "current",
    "autodiff",
    "hoist",
    "hoist_prefetch",
    "concat",
    "split",
    "feature_major",
    "fastpath",
    "unroll4",
    "unroll16",
    "halves",
    "transpose_per_step",
    "row_major",
]


# --------------------------------------------------------------------------------------------------- variants
def _lstm_act(z):
    import jax
    import jax.numpy as jnp

    z_i, z_f, z_g, z_o = jnp.split(z, 4, axis=-1)
    return jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)


def lstm_concat(p, xs):
    import jax.numpy as jnp
    from jax import lax

    B, H = xs.shape[0], p.w_h.shape[0]
    w = jnp.concatenate([p.w_x, p.w_h], axis=0)  # [D+H, 4H], once per call

    def step(carry, x):
        h, c = carry
        i, f, g, o = _lstm_act(jnp.concatenate([x, h], axis=-1) @ w + p.b)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((B, H), xs.dtype)
    _, ys = lax.scan(step, (zeros, zeros), jnp.swapaxes(xs, 0, 1))
    return jnp.swapaxes(ys, 0, 1)


def _scan_prefetched(step, carry, xs):
    """``lax.scan(step, carry, xs)`` that reads step t+1's slice of ``xs`` in step t and hands it over in the carry,
    so the step's element-wise fusions read a buffer of their own instead of a ``dynamic-slice`` of ``xs`` fused into
    them (which XLA CPU ran several times slower with the gate nonlinearities, benchmarks/README.md)."""
    import jax.numpy as jnp
    from jax import lax

    last = xs.shape[0] - 1

    def body(state, t):
        carry, x_t = state
        x_next = lax.dynamic_index_in_dim(xs, jnp.minimum(t + 1, last), keepdims=False)
        carry, y = step(carry, x_t)
        return (carry, x_next), y

    (carry, _), ys = lax.scan(body, (carry, xs[0]), jnp.arange(xs.shape[0]))
    return carry, ys


def lstm_hoist(p, xs, prefetch=False):
    import jax.numpy as jnp
    from jax import lax

    B, H = xs.shape[0], p.w_h.shape[0]
    xw = jnp.swapaxes(xs, 0, 1) @ p.w_x + p.b  # [T, B, 4H]: one matmul over the whole sequence

    def step(carry, xw_t):
        h, c = carry
        i, f, g, o = _lstm_act(xw_t + h @ p.w_h)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((B, H), xs.dtype)
    _, ys = (_scan_prefetched if prefetch else lax.scan)(step, (zeros, zeros), xw)
    return jnp.swapaxes(ys, 0, 1)


def lstm_hoist_split(p, xs):
    import jax
    import jax.numpy as jnp
    from jax import lax

    B, H = xs.shape[0], p.w_h.shape[0]
    xw = jnp.swapaxes(xs, 0, 1) @ p.w_x + p.b
    xw_gates = tuple(jnp.split(xw, 4, axis=-1))  # 4 x [T, B, H]
    w_gates = tuple(jnp.split(p.w_h, 4, axis=-1))  # 4 x [H, H]

    def step(carry, xw_t):
        h, c = carry
        i = jax.nn.sigmoid(xw_t[0] + h @ w_gates[0])
        f = jax.nn.sigmoid(xw_t[1] + h @ w_gates[1])
        g = jnp.tanh(xw_t[2] + h @ w_gates[2])
        o = jax.nn.sigmoid(xw_t[3] + h @ w_gates[3])
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((B, H), xs.dtype)
    _, ys = lax.scan(step, (zeros, zeros), xw_gates)
    return jnp.swapaxes(ys, 0, 1)


def _make_lstm_analytic(hoist=True):
    import jax
    import jax.numpy as jnp
    from jax import lax

    from jaxrnn.cells.lstm import LSTMParams

    def forward(p, xs_tm):
        T, B, _ = xs_tm.shape
        H = p.w_h.shape[0]
        xw = xs_tm @ p.w_x + p.b if hoist else xs_tm

        def step(carry, xw_t):
            h, c = carry
            z = xw_t + h @ p.w_h if hoist else xw_t @ p.w_x + h @ p.w_h + p.b
            i, f, g, o = _lstm_act(z)
            c = f * c + i * g
            tc = jnp.tanh(c)
            h = o * tc
            return (h, c), (h, c, jnp.concatenate([i, f, g, o], axis=-1), tc)

        zeros = jnp.zeros((B, H), xs_tm.dtype)
        _, (hs, cs, acts, tcs) = lax.scan(step, (zeros, zeros), xw)
        return hs, (hs, cs, acts, tcs)

    @jax.custom_vjp
    def run(p, xs_tm):
        return forward(p, xs_tm)[0]

    def run_fwd(p, xs_tm):
        hs, (hs, cs, acts, tcs) = forward(p, xs_tm)
        return hs, (p, xs_tm, hs, cs, acts, tcs)

    def run_bwd(res, dhs):
        p, xs_tm, hs, cs, acts, tcs = res
        T, B, H = hs.shape
        zeros = jnp.zeros((1, B, H), hs.dtype)
        c_prev = jnp.concatenate([zeros, cs[:-1]], axis=0)
        h_prev = jnp.concatenate([zeros, hs[:-1]], axis=0)
        w_hT = p.w_h.T

        def back(carry, inp):
            dh_next, dc_next = carry
            dh_out, act, tc, cp = inp
            i, f, g, o = jnp.split(act, 4, axis=-1)
            dh = dh_out + dh_next
            dc = dc_next + dh * o * (1.0 - tc * tc)
            dz = jnp.concatenate(
                [dc * g * i * (1.0 - i), dc * cp * f * (1.0 - f), dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)],
                axis=-1,
            )
            return (dz @ w_hT, dc * f), dz

        zb = jnp.zeros((B, H), hs.dtype)
        _, dz = lax.scan(back, (zb, zb), (dhs, acts, tcs, c_prev), reverse=True)
        dz2 = dz.reshape(T * B, 4 * H)
        d_wh = h_prev.reshape(T * B, H).T @ dz2  # weight gradients: one matmul each, after the loop
        d_wx = xs_tm.reshape(T * B, -1).T @ dz2
        d_b = dz2.sum(0)
        d_xs = dz @ p.w_x.T
        return LSTMParams(w_x=d_wx, w_h=d_wh, b=d_b), d_xs

    run.defvjp(run_fwd, run_bwd)

    def apply(p, xs):
        return jnp.swapaxes(run(p, jnp.swapaxes(xs, 0, 1)), 0, 1)

    return apply


def gru_hoist(p, xs, prefetch=False):
    import jax
    import jax.numpy as jnp
    from jax import lax

    B, H = xs.shape[0], p.w_h.shape[0]
    a = jnp.swapaxes(xs, 0, 1) @ p.w_x + p.b  # [T, B, 3H]

    def step(h, a_t):
        a_r, a_z, a_n = jnp.split(a_t, 3, axis=-1)
        u_r, u_z, u_n = jnp.split(h @ p.w_h, 3, axis=-1)
        r = jax.nn.sigmoid(a_r + u_r)
        z = jax.nn.sigmoid(a_z + u_z)
        n = jnp.tanh(a_n + r * (u_n + p.b_hn))
        h = (1.0 - z) * n + z * h
        return h, h

    _, ys = (_scan_prefetched if prefetch else lax.scan)(step, jnp.zeros((B, H), xs.dtype), a)
    return jnp.swapaxes(ys, 0, 1)


def gru_concat(p, xs):
    """The reset-after GRU with one matmul per step on ``[x, h]``: ``[B, D+H] @ [D+H, 4H]`` whose columns are
    ``r, z`` (input and recurrent parts summed by the matmul), ``x W_xn`` and ``h W_hn`` (zero blocks elsewhere, a
    third more FLOPs than the two matmuls of the cell); autodiff backward."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    B, D, H = xs.shape[0], xs.shape[-1], p.w_h.shape[0]
    top = jnp.concatenate([p.w_x, jnp.zeros((D, H), p.w_x.dtype)], axis=1)  # [D, 4H]: r z n_x 0
    bottom = jnp.concatenate([p.w_h[:, : 2 * H], jnp.zeros((H, H), p.w_h.dtype), p.w_h[:, 2 * H :]], axis=1)
    w = jnp.concatenate([top, bottom], axis=0)
    b = jnp.concatenate([p.b, p.b_hn])

    def step(h, x_t):
        s = jnp.concatenate([x_t, h], axis=-1) @ w + b
        a_rz, a_n, u_n = s[:, : 2 * H], s[:, 2 * H : 3 * H], s[:, 3 * H :]
        r, z = jnp.split(jax.nn.sigmoid(a_rz), 2, axis=-1)
        n = jnp.tanh(a_n + r * u_n)
        h = (1.0 - z) * n + z * h
        return h, h

    _, ys = lax.scan(step, jnp.zeros((B, H), xs.dtype), jnp.swapaxes(xs, 0, 1))
    return jnp.swapaxes(ys, 0, 1)


def gru_split(p, xs):
    """The reset-after GRU with one matmul per gate and side, as Flax's ``GRUCell`` computes it: ``x W_x{r,z,n}``
    and ``h W_h{r,z,n}``, six ``[·, H]`` matmuls per step instead of two ``[·, 3H]`` ones; autodiff backward."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    B, H = xs.shape[0], p.w_h.shape[0]
    w_x, w_h, b = jnp.split(p.w_x, 3, axis=1), jnp.split(p.w_h, 3, axis=1), jnp.split(p.b, 3)

    def step(h, x_t):
        r = jax.nn.sigmoid(x_t @ w_x[0] + b[0] + h @ w_h[0])
        z = jax.nn.sigmoid(x_t @ w_x[1] + b[1] + h @ w_h[1])
        n = jnp.tanh(x_t @ w_x[2] + b[2] + r * (h @ w_h[2] + p.b_hn))
        h = (1.0 - z) * n + z * h
        return h, h

    _, ys = lax.scan(step, jnp.zeros((B, H), xs.dtype), jnp.swapaxes(xs, 0, 1))
    return jnp.swapaxes(ys, 0, 1)


def gru_feature_major(p, xs):
    """The reset-after GRU with its state kept ``[H, B]`` inside the scan (gate matmuls ``[3H, D] @ [D, B]`` and
    ``[3H, H] @ [H, B]`` per step, as the row-major cell does); autodiff backward. The A/B for a feature-major GRU
    like ``jaxrnn.feature_major``."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    B, H = xs.shape[0], p.w_h.shape[0]
    xs_fm = jnp.transpose(xs, (1, 2, 0))  # [T, D, B]
    w_xT, w_hT, b, b_hn = p.w_x.T, p.w_h.T, p.b[:, None], p.b_hn[:, None]

    def step(h, x_t):
        a_r, a_z, a_n = jnp.split(w_xT @ x_t + b, 3, axis=0)
        u_r, u_z, u_n = jnp.split(w_hT @ h, 3, axis=0)
        r = jax.nn.sigmoid(a_r + u_r)
        z = jax.nn.sigmoid(a_z + u_z)
        n = jnp.tanh(a_n + r * (u_n + b_hn))
        h = (1.0 - z) * n + z * h
        return h, h

    _, ys = lax.scan(step, jnp.zeros((H, B), xs.dtype), xs_fm)
    return jnp.transpose(ys, (2, 0, 1))


@contextlib.contextmanager
def variant_context(name):
    """What a variant needs in force while it is traced and compiled: ``transpose_per_step`` swaps the fast path's
    pre-transposed weights for none (the deltas then transpose ``W_h`` in the loop); ``row_major`` puts the
    feature-major threshold out of reach. JAX's caches are cleared on the way in and out, so that no trace is
    shared with another variant."""
    if name not in ("transpose_per_step", "row_major"):
        yield
        return
    import jax

    from jaxrnn import fastpath, feature_major

    changes = {
        "transpose_per_step": [(fastpath, "transposed_recurrent_weights", lambda params: {})],
        "row_major": [(feature_major, name, value) for name, value in ROW_MAJOR_THRESHOLDS.items()],
    }[name]
    saved = [(module, attr, getattr(module, attr)) for module, attr, _ in changes]
    for module, attr, value in changes:
        setattr(module, attr, value)
    jax.clear_caches()
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)
        jax.clear_caches()


def make_variant(name, cfg):
    import jaxrnn

    cell = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru}[cfg["cell"]]
    if name in ("current", "transpose_per_step", "row_major"):
        return lambda p, xs: jaxrnn.rnn(cell, p, xs)[1]
    if name == "halves":
        import jax.numpy as jnp

        return lambda p, xs: jnp.concatenate([jaxrnn.rnn(cell, p, x)[1] for x in jnp.split(xs, 2, axis=0)], axis=0)
    if name.startswith("unroll"):
        k = int(name[len("unroll") :])
        return lambda p, xs: jaxrnn.rnn(cell, p, xs, unroll=k)[1]
    if name in ("fastpath", "autodiff"):
        from benchmarks._peers import jaxrnn_has_grad_kw

        if not jaxrnn_has_grad_kw():
            return (lambda p, xs: jaxrnn.rnn(cell, p, xs)[1]) if name == "autodiff" else None
        mode = "analytic" if name == "fastpath" else "autodiff"
        return lambda p, xs: jaxrnn.rnn(cell, p, xs, grad=mode)[1]
    if cfg["cell"] == "lstm":
        if name.startswith("analytic"):
            return _make_lstm_analytic(hoist=name == "analytic_hoist")
        return {
            "concat": lstm_concat,
            "hoist": lstm_hoist,
            "hoist_prefetch": functools.partial(lstm_hoist, prefetch=True),
            "hoist_split": lstm_hoist_split,
        }.get(name)
    return {
        "hoist": gru_hoist,
        "hoist_prefetch": functools.partial(gru_hoist, prefetch=True),
        "concat": gru_concat,
        "split": gru_split,
        "feature_major": gru_feature_major,
    }.get(name)


# ------------------------------------------------------------------------------------------------------ runner
def run_config(config, variants, repeats, min_time, sharded=False):
    import jax
    import jax.numpy as jnp
    import optax

    import jaxrnn
    from benchmarks._peers import _data

    cfg = CONFIGS[config]
    cell = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru}[cfg["cell"]]
    params0 = cell.init(jax.random.key(0), cfg["D"], cfg["H"])
    xs_np, t_np = _data(cfg)
    xs, target = jnp.asarray(xs_np), jnp.asarray(t_np)
    opt = optax.adam(1e-3)
    steps = cfg["B"] * cfg["T"]

    def loss_of(apply):
        return lambda p, x, t: jnp.mean((apply(p, x) - t) ** 2)

    ref_loss, ref_grad = jax.jit(jax.value_and_grad(loss_of(make_variant("current", cfg))))(params0, xs, target)
    out = {"config": config, **cfg, "variants": {}}
    calls = {}
    for name in variants:
        apply = make_variant(name, cfg)
        if apply is None:
            out["variants"][name] = {"skipped": "not available for this cell / library"}
            continue
        with variant_context(name):  # trace and compile under the variant's settings
            # equivalence check against the current code
            loss, grad = jax.jit(jax.value_and_grad(loss_of(apply)))(params0, xs, target)
            err = max(
                float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
                for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad))
            )
            rec = {"loss_rel_err": abs(float(loss - ref_loss)) / abs(float(ref_loss)), "grad_rel_err": err}

            lf = loss_of(apply)

            def train(p, s, x, t, lf=lf):
                loss, g = jax.value_and_grad(lf)(p, x, t)
                u, s = opt.update(g, s, p)
                return optax.apply_updates(p, u), s, loss

            p = jax.tree.map(jnp.array, params0)
            s = opt.init(p)
            x_, t_ = xs, target
            if sharded:
                from jax.sharding import Mesh, NamedSharding, PartitionSpec

                mesh = Mesh(jax.devices(), ("b",))
                rep, bat = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("b"))
                p, s = jax.device_put(p, rep), jax.device_put(s, rep)
                x_, t_ = jax.device_put(xs, bat), jax.device_put(target, bat)
            t0 = time.perf_counter()
            fc = jax.jit(apply).lower(jax.tree.map(jnp.copy, p), x_).compile()
            rec["compile_fwd_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            tc = jax.jit(train, donate_argnums=(0, 1)).lower(p, s, x_, t_).compile()
            rec["compile_train_s"] = time.perf_counter() - t0
        m = tc.memory_analysis()
        rec["xla_train_peak_mib"] = (
            m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
        ) / 2**20
        pf = jax.tree.map(jnp.copy, p)
        state = [p, s]

        def fwd(fc=fc, pf=pf, x_=x_):
            return jax.block_until_ready(fc(pf, x_))

        def trn(tc=tc, state=state, x_=x_, t_=t_):
            p, s, loss = tc(state[0], state[1], x_, t_)
            state[0], state[1] = p, s
            return jax.block_until_ready(loss)

        for _ in range(2):
            fwd()
            trn()
        calls[name + "/fwd"] = fwd
        calls[name + "/train"] = trn
        out["variants"][name] = rec
    samples, ns = _interleaved(calls, repeats, min_time)
    for key, ss in samples.items():
        name, kind = key.split("/")
        rec = out["variants"][name]
        rec[kind + "_sps"] = steps / statistics.median(ss)
        rec[kind + "_samples_s"] = ss
        rec[kind + "_cpu_sps"] = steps / statistics.median(ns["cpu_s"][key])
    base = out["variants"].get("current", {})
    for rec in out["variants"].values():
        for kind in ("fwd", "train"):
            if kind + "_sps" in rec and kind + "_sps" in base:
                rec[kind + "_vs_current"] = rec[kind + "_sps"] / base[kind + "_sps"]
                rec[kind + "_cpu_vs_current"] = rec[kind + "_cpu_sps"] / base[kind + "_cpu_sps"]
    return out


def _md(results, meta):
    lines = [
        f"# jaxrnn lever probes — {meta['date']}",
        "",
        f"{meta['cpus']} CPUs, load average {meta['load_start']} → {meta['load_end']}; repeats {meta['repeats']},"
        f" min sample {meta['min_time']} s; samples interleaved across variants. Ratios are to `current`.",
        "",
    ]
    for r in results:
        title = (
            f"## {r['config']}{' (batch split over 2 host devices)' if r.get('sharded') else ''}: "
            f"{r['cell'].upper()} B={r['B']} T={r['T']} D={r['D']} H={r['H']}"
        )
        lines += [
            title,
            "",
            "| variant | train seq-steps/s | × current | fwd seq-steps/s | × current | train × current "
            "(CPU time) | fwd × current (CPU time) | compile train (s) | XLA peak train (MiB) | grad rel err |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, v in r["variants"].items():
            if "skipped" in v:
                lines.append(f"| {name} | skipped: {v['skipped']} | | | | | | | | |")
                continue
            lines.append(
                f"| {name} | {v['train_sps']:,.0f} | {v.get('train_vs_current', 1):.2f} | {v['fwd_sps']:,.0f} | "
                f"{v.get('fwd_vs_current', 1):.2f} | {v.get('train_cpu_vs_current', float('nan')):.2f} | "
                f"{v.get('fwd_cpu_vs_current', float('nan')):.2f} | {v['compile_train_s']:.2f} | {v['xla_train_peak_mib']:,.0f} | "
                f"{v['grad_rel_err']:.1e} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["small", "medium", "large", "gru_medium"])
    ap.add_argument("--variants", nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument(
        "--sharding",
        action="store_true",
        help="measure current/hoist with the batch split over 2 host devices (subprocess with XLA_FLAGS)",
    )
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sharded-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:  # worker: one config, JSON on stdout
        cfg = CONFIGS[args.one]
        variants = args.variants or (LSTM_VARIANTS if cfg["cell"] == "lstm" else GRU_VARIANTS)
        r = run_config(args.one, variants, args.repeats, args.min_time, sharded=args.sharded_worker)
        r["sharded"] = args.sharded_worker
        if args.sharded_worker:
            import jax

            r["devices"] = len(jax.devices())
        print(json.dumps(r))
        return

    meta = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_start": os.getloadavg(),
        "repeats": args.repeats,
        "min_time": args.min_time,
        "argv": sys.argv,
    }
    results = []
    for config in args.configs:
        jobs = [False, True] if args.sharding else [False]
        for sharded in jobs:
            if sharded and CONFIGS[config]["B"] < 2:
                continue
            env = dict(os.environ)
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.probe_levers",
                "--one",
                config,
                "--repeats",
                str(args.repeats),
                "--min-time",
                str(args.min_time),
            ]
            if args.variants or args.sharding:
                cmd += ["--variants", *(args.variants or ["current", "hoist"])]
            if sharded:
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
                cmd.append("--sharded-worker")
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            if p.returncode or not lines:
                print(f"{config} sharded={sharded}: failed: {p.stderr[-2000:]}", flush=True)
                continue
            r = json.loads(lines[-1])
            results.append(r)
            print(_md([r], {**meta, "load_end": os.getloadavg()}), flush=True)
    meta["load_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "probe_levers_" + (args.tag or _dt.datetime.now().strftime("%Y%m%d_%H%M%S"))
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (out / f"{stem}.md").write_text(_md(results, meta))
    print(f"wrote {out / stem}.json and .md")


if __name__ == "__main__":
    main()
