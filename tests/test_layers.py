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


def test_embedding_negative_ids_under_jit_give_nan_rows_not_the_last_row():
    e = jaxrnn.embedding.init(jax.random.key(0), 10, 3)
    out = jax.jit(jaxrnn.embedding.apply)(e, jnp.array([-1, 10, 2]))
    assert np.all(np.isnan(np.asarray(out[:2]))) and np.allclose(out[2], e.table[2])
    with pytest.raises(TypeError, match=r"EmbeddingParams leaves must be floating point"):
        jaxrnn.embedding.apply(jaxrnn.EmbeddingParams(table=jnp.zeros((10, 3), jnp.int32)), jnp.array([1]))
    with pytest.raises(ValueError, match=r"table must be \[vocab_size, features\], got \[10\]"):
        jaxrnn.embedding.apply(jaxrnn.EmbeddingParams(table=jnp.zeros(10)), jnp.array([1]))
    with pytest.raises(TypeError, match="params must be EmbeddingParams .*got dict"):
        jaxrnn.embedding.apply({"table": e.table}, jnp.array([1]))


def test_dense_params_are_checked_not_broadcast():
    d = jaxrnn.dense.init(jax.random.key(0), 4, 3)
    x = jnp.ones((2, 4))
    for bias in (jnp.zeros((2, 3)), jnp.zeros((1,)), jnp.zeros(()), jnp.zeros(5)):
        with pytest.raises(ValueError, match=r"params must be DenseParams\(w \[in, out\], b \[out\]\), got w \[4, 3\]"):
            jaxrnn.dense.apply(d._replace(b=bias), x)
    with pytest.raises(TypeError, match="DenseParams leaves must share one dtype"):
        jaxrnn.dense.apply(d._replace(b=d.b.astype(jnp.bfloat16)), x)
    with pytest.raises(TypeError, match="params must be DenseParams .*got dict"):
        jaxrnn.dense.apply({"w": d.w, "b": d.b}, x)
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        jaxrnn.dense.init(0, 4, 3)


def test_dropout_rate_key_and_input_are_checked():
    x = jnp.ones((4, 3))
    for rate in ("0.5", None, jnp.array([0.1, 0.2])):
        with pytest.raises(TypeError, match="rate must be a number in \\[0, 1\\)"):
            jaxrnn.dropout(jax.random.key(0), x, rate)
    with pytest.raises(TypeError, match="rate must be a number"):
        jax.jit(lambda r: jaxrnn.dropout(jax.random.key(0), x, r))(0.5)
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        jaxrnn.dropout(None, x, 0.5)
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        jaxrnn.dropout(jax.random.key(0), jnp.ones(3, jnp.int32), 0.0)
    out = jaxrnn.dropout(jax.random.key(0), [1.0, 2.0], np.float32(0.5))  # a list and a NumPy rate work
    assert out.shape == (2,)
