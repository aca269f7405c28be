"""Training: a jitted optax train step that skips non-finite updates, evaluation, and a resumable ``fit`` loop.

::

    def loss_fn(params, batch, *, key=None):          # key: only if you use dropout (None at evaluation)
        x, y = batch
        _, ys = layer.apply(params.rnn, x, key=key, train=key is not None)
        return jnp.mean((jaxrnn.dense.apply(params.head, ys) - y) ** 2)      # or (loss, {"mae": ...})

    state = init_state(params, optax.adam(1e-3), jax.random.key(0))
    step = make_train_step(loss_fn, optax.adam(1e-3), clip_norm=1.0)
    state, history = fit(state, step, lambda epoch: data.batches(jax.random.fold_in(k, epoch), x, y,
                                                                   batch_size=32),
                         epochs=20, eval_data=val_batches, patience=3, checkpoint_dir="ckpt", every=100)

One step, with ``g = ∇_θ L(θ, batch)``::

    ok = isfinite(L) and all(isfinite(g))
    g' = g · min(1, clip_norm / ‖g‖₂)                          (optax.clip_by_global_norm, if clip_norm)
    u, s' = optimizer.update(g', s, θ);  θ' = θ + u
    state' = (θ', s', step + 1, key, 0)  if ok  else  (θ, s, step, key, bad_steps + 1)

The choice is made in the graph (``jnp.where``), so a bad batch costs no host round trip and no NaN reaches the
parameters or the optimizer moments.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import os
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn import _checks
from jaxrnn import checkpoint as _ckpt
from jaxrnn import parallel as _parallel

__all__ = [
    "EvalStep",
    "NonFiniteError",
    "TrainState",
    "TrainStep",
    "evaluate",
    "fit",
    "fit_arrays",
    "init_state",
    "make_eval_step",
    "make_train_step",
]

RESERVED_METRICS = ("loss", "grad_norm", "skipped")
CHECKPOINT_NAME = "train.ckpt"


class NonFiniteError(FloatingPointError):
    """``fit`` stopped: too many consecutive steps had a non-finite loss or gradient."""


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (a pytree: checkpoint it, jit it, replicate it).

    Attributes:
      params: the model parameters (any pytree).
      opt_state: the optax optimizer state for ``params``.
      step: int32 scalar, the number of updates applied (skipped steps do not count).
      key: PRNG key; step ``t`` gets ``jax.random.fold_in(key, t)`` for dropout.
      bad_steps: int32 scalar, the number of consecutive skipped (non-finite) steps; 0 after a good step.
    """

    params: Any
    opt_state: Any
    step: Any
    key: Any
    bad_steps: Any = np.int32(0)


def _check_optimizer(optimizer) -> None:
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), got {type(optimizer).__name__}"
        )


def init_state(params, optimizer: optax.GradientTransformation, key) -> TrainState:
    """A fresh :class:`TrainState`: ``optimizer.init(params)``, ``step = 0``, ``bad_steps = 0``.

    ``params`` are copied, so the caller's arrays stay valid when the train step donates the state's buffers.
    """
    _check_optimizer(optimizer)
    _checks.check_key(key)
    params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
    # every leaf its own buffer: an optimizer state may alias params or repeat one array (optax.lbfgs), and a
    # donating step cannot donate one buffer twice
    opt_state = jax.tree.map(lambda x: jnp.array(x, copy=True), optimizer.init(params))
    return TrainState(
        params=params,
        opt_state=opt_state,
        step=jnp.zeros((), jnp.int32),
        key=jnp.array(key, copy=True),
        bad_steps=jnp.zeros((), jnp.int32),
    )


def _accepts_key(fn) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    param = sig.parameters.get("key")
    return param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)


def _call_loss(loss_fn, params, batch, key=None):
    """``loss_fn`` called and its result checked at trace time: ``(scalar loss, dict of scalar aux)``."""
    out = loss_fn(params, batch) if key is None else loss_fn(params, batch, key=key)
    if isinstance(out, tuple):
        if len(out) != 2:
            raise TypeError(f"loss_fn must return a scalar or (scalar, dict of scalars), got a tuple of {len(out)}")
        loss, aux = out
    else:
        loss, aux = out, {}
    if not hasattr(loss, "shape") or not hasattr(loss, "dtype"):
        loss = jnp.asarray(loss)
    if loss.shape != () or not jnp.issubdtype(loss.dtype, jnp.floating):
        raise ValueError(
            f"loss_fn must return a floating-point scalar loss, got shape {list(loss.shape)} dtype {loss.dtype}; "
            f"reduce it with jnp.mean"
        )
    if not isinstance(aux, Mapping):
        raise TypeError(f"loss_fn's aux output must be a dict of scalars, got {type(aux).__name__}")
    for name, value in aux.items():
        if not isinstance(name, str) or name in RESERVED_METRICS:
            raise ValueError(f"loss_fn's aux keys must be strings other than {RESERVED_METRICS}, got {name!r}")
        if np.shape(value) != ():
            raise ValueError(f"loss_fn's aux[{name!r}] must be a scalar, got shape {list(np.shape(value))}")
        if jnp.issubdtype(jnp.result_type(value), jnp.complexfloating):
            raise TypeError(f"loss_fn's aux[{name!r}] must be real, got dtype {jnp.result_type(value)}")
    return loss, {k: jnp.asarray(v, jnp.float32) for k, v in aux.items()}


