"""Test-wide settings: silent broadcasts fail loudly, and Keras (when installed) runs on the JAX backend."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The tests check values, not speed, and most of their time is spent compiling many small programs. Two XLA CPU
# options cut that compile time to about a third: the backend (LLVM) optimisation off, and the older elemental
# emitters for fusions instead of the new MLIR fusion emitters. Benchmarks and users keep the defaults, and
# test_diagnostics runs one subprocess without these flags (a miscompile showed only at the defaults).
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
_flags = os.environ.get("XLA_FLAGS", "")
for _flag in TEST_XLA_FLAGS:
    if _flag.split("=")[0] not in _flags:
        _flags = f"{_flags} {_flag}".strip()
os.environ["XLA_FLAGS"] = _flags

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
