"""Test-wide settings: silent broadcasts fail loudly, and Keras (when installed) runs on the JAX backend."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
