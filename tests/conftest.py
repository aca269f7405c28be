"""Test-wide settings: silent broadcasts fail loudly, and Keras (when installed) runs on the JAX backend."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The tests check values, not speed, and most of their time is spent compiling many small programs: with XLA's
# backend (LLVM) optimisation off each compiles about 30% faster. Benchmarks and users keep the default.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Float64 for the duration of a test (gradient checks); modules opt in with
    ``pytestmark = pytest.mark.usefixtures("x64")``."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