def _check_opt_state(optimizer, state: TrainState) -> None:
    """``state.opt_state`` must have the structure ``optimizer.init(state.params)`` makes."""
    expected = jax.tree_util.tree_structure(jax.eval_shape(optimizer.init, state.params))
    got = jax.tree_util.tree_structure(state.opt_state)
    if got != expected:
        raise ValueError(
            "state.opt_state does not match this train step's optimizer: it must be optimizer.init(params) "
            "(jaxrnn.init_state(params, optimizer, key) with the same optimizer and params structure); "
            f"expected {expected}, got {got}"
        )


class TrainStep:
    """The callable returned by :func:`make_train_step`: ``step(state, batch) -> (state, metrics)``.

    Attributes: ``loss_fn``, ``optimizer``, ``clip_norm``, ``mesh``, ``jitted`` (the ``jax.jit`` function), and
    ``cache_size()``, the number of compiled versions (1 for a run with fixed batch shapes).
    """

    def __init__(self, loss_fn, optimizer, clip_norm, mesh, donate: bool):
        self.loss_fn, self.optimizer, self.clip_norm, self.mesh = loss_fn, optimizer, clip_norm, mesh
        pass_key = _accepts_key(loss_fn)
        clipper = optax.clip_by_global_norm(clip_norm) if clip_norm is not None else None

        def step(state: TrainState, batch):
            _check_opt_state(optimizer, state)  # at trace time: once per state structure, nothing per call
            key = jax.random.fold_in(state.key, state.step) if pass_key else None

            def objective(params):
                return _call_loss(loss_fn, params, batch, key)

            (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
            grad_norm = optax.tree.norm(grads).astype(jnp.float32)
            finite = [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]
            ok = jnp.isfinite(loss) & jnp.all(jnp.stack(finite)) if finite else jnp.isfinite(loss)
            if clipper is not None:
                grads, _ = clipper.update(grads, clipper.init(state.params))
            extra = {}
            if isinstance(optimizer, optax.GradientTransformationExtraArgs):
                # what optax's line-search optimizers (optax.lbfgs) ask for; others ignore them
                extra = {"value": loss, "grad": grads, "value_fn": lambda p: objective(p)[0]}
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params, **extra)
            params = optax.apply_updates(state.params, updates)

            def pick(new, old):
                return jnp.where(ok, new, old)

            new_state = TrainState(
                params=jax.tree.map(pick, params, state.params),
                opt_state=jax.tree.map(pick, opt_state, state.opt_state),
                step=jnp.where(ok, state.step + 1, state.step).astype(jnp.int32),
                key=state.key,
                bad_steps=jnp.where(ok, 0, jnp.asarray(state.bad_steps) + 1).astype(jnp.int32),
            )
            metrics = {
                "loss": loss.astype(jnp.float32),
                "grad_norm": grad_norm,
                "skipped": jnp.where(ok, 0, 1).astype(jnp.int32),
                **aux,
            }
            return new_state, metrics

        kwargs = {"donate_argnums": (0,)} if donate else {}
        if mesh is not None:
            kwargs["out_shardings"] = _parallel.replicated(mesh)
        self.jitted = jax.jit(step, **kwargs)

    def cache_size(self) -> int:
        return self.jitted._cache_size()

    def __call__(self, state: TrainState, batch):
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a TrainState (from init_state), got {type(state).__name__}")
        try:
            if self.mesh is None:
                return self.jitted(state, batch)
            return _parallel.call_on_mesh(self.jitted, self.mesh, state, batch)
        except Exception as err:  # a donated state fails deep in XLA; say why, off the per-call path
            if any(isinstance(leaf, jax.Array) and leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(state)):
                raise ValueError(
                    "state holds arrays that were donated to an earlier step: a train step consumes its input "
                    "state, so pass on the state it returned (state, metrics = step(state, batch)), or build it "
                    "with make_train_step(..., donate=False)"
                ) from err
            raise


