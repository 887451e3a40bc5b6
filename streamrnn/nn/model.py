"""Model (read-only weights) and Stream (all carried state of one stream).

A ``Model`` is shared by any number of streams; a ``Stream`` owns the hidden
state and the scratch buffers of one stream and nothing else.
"""

from __future__ import annotations

import numpy as np

from streamrnn.errors import InputError, ShapeError, SnapshotError
from streamrnn.nn.cells import (
    ACT_CODES,
    CELL_CODES,
    SAVE_WIDTH,
    Architecture,
    PackedLayout,
    init_tensors,
)
from streamrnn.nn.kernels import count_nonfinite, forward_kernel

SNAPSHOT_VERSION = 1
_DTYPES = (np.float32, np.float64)


class Workspace:
    """Scratch buffers for blocks of up to ``t_cap`` frames of B lanes; grows on demand.

    Allocation happens only when a block longer than any before arrives,
    never per frame.
    """

    def __init__(self, arch: Architecture, lanes: int, dtype):
        self.arch, self.lanes, self.dtype = arch, lanes, np.dtype(dtype)
        self.t_cap = 0
        GH = arch.gates * arch.hidden_size
        self.gh = np.zeros((lanes, GH), dtype=self.dtype)
        self.no_save = np.zeros((1, 1, 1, 1), dtype=self.dtype)
        self._grow(1)

    def _grow(self, T: int):
        a, B, dt = self.arch, self.lanes, self.dtype
        self.t_cap = max(T, 2 * self.t_cap)
        Tc = self.t_cap
        self._xn = np.zeros((Tc, B, a.input_size), dt)
        self._gi = np.zeros((Tc, B, a.gates * a.hidden_size), dt)
        self._a = np.zeros((Tc, B, a.hidden_size), dt)
        self._b = np.zeros((Tc, B, a.hidden_size), dt)

    def views(self, T: int):
        if T > self.t_cap:
            self._grow(T)
        return self._xn[:T], self._gi[:T], self.gh, self._a[:T], self._b[:T]


def run_forward(model: "Model", x, h, c, ws: Workspace, y, save=None, apply_act=True):
    """Advance lanes through the model: x (T, B, I) -> y (T, B, O); h, c (L, B, H) in place.

    The one entry point to the kernel, shared by streams, banks and the trainer.
    ``save`` (L, T, B, SAVE_WIDTH*H) receives the activations backprop needs.
    """
    T = x.shape[0]
    xn, gi, gh, ba, bb = ws.views(T)
    do_save = save is not None
    forward_kernel(
        model._cell_code, model._act_code, apply_act, model.fast, model.theta, model.layout.offsets,
        model.layout.extra, x, h, c, xn, gi, gh, ba, bb, y,
        save if do_save else ws.no_save, do_save,
    )


class Model:
    """Read-only recurrent model: a stack of cells, an optional norm and dense head.

    >>> import numpy as np, streamrnn
    >>> m = streamrnn.Model.random("gru", input_size=3, hidden_size=8, output_size=2,
    ...                            activation="softmax", seed=0)
    >>> s = m.stream()
    >>> y = s.push(np.zeros((5, 3), np.float32))
    >>> y.shape, bool(np.allclose(y.sum(axis=1), 1.0))
    ((5, 2), True)
    """

    def __init__(self, arch: Architecture, tensors: dict[str, np.ndarray], *, labels=None,
                 frontend: dict | None = None, name: str | None = None, dtype=np.float32,
                 extra_meta: dict | None = None):
        dtype = np.dtype(dtype)
        if dtype.type not in _DTYPES:
            raise ShapeError(f"model dtype must be float32 or float64, got {dtype}")
        self.arch = arch
        self.layout = PackedLayout(arch)
        self.dtype = dtype
        self.theta = self.layout.pack(tensors, dtype)
        self.theta.setflags(write=False)  # weights are shared by every stream: read-only
        self.labels = list(labels) if labels is not None else None
        self.frontend = frontend
        self.name = name
        self.extra_meta = dict(extra_meta or {})
        self._cell_code = CELL_CODES[arch.cell]
        self._act_code = ACT_CODES[arch.activation]
        # Vectorised tanh/sigmoid (max abs error 1e-6) in float32; exact libm in float64,
        # which is the precision used for checks.
        self.fast = dtype == np.float32

    # --- construction -------------------------------------------------------------
    @classmethod
    def random(cls, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
               output_size: int | None = None, activation: str = "identity", seed: int = 0,
               init: str = "pytorch", dtype=np.float32, **kw) -> "Model":
        """A randomly initialised model (PyTorch's default init unless ``init='glorot'``)."""
        arch = Architecture(cell, input_size, hidden_size, num_layers, output_size, activation,
                            has_norm=kw.pop("has_norm", False))
        tensors = init_tensors(arch, np.random.default_rng(seed), init)
        return cls(arch, tensors, dtype=dtype, **kw)

    def with_theta(self, theta: np.ndarray) -> "Model":
        """A model of the same architecture and metadata with new packed parameters."""
        m = object.__new__(Model)
        m.__dict__.update(self.__dict__)
        m.theta = np.array(theta, dtype=self.dtype, copy=True)
        m.theta.setflags(write=False)
        return m

    def astype(self, dtype) -> "Model":
        """The same model computing in another precision (float64 for checks)."""
        return Model(self.arch, self.tensors(), labels=self.labels, frontend=self.frontend,
                     name=self.name, dtype=dtype, extra_meta=self.extra_meta)

    # --- properties ------------------------------------------------------------------
    cell = property(lambda self: self.arch.cell)
    input_size = property(lambda self: self.arch.input_size)
    hidden_size = property(lambda self: self.arch.hidden_size)
    num_layers = property(lambda self: self.arch.num_layers)
    output_size = property(lambda self: self.arch.out_size)
    activation = property(lambda self: self.arch.activation if self.arch.output_size else None)

    @property
    def n_params(self) -> int:
        return self.layout.size

    @property
    def save_width(self) -> int:
        return SAVE_WIDTH[self.arch.cell] * self.arch.hidden_size

    def signature(self) -> dict:
        """What a snapshot must match to be restored into a stream of this model."""
        a = self.arch
        return {"cell": a.cell, "input_size": a.input_size, "hidden_size": a.hidden_size,
                "num_layers": a.num_layers, "output_size": a.out_size}

    def tensors(self) -> dict[str, np.ndarray]:
        """PyTorch-named, PyTorch-layout copies of every parameter."""
        return self.layout.unpack(self.theta)

    def __repr__(self):
        a = self.arch
        head = f", head={a.output_size}/{a.activation}" if a.output_size else ""
        return (f"Model({a.cell}, input={a.input_size}, hidden={a.hidden_size}, "
                f"layers={a.num_layers}{head}, params={self.n_params}, dtype={self.dtype})")

    # --- use ----------------------------------------------------------------------------
    def stream(self) -> "Stream":
        """A new stream with zero initial state."""
        return Stream(self)

    def audio_stream(self, sample_rate: float | None = None):
        """One stream from raw audio to model outputs (resampler, front end, hidden state).

        Needs a model with ``frontend`` metadata; see ``streamrnn.audio.stream``.
        """
        from streamrnn.audio.stream import AudioStream

        return AudioStream(self, sample_rate)

    def forward(self, x) -> np.ndarray:
        """Offline: run a whole sequence (T, I) from zero state; returns (T, O)."""
        return self.stream().push(x)

    def save(self, path) -> None:
        from streamrnn.nn.modelfile import save_model

        save_model(self, path)

    def check_frames(self, x, what: str = "x") -> np.ndarray:
        """Validate a (T, input_size) block of frames; returns it as this model's dtype."""
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise ShapeError(f"{what} must be a floating-point array, got dtype {x.dtype}")
        if x.ndim != 2 or x.shape[1] != self.input_size:
            hint = " (for one frame use x[None, :])" if x.ndim == 1 else ""
            raise ShapeError(f"{what} must have shape (T, {self.input_size}), got {x.shape}{hint}")
        bad = count_nonfinite(x) if x.size else 0
        if bad:
            raise InputError(f"{what} contains {bad} NaN/Inf values; they would poison the hidden state")
        return np.ascontiguousarray(x, dtype=self.dtype)


