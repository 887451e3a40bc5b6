"""Where ``streamrnn serve``'s workers keep their streams' snapshots: bytes in, bytes out, no pickle.

A worker's state is a tree of dicts, lists, JSON scalars and NumPy arrays (the versioned snapshots
of ``streamrnn.snapshot``).  ``pack`` writes it as one ``.npz`` archive of two byte entries:
``__blob__``, every array's little-endian bytes one after the other, and ``__tree__``, the tree as
UTF-8 JSON with ``{"__array__": [offset, dtype, shape]}`` in place of each array; ``unpack`` reads
it back with ``allow_pickle=False`` and checks every dtype (numbers only) and range.

``DirStore`` keeps one file per worker in a directory (mode 0700, files 0600), each written to a
temporary file and renamed over the old one, so a reader sees the old snapshot or the new one,
never half of one.  The Ray backend keeps the same bytes in a named actor instead
(``streamrnn.serve.ray_backend``).

>>> import numpy as np, tempfile
>>> tree = {"streams": [{"id": "mic0", "h": np.arange(3, dtype=np.float32), "n": 5, "t": 0.25}]}
>>> back = unpack(pack(tree))
>>> back["streams"][0]["id"], back["streams"][0]["h"].tolist(), back["streams"][0]["n"]
('mic0', [0.0, 1.0, 2.0], 5)
>>> store = DirStore(tempfile.mkdtemp())
>>> store.put("worker-0", pack(tree)); unpack(store.get("worker-0"))["streams"][0]["t"]
0.25
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from streamrnn.errors import SnapshotError

# bytes: a worker's snapshot file larger than this is refused before it is read (64 streams of the
# bundled VAD take about 0.3 MB; a worker of 100,000 streams with 1 s of resampler history each, ~7 GB,
# would need --set-like tuning of this limit anyway)
MAX_STATE_BYTES = 1 << 30
_TREE = "__tree__"   # the tree as UTF-8 JSON
_BLOB = "__blob__"   # every array's bytes, one after the other (one entry: a zip entry per array is slow)
_ARRAY = "__array__"
_KINDS = "biufc"     # numeric and boolean dtypes only: never an object array


def _array_ref(arrays: list, size: list):
    """``json.dumps``'s ``default``: an array goes to ``arrays`` and becomes a reference; NumPy scalars
    become JSON numbers (json's C encoder walks the tree: much faster than a Python walk)."""
    def default(x):
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in _KINDS:
                raise SnapshotError(f"cannot store a {x.dtype} array in a snapshot (numbers and booleans only)")
            a = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))
            arrays.append(a)
            ref = {_ARRAY: [size[0], a.dtype.str, list(a.shape)]}
            size[0] += a.nbytes
            return ref
        if isinstance(x, np.bool_):
            return bool(x)
        if isinstance(x, np.integer):
            return int(x)
        if isinstance(x, np.floating):
            return float(x)
        raise SnapshotError(f"cannot store a {type(x).__name__} in a snapshot (arrays, dicts, lists, JSON scalars)")
    return default


def _decode(x, blob: bytes):
    if isinstance(x, dict):
        if set(x) == {_ARRAY}:
            offset, dtype, shape = x[_ARRAY]
            dt = np.dtype(dtype)
            if dt.kind not in _KINDS or dt.hasobject:
                raise ValueError(f"array of dtype {dtype!r}")
            n = int(np.prod(shape, dtype=np.int64))
            if not 0 <= offset <= len(blob) - n * dt.itemsize:
                raise ValueError(f"array at {offset} of {n} x {dt.itemsize} bytes is outside the {len(blob)}-byte blob")
            return np.frombuffer(blob, dt, n, offset).reshape(shape).copy()
        return {k: _decode(v, blob) for k, v in x.items()}
    if isinstance(x, list):
        return [_decode(v, blob) for v in x]
    return x


def pack(tree) -> bytes:
    """The ``.npz`` bytes of ``tree`` (dicts with string keys, lists, JSON scalars, numeric arrays).
    Floats round-trip exactly (JSON keeps Python's shortest repr)."""
    arrays: list = []
    text = json.dumps(tree, default=_array_ref(arrays, [0]), allow_nan=True, separators=(",", ":")).encode("utf-8")
    blob = np.frombuffer(b"".join(a.tobytes() for a in arrays), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **{_TREE: np.frombuffer(text, np.uint8), _BLOB: blob})
    return buf.getvalue()


def unpack(data: bytes, what: str = "snapshot"):
    """``tree`` back from ``pack``'s bytes; SnapshotError naming ``what`` if they are not such an archive."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if set(z.files) != {_TREE, _BLOB}:
                raise ValueError(f"entries {sorted(z.files)}, expected {sorted((_TREE, _BLOB))}")
            text, blob = z[_TREE], z[_BLOB]
        if text.dtype != np.uint8 or blob.dtype != np.uint8:
            raise ValueError("entries are not bytes")
        return _decode(json.loads(text.tobytes().decode("utf-8")), blob.tobytes())
    except (KeyError, ValueError, TypeError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise SnapshotError(f"{what} is not a streamrnn serve state archive: {e}") from None


class DirStore:
    """One state file per worker in ``directory`` (created 0700; files 0600, replaced atomically)."""

    def __init__(self, directory, max_bytes: int = MAX_STATE_BYTES):
        self.dir = Path(directory)
        self.max_bytes = int(max_bytes)
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
        except OSError as e:
            raise SnapshotError(f"cannot use the state directory {str(self.dir)!r}: {e.strerror or e}") from None

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.npz"

    def put(self, name: str, data: bytes) -> None:
        """Write ``data`` as ``name`` (temporary file, fsync, rename: readers never see half a file)."""
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:  # mkstemp makes it 0600
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(name))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def get(self, name: str) -> bytes | None:
        """The bytes stored as ``name``; None if there are none; SnapshotError above ``max_bytes``."""
        p = self.path(name)
        try:
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > self.max_bytes:
                    raise SnapshotError(f"state file {p} is {size} bytes, above the limit of {self.max_bytes}")
                return f.read()
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass

    def describe(self) -> str:
        return f"directory {self.dir}"


STORE_NAMESPACE = "streamrnn"  # Ray namespace of the store actors of ``streamrnn serve --ray``


class ActorStore:
    """``DirStore``'s interface over the named Ray store actor of ``streamrnn.serve.ray_backend``
    (what a worker, wherever it runs, uses; Ray is imported only here, and only when used)."""

    def __init__(self, name: str, namespace: str | None = None):
        import ray

        self.ray, self.name = ray, name
        self.actor = ray.get_actor(name, namespace=namespace or STORE_NAMESPACE)

    def put(self, name: str, data: bytes) -> None:
        self.ray.get(self.actor.put.remote(name, data))

    def get(self, name: str):
        return self.ray.get(self.actor.get.remote(name))

    def delete(self, name: str) -> None:
        self.ray.get(self.actor.delete.remote(name))

    def describe(self) -> str:
        return f"Ray actor {self.name}"
