"""Checkpoints: round trips of every kind of pytree, validation against `like`, atomicity, corruption."""

import hashlib
import json
import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
from jaxrnn import checkpoint
from jaxrnn.train import TrainState, init_state


def _equal(a, b) -> bool:
    def same(x, y):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
        return np.array_equal(np.asarray(x), np.asarray(y)) and np.asarray(x).dtype == np.asarray(y).dtype

    return jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and all(
        jax.tree.leaves(jax.tree.map(same, a, b))
    )


@pytest.fixture
def tree():
    params = jaxrnn.elman.init(jax.random.key(0), 3, 4, activation="relu")
    opt = optax.adam(1e-3)
    return {
        "params": params,
        "opt": opt.init(params),
        "lstm_bf16": jaxrnn.lstm.init(jax.random.key(1), 2, 3, dtype=jnp.bfloat16),
        "state": init_state(params, opt, jax.random.key(2)),
        "raw_key": jax.random.PRNGKey(3),
        "np": np.arange(6, dtype=np.int16).reshape(2, 3),
        "scalars": (3, 2.5, True, np.float32(1.5)),
        "empty": np.zeros((0, 2), np.float32),
    }


def test_round_trip_every_leaf_kind(tmp_path, tree):
    path = tmp_path / "a.ckpt"
    checkpoint.save(path, tree, metadata={"epoch": 3})
    out = checkpoint.load(path, tree)
    assert _equal(out, tree)
    assert out["params"].activation == "relu"
    assert isinstance(out["state"], TrainState)
    assert out["lstm_bf16"].w_x.dtype == jnp.bfloat16
    assert isinstance(out["scalars"][0], int) and isinstance(out["scalars"][2], bool)
    assert checkpoint.metadata(path) == {"epoch": 3}
    flat = checkpoint.load(path)  # no template: {path: array}
    assert flat["['params'].w_x"].shape == (3, 4)


def test_load_into_shape_dtype_structs(tmp_path, tree):
    path = tmp_path / "a.ckpt"
    checkpoint.save(path, tree["params"])
    like = jax.eval_shape(lambda: tree["params"])
    out = checkpoint.load(path, like)
    assert _equal(out, tree["params"])


def test_mismatches_name_the_leaf(tmp_path, tree):
    path = tmp_path / "a.ckpt"
    params = tree["params"]
    checkpoint.save(path, params)
    bigger = jaxrnn.elman.init(jax.random.key(0), 3, 5, activation="relu")
    with pytest.raises(ValueError, match=r"leaf \.w_x is \[3, 4\] float32, `like` expects \[3, 5\] float32"):
        checkpoint.load(path, bigger)
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    with pytest.raises(ValueError, match=r"\.w_x is \[3, 4\] float32, `like` expects \[3, 4\] bfloat16"):
        checkpoint.load(path, half)
    with pytest.raises(ValueError, match=r"different tree structure .*static field"):
        checkpoint.load(path, params._replace(activation="tanh"))
    with pytest.raises(
        ValueError, match=r"does not match the structure of `like`: leaves only in `like`: \[\"\['x'\]\""
    ):
        checkpoint.load(path, {"x": np.zeros(3)})


def test_overwrite_and_crash_mid_save_keep_a_good_file(tmp_path, tree, monkeypatch):
    path = tmp_path / "a.ckpt"
    checkpoint.save(path, {"v": np.zeros(3)})
    checkpoint.save(path, {"v": np.ones(3)})  # overwrite
    np.testing.assert_array_equal(checkpoint.load(path, {"v": np.zeros(3)})["v"], np.ones(3))

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"v": np.full(3, 7.0)})
    monkeypatch.undo()
    np.testing.assert_array_equal(checkpoint.load(path, {"v": np.zeros(3)})["v"], np.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["a.ckpt"]  # no temp file left behind


def test_truncated_corrupted_and_foreign_files(tmp_path, tree):
    path = tmp_path / "a.ckpt"
    checkpoint.save(path, tree)
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(checkpoint.CheckpointError, match="is truncated"):
        checkpoint.load(path, tree)
    path.write_bytes(raw[:30])
    with pytest.raises(checkpoint.CheckpointError, match="is truncated.*shorter than its own header"):
        checkpoint.load(path, tree)
    flipped = bytearray(raw)
    flipped[len(raw) - 60] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(checkpoint.CheckpointError, match="corrupted: SHA-256 checksum mismatch"):
        checkpoint.load(path, tree)
    path.write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(checkpoint.CheckpointError, match="not a jaxrnn checkpoint"):
        checkpoint.load(path, tree)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "missing.ckpt", tree)


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match=r"tree\['f'\]: checkpoint leaves must be arrays or python"):
        checkpoint.save(tmp_path / "a.ckpt", {"f": "text"})
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        checkpoint.save(tmp_path / "a.ckpt", {"f": 1.0}, metadata={"x": object()})
    with pytest.raises(ValueError, match="path must be in an existing directory"):
        checkpoint.save(tmp_path / "nope" / "a.ckpt", {"f": 1.0})
    with pytest.raises(ValueError, match="path must name a file, got the directory"):
        checkpoint.save(tmp_path, {"f": 1.0})
    with pytest.raises(ValueError, match="path must name a file, got the directory"):
        checkpoint.save(str(tmp_path / "sub") + os.sep, {"f": 1.0})
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable.*Circular reference"):
        checkpoint.save(tmp_path / "a.ckpt", {"f": 1.0}, metadata=circular)
    with pytest.raises(TypeError, match="metadata must be a dict or None, got list"):
        checkpoint.save(tmp_path / "a.ckpt", {"f": 1.0}, metadata=[1, 2])
    with pytest.raises(TypeError, match=r"metadata's keys must be strings .*got \[1\]"):
        checkpoint.save(tmp_path / "a.ckpt", {"f": 1.0}, metadata={1: (2, 3)})
    assert os.listdir(tmp_path) == []  # nothing half-written was left behind


def test_save_keeps_the_replaced_files_permissions(tmp_path):
    path = tmp_path / "a.ckpt"
    checkpoint.save(path, {"f": 1.0})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open() would make it, not mkstemp's 0o600
    path.chmod(0o640)
    checkpoint.save(path, {"f": 2.0})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def _rewrite_header(path, edit):
    """The file at ``path`` with its header edited and a valid checksum: damage the checksum cannot see."""
    raw = path.read_bytes()
    fixed = len(checkpoint.MAGIC) + checkpoint._PREFIX.size
    _, header_len = checkpoint._PREFIX.unpack_from(raw, len(checkpoint.MAGIC))
    header = json.loads(raw[fixed : fixed + header_len])
    edit(header)
    new_header = json.dumps(header).encode()
    body = checkpoint.MAGIC + checkpoint._PREFIX.pack(checkpoint.VERSION, len(new_header)) + new_header
    body += raw[fixed + header_len : -32]
    path.write_bytes(body + hashlib.sha256(body).digest())


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h["leaves"][0].pop("offset"),
        lambda h: h.pop("metadata"),
        lambda h: h["leaves"][0].update(dtype="notadtype"),
        lambda h: h["leaves"][0].update(shape=[7, 7]),
        lambda h: h.update(leaves=3),
    ],
)
def test_a_header_missing_a_field_is_reported_as_corrupted(tmp_path, edit):
    path = tmp_path / "a.ckpt"
    checkpoint.save(path, {"f": np.ones(3, np.float32)})
    _rewrite_header(path, edit)
    with pytest.raises(checkpoint.CheckpointError, match="is corrupted: unreadable header"):
        checkpoint.load(path, {"f": np.ones(3, np.float32)})
