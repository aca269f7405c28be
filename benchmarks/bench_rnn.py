"""Side-by-side benchmark: jaxrnn against Flax, Equinox, Haiku, Keras 3 (JAX) and PyTorch, plus a matmul roofline.

    python -m benchmarks.bench_rnn                       # every config, every installed peer
    python -m benchmarks.bench_rnn --quick               # fewer repeats, shorter samples
    python -m benchmarks.bench_rnn --configs medium gru_medium --peers jaxrnn torch --repeats 7 --rounds 3

Every (peer, config) runs in a fresh worker subprocess (``--worker``), so that memory figures are per peer and no
thread pool or allocator is shared. With ``--rounds R`` every config is measured R times with the peer order rotated
each round; the reported figure is the median of all samples of all rounds. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "small": dict(cell="lstm", B=1, T=1000, D=8, H=32),
    "medium": dict(cell="lstm", B=32, T=100, D=32, H=128),
    "large": dict(cell="lstm", B=64, T=200, D=64, H=512),
    "gru_medium": dict(cell="gru", B=32, T=100, D=32, H=128),
    "gru_large": dict(cell="gru", B=64, T=200, D=64, H=512),
    "long": dict(cell="lstm", B=8, T=10000, D=32, H=256),
}
DEFAULT_PEERS = [
    "jaxrnn",
    "jaxrnn-autodiff",
    "jaxrnn-analytic",
    "jaxrnn-2dev",
    "flax",
    "equinox",
    "haiku",
    "keras",
    "torch",
]
# The long config is about memory: jaxrnn with and without checkpointing, and PyTorch for reference.
LONG_PEERS = ["jaxrnn", "jaxrnn-autodiff", "jaxrnn-ckpt", "torch"]
# With --platform gpu: one device (no -2dev), JAX's cuDNN binding as a peer, and the A/B of the GPU's default
# unroll (8 steps per loop trip there) against one step per trip.
GPU_PEERS = [
    "jaxrnn",
    "jaxrnn-autodiff",
    "jaxrnn-rowmajor",
    "jaxrnn-unroll1",
    "flax",
    "equinox",
    "haiku",
    "keras",
    "torch",
    "jax-cudnn",
]
GPU_LONG_PEERS = ["jaxrnn", "jaxrnn-autodiff", "jaxrnn-ckpt", "jaxrnn-unroll1", "torch", "jax-cudnn"]
JAX_PLATFORM_NAMES = {"cpu": "cpu", "gpu": "cuda"}
MAX_REPEATS = {"long": 3}  # a long training step takes seconds: fewer samples, one call each
REFERENCE = "jaxrnn"
# settings of the process environment that change the figures; recorded with every run
ENV_KNOBS = ("XLA_FLAGS", "GLIBC_TUNABLES", "LD_PRELOAD", "OMP_NUM_THREADS", "MALLOC_CONF", "JAX_PLATFORMS")
TWO_DEV_FLAG = "--xla_force_host_platform_device_count=2"
GIB = 1 << 30
MIB = 1 << 20


# ------------------------------------------------------------------------------------------------------- worker
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _time_samples(call, repeats, min_time):
    """Calibrate ``n`` calls per sample (>= min_time s), then ``repeats`` samples; seconds per call."""
    t0 = time.perf_counter()
    call()
    one = time.perf_counter() - t0
    n = max(1, math.ceil(min_time / max(one, 1e-6)))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        samples.append((time.perf_counter() - t0) / n)
    return samples, n


def _interleaved(calls: dict, repeats, min_time):
    """Alternate between the callables sample by sample, so that load changes hit all of them alike."""
    ns = {}
    for k, call in calls.items():  # calibrate
        t0 = time.perf_counter()
        call()
        ns[k] = max(1, math.ceil(min_time / max(time.perf_counter() - t0, 1e-6)))
    out = {k: [] for k in calls}
    cpu = {k: [] for k in calls}
    faults = {k: [] for k in calls}
    for _ in range(repeats):
        for k, call in calls.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(ns[k]):
                call()
            out[k].append((time.perf_counter() - t0) / ns[k])
            cpu[k].append((time.process_time() - c0) / ns[k])
            faults[k].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / ns[k])
    ns["cpu_s"] = cpu  # process CPU seconds per call, all threads: robust to load for single-threaded runtimes
    ns["minflt"] = faults  # minor page faults per call: the fresh memory each call touches, a deterministic count
    return out, ns


def run_worker(peer: str, config: str, repeats: int, min_time: float) -> dict:
    from benchmarks import _peers

    cfg = CONFIGS[config]
    res = {"peer": peer, "config": config, **cfg, "pid": os.getpid()}
    if peer == "roofline":
        return _roofline_worker(cfg, res, repeats, min_time)
    builder, kwargs, mod = _peers.PEERS[peer]
    if mod == "keras":
        os.environ.setdefault("KERAS_BACKEND", "jax")
    importlib.import_module(mod)  # import first, so that the RSS baseline excludes the library itself
    if mod != "torch":
        import jax
        import jax.numpy as jnp

        jnp.zeros(1).block_until_ready()  # and the JAX runtime
        res["device_kind"] = jax.devices()[0].device_kind
    rss0 = _rss_bytes()
    bench = builder(cfg, **kwargs)
    res["note"] = bench.note
    if isinstance(bench, _peers.EagerBench):
        t0 = time.perf_counter()
        bench.fwd()
        bench.train()
        res["first_call_s"] = time.perf_counter() - t0
        bench.train()  # warm-up
        bench.fwd()
        samples, ns = _interleaved({"fwd": bench.fwd, "train": bench.train}, repeats, min_time)
        res["compile_train_s"] = None
        res["compile_fwd_s"] = None
        if bench.extra.get("device_peak"):
            res["device_peak_bytes"] = int(bench.extra["device_peak"]())
    else:
        import jax

        t0 = time.perf_counter()
        fwd_c = jax.jit(bench.fwd).lower(*bench.fwd_args).compile()
        res["compile_fwd_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_c = jax.jit(bench.train, donate_argnums=(0, 1)).lower(*bench.train_args).compile()
        res["compile_train_s"] = time.perf_counter() - t0
        res["xla_mem_fwd"] = _mem(fwd_c)
        res["xla_mem_train"] = _mem(train_c)
        fwd_args = bench.fwd_args
        state = list(bench.train_args)
        # the forward shares params with the train step, whose params are donated: give it its own copy
        fwd_args = jax.tree.map(lambda a: a.copy(), fwd_args)

        def fwd():
            return jax.block_until_ready(fwd_c(*fwd_args))

        def train():
            p, s, loss = train_c(*state)
            state[0], state[1] = p, s
            return jax.block_until_ready(loss)

        for _ in range(1 if config == "long" else 2):  # warm-up
            fwd()
            train()
        samples, ns = _interleaved({"fwd": fwd, "train": train}, repeats, min_time)
        stats = jax.devices()[0].memory_stats() or {}  # None on CPU
        if "peak_bytes_in_use" in stats:
            res["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
    res["rss_delta_bytes"] = _maxrss_bytes() - rss0
    res["maxrss_bytes"] = _maxrss_bytes()
    res["fwd_s"] = samples["fwd"]
    res["train_s"] = samples["train"]
    cpu = ns.pop("cpu_s")
    res["fwd_cpu_s"], res["train_cpu_s"] = cpu["fwd"], cpu["train"]
    faults = ns.pop("minflt")
    res["fwd_minflt"], res["train_minflt"] = faults["fwd"], faults["train"]
    res["inner_calls"] = ns
    return res


def _mem(compiled) -> dict | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if m is None:
        return None
    d = {k: int(getattr(m, k + "_size_in_bytes", 0)) for k in ("argument", "output", "temp", "alias", "generated_code")}
    d["peak"] = d["argument"] + d["output"] + d["temp"] - d["alias"]
    return d


def _roofline_worker(cfg, res, repeats, min_time):
    import jax

    from benchmarks import _peers

    f, args, flops = _peers.build_roofline(cfg)
    c = jax.jit(f).lower(*args).compile()

    def call():
        return jax.block_until_ready(c(*args))

    call()
    samples, n = _time_samples(call, repeats, min_time)
    res.update(matmul_s=samples, matmul_flops=flops, inner_calls=n, note="[B*T, D+H] @ [D+H, G*H], one jitted matmul")
    return res


# ------------------------------------------------------------------------------------------------------- parent
def _available(peer: str, platform: str = "cpu") -> str | None:
    """None if the peer can run here, else the reason."""
    if peer == "roofline":
        return None
    from benchmarks import _peers

    if peer not in _peers.PEERS:
        return f"unknown peer {peer!r}"
    if peer in _peers.GPU_ONLY and platform != "gpu":
        return "needs a CUDA GPU (--platform gpu)"
    if peer == "jaxrnn-2dev" and platform == "gpu":
        return "splits the batch over 2 host devices: a CPU peer"
    mod = _peers.PEERS[peer][2]
    if importlib.util.find_spec(mod) is None:
        return f"{mod} is not installed (pip install -e '.[bench]')"
    if peer in ("jaxrnn-analytic", "jaxrnn-autodiff"):
        ok = subprocess.run(
            [
                sys.executable,
                "-c",
                "from benchmarks._peers import jaxrnn_has_grad_kw as f; raise SystemExit(0 if f() else 1)",
            ],
            capture_output=True,
        )
        if ok.returncode:
            return "jaxrnn.rnn has no `grad` keyword yet (analytic fast path not available)"
    return None


def _spawn(peer, config, repeats, min_time, timeout, platform="cpu"):
    from benchmarks import _peers

    env = dict(os.environ)
    env.setdefault("KERAS_BACKEND", "jax")
    env.setdefault("JAX_PLATFORMS", JAX_PLATFORM_NAMES[platform])
    env[_peers.PLATFORM_ENV] = platform
    flags = env.get("XLA_FLAGS", "")
    if peer == "jaxrnn-2dev":
        env["XLA_FLAGS"] = (flags + " " + TWO_DEV_FLAG).strip()
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_rnn",
        "--worker",
        peer,
        "--config",
        config,
        "--repeats",
        str(repeats),
        "--min-time",
        str(min_time),
    ]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=Path(__file__).resolve().parents[1]
        )
    except subprocess.TimeoutExpired:
        return {"peer": peer, "config": config, "error": f"timed out after {timeout}s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        return {"peer": peer, "config": config, "error": f"rc={p.returncode}: " + _error_line(p.stderr or p.stdout)}
    res = json.loads(lines[-1])
    res["worker_wall_s"] = wall
    return res


def _error_line(text: str) -> str:
    """The exception a worker died of (its last ``SomethingError: message`` line), else its last three lines."""
    lines = text.strip().splitlines()
    errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln)]
    return errors[-1] if errors else " | ".join(lines[-3:])


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _spread(xs):
    """Half the inter-quartile range relative to the median (a noise figure)."""
    if len(xs) < 4:
        return (max(xs) - min(xs)) / 2 / statistics.median(xs) if len(xs) > 1 else 0.0
    q = statistics.quantiles(xs, n=4)
    return (q[2] - q[0]) / 2 / statistics.median(xs)


def summarise(runs: list[dict]) -> dict:
    """Pool the rounds of each (config, peer) into one row."""
    by = {}
    for r in runs:
        by.setdefault((r["config"], r["peer"]), []).append(r)
    out = {}
    for (config, peer), rs in by.items():
        cfg = CONFIGS[config]
        steps = cfg["B"] * cfg["T"]
        ok = [r for r in rs if "error" not in r]
        row = {"peer": peer, "config": config, "rounds": len(ok)}
        if not ok:
            row["error"] = rs[-1]["error"]
            out[(config, peer)] = row
            continue
        row["note"] = ok[0].get("note", "")
        if peer == "roofline":
            t = [s for r in ok for s in r["matmul_s"]]
            row["matmul_s"] = statistics.median(t)
            row["matmul_gflops"] = ok[0]["matmul_flops"] / row["matmul_s"] / 1e9
            row["roofline_fwd"] = steps / row["matmul_s"]  # one gate matmul per forward
            row["roofline_train"] = steps / (3 * row["matmul_s"])  # forward + dX + dW matmuls
            out[(config, peer)] = row
            continue
        fwd = [s for r in ok for s in r["fwd_s"]]
        train = [s for r in ok for s in r["train_s"]]
        row.update(
            fwd_s=statistics.median(fwd),
            train_s=statistics.median(train),
            fwd_sps=steps / statistics.median(fwd),
            train_sps=steps / statistics.median(train),
            fwd_noise=_spread(fwd),
            train_noise=_spread(train),
            compile_train_s=_median([r.get("compile_train_s") for r in ok]),
            compile_fwd_s=_median([r.get("compile_fwd_s") for r in ok]),
            rss_delta_mib=_median([r["rss_delta_bytes"] for r in ok]) / MIB,
        )
        peak = _median([r.get("device_peak_bytes") for r in ok])
        if peak is not None:
            row["device_peak_mib"] = peak / MIB
        cpu = [s for r in ok for s in r.get("train_cpu_s", [])]
        if cpu:
            row["train_cpu_sps"] = steps / statistics.median(cpu)
            row["fwd_cpu_sps"] = steps / statistics.median([s for r in ok for s in r["fwd_cpu_s"]])
        faults = [s for r in ok for s in r.get("train_minflt", [])]
        if faults:
            row["train_minflt"] = statistics.median(faults)
        mt = ok[0].get("xla_mem_train")
        if mt:
            row["xla_train_peak_mib"] = mt["peak"] / MIB
            row["xla_train_temp_mib"] = mt["temp"] / MIB
        mf = ok[0].get("xla_mem_fwd")
        if mf:
            row["xla_fwd_peak_mib"] = mf["peak"] / MIB
        out[(config, peer)] = row
    # ratios
    for (config, _peer), row in out.items():
        ref = out.get((config, REFERENCE))
        roof = out.get((config, "roofline"))
        if "train_sps" not in row:
            continue
        if ref and "train_sps" in ref:
            row["jaxrnn_over_peer_train"] = ref["train_sps"] / row["train_sps"]
            row["jaxrnn_over_peer_fwd"] = ref["fwd_sps"] / row["fwd_sps"]
        if roof and "roofline_train" in roof:
            row["train_of_roofline"] = row["train_sps"] / roof["roofline_train"]
            row["fwd_of_roofline"] = row["fwd_sps"] / roof["roofline_fwd"]
    return out


def _fmt(x, spec):
    return "—" if x is None else format(x, spec)


def _env_text(env) -> str:
    """The recorded environment variables (``ENV_KNOBS``) as a sentence, or "" when none was set."""
    return " Environment: " + ", ".join(f"`{k}={v}`" for k, v in env.items()) + "." if env else ""


def markdown(summary: dict, meta: dict, skipped: dict) -> str:
    gpu = meta.get("platform") == "gpu"
    lines = [
        f"# jaxrnn benchmark — {meta['date']}",
        "",
        f"Machine: {meta['machine']}{', ' + meta['gpu'] if meta.get('gpu') else ''}. {meta['cpus']} CPUs, load average at start {meta['load_start']}, "
        f"at end {meta['load_end']}. jax {meta['versions'].get('jax')}, "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "jax")
        + f". Repeats {meta['repeats']} × rounds {meta['rounds']}, min sample {meta['min_time']} s."
        + _env_text(meta.get("env")),
        "",
        "Throughput in sequence-steps/s (B×T / seconds per call; median of all samples). `± n%` is half the IQR of the",
        "training-step samples. `jaxrnn ÷ peer` > 1 means jaxrnn is faster. `% roof` is the measured throughput as a",
        "fraction of the matmul roofline (one `[B·T, D+H] @ [D+H, G·H]` matmul per forward, three per training step).",
        "Memory: `XLA peak` = argument + output + temp − alias bytes of the compiled training step",
        "(`compiled.memory_analysis()`); `RSS Δ` = peak RSS of the worker process minus its RSS before the model was",
        "built (the only figure for PyTorch). `train per CPU-s` = B·T / process CPU seconds (all threads) per training",
        "step: robust to other load for the single-threaded JAX runtimes, not comparable for 2-thread PyTorch.",
        "`page faults` = minor page faults of the worker per training step (median): each is a 4 KiB page of fresh",
        "memory the step touched (fewer with huge pages), paid in kernel time on every step.",
        "",
    ]
    if gpu:
        lines[-1:-1] = [
            "GPU run: JAX on CUDA, PyTorch on `cuda` (cuDNN's RNN). `device peak` = the device allocator's peak bytes",
            "in use in the worker (`memory_stats()['peak_bytes_in_use']` for JAX, `torch.cuda.max_memory_allocated()`",
            "for PyTorch); `train per CPU-s` and `page faults` count host work only. Float32 matmuls run at each",
            "library's default precision (TF32 on this GPU for XLA's dots and cuDNN's RNN).",
        ]
    configs = []
    for c, _p in summary:
        if c not in configs:
            configs.append(c)
    for config in configs:
        cfg = CONFIGS[config]
        roof = summary.get((config, "roofline"), {})
        lines += [
            f"## {config}: {cfg['cell'].upper()} B={cfg['B']} T={cfg['T']} D={cfg['D']} H={cfg['H']}",
            "",
        ]
        if "matmul_s" in roof:
            lines += [
                f"Roofline: matmul {roof['matmul_gflops']:.1f} GFLOP/s → {roof['roofline_fwd']:,.0f} fwd / "
                f"{roof['roofline_train']:,.0f} train seq-steps/s.",
                "",
            ]
        lines += [
            "| peer | train seq-steps/s | jaxrnn ÷ peer (train) | fwd seq-steps/s | jaxrnn ÷ peer (fwd) | "
            "compile train (s) | XLA peak train (MiB) | RSS Δ (MiB) | % roof train | % roof fwd | train per CPU-s | "
            "page faults |" + (" device peak (MiB) |" if gpu else ""),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if gpu else ""),
        ]
        rows = [r for (c, p), r in summary.items() if c == config and p != "roofline"]
        rows.sort(key=lambda r: -r.get("train_sps", 0))
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['peer']} | error: {r['error'][:120]} | | | | | | | | | | |")
                continue
            lines.append(
                f"| {r['peer']} | {r['train_sps']:,.0f} ± {100 * r['train_noise']:.0f}% | "
                f"{_fmt(r.get('jaxrnn_over_peer_train'), '.2f')} | {r['fwd_sps']:,.0f} | "
                f"{_fmt(r.get('jaxrnn_over_peer_fwd'), '.2f')} | {_fmt(r.get('compile_train_s'), '.2f')} | "
                f"{_fmt(r.get('xla_train_peak_mib'), ',.0f')} | {r['rss_delta_mib']:,.0f} | "
                f"{_fmt(None if r.get('train_of_roofline') is None else 100 * r['train_of_roofline'], '.0f')} | "
                f"{_fmt(None if r.get('fwd_of_roofline') is None else 100 * r['fwd_of_roofline'], '.0f')} | "
                f"{_fmt(r.get('train_cpu_sps'), ',.0f')} | {_fmt(r.get('train_minflt'), ',.0f')} |"
                + (f" {_fmt(r.get('device_peak_mib'), ',.0f')} |" if gpu else "")
            )
        lines.append("")
    notes = sorted({(r["peer"], r.get("note", "")) for r in summary.values() if r.get("note")})
    if notes:
        lines += ["Peer notes:", ""] + [f"- {p}: {n}" for p, n in notes] + [""]
    if skipped:
        lines += ["Skipped:", ""] + [f"- {p}: {why}" for p, why in skipped.items()] + [""]
    return "\n".join(lines)


def _gpu_name() -> str:
    """The GPU as ``nvidia-smi`` names it (name, memory, driver), or "" without one."""
    try:
        p = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return "; ".join(ln.strip() for ln in p.stdout.splitlines() if ln.strip()) if p.returncode == 0 else ""


def _versions() -> dict:
    out = {}
    for mod in ("jax", "jaxlib", "flax", "equinox", "haiku", "keras", "torch", "optax"):
        try:
            from importlib.metadata import version

            out[mod] = version({"haiku": "dm-haiku"}.get(mod, mod))
        except Exception:  # noqa: BLE001
            pass
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument(
        "--peers",
        nargs="+",
        default=None,
        help=f"default: {' '.join(DEFAULT_PEERS)} (long: {' '.join(LONG_PEERS)}); roofline always runs",
    )
    ap.add_argument("--repeats", type=int, default=None, help="samples per worker (default 7, quick 3)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every config this many times, peer order rotated")
    ap.add_argument("--min-time", type=float, default=None, help="seconds per sample (default 0.3, quick 0.1)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--platform",
        choices=list(JAX_PLATFORM_NAMES),
        default="cpu",
        help="where the workers run: JAX_PLATFORMS (unless set) and PyTorch's device; gpu adds jax-cudnn",
    )
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default=None, help="file name stem (default bench_<date>)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    min_time = args.min_time or (0.1 if args.quick else 0.3)

    if args.worker:
        res = run_worker(args.worker, args.config, repeats, min_time)
        print(json.dumps(res))
        return

    meta = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "load_start": os.getloadavg(),
        "versions": _versions(),
        "repeats": repeats,
        "rounds": args.rounds,
        "min_time": min_time,
        "argv": sys.argv,
        "env": {k: os.environ[k] for k in ENV_KNOBS if os.environ.get(k)},
        "platform": args.platform,
    }
    if args.platform == "gpu":
        meta["gpu"] = _gpu_name()
        if not meta["gpu"]:
            ap.error("--platform gpu: nvidia-smi lists no NVIDIA GPU on this machine")
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
        meta["machine"] += f" ({model})"
    except OSError:
        pass
    out = Path(args.out)
    stem = args.tag or ("bench_" + _dt.datetime.now().strftime("%Y%m%d_%H%M%S"))
    from benchmarks import _peers

    skipped, runs = {}, []
    avail_cache = {}
    t_start = time.perf_counter()
    for config in args.configs:
        if args.platform == "gpu":
            defaults = GPU_LONG_PEERS if config == "long" else GPU_PEERS
        else:
            defaults = LONG_PEERS if config == "long" else DEFAULT_PEERS
        peers = args.peers or defaults
        peers = [p for p in peers if not (p == "jaxrnn-2dev" and CONFIGS[config]["B"] < 2)]
        peers = [p for p in peers if p not in _peers.CELLS or CONFIGS[config]["cell"] in _peers.CELLS[p]]
        todo = []
        for p in peers:
            if p not in avail_cache:
                avail_cache[p] = _available(p, args.platform)
            if avail_cache[p]:
                skipped[p] = avail_cache[p]
            else:
                todo.append(p)
        todo = ["roofline"] + todo
        for rnd in range(args.rounds):
            k = rnd % len(todo)
            order = todo[k:] + todo[:k]
            for peer in order:
                r = _spawn(
                    peer, config, min(repeats, MAX_REPEATS.get(config, repeats)), min_time, args.timeout, args.platform
                )
                r["round"] = rnd
                runs.append(r)
                msg = r.get("error") or (
                    f"train {CONFIGS[config]['B'] * CONFIGS[config]['T'] / statistics.median(r['train_s']):,.0f}"
                    f" fwd {CONFIGS[config]['B'] * CONFIGS[config]['T'] / statistics.median(r['fwd_s']):,.0f} seq-steps/s"
                    if "train_s" in r
                    else f"matmul {statistics.median(r['matmul_s']) * 1e3:.2f} ms"
                )
                print(f"[{time.perf_counter() - t_start:6.0f}s] {config:>10} r{rnd} {peer:>16}: {msg}", flush=True)
                _write(out, stem, meta, skipped, runs, t_start, partial=True)
    md = _write(out, stem, meta, skipped, runs, t_start, partial=False)
    print(md)
    print(f"wrote {out / stem}.json and .md in {time.perf_counter() - t_start:.0f}s")


def _write(out: Path, stem: str, meta, skipped, runs, t_start, partial: bool) -> str:
    """Write the JSON and markdown (after every worker too, marked partial, so an interrupted run keeps its data)."""
    meta = dict(meta, load_end=os.getloadavg(), total_s=time.perf_counter() - t_start, partial=partial)
    summary = summarise(runs)
    md = markdown(summary, meta, skipped)
    if partial:
        md = "**Partial run (interrupted or in progress).**\n\n" + md
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "configs": CONFIGS,
                "skipped": skipped,
                "summary": [dict(v) for v in summary.values()],
                "runs": runs,
            },
            indent=1,
        )
    )
    (out / f"{stem}.md").write_text(md)
    return md


if __name__ == "__main__":
    main()
