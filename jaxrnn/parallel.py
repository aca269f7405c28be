"""Data parallelism over JAX devices with ``jax.sharding``: the batch is split, the parameters are replicated.

::

    mesh = jaxrnn.parallel.data_mesh()                      # 1-D mesh over all devices, axis "batch"
    step = jaxrnn.train.make_train_step(loss_fn, optax.adam(1e-3), mesh=mesh)
    state, metrics = step(state, batch)                     # batch leaves [B, ...], B divisible by the device count

Each device computes the loss and gradients of its ``B / n`` examples; because ``loss_fn`` is a mean over the whole
(global) batch, XLA inserts the all-reduce, and every device applies the same update to its replica. The result is
the single-device step up to float summation order.

The recurrence itself runs per device. The step is traced under ``jax.set_mesh(mesh)``, and ``jaxrnn.rnn`` (so every
layer built on it) runs its scan under ``jax.shard_map`` over the ``"batch"`` axis whenever the active mesh has one
that divides the first batch dim (:func:`jaxrnn.driver.batch_mesh`): forward and backward loops stay on one device,
and the only communication is one sum of the parameter gradients per call. Left to XLA's automatic partitioning, the
analytic backward gathered activations across devices and a 2-device step ran slower than one device; per-device
scans made the medium LSTM step 1.3x and the GRU step 1.5x faster on 2 host devices (``benchmarks/``). Your own ``jax.jit`` gets the same
with ``with jax.set_mesh(mesh):`` around the call, and ``jaxrnn.rnn`` also works inside your own ``jax.shard_map``.

On CPU, ``jax.config.update("jax_num_cpu_devices", N)`` (before JAX first touches a device) or
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before JAX starts) splits the host into ``N`` devices;
``benchmarks/bench_parallel.py`` measures whether that pays on a given machine.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "AXIS",
    "batch_sharding",
    "call_on_mesh",
    "check_batch",
    "data_mesh",
    "replicate",
    "replicated",
    "shard_batch",
]

AXIS = "batch"


def data_mesh(devices=None) -> Mesh:
    """A 1-D :class:`jax.sharding.Mesh` with axis name ``"batch"`` over ``devices`` (default: ``jax.devices()``)."""
    if devices is None:
        devices = jax.devices()
    try:
        devices = list(devices)
    except TypeError:
        raise TypeError(f"devices must be a sequence of jax devices, got {type(devices).__name__}") from None
    if not devices:
        raise ValueError("devices must name at least one device, got an empty sequence")
    for i, d in enumerate(devices):
        if not isinstance(d, jax.Device):
            raise TypeError(f"devices[{i}] must be a jax.Device (from jax.devices()), got {type(d).__name__}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices must be distinct, got {devices}")
    return Mesh(np.array(devices), (AXIS,))


def _check_mesh(mesh) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (from jaxrnn.parallel.data_mesh()), got {type(mesh).__name__}"
        )
    if AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named {AXIS!r} (use data_mesh()), got axes {mesh.axis_names}")
    return mesh


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that puts a full copy on every device of ``mesh``."""
    return NamedSharding(_check_mesh(mesh), PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding that splits the leading axis over the ``"batch"`` axis of ``mesh``."""
    return NamedSharding(_check_mesh(mesh), PartitionSpec(AXIS))


def _check_array_leaves(tree: Any, name: str) -> None:
    """A ``TypeError`` naming the first leaf that is not an array or a number (device_put takes no other)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")) and not isinstance(
            leaf, (bool, int, float, complex)
        ):
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)} must be an array or a number to go on the mesh, got "
                f"{type(leaf).__name__}; keep settings such as names out of the tree (or as static fields)"
            )


def check_batch(batch: Any, mesh: Mesh, name: str = "batch") -> None:
    """Raise ``ValueError`` unless every array leaf of rank >= 1 has a leading size divisible by the device count."""
    n = _check_mesh(mesh).shape[AXIS]
    _check_array_leaves(batch, name)
    for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
        shape = np.shape(leaf)
        if shape and shape[0] % n:
            good = max(n, shape[0] // n * n)
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} has leading (batch) size {shape[0]}, which is not divisible by "
                f"the {n} devices of the mesh; use a batch size that is a multiple of {n} (e.g. {good}), or "
                f"drop_last=True when batching"
            )


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """``batch`` placed on ``mesh``: leaves of rank >= 1 split along axis 0, scalars replicated."""
    check_batch(batch, mesh)
    split, full = batch_sharding(mesh), replicated(mesh)
    return jax.tree.map(lambda x: jax.device_put(x, split if np.ndim(x) else full), batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` with every leaf replicated on all devices of ``mesh`` (params, optimizer state, a TrainState)."""
    _check_array_leaves(tree, "tree")
    return jax.device_put(tree, replicated(mesh))


def call_on_mesh(fn, mesh: Mesh, replicated_tree: Any, batch: Any):
    """``fn(replicated_tree, batch)`` with ``batch`` split over ``mesh`` (:func:`shard_batch`), ``replicated_tree``
    on every device (:func:`replicate`), and ``mesh`` set (``jax.set_mesh``) while ``fn`` is traced and run, so that
    ``jaxrnn.rnn`` inside it runs each device's slice of the batch."""
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(replicated_tree, batch), got {type(fn).__name__}")
    batch = shard_batch(batch, mesh)
    replicated_tree = replicate(replicated_tree, mesh)
    with jax.set_mesh(mesh):
        return fn(replicated_tree, batch)