def make_train_step(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    clip_norm: float | None = None,
    mesh: jax.sharding.Mesh | None = None,
    donate: bool = True,
) -> TrainStep:
    """A jitted ``step(state, batch) -> (state, metrics)``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> loss`` or ``-> (loss, aux)``, ``loss`` a float scalar, ``aux`` a dict of
        scalars (reported as metrics). If it takes a keyword ``key``, it gets ``fold_in(state.key, state.step)``.
      optimizer: the optax transformation ``state.opt_state`` was made with (``init_state(params, optimizer, key)``;
        checked on the first call with each state structure). One that takes extra arguments
        (``optax.GradientTransformationExtraArgs``) gets ``value`` (the loss), ``grad`` and ``value_fn`` (the loss
        as a function of the params, same batch and key), so line-search optimizers such as ``optax.lbfgs()`` work.
      clip_norm: if given, gradients are scaled to global L2 norm ``<= clip_norm`` (``optax.clip_by_global_norm``)
        before the optimizer; the optimizer state is unaffected, so it stays the one ``init_state`` made.
      mesh: a mesh from :func:`jaxrnn.parallel.data_mesh`: each batch is split along axis 0 over its devices,
        the state replicated. Batch sizes must be divisible by the device count.
      donate: donate the input state's buffers to the output (the input state must not be used afterwards).

    Returns:
      A :class:`TrainStep`. ``metrics`` holds float32 ``loss`` and ``grad_norm`` (before clipping), int32
      ``skipped`` (1 when the loss or a gradient was non-finite and the update was skipped), and the aux entries.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(params, batch), got {type(loss_fn).__name__}")
    _check_optimizer(optimizer)
    if clip_norm is not None and (
        isinstance(clip_norm, bool)
        or not isinstance(clip_norm, (int, float, np.integer, np.floating))
        or not clip_norm > 0
        or not math.isfinite(clip_norm)
    ):
        raise ValueError(f"clip_norm must be a positive finite number or None, got {clip_norm!r}")
    donate = _checks.check_flag(donate, "donate")
    if mesh is not None:
        _parallel.replicated(mesh)  # validates
    return TrainStep(loss_fn, optimizer, clip_norm, mesh, donate)


class EvalStep:
    """The callable returned by :func:`make_eval_step`: ``eval_step(params, batch) -> {"loss": ..., **aux}``."""

    def __init__(self, loss_fn, mesh):
        self.loss_fn, self.mesh = loss_fn, mesh

        def step(params, batch):
            loss, aux = _call_loss(loss_fn, params, batch)
            return {"loss": loss.astype(jnp.float32), **aux}

        self.jitted = jax.jit(step, **({"out_shardings": _parallel.replicated(mesh)} if mesh is not None else {}))

    def cache_size(self) -> int:
        return self.jitted._cache_size()

    def __call__(self, params, batch):
        if self.mesh is None:
            return self.jitted(params, batch)
        return _parallel.call_on_mesh(self.jitted, self.mesh, params, batch)


def make_eval_step(loss_fn: Callable, *, mesh: jax.sharding.Mesh | None = None) -> EvalStep:
    """A jitted ``eval_step(params, batch) -> dict`` of float32 scalars: ``loss`` and ``loss_fn``'s aux entries.

    ``loss_fn`` is called as ``loss_fn(params, batch)``, without ``key``: give ``key`` a default of None and
    switch dropout off when it is None.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(params, batch), got {type(loss_fn).__name__}")
    if mesh is not None:
        _parallel.replicated(mesh)
    return EvalStep(loss_fn, mesh)


_EVAL_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _as_eval_step(fn) -> EvalStep:
    if isinstance(fn, EvalStep):
        return fn
    if isinstance(fn, TrainStep):
        fn = fn.loss_fn
    if not callable(fn):
        raise TypeError(f"loss_fn_or_eval_step must be a loss function or an EvalStep, got {type(fn).__name__}")
    try:
        cached = _EVAL_CACHE.get(fn)
        if cached is None:
            cached = _EVAL_CACHE[fn] = make_eval_step(fn)
        return cached
    except TypeError:  # not weak-referenceable
        return make_eval_step(fn)


def batch_size(batch) -> int:
    """The leading-axis size of the first leaf of rank >= 1 in ``batch`` (1 when every leaf is a scalar)."""
    for leaf in jax.tree_util.tree_leaves(batch):
        if np.ndim(leaf):
            return int(np.shape(leaf)[0])
    return 1


