"""One builder per peer: each returns the forward and training-step callables for one config.

Every peer computes the same thing: a single-layer LSTM (or GRU) over ``xs [B, T, D]`` returning all hidden states
``ys [B, T, H]``; the training loss is ``mean((ys - target)**2)`` with ``target [B, T, H]``, and the optimiser is
Adam (lr 1e-3): optax for the JAX peers, ``torch.optim.Adam`` for PyTorch.

A JAX builder returns a :class:`JaxBench`: pure functions plus their arguments; the harness jits, lowers and
compiles them itself (so compile time and ``memory_analysis()`` are measured the same way for every JAX peer).
The PyTorch builder returns a :class:`EagerBench` of zero-argument callables.

Imports are local to each builder: a worker process imports only the library it measures.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LR = 1e-3
# where the worker runs: "cpu" or "gpu" (set by bench_rnn's worker from its --platform; JAX itself is pointed there
# by JAX_PLATFORMS, PyTorch by the device its builder picks)
PLATFORM_ENV = "JAXRNN_BENCH_PLATFORM"


def platform() -> str:
    return os.environ.get(PLATFORM_ENV, "cpu")


@dataclass
class JaxBench:
    fwd: Callable  # fwd(params, xs) -> ys
    fwd_args: tuple
    train: Callable  # train(params, opt_state, xs, target) -> (params, opt_state, loss); params/opt_state donated
    train_args: tuple
    note: str = ""


@dataclass
class EagerBench:
    fwd: Callable[[], Any]
    train: Callable[[], Any]
    note: str = ""
    extra: dict = field(default_factory=dict)


def _data(cfg, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((cfg["B"], cfg["T"], cfg["D"]), dtype=np.float32)
    target = 0.1 * rng.standard_normal((cfg["B"], cfg["T"], cfg["H"]), dtype=np.float32)
    return xs, target


def _jax_bench(apply, params, cfg, note="", sharded=False) -> JaxBench:
    """Wrap ``apply(params, xs) -> ys [B, T, H]`` into the common forward and Adam training step."""
    import jax
    import jax.numpy as jnp
    import optax

    xs, target = _data(cfg)
    opt = optax.adam(LR)

    def loss_fn(p, x, t):
        return jnp.mean((apply(p, x) - t) ** 2)

    def train(p, s, x, t):
        loss, g = jax.value_and_grad(loss_fn)(p, x, t)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    opt_state = opt.init(params)
    xs, target = jnp.asarray(xs), jnp.asarray(target)
    if sharded:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        devices = jax.devices()
        if len(devices) < 2 or cfg["B"] % len(devices):
            raise RuntimeError(f"needs >= 2 devices dividing B={cfg['B']} (have {len(devices)})")
        mesh = Mesh(devices, ("batch",))  # jaxrnn.parallel.AXIS: jaxrnn.rnn runs per device under this mesh
        rep = NamedSharding(mesh, PartitionSpec())
        bat = NamedSharding(mesh, PartitionSpec("batch"))
        plain_apply = apply

        def apply(p, x):
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                return plain_apply(p, x)

        params = jax.device_put(params, rep)
        opt_state = jax.device_put(opt_state, rep)
        xs, target = jax.device_put(xs, bat), jax.device_put(target, bat)
        note = (note + "; " if note else "") + f"batch split over {len(devices)} host devices"
    return JaxBench(
        fwd=apply,
        fwd_args=(params, xs),
        train=train,
        train_args=(params, opt_state, xs, target),
        note=note,
    )


# --------------------------------------------------------------------------------------------------------- jaxrnn
def jaxrnn_has_grad_kw() -> bool:
    import jaxrnn

    return "grad" in inspect.signature(jaxrnn.rnn).parameters


# jaxrnn.feature_major's thresholds put out of reach: every scan stays row-major (used by probe_levers too)
ROW_MAJOR_THRESHOLDS = {"MIN_GATE_WIDTH": 1 << 62, "GRU_FORWARD_MIN": ()}


def build_jaxrnn(cfg, *, grad=None, checkpoint_every=None, sharded=False, unroll=None, row_major=False):
    import jax

    import jaxrnn

    if row_major:  # this worker process only: wide LSTM and GRU scans stay row-major (the A/B of feature_major)
        from jaxrnn import feature_major

        for name, value in ROW_MAJOR_THRESHOLDS.items():
            setattr(feature_major, name, value)

    cell = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru}[cfg["cell"]]
    params = cell.init(jax.random.key(0), cfg["D"], cfg["H"])
    kw = {}
    if checkpoint_every is not None:
        kw["checkpoint_every"] = checkpoint_every
    if unroll is not None:  # None: the library default (8 on a GPU, 1 elsewhere)
        kw["unroll"] = unroll
    if grad is not None:
        if not jaxrnn_has_grad_kw():
            raise RuntimeError("jaxrnn.rnn has no `grad` keyword yet (fastpath not available)")
        kw["grad"] = grad

    def apply(p, xs):
        return jaxrnn.rnn(cell, p, xs, **kw)[1]

    note = ", ".join(f"{k}={v}" for k, v in kw.items())
    if row_major:
        note = (note + "; " if note else "") + "row-major scan"
    if grad is None and checkpoint_every is None:
        try:  # the library default changes over time: record which path grad=None took in this run
            from jaxrnn.driver import _check_grad

            note = (note + "; " if note else "") + (
                "default grad: analytic" if _check_grad(cell, None) else "default grad: autodiff"
            )
        except Exception:  # noqa: BLE001
            pass
    if unroll is None:
        try:  # likewise the unroll that unroll=None stands for on this backend
            from jaxrnn.driver import default_unroll

            note = (note + "; " if note else "") + f"default unroll: {default_unroll()}"
        except ImportError:
            pass
    return _jax_bench(apply, params, cfg, note=note, sharded=sharded)


# ----------------------------------------------------------------------------------------------------------- flax
def build_flax(cfg):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    cell = nn.OptimizedLSTMCell(cfg["H"]) if cfg["cell"] == "lstm" else nn.GRUCell(cfg["H"])
    model = nn.RNN(cell)
    params = model.init(jax.random.key(0), jnp.zeros((cfg["B"], cfg["T"], cfg["D"]), jnp.float32))

    def apply(p, xs):
        return model.apply(p, xs)

    return _jax_bench(apply, params, cfg, note=f"nn.RNN({type(cell).__name__})")


# ------------------------------------------------------------------------------------------------------- equinox
def build_equinox(cfg):
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from jax import lax

    H = cfg["H"]
    if cfg["cell"] == "lstm":
        cell = eqx.nn.LSTMCell(cfg["D"], H, key=jax.random.key(0))
    else:
        cell = eqx.nn.GRUCell(cfg["D"], H, key=jax.random.key(0))
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    is_lstm = cfg["cell"] == "lstm"

    def apply(p, xs):
        c = eqx.combine(p, static)
        B = xs.shape[0]
        zeros = jnp.zeros((B, H), xs.dtype)
        carry0 = (zeros, zeros) if is_lstm else zeros

        def body(carry, x):
            carry = jax.vmap(c)(x, carry)
            return carry, (carry[0] if is_lstm else carry)

        _, ys = lax.scan(body, carry0, jnp.swapaxes(xs, 0, 1))
        return jnp.swapaxes(ys, 0, 1)

    return _jax_bench(apply, params, cfg, note=f"eqx.nn.{type(cell).__name__} vmapped under lax.scan")


# --------------------------------------------------------------------------------------------------------- haiku
def build_haiku(cfg):
    import haiku as hk
    import jax
    import jax.numpy as jnp

    H = cfg["H"]
    core_cls = hk.LSTM if cfg["cell"] == "lstm" else hk.GRU

    def f(xs):
        core = core_cls(H)
        state = core.initial_state(xs.shape[0])
        ys, _ = hk.dynamic_unroll(core, xs, state, time_major=False)
        return ys

    model = hk.without_apply_rng(hk.transform(f))
    params = model.init(jax.random.key(0), jnp.zeros((cfg["B"], cfg["T"], cfg["D"]), jnp.float32))
    return _jax_bench(model.apply, params, cfg, note=f"hk.dynamic_unroll(hk.{core_cls.__name__})")


# --------------------------------------------------------------------------------------------------------- keras
def build_keras(cfg):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"keras backend is {keras.backend.backend()}, need jax (set KERAS_BACKEND=jax)")
    layer_cls = keras.layers.LSTM if cfg["cell"] == "lstm" else keras.layers.GRU
    layer = layer_cls(cfg["H"], return_sequences=True)
    layer.build((cfg["B"], cfg["T"], cfg["D"]))
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def apply(p, xs):
        ys, _ = layer.stateless_call(p, non_trainable, xs)
        return ys

    return _jax_bench(
        apply,
        trainable,
        cfg,
        note=f"keras.layers.{layer_cls.__name__} via stateless_call in a jitted optax step (not model.fit)",
    )


# --------------------------------------------------------------------------------------------------------- torch
def build_torch(cfg):
    """``torch.nn.LSTM | GRU``: on CPU with 2 threads (oneDNN); on GPU with ``cuda``, where it runs cuDNN's RNN."""
    import torch

    on_gpu = platform() == "gpu"
    if on_gpu and not torch.cuda.is_available():
        raise RuntimeError("--platform gpu, but torch.cuda.is_available() is False")
    device = torch.device("cuda" if on_gpu else "cpu")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    xs, target = _data(cfg)
    xs, target = torch.from_numpy(xs).to(device), torch.from_numpy(target).to(device)
    mod_cls = torch.nn.LSTM if cfg["cell"] == "lstm" else torch.nn.GRU
    model = mod_cls(cfg["D"], cfg["H"], batch_first=True).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)

    def fwd():
        with torch.inference_mode():
            ys = model(xs)[0]
        sync()
        return ys

    def train():
        opt.zero_grad(set_to_none=True)
        ys, _ = model(xs)
        loss = ((ys - target) ** 2).mean()
        loss.backward()
        opt.step()
        sync()
        return loss

    if on_gpu:
        where = (
            f"cuda ({torch.cuda.get_device_name()}), cuDNN {torch.backends.cudnn.version()}, "
            f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}"
        )
    else:
        where = f"{torch.get_num_threads()} threads"
    return EagerBench(
        fwd=fwd,
        train=train,
        note=f"torch.nn.{mod_cls.__name__} batch_first, {where}, fwd under inference_mode",
        extra={"device_peak": (lambda: torch.cuda.max_memory_allocated()) if on_gpu else None},
    )


