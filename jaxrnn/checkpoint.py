"""Atomic, validated checkpoints of any pytree: params, optimizer states, a ``TrainState``, python scalars.

File format (no pickle; nothing but bytes and JSON is ever decoded)::

    MAGIC (10 bytes: b"JAXRNNCKPT") | version (u32 LE) | header length n (u64 LE) | header (n bytes, UTF-8 JSON)
    | payload (the leaves' raw C-order bytes, back to back) | SHA-256 of everything before it (32 bytes)

The header records, per leaf in ``jax.tree_util`` flattening order: its key path (``"['params'].w_x"``), shape,
dtype name (``bfloat16`` and the other ``ml_dtypes`` included), kind (``array``, ``jax``, ``python`` scalar or PRNG
``key``), byte offset and length; plus the tree structure as text (static NamedTuple fields such as
``ElmanParams.activation`` appear in it) and optional user ``metadata`` (JSON).

Writes are atomic: the bytes go to a temporary file in the target directory, which is flushed and fsynced, then
renamed over the target with ``os.replace`` and the directory fsynced. A crash mid-save leaves the previous file
intact (and at worst a stray ``.tmp`` file). Reading checks the size against the header (truncation) and the
SHA-256 trailer (corruption) before anything is decoded.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import shape_str

__all__ = ["CheckpointError", "exists", "load", "metadata", "save"]

MAGIC = b"JAXRNNCKPT"
VERSION = 1
_PREFIX = struct.Struct("<IQ")  # version, header length
_DIGEST = 32


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: missing, truncated, corrupted, or not a jaxrnn checkpoint."""


def _leaf_record(leaf) -> tuple[dict, bytes]:
    if isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.generic):
        kind, arr = "python", np.asarray(leaf)
        record = {"kind": kind, "python_type": type(leaf).__name__}
    elif isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        arr = np.asarray(jax.random.key_data(leaf))
        record = {"kind": "key", "impl": str(jax.random.key_impl(leaf))}
    elif isinstance(leaf, jax.Array):
        arr = np.asarray(leaf)
        record = {"kind": "jax"}
    elif isinstance(leaf, (np.ndarray, np.generic)):
        arr = np.asarray(leaf)
        record = {"kind": "array"}
    else:
        raise TypeError(
            f"checkpoint leaves must be arrays or python bool/int/float, got {type(leaf).__name__}. Register custom "
            f"classes as pytrees (non-array settings as static fields) so that only arrays remain as leaves."
        )
    if arr.dtype == object:
        raise TypeError(f"checkpoint leaves must be numeric, got an object array of shape {shape_str(arr.shape)}")
    arr = np.asarray(arr, order="C")
    record.update(shape=list(arr.shape), dtype=arr.dtype.name)
    return record, arr.tobytes()