def evaluate(loss_fn_or_eval_step, params, batches: Iterable) -> dict[str, float]:
    """Metrics of ``params`` averaged over ``batches``: ``{"loss": ..., **aux}`` as python floats.

    Each batch's metrics are weighted by its size, the leading-axis length of its first array leaf
    (:func:`batch_size`), so the result is the per-example mean when ``loss_fn`` is a per-example mean, whatever
    the size of the last batch. (For a loss averaged over valid time steps, this weighs sequences, not steps.)
    Sums stay on the device; the host reads them once, at the end.

    Args:
      loss_fn_or_eval_step: a loss function (its eval step is compiled once and cached), an :class:`EvalStep`,
        or a :class:`TrainStep` (its loss function is used).
      params: the parameters.
      batches: an iterable of batches (not empty).
    """
    step = _as_eval_step(loss_fn_or_eval_step)
    sums, total = None, 0
    for batch in batches:
        n = batch_size(batch)
        metrics = step(params, batch)
        scaled = {k: v * np.float32(n) for k, v in metrics.items()}
        sums = scaled if sums is None else {k: sums[k] + scaled[k] for k in sums}
        total += n
    if sums is None:
        raise ValueError("batches must yield at least one batch, got an empty iterable")
    return {k: float(v) / total for k, v in jax.device_get(sums).items()}


# ----------------------------------------------------------------------------------------------------------- fit


def _accumulate_impl(acc, metrics, bad_steps, n, index, max_bad):
    ok = metrics["skipped"] == 0
    weight = jnp.where(ok, n, 0.0)
    sums = {k: acc["sums"][k] + jnp.where(ok, metrics[k] * n, 0.0) for k in acc["sums"]}
    hit = (acc["first_hit"] < 0) & (bad_steps >= max_bad)
    return {
        "sums": sums,
        "weight": acc["weight"] + weight,
        "skipped": acc["skipped"] + metrics["skipped"],
        "first_hit": jnp.where(hit, index, acc["first_hit"]),
    }


_accumulate = jax.jit(_accumulate_impl)


def _new_acc(metric_names, sums=None, weight=0.0, skipped=0):
    sums = sums or {}
    return {
        "sums": {k: jnp.float32(sums.get(k, 0.0)) for k in metric_names},
        "weight": jnp.float32(weight),
        "skipped": jnp.int32(skipped),
        "first_hit": jnp.int32(-1),
    }


class _Progress:
    """A one-line progress display on stderr, redrawn at sync points."""

    def __init__(self, enabled: bool, stream=None):
        self.enabled, self.stream, self.width = enabled, stream or sys.stderr, 0

    def show(self, epoch, epochs, done, total, loss, rate):
        if not self.enabled:
            return
        if total:
            filled = int(20 * done / max(total, 1))
            bar = f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{total}"
        else:
            bar = f"{done} batches"
        line = f"epoch {epoch + 1}/{epochs} {bar} loss {loss:.4g} {rate:,.0f} ex/s"
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        self.stream.flush()

    def end(self, text: str):
        if self.enabled:
            self.stream.write("\r" + text.ljust(self.width) + "\n")
            self.stream.flush()
            self.width = 0


def _history_format(path) -> str:
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"history_path must end in .jsonl, .json, .ndjson or .csv, got {os.fspath(path)!r}")


def _write_history(path, history: list[dict]) -> None:
    import json

    path = os.fspath(path)
    if _history_format(path) == "jsonl":
        text = "".join(json.dumps(row) + "\n" for row in history)
    else:
        columns = []
        for row in history:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        text = buffer.getvalue()
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _epoch_source(train_data) -> Callable[[int], Iterable]:
    if callable(train_data):
        return train_data
    if not isinstance(train_data, Iterable):
        raise TypeError(
            f"train_data must be a re-iterable (e.g. a list of batches) or a callable epoch -> iterable of batches, "
            f"got {type(train_data).__name__}"
        )
    if iter(train_data) is train_data:
        raise TypeError(
            "train_data is a one-shot iterator (e.g. a generator), which would be empty from the second epoch on: "
            "pass a list of batches or a callable epoch -> iterable of batches"
        )
    return lambda epoch: train_data


_NONFINITE_DATA_HINT = (
    "Drop or impute them first; if loss_fn masks them on purpose (NaN for a missing target), pass check_finite=False"
)


def _check_positive(value, name, allow_none=True):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")


