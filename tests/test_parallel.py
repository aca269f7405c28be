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


def test_sharded_step_matches_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
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
