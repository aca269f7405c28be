"""jaxrnn.dense, jaxrnn.embedding, jaxrnn.dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn


def test_dense_is_affine_over_any_batch_dims():
    params = jaxrnn.dense.init(jax.random.key(0), 3, 2)
    params = params._replace(b=jnp.array([0.5, -1.0]))
    x = jax.random.normal(jax.random.key(1), (4, 5, 3))
    np.testing.assert_allclose(
        jaxrnn.dense.apply(params, x), np.asarray(x) @ np.asarray(params.w) + [0.5, -1.0], rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"x has 4 features .* dense params expect 3"):
        jaxrnn.dense.apply(params, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="init must be one of"):
        jaxrnn.dense.init(jax.random.key(0), 3, 2, init="xavier")
    with pytest.raises(ValueError, match="output_size must be a positive integer, got 0"):
        jaxrnn.dense.init(jax.random.key(0), 3, 0)


def test_glorot_bound():
    w = jaxrnn.dense.init(jax.random.key(0), 200, 100).w
    bound = np.sqrt(6 / 300)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound


def test_embedding_lookup_and_errors():
    params = jaxrnn.embedding.init(jax.random.key(0), 7, 3)
    ids = jnp.array([[0, 6, 2], [1, 1, 0]])
    out = jaxrnn.embedding.apply(params, ids)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0, 1], params.table[6])
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 7\) .* got values in \[0, 7\]"):
        jaxrnn.embedding.apply(params, jnp.array([0, 7]))
    with pytest.raises(TypeError, match="ids must be integer token ids, got dtype float32"):
        jaxrnn.embedding.apply(params, jnp.array([0.0, 1.0]))
    jitted = jax.jit(jaxrnn.embedding.apply)(params, jnp.array([1, 9]))
    assert np.all(np.isnan(jitted[1])) and np.all(np.isfinite(jitted[0])), "out of range under jit -> NaN row"


def test_dropout_statistics_and_errors():
    x = jnp.ones((100_000,))
    y = jaxrnn.dropout(jax.random.key(0), x, 0.25)
    kept = np.asarray(y) != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.75, rtol=1e-6)
    assert jaxrnn.dropout(jax.random.key(0), x, 0.0) is x
    with pytest.raises(ValueError, match=r"rate must lie in \[0, 1\), got 1.5"):
        jaxrnn.dropout(jax.random.key(0), x, 1.5)