# ------------------------------------------------------------------------------------------- jax.experimental.rnn
def build_jax_cudnn(cfg):
    """``jax.experimental.rnn.lstm``: JAX's binding of cuDNN's LSTM (CUDA only; no GRU)."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import rnn

    if cfg["cell"] != "lstm":
        raise RuntimeError("jax.experimental.rnn has an LSTM only")
    if jax.default_backend() != "gpu":
        raise RuntimeError(f"jax.experimental.rnn.lstm needs a CUDA GPU (backend here: {jax.default_backend()})")
    B, D, H = cfg["B"], cfg["D"], cfg["H"]
    weights = rnn.init_lstm_weight(jax.random.key(0), D, H, 1, False)

    def apply(w, xs):
        zeros = jnp.zeros((1, B, H), xs.dtype)
        lengths = jnp.full((B,), xs.shape[1], jnp.int32)
        ys, _, _ = rnn.lstm(
            xs, zeros, zeros, w, lengths, input_size=D, hidden_size=H, num_layers=1, dropout=0.0, bidirectional=False
        )
        return ys

    return _jax_bench(apply, weights, cfg, note="jax.experimental.rnn.lstm (cuDNN), default precision")


# ----------------------------------------------------------------------------------------------------- roofline
def build_roofline(cfg):
    """One matmul of the total gate shape: ``[B*T, D+H] @ [D+H, G*H]`` (G=4 for LSTM, 3 for GRU)."""
    import jax.numpy as jnp
    import numpy as np

    G = 4 if cfg["cell"] == "lstm" else 3
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((cfg["B"] * cfg["T"], cfg["D"] + cfg["H"]), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((cfg["D"] + cfg["H"], G * cfg["H"]), dtype=np.float32))
    return (lambda a, w: a @ w), (a, w), 2.0 * a.shape[0] * a.shape[1] * w.shape[1]


# peer name -> (builder, kwargs, library module to check for). "jaxrnn" is the library default (``grad=None``: the
# analytic path for built-in cells, once jaxrnn has one); the -autodiff / -analytic variants force one path.
PEERS: dict[str, tuple[Callable, dict, str]] = {
    "jaxrnn": (build_jaxrnn, {}, "jaxrnn"),
    "jaxrnn-autodiff": (build_jaxrnn, {"grad": "autodiff"}, "jaxrnn"),
    "jaxrnn-analytic": (build_jaxrnn, {"grad": "analytic"}, "jaxrnn"),
    "jaxrnn-ckpt": (build_jaxrnn, {"checkpoint_every": 100}, "jaxrnn"),
    "jaxrnn-2dev": (build_jaxrnn, {"sharded": True}, "jaxrnn"),
    "jaxrnn-rowmajor": (build_jaxrnn, {"row_major": True}, "jaxrnn"),
    "jaxrnn-unroll1": (build_jaxrnn, {"unroll": 1}, "jaxrnn"),
    "jaxrnn-unroll8": (build_jaxrnn, {"unroll": 8}, "jaxrnn"),
    "flax": (build_flax, {}, "flax"),
    "equinox": (build_equinox, {}, "equinox"),
    "haiku": (build_haiku, {}, "haiku"),
    "keras": (build_keras, {}, "keras"),
    "torch": (build_torch, {}, "torch"),
    "jax-cudnn": (build_jax_cudnn, {}, "jax"),
}
# peers that need a GPU, and peers that run one kind of cell only
GPU_ONLY = {"jax-cudnn"}
CELLS = {"jax-cudnn": ("lstm",)}