def save(path, tree: Any, *, metadata: dict | None = None) -> None:
    """Write ``tree`` to ``path`` atomically (temp file in the same directory, fsync, ``os.replace``, fsync dir).

    Args:
      path: file path (``str`` or ``os.PathLike``); its directory must exist. An existing file is replaced only
        once the new one is complete on disk.
      tree: any pytree whose leaves are arrays (numpy, jax, any dtype incl. bfloat16, typed PRNG keys) or python
        ``bool``/``int``/``float``.
      metadata: optional JSON-serialisable dict with string keys, stored in the header; read it back with
        :func:`metadata` (as JSON gives it back: tuples come back as lists).

    The file keeps the permissions of the one it replaces; a new file gets ``0o666`` less the umask, as ``open``
    would give it.
    """
    path = os.fspath(path)
    if path.endswith(os.sep) or os.path.isdir(path):
        raise ValueError(f"path must name a file, got the directory {path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"path must be in an existing directory, got {path!r} (no directory {directory!r})")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
        bad_keys = [k for k in metadata if not isinstance(k, str)]
        if bad_keys:
            raise TypeError(f"metadata's keys must be strings (JSON would turn them into strings), got {bad_keys[:5]}")
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    records, chunks, offset = [], [], 0
    for key_path, leaf in leaves_with_path:
        try:
            record, data = _leaf_record(leaf)
        except TypeError as err:
            raise TypeError(f"tree{jax.tree_util.keystr(key_path)}: {err}") from None
        record.update(path=jax.tree_util.keystr(key_path), offset=offset, nbytes=len(data))
        records.append(record)
        chunks.append(data)
        offset += len(data)
    header = {"treedef": str(treedef), "leaves": records, "payload_bytes": offset, "metadata": metadata}
    try:
        header_bytes = json.dumps(header).encode("utf-8")
    except (TypeError, ValueError) as err:  # ValueError: a circular reference, or NaN-free mode
        raise TypeError(f"metadata must be JSON-serialisable, got {metadata!r}: {err}") from None
    body = [MAGIC, _PREFIX.pack(VERSION, len(header_bytes)), header_bytes, *chunks]
    digest = hashlib.sha256()
    for part in body:
        digest.update(part)

    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as f:
            for part in body:
                f.write(part)
            f.write(digest.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _mode_for(path: str) -> int:
    """The permission bits the saved file should have (``mkstemp`` makes it ``0o600``)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def exists(path) -> bool:
    """True when ``path`` is a file (a complete checkpoint or a corrupted one: :func:`load` tells which)."""
    return os.path.isfile(os.fspath(path))


def _read(path) -> tuple[dict, memoryview]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path!r}")
    with open(path, "rb") as f:
        raw = f.read()
    fixed = len(MAGIC) + _PREFIX.size
    if len(raw) < fixed or raw[: len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{path!r} is not a jaxrnn checkpoint (bad magic bytes; {len(raw)} bytes)")
    version, header_len = _PREFIX.unpack_from(raw, len(MAGIC))
    if version != VERSION:
        raise CheckpointError(f"{path!r} has checkpoint format version {version}, this jaxrnn reads {VERSION}")
    if len(raw) < fixed + header_len + _DIGEST:
        raise CheckpointError(
            f"{path!r} is truncated: {len(raw)} bytes, shorter than its own header ({fixed + header_len} bytes)"
        )
    try:
        header = json.loads(bytes(raw[fixed : fixed + header_len]).decode("utf-8"))
        payload_bytes = int(header["payload_bytes"])
        _check_header(header)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path!r} is corrupted: unreadable header ({type(err).__name__}: {err})") from None
    expected = fixed + header_len + payload_bytes + _DIGEST
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "corrupted (trailing bytes)"
        raise CheckpointError(f"{path!r} is {what}: {len(raw)} bytes, its header says {expected}")
    if hashlib.sha256(raw[:-_DIGEST]).digest() != raw[-_DIGEST:]:
        raise CheckpointError(f"{path!r} is corrupted: SHA-256 checksum mismatch")
    start = fixed + header_len
    return header, memoryview(raw)[start : start + payload_bytes]


def _check_header(header: dict) -> None:
    """Every field that :func:`load` reads, present and of its kind (a ``KeyError``/``TypeError`` otherwise)."""
    header["treedef"], header["metadata"]  # noqa: B018 - presence
    if not isinstance(header["leaves"], list):
        raise TypeError("leaves is not a list")
    for record in header["leaves"]:
        for field in ("path", "offset", "nbytes", "shape", "dtype"):
            record[field]  # noqa: B018 - presence
        jnp.dtype(record["dtype"])
        if int(np.prod(record["shape"])) * jnp.dtype(record["dtype"]).itemsize != record["nbytes"]:
            raise ValueError(f"leaf {record['path']}: shape and dtype do not match its byte count")


def metadata(path) -> dict | None:
    """The ``metadata`` dict given to :func:`save` (None when none was), after the same integrity checks as load."""
    return _read(path)[0]["metadata"]


def _decode(record: dict, payload: memoryview) -> np.ndarray:
    dtype = jnp.dtype(record["dtype"])  # knows bfloat16, float8_*, ... through ml_dtypes
    data = payload[record["offset"] : record["offset"] + record["nbytes"]]
    return np.frombuffer(data, dtype=dtype).reshape(record["shape"]).copy()


def _describe(shape, dtype) -> str:
    return f"{shape_str(shape)} {dtype}"


def load(path, like: Any = None) -> Any:
    """Read a checkpoint written by :func:`save`.

    Args:
      path: the file.
      like: a pytree of the expected structure (arrays, ``jax.ShapeDtypeStruct``, python scalars), e.g. freshly
        initialised params or ``TrainState``. Its structure, leaf paths, shapes and dtypes must match the file;
        the first difference raises ``ValueError`` naming the leaf path with both shapes and dtypes. Without
        ``like``, a flat ``{leaf path: numpy array}`` dict is returned.

    Returns:
      A pytree shaped like ``like``. Leaves come back as the kind ``like`` holds: ``jax.Array`` (placed with the
      sharding of the ``like`` leaf when it has one), numpy array, python scalar, or typed PRNG key.

    Raises:
      CheckpointError (a ``ValueError``): missing, truncated (size vs header) or corrupted (SHA-256) file.
      ValueError: a structure, shape or dtype mismatch with ``like``.
    """
    header, payload = _read(path)
    records = header["leaves"]
    if like is None:
        return {r["path"]: _decode(r, payload) for r in records}
    like_leaves, like_def = jax.tree_util.tree_flatten_with_path(like)
    like_paths = [jax.tree_util.keystr(p) for p, _ in like_leaves]
    file_paths = [r["path"] for r in records]
    if like_paths != file_paths:
        missing = [p for p in like_paths if p not in file_paths]
        extra = [p for p in file_paths if p not in like_paths]
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} does not match the structure of `like`: leaves only in `like`: "
            f"{missing[:5]}, only in the file: {extra[:5]}"
            + ("" if missing or extra else " (same leaves, different order)")
        )
    if str(like_def) != header["treedef"]:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} has the same leaves as `like` but a different tree structure (a static "
            f"field such as an activation, or a container type, differs): file {header['treedef']}, like {like_def}"
        )
    out = []
    for (_, want), record in zip(like_leaves, records):
        got_shape = tuple(record["shape"])
        if isinstance(want, (bool, int, float)) and not isinstance(want, np.generic):
            want_shape, want_dtype = (), np.asarray(want).dtype
        elif isinstance(want, jax.Array) and jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key):
            want_shape, want_dtype = tuple(jax.random.key_data(want).shape), jax.random.key_data(want).dtype
        else:
            want_shape, want_dtype = tuple(np.shape(want)), jnp.dtype(want.dtype)
        if got_shape != want_shape or record["dtype"] != jnp.dtype(want_dtype).name:
            raise ValueError(
                f"checkpoint leaf {record['path']} is {_describe(got_shape, record['dtype'])}, `like` expects "
                f"{_describe(want_shape, jnp.dtype(want_dtype).name)}"
            )
        value = _decode(record, payload)
        if isinstance(want, (bool, int, float)) and not isinstance(want, np.generic):
            value = type(want)(value.item())
        elif isinstance(want, jax.Array) and jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key):
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(want))
            value = jax.device_put(value, want.sharding)
        elif isinstance(want, jax.Array):
            value = jax.device_put(value, want.sharding)
        elif isinstance(want, jax.ShapeDtypeStruct):
            sharding = getattr(want, "sharding", None)
            value = jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)
        elif isinstance(want, np.generic):
            value = value[()]
        out.append(value)
    return jax.tree_util.tree_unflatten(like_def, out)
