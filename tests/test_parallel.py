"""Data parallelism: the sharded step gives the single-device losses; checked on 4 forced host devices in a
subprocess (the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
import textwrap

import jax
import pytest

from jaxrnn import parallel

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax, pytest
    import jaxrnn
    from jaxrnn import parallel
    from jaxrnn.train import init_state, make_train_step, make_eval_step, evaluate
    jax.config.update("jax_numpy_rank_promotion", "raise")
    assert jax.device_count() == 4, jax.devices()

    layer = jaxrnn.stack(jaxrnn.lstm)
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"rnn": layer.init(k1, 3, 8), "head": jaxrnn.dense.init(k2, 8, 1)}

    traces = []

    def loss_fn(params, batch):
        traces.append(1)
        x, y = batch
        _, ys = layer.apply(params["rnn"], x)
        return jnp.mean((jaxrnn.dense.apply(params["head"], ys[:, -1]) - y) ** 2)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 3)).astype(np.float32)
    y = x.sum(axis=(1, 2))[:, None] / 6
    opt = optax.adam(0.01)
    mesh = parallel.data_mesh()
    assert mesh.shape == {"batch": 4}
    single = make_train_step(loss_fn, opt, clip_norm=1.0)
    sharded = make_train_step(loss_fn, opt, clip_norm=1.0, mesh=mesh)
    s1 = init_state(params, opt, jax.random.key(1))
    s4 = init_state(params, opt, jax.random.key(1))
    for _ in range(5):
        s1, m1 = single(s1, (x, y))
        s4, m4 = sharded(s4, (x, y))
        np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
        np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s4.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    w = s4.params["head"].w
    assert len(w.sharding.device_set) == 4 and w.sharding.is_fully_replicated
    assert len(traces) == 2  # one trace per step function, none per step
    ev = make_eval_step(loss_fn, mesh=mesh)
    e4 = evaluate(ev, s4.params, [(x, y)])["loss"]
    e1 = evaluate(loss_fn, s1.params, [(x, y)])["loss"]
    assert abs(e4 - e1) < 1e-5 * max(1.0, abs(e1)), (e4, e1)
    size = sharded.cache_size()
    for _ in range(3):
        s4, _ = sharded(s4, (x, y))
    assert sharded.cache_size() == size
    with pytest.raises(ValueError, match=r"batch\\[0\\] has leading \\(batch\\) size 6, which is not divisible by the 4 devices"):
        sharded(s4, (x[:6], y[:6]))
    print("OK")
    """
)


