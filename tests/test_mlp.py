"""jaxrnn.mlp: the seed-000 network and its relatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn


def test_forward_matches_numpy():
    params = jaxrnn.mlp.init(jax.random.key(0), [4, 10, 2])
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    (l1, l2) = params.layers
    hidden = 1 / (1 + np.exp(-(x @ np.asarray(l1.w) + np.asarray(l1.b))))
    np.testing.assert_allclose(jaxrnn.mlp.apply(params, x), hidden @ np.asarray(l2.w) + np.asarray(l2.b), rtol=1e-5)
    acts = jaxrnn.mlp.hidden_activations(params, x)
    assert [a.shape for a in acts] == [(6, 4), (6, 10)]


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_activation_is_static_and_survives_grad_and_jit(activation):
    params = jaxrnn.mlp.init(jax.random.key(0), [3, 8, 8, 2], activation=activation)
    assert len(jax.tree_util.tree_leaves(params)) == 6, "activation must not be a leaf"
    grads = jax.grad(lambda p: jnp.sum(jaxrnn.mlp.apply(p, jnp.ones((2, 3)))))(params)
    assert isinstance(grads, jaxrnn.mlp.MLPParams) and grads.activation == activation
    np.testing.assert_allclose(
        jax.jit(jaxrnn.mlp.apply)(params, jnp.ones((2, 3))), jaxrnn.mlp.apply(params, jnp.ones((2, 3))), rtol=1e-5
    )  # float32: a fused and an op-by-op tanh may differ in the last bits


def test_mlp_errors():
    with pytest.raises(ValueError, match="sizes must list at least an input and an output size"):
        jaxrnn.mlp.init(jax.random.key(0), [4])
    with pytest.raises(ValueError, match="activation must be one of"):
        jaxrnn.mlp.init(jax.random.key(0), [4, 2], activation="gelu")
    params = jaxrnn.mlp.init(jax.random.key(0), [4, 2])
    with pytest.raises(ValueError, match="x has 3 features .* the MLP expects 4"):
        jaxrnn.mlp.apply(params, jnp.zeros((5, 3)))
    with pytest.raises(TypeError, match="params must be MLPParams"):
        jaxrnn.mlp.apply(params.layers, jnp.zeros((5, 4)))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        jaxrnn.mlp.apply(params, jnp.zeros((5, 4), jnp.int32))
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        jaxrnn.mlp.init(0, [4, 2])
    with pytest.raises(TypeError, match="sizes must be a list of layer sizes"):
        jaxrnn.mlp.init(jax.random.key(0), 4)


def test_params_are_checked_before_tracing():
    params = jaxrnn.mlp.init(jax.random.key(0), [4, 3, 2])
    x = jnp.zeros((5, 4))
    with pytest.raises(ValueError, match="params.activation must be one of .*got 'gelu'"):
        jaxrnn.mlp.apply(params._replace(activation="gelu"), x)
    with pytest.raises(ValueError, match="params.layers must be a non-empty tuple"):
        jaxrnn.mlp.apply(params._replace(layers=()), x)
    column_bias = params.layers[1]._replace(b=params.layers[1].b[:, None])  # [out, 1]: a porting slip
    with pytest.raises(ValueError, match=r"params.layers\[1\] must be DenseParams\(w \[in, out\], b \[out\]\), got w "
                       r"\[3, 2\], b \[2, 1\]"):  # fmt: skip
        jaxrnn.mlp.apply(params._replace(layers=(params.layers[0], column_bias)), x)
    wrong_chain = (params.layers[0], jaxrnn.mlp.init(jax.random.key(1), [5, 2]).layers[0])
    with pytest.raises(ValueError, match=r"params.layers\[1\].w takes 5 inputs, the layer before gives 3"):
        jaxrnn.mlp.apply(params._replace(layers=wrong_chain), x)