class Stream:
    """The carried state of one stream of a model: push frames, get outputs.

    ``push`` accepts any chunking: frame by frame, all at once or in random
    blocks, the outputs are the same.
    """

    def __init__(self, model: Model):
        self.model = model
        a = model.arch
        self.h = np.zeros((a.num_layers, 1, a.hidden_size), dtype=model.dtype)
        self.c = np.zeros_like(self.h)
        self.n_frames = 0  # frames consumed since the last reset
        self._ws = Workspace(a, 1, model.dtype)

    def push(self, x) -> np.ndarray:
        """x (T, input_size) -> y (T, output_size); the hidden state moves on by T frames."""
        x = self.model.check_frames(x)
        T = x.shape[0]
        y = np.empty((T, 1, self.model.output_size), dtype=self.model.dtype)
        if T:
            run_forward(self.model, x.reshape(T, 1, -1), self.h, self.c, self._ws, y)
            self.n_frames += T
        return y.reshape(T, self.model.output_size)

    def reset(self) -> None:
        """Back to the initial (zero) state."""
        self.h[...] = 0
        self.c[...] = 0
        self.n_frames = 0

    @property
    def state(self) -> dict[str, np.ndarray]:
        """Copies of the hidden state h (L, H) and, for LSTM, the cell state c (L, H)."""
        out = {"h": self.h[:, 0].copy()}
        if self.model.cell == "lstm":
            out["c"] = self.c[:, 0].copy()
        return out

    def snapshot(self) -> dict:
        """A versioned copy of all carried state (plain arrays and JSON-able values)."""
        return {"version": SNAPSHOT_VERSION, "kind": "stream", "signature": self.model.signature(),
                "h": self.h.copy(), "c": self.c.copy(), "n_frames": self.n_frames}

    def restore(self, snap: dict) -> None:
        """Put back a snapshot taken from a stream of a model of the same shape."""
        check_snapshot(snap, "stream", self.model)
        self.h[...] = snap["h"]
        self.c[...] = snap["c"]
        self.n_frames = int(snap["n_frames"])


def check_snapshot(snap, kind: str, model: Model) -> None:
    """Raise SnapshotError unless ``snap`` is a ``kind`` snapshot that fits ``model``."""
    if not isinstance(snap, dict) or "version" not in snap:
        raise SnapshotError(f"not a snapshot: expected a dict from .snapshot(), got {type(snap).__name__}")
    if snap["version"] != SNAPSHOT_VERSION:
        raise SnapshotError(f"snapshot version {snap['version']!r} is not supported (this streamrnn reads {SNAPSHOT_VERSION})")
    if snap.get("kind") != kind:
        raise SnapshotError(f"snapshot of a {snap.get('kind')!r} cannot be restored into a {kind!r}")
    want, got = model.signature(), snap.get("signature", {})
    diff = [f"{k}: snapshot {got.get(k)!r} vs model {v!r}" for k, v in want.items() if got.get(k) != v]
    if diff:
        raise SnapshotError("snapshot does not fit this model (" + "; ".join(diff) + ")")