SHARD_MAP_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_num_cpu_devices", 2)  # the in-Python way to split the host (README); XLA_FLAGS below
    assert jax.device_count() == 2, jax.devices()
    from jax.sharding import PartitionSpec as P
    import jaxrnn
    from jaxrnn import feature_major, parallel
    from jaxrnn.driver import batch_mesh
    jax.config.update("jax_numpy_rank_promotion", "raise")
    mesh = parallel.data_mesh()
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(8, 5, 3)), jnp.float32)
    dys = jnp.asarray(rng.normal(size=(8, 5, 4)), jnp.float32)
    lengths = jnp.asarray([5, 1, 0, 3, 5, 2, 4, 5])

    def close(a, b):
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(u, v, rtol=2e-5, atol=2e-6)

    cases = [(jaxrnn.lstm, {}), (jaxrnn.gru, {"reverse": True}), (jaxrnn.elman, {}), (jaxrnn.lstm, {"grad": "autodiff"}),
             (jaxrnn.lstm, {"checkpoint_every": 2}), (jaxrnn.lstm, {"feature_major": True, "reverse": True})]
    defaults = (feature_major.MIN_GATE_WIDTH, feature_major.MIN_BATCH)
    for cell, kw in cases:
        kw = dict(kw)
        # the wide-LSTM layout, forced at this small size
        forced = kw.pop("feature_major", False)
        feature_major.MIN_GATE_WIDTH, feature_major.MIN_BATCH = (0, 0) if forced else defaults
        params = cell.init(jax.random.key(1), 3, 4)

        def loss(p, x, d, n):
            carry, ys = jaxrnn.rnn(cell, p, x, lengths=n, **kw)
            return jnp.sum(ys * d) + jnp.sum(jax.tree.leaves(carry)[0])

        want = jax.value_and_grad(loss, argnums=(0, 1))(params, xs, dys, lengths)

        # 1. inside the user's own shard_map: per-device loss, parameter gradients summed by the transpose
        def local(p, x, d, n):
            value, (dp, dx) = jax.value_and_grad(loss, argnums=(0, 1))(p, x, d, n)
            return jax.lax.psum(value, "batch"), dp, dx
        spec = (P(), P("batch"), P("batch"), P("batch"))
        got = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=(P(), P(), P("batch"))))(
            params, xs, dys, lengths)
        close(got, (want[0], *want[1]))

        # 2. under jax.set_mesh: rnn splits its scan over the batch itself
        with jax.set_mesh(mesh):
            assert batch_mesh((8,)) is not None and batch_mesh((5,)) is None and batch_mesh(()) is None
            placed = parallel.shard_batch((xs, dys, lengths), mesh)
            got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, *placed)
            close(got, want)
            text = jax.jit(loss).lower(params, *placed).as_text()
            assert "shard_map" in text or "sdy.manual_computation" in text, text[:2000]
            # a batch the mesh does not divide runs whole, with the same numbers
            got5 = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, xs[:5], dys[:5], lengths[:5])
            close(got5, jax.value_and_grad(loss, argnums=(0, 1))(params, xs[:5], dys[:5], lengths[:5]))

    # segment starts and a step mask are split over the batch like the lengths
    resets = jnp.asarray(rng.random((8, 5)) < 0.3)
    mask = jnp.asarray(rng.random((8, 5)) < 0.7)
    gp = jaxrnn.gru.init(jax.random.key(3), 3, 4)
    for rev in (True,):  # reversed: the marks shift by one step, the harder case
        def loss_r(p, x, d, n, r, m):
            carry, ys = jaxrnn.rnn(jaxrnn.gru, p, x, lengths=n, resets=r, mask=m, reverse=rev)
            return jnp.sum(ys * d) + jnp.sum(carry)

        want = jax.value_and_grad(loss_r, argnums=(0, 1))(gp, xs, dys, lengths, resets, mask)
        with jax.set_mesh(mesh):
            placed = parallel.shard_batch((xs, dys, lengths, resets, mask), mesh)
            close(jax.jit(jax.value_and_grad(loss_r, argnums=(0, 1)))(gp, *placed), want)
            text = jax.jit(loss_r).lower(gp, *placed).as_text()
            assert "shard_map" in text or "sdy.manual_computation" in text, text[:2000]

    layer = jaxrnn.stack(jaxrnn.gru, 2, bidirectional=True)
    lp = layer.init(jax.random.key(2), 3, 4)
    want = layer.apply(lp, xs, lengths=lengths)
    with jax.set_mesh(mesh):
        close(jax.jit(lambda p, x, n: layer.apply(p, x, lengths=n))(lp, *parallel.shard_batch((xs, lengths), mesh)), want)
    print("OK")
    """
)


def _env(device_count_flag: str = "") -> dict:
    """The test environment (conftest's XLA_FLAGS included) for a CPU-only subprocess, with ``device_count_flag``
    replacing any device count the parent had."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return dict(os.environ, XLA_FLAGS=" ".join([*flags, device_count_flag]).strip(), JAX_PLATFORMS="cpu")


def test_rnn_inside_shard_map_and_under_set_mesh():
    env = _env()  # the script splits the host itself, with jax_num_cpu_devices
    result = subprocess.run(
        [sys.executable, "-c", SHARD_MAP_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_sharded_step_matches_single_device():
    env = _env("--xla_force_host_platform_device_count=4")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_mesh_and_batch_checks():
    mesh = parallel.data_mesh()
    assert mesh.axis_names == ("batch",) and mesh.devices.size == jax.device_count()
    placed = parallel.shard_batch({"x": jax.numpy.ones((4, 2)), "t": 1.0}, mesh)
    assert placed["x"].shape == (4, 2)
    with pytest.raises(ValueError, match="devices must name at least one device, got an empty sequence"):
        parallel.data_mesh([])
    with pytest.raises(TypeError, match=r"devices\[0\] must be a jax.Device"):
        parallel.data_mesh(["cpu"])
    with pytest.raises(TypeError, match="devices must be a sequence of jax devices, got int"):
        parallel.data_mesh(3)
    with pytest.raises(ValueError, match="devices must be distinct"):
        parallel.data_mesh([jax.devices()[0]] * 2)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        parallel.replicated(None)
    other = jax.sharding.Mesh(mesh.devices, ("data",))
    with pytest.raises(ValueError, match="mesh must have an axis named 'batch'"):
        parallel.batch_sharding(other)
    with pytest.raises(TypeError, match=r"batch\['name'\] must be an array or a number to go on the mesh, got str"):
        parallel.shard_batch({"x": jax.numpy.ones((4, 2)), "name": "abc"}, mesh)
    with pytest.raises(TypeError, match=r"tree\['act'\] must be an array or a number"):
        parallel.replicate({"act": "tanh"}, mesh)
    with pytest.raises(TypeError, match="fn must be callable as fn"):
        parallel.call_on_mesh(None, mesh, {}, {"x": jax.numpy.ones((4, 2))})