def fit(
    state: TrainState,
    train_step: Callable,
    train_data,
    *,
    epochs: int = 1,
    eval_data=None,
    eval_fn=None,
    patience: int | None = None,
    restore_best: bool = True,
    checkpoint_dir=None,
    every: int | None = None,
    history_path=None,
    progress: bool | None = None,
    max_bad_steps: int | None = 10,
    sync_every: int = 20,
    check_finite: bool = True,
) -> tuple[TrainState, list[dict]]:
    """Train for ``epochs`` epochs; evaluate, stop early, checkpoint, resume, log.

    Args:
      state: the initial :class:`TrainState` (ignored in favour of the checkpoint when resuming).
      train_step: from :func:`make_train_step` (any ``(state, batch) -> (state, metrics)`` with ``metrics["loss"]``
        and ``metrics["skipped"]`` works).
      train_data: a re-iterable of batches (a list: the same order every epoch), or a callable
        ``epoch -> iterable of batches`` (``epoch`` counts from 0), e.g. ``lambda e: batches(fold_in(key, e), x, y,
        batch_size=32)`` for a fresh, reproducible shuffle each epoch.
      epochs: the total number of epochs (a resumed run continues up to this number).
      eval_data: batches (re-iterable, or callable ``epoch -> iterable``) evaluated after each epoch.
      eval_fn: a loss function or :class:`EvalStep` for ``eval_data``; default: ``train_step``'s own ``loss_fn``.
      patience: early stopping: stop after ``patience`` epochs without a new best of the monitored value
        (``eval_loss`` with ``eval_data``, else ``train_loss``). None: run all epochs.
      restore_best: with ``patience``, return the best epoch's params (the optimizer state and ``step`` are the
        final ones).
      checkpoint_dir: save ``<dir>/train.ckpt`` (state, early-stopping bookkeeping, history) after each epoch and
        every ``every`` batches; if the file exists, resume from it: the data of the interrupted epoch is
        re-created with ``train_data(epoch)`` and the batches already done are skipped, so the resumed run ends
        with bitwise the parameters of an uninterrupted one (given reproducible data, as from a list or a
        callable keyed by epoch).
      every: checkpoint every ``every`` batches (needs ``checkpoint_dir``).
      history_path: write the history after each epoch, as JSON lines (``.jsonl``/``.json``/``.ndjson``) or CSV.
      progress: a progress bar on stderr (loss, examples/s); None: only when stderr is a terminal.
      max_bad_steps: raise :class:`NonFiniteError` once this many consecutive steps were skipped for non-finite
        loss/gradients, naming the batch; None: never. The last checkpoint (saved before the bad run was
        detected) is kept.
      sync_every: the host reads metrics only every ``sync_every`` batches (for the display and the bad-step
        check), at checkpoints and at the end of an epoch; other steps are dispatched without waiting.
      check_finite: raise ``ValueError`` (naming the epoch, the batch and the leaf) when a floating NumPy leaf of
        a training batch holds NaN or inf, before the step runs; otherwise the step would be skipped as
        non-finite and the data lost silently. ``jax.Array`` leaves are not read (that would wait for the device
        at every step). False: no check, for a ``loss_fn`` that masks NaN on purpose.

    Returns:
      ``(state, history)``; ``history[i]`` is a dict: ``epoch`` (0-based), ``step`` (updates so far), ``batches``,
      ``skipped``, ``train_loss`` and ``train_<metric>`` (size-weighted means over the epoch's non-skipped steps),
      ``eval_loss``/``eval_<metric>`` with ``eval_data``, ``seconds``, ``examples_per_second``,
      ``steps_per_second``.
    """
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState (from init_state), got {type(state).__name__}")
    if not callable(train_step):
        raise TypeError(f"train_step must be callable (from make_train_step), got {type(train_step).__name__}")
    source = _epoch_source(train_data)
    _check_positive(epochs, "epochs", allow_none=False)
    _check_positive(patience, "patience")
    _check_positive(every, "every")
    _check_positive(max_bad_steps, "max_bad_steps")
    _check_positive(sync_every, "sync_every", allow_none=False)
    check_finite = _checks.check_flag(check_finite, "check_finite")
    restore_best = _checks.check_flag(restore_best, "restore_best")
    if progress is not None:
        progress = _checks.check_flag(progress, "progress")
    if every is not None and checkpoint_dir is None:
        raise ValueError(f"every={every} needs checkpoint_dir, got checkpoint_dir=None")
    if checkpoint_dir is not None and os.path.exists(checkpoint_dir) and not os.path.isdir(checkpoint_dir):
        raise ValueError(f"checkpoint_dir must be a directory, got the file {os.fspath(checkpoint_dir)!r}")
    if history_path is not None:
        _history_format(history_path)
        folder = os.path.dirname(os.path.abspath(os.fspath(history_path)))
        if not os.path.isdir(folder):
            raise ValueError(f"history_path's folder {folder!r} does not exist (history_path={history_path!r})")
    eval_source = None
    if eval_data is not None:
        eval_source = _epoch_source(eval_data)
        if not callable(eval_data) and hasattr(eval_data, "__len__") and len(eval_data) == 0:
            raise ValueError("eval_data must hold at least one batch, got an empty sequence")
        if eval_fn is None:
            if not isinstance(train_step, TrainStep):
                raise ValueError("eval_data needs eval_fn when train_step does not come from make_train_step")
            eval_fn = make_eval_step(train_step.loss_fn, mesh=train_step.mesh)
        eval_fn = _as_eval_step(eval_fn)
    elif eval_fn is not None:
        raise ValueError("eval_fn was given without eval_data")
    show = _Progress(sys.stderr.isatty() if progress is None else bool(progress))
    track_best = patience is not None
    max_bad = np.int32(max_bad_steps if max_bad_steps is not None else np.iinfo(np.int32).max)

    def copy_tree(tree):
        return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)

    # --- resume
    history: list[dict] = []
    start_epoch, skip, best, wait, stopped = 0, 0, None, 0, False
    partial = {"sums": {}, "weight": 0.0, "skipped": 0, "seconds": 0.0, "examples": 0}
    best_params = copy_tree(state.params) if track_best else None
    ckpt_path = None
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        ckpt_path = os.path.join(os.fspath(checkpoint_dir), CHECKPOINT_NAME)
        if _ckpt.exists(ckpt_path):
            like = {"state": state, **({"best_params": state.params} if track_best else {})}
            tree = _ckpt.load(ckpt_path, like)
            meta = _ckpt.metadata(ckpt_path)
            state, best_params = tree["state"], tree.get("best_params")
            history, start_epoch, skip = meta["history"], meta["epoch"], meta["batch"]
            best, wait, stopped, partial = meta["best"], meta["wait"], meta["stopped"], meta["partial"]

    def save_checkpoint(epoch, batch, acc, seconds, examples):
        host = jax.device_get({"sums": acc["sums"], "weight": acc["weight"], "skipped": acc["skipped"]})
        meta = {
            "epoch": epoch,
            "batch": batch,
            "history": history,
            "best": best,
            "wait": wait,
            "stopped": stopped,
            "partial": {
                "sums": {k: float(v) for k, v in host["sums"].items()},
                "weight": float(host["weight"]),
                "skipped": int(host["skipped"]),
                "seconds": seconds,
                "examples": examples,
            },
        }
        tree = {"state": state, **({"best_params": best_params} if track_best else {})}
        _ckpt.save(ckpt_path, tree, metadata=meta)

    def check_bad(acc, epoch):
        first_hit = int(acc["first_hit"])
        if first_hit >= 0:
            raise NonFiniteError(
                f"training stopped at batch {first_hit} of epoch {epoch} (optimizer step {int(state.step)}): "
                f"{max_bad_steps} consecutive steps had a non-finite loss or gradient and were skipped. Lower the "
                f"learning rate, clip gradients (clip_norm=...), or check the data for NaN/inf"
                + (f"; the last checkpoint is in {ckpt_path!r}" if ckpt_path else "")
            )

    global_batches = 0
    epoch = start_epoch
    while epoch < epochs and not stopped:
        batches_iter = iter(source(epoch))
        for i in range(skip):
            if next(batches_iter, None) is None:
                raise ValueError(
                    f"train_data({epoch}) yielded {i} batches, but the checkpoint had done {skip} of this epoch: "
                    f"the data must be reproducible per epoch to resume (a list, or a callable keyed by epoch)"
                )
        try:
            total = len(source(epoch)) if not callable(train_data) else None
        except TypeError:
            total = None
        acc = None
        index = skip
        examples = partial["examples"]
        elapsed_before = partial["seconds"]
        t0 = time.perf_counter()
        for batch in batches_iter:
            if check_finite:
                _checks.check_finite_leaves(
                    batch, f"epoch {epoch}, batch {index}: batch", host_only=True, hint=_NONFINITE_DATA_HINT
                )
            n = batch_size(batch)
            state, metrics = train_step(state, batch)
            if not isinstance(state, TrainState):
                raise TypeError(f"train_step must return (TrainState, metrics), got {type(state).__name__}")
            if acc is None:
                names = [k for k in metrics if k != "skipped"]
                acc = _new_acc(names, partial["sums"], partial["weight"], partial["skipped"])
            index += 1
            global_batches += 1
            examples += n
            acc = _accumulate(acc, metrics, state.bad_steps, np.float32(n), np.int32(index), max_bad)
            checkpoint_now = every is not None and global_batches % every == 0
            if checkpoint_now or index % sync_every == 0:
                check_bad(acc, epoch)
                if show.enabled:
                    loss = float(acc["sums"]["loss"] / jnp.maximum(acc["weight"], 1.0))
                    rate = (examples - partial["examples"]) / max(time.perf_counter() - t0, 1e-9)
                    show.show(epoch, epochs, index, total, loss, rate)
                if checkpoint_now:
                    save_checkpoint(epoch, index, acc, elapsed_before + time.perf_counter() - t0, examples)
        if acc is None and skip:
            # a checkpoint taken after the epoch's last batch, before its end: finish the epoch from it
            acc = _new_acc(list(partial["sums"]), partial["sums"], partial["weight"], partial["skipped"])
        if acc is None:
            raise ValueError(f"train_data for epoch {epoch} yielded no batches")
        check_bad(acc, epoch)
        host = jax.device_get(acc)
        seconds = elapsed_before + time.perf_counter() - t0
        weight = float(host["weight"])
        row: dict[str, Any] = {"epoch": epoch, "step": int(state.step), "batches": index}
        row["skipped"] = int(host["skipped"])
        for k, v in host["sums"].items():
            row[f"train_{k}"] = float(v) / weight if weight else float("nan")
        if eval_source is not None:
            for k, v in evaluate(eval_fn, state.params, eval_source(epoch)).items():
                row[f"eval_{k}"] = v
        row["seconds"] = seconds
        row["examples_per_second"] = examples / seconds if seconds else float("nan")
        row["steps_per_second"] = index / seconds if seconds else float("nan")
        history.append(row)
        show.end(
            f"epoch {epoch + 1}/{epochs} loss {row['train_loss']:.4g}"
            + (f" eval_loss {row['eval_loss']:.4g}" if "eval_loss" in row else "")
            + f" {row['examples_per_second']:,.0f} ex/s {seconds:.1f}s"
        )
        if track_best:
            value = row["eval_loss" if eval_source is not None else "train_loss"]
            if math.isfinite(value) and (best is None or value < best):
                best, wait = value, 0
                best_params = copy_tree(state.params)
            else:
                wait += 1
                stopped = wait >= patience
        epoch += 1
        skip = 0
        partial = {"sums": {}, "weight": 0.0, "skipped": 0, "seconds": 0.0, "examples": 0}
        if ckpt_path is not None:
            save_checkpoint(epoch, 0, _new_acc([]), 0.0, 0)
        if history_path is not None:
            _write_history(history_path, history)
    if track_best and restore_best and best_params is not None and best is not None:
        state = state._replace(params=copy_tree(best_params))
    return state, history


