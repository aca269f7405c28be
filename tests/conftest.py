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


def run_at_xla_defaults(script: str):
    """Run ``script`` with ``python -c`` in a subprocess whose ``XLA_FLAGS`` lack ``TEST_XLA_FLAGS``: XLA's default
    CPU options, where the float64 miscompiles of README's "A compiler bug to know of" show."""
    import subprocess
    import sys

    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if f not in TEST_XLA_FLAGS)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)


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