def fit_arrays(
    state: TrainState,
    train_step: TrainStep,
    arrays,
    *,
    batch_size: int,
    epochs: int = 1,
    eval_fn: Callable | None = None,
    eval_arrays=None,
    patience: int | None = None,
    restore_best: bool = True,
    seed: int = 0,
    max_bad_steps: int = 10,
    compiler_options: dict | None = None,
    check_finite: bool = True,
) -> tuple[TrainState, list[dict]]:
    """Train on in-memory arrays with each epoch one compiled call: the fast loop for data that fits in memory.

    Each epoch draws a permutation on the host (``numpy``, seeded by ``seed``), cuts it into full batches of
    ``batch_size`` (the remainder is dropped, so every epoch has one shape and compiles once), runs the steps as
    one ``lax.scan`` over ``train_step``, and evaluates ``eval_fn(params, eval_arrays)`` in the same call. The
    parameters with the lowest evaluation loss are tracked on the device. One host read per epoch; compare
    :func:`fit`, which takes any iterator of batches and dispatches one step per batch.

    Args:
      state: from :func:`init_state`.
      train_step: from :func:`make_train_step` (without ``mesh``).
      arrays: a tuple of arrays with equal leading size ``N``; a batch is the tuple of their rows.
      batch_size: rows per step, ``1 <= batch_size <= N``.
      epochs: the maximum number of epochs.
      eval_fn: ``eval_fn(params, eval_arrays) -> loss`` or ``(loss, dict of scalars)``; with it, history rows gain
        ``eval_loss`` (and ``eval_<name>``) and the best parameters are kept.
      eval_arrays: the batch ``eval_fn`` receives (e.g. the whole validation set).
      patience: stop after this many epochs without a new best evaluation loss (needs ``eval_fn``).
      restore_best: return the parameters of the best evaluation loss (with ``eval_fn``); else, or when no
        evaluation loss was finite, the last ones.
      seed: the shuffling seed; the same seed gives the same run.
      max_bad_steps: raise :class:`NonFiniteError` (after the epoch) once this many consecutive steps were skipped
        as non-finite, within an epoch or across epochs.
      compiler_options: passed to ``jax.jit`` (e.g. ``{"xla_backend_optimization_level": 0}`` to compile faster).
      check_finite: raise ``ValueError`` (naming the array, the count and the first index) when a floating array
        of ``arrays`` or ``eval_arrays`` holds NaN or inf, before anything is compiled; otherwise every batch that
        drew such a row would be skipped as non-finite, silently. False: no check, for a ``train_step`` whose
        loss masks NaN on purpose.

    Returns:
      ``(state, history)``, one history row per epoch: ``{"epoch", "train_loss", "skipped", "eval_loss", ...}``.
    """
    if not isinstance(train_step, TrainStep):
        raise TypeError(f"train_step must come from make_train_step, got {type(train_step).__name__}")
    if train_step.mesh is not None:
        raise ValueError("fit_arrays runs on one device; for a train_step with a mesh use fit(...)")
    if not isinstance(arrays, (tuple, list)) or not arrays:
        raise TypeError(f"arrays must be a non-empty tuple of arrays, got {type(arrays).__name__}")
    host = [np.asarray(a) for a in arrays]
    sizes = [a.shape[0] if a.ndim else None for a in host]
    if None in sizes or len(set(sizes)) != 1:
        raise ValueError(f"arrays must share their leading size, got shapes {[list(a.shape) for a in host]}")
    num_rows = sizes[0]
    _check_positive(batch_size, "batch_size", allow_none=False)
    if batch_size > num_rows:
        raise ValueError(f"batch_size must be <= the number of rows ({num_rows}), got {batch_size}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    _check_positive(patience, "patience")
    _check_positive(max_bad_steps, "max_bad_steps", allow_none=False)
    if patience is not None and eval_fn is None:
        raise ValueError("patience needs eval_fn: early stopping watches the evaluation loss")
    if eval_fn is not None and eval_arrays is None:
        raise ValueError("eval_fn needs eval_arrays, the batch it evaluates")
    if eval_fn is None and eval_arrays is not None:
        raise ValueError("eval_arrays was given without eval_fn, the function that evaluates it")
    restore_best = _checks.check_flag(restore_best, "restore_best")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if compiler_options is not None and not isinstance(compiler_options, Mapping):
        raise TypeError(
            f"compiler_options must be a dict of XLA options or None, got {type(compiler_options).__name__}"
        )
    if _checks.check_flag(check_finite, "check_finite"):
        for i, a in enumerate(host):
            _checks.check_finite(a, f"arrays[{i}]", hint=_NONFINITE_DATA_HINT)
        _checks.check_finite_leaves(eval_arrays, "eval_arrays", hint=_NONFINITE_DATA_HINT)

    def run_epoch(state, best, batches, eval_batch):
        def body(s, batch):
            s, metrics = train_step.jitted(s, batch)
            return s, (metrics["loss"], metrics["skipped"], s.bad_steps)

        state, (losses, skipped, bad_run) = jax.lax.scan(body, state, batches)
        ok = skipped == 0
        n_ok = jnp.sum(ok)
        train_loss = jnp.where(n_ok > 0, jnp.sum(jnp.where(ok, losses, 0.0)) / jnp.maximum(n_ok, 1), jnp.nan)
        longest_bad = jnp.max(bad_run)
        if eval_fn is None:
            return state, best, train_loss, jnp.sum(skipped), longest_bad, jnp.float32(jnp.nan), {}
        loss, aux = _call_loss(eval_fn, state.params, eval_batch)
        better = loss < best[1]
        best = (
            jax.tree.map(lambda new, old: jnp.where(better, new, old), state.params, best[0]),
            jnp.where(better, loss, best[1]),
        )
        return state, best, train_loss, jnp.sum(skipped), longest_bad, loss, aux

    compiled_epoch = jax.jit(run_epoch, compiler_options=compiler_options)
    steps_per_epoch = num_rows // int(batch_size)
    rng = np.random.default_rng(seed)
    best = (jax.tree.map(lambda a: jnp.array(a, copy=True), state.params), jnp.float32(np.inf))
    history, best_loss, wait = [], np.inf, 0
    for epoch in range(int(epochs)):
        order = rng.permutation(num_rows)[: steps_per_epoch * int(batch_size)].reshape(steps_per_epoch, -1)
        batches = tuple(a[order] for a in host)
        state, best, train_loss, skipped, longest_bad, eval_loss, aux = compiled_epoch(
            state, best, batches, eval_arrays
        )
        row = {"epoch": epoch, "train_loss": float(train_loss), "skipped": int(skipped)}
        if int(longest_bad) >= max_bad_steps:
            raise NonFiniteError(
                f"{int(longest_bad)} consecutive steps had a non-finite loss or gradient (epoch {epoch}, "
                f"optimizer step {int(state.step)} at the epoch's end; max_bad_steps={max_bad_steps}). Lower the "
                f"learning rate or clip gradients (clip_norm=...)"
            )
        if eval_fn is not None:
            row["eval_loss"] = float(eval_loss)
            row.update({f"eval_{k}": float(v) for k, v in aux.items()})
        history.append(row)
        if eval_fn is not None:
            if row["eval_loss"] < best_loss:
                best_loss, wait = row["eval_loss"], 0
            else:
                wait += 1
                if patience is not None and wait >= patience:
                    break
    if eval_fn is not None and restore_best and np.isfinite(best_loss):
        state = state._replace(params=best[0])
    return state, history
