"""Model (read-only weights) and Stream (all carried state of one stream).

A ``Model`` is shared by any number of streams; a ``Stream`` owns the hidden
state and the scratch buffers of one stream and nothing else.
"""

from __future__ import annotations

from operator import attrgetter

import numpy as np

from streamrnn.errors import (
    CapacityError,
    InputError,
    ShapeError,
    SnapshotError,
    StreamExistsError,
    StreamIdError,
    StreamingError,
)
from streamrnn.audio.frontend import _scratch as frontend_scratch
from streamrnn.nn import modelfile
from streamrnn.nn.cells import (
    ACT_CODES,
    CELL_CODES,
    SAVE_WIDTH,
    Architecture,
    PackedLayout,
    init_tensors,
)
from streamrnn.nn.kernels import (
    MODE_APPLY_ACT,
    MODE_SAVE,
    BANK_GROUP,
    audio_bank_one_kernel,
    bank_part_size,
    bank_step_kernel,
    count_nonfinite,
    forward_kernel,
    model_table,
    stream_buffer_size,
    stream_push_kernel,
    workspace_size,
)

from streamrnn.snapshot import SNAPSHOT_VERSION, check_snapshot

_DTYPES = (np.float32, np.float64)
_FLOAT32 = np.dtype(np.float32)
_DTYPE, _NDIM = attrgetter("dtype"), attrgetter("ndim")  # C-level getters for Bank.push_many's bulk checks


def aligned_copy(a: np.ndarray, align: int = 64) -> np.ndarray:
    """A C-contiguous copy of ``a`` whose data starts on an ``align``-byte boundary.

    The weight matrices then start on cache lines (each row too when G*H is a multiple of 16):
    the step kernel measured 10-20 % faster than with theta 4, 16 or 32 bytes off a line.
    """
    a = np.ascontiguousarray(a)
    raw = np.empty(a.nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


class Workspace:
    """Flat scratch for blocks of up to ``t_cap`` frames of B lanes; grows on demand.

    Allocation happens only when a block longer than any before arrives, never per frame.
    """

    def __init__(self, arch: Architecture, lanes: int, dtype):
        self.arch, self.lanes, self.dtype = arch, lanes, np.dtype(dtype)
        self.t_cap = 0
        self.buf = np.zeros(0, self.dtype)
        self.no_save = np.zeros((1, 1, 1, 1), dtype=self.dtype)
        self.no_lens = np.zeros(0, np.int64)
        self.ensure(1)

    def ensure(self, T: int, lanes: int | None = None) -> np.ndarray:
        """The flat buffer, big enough for T frames (and ``lanes`` lanes, if more than before)."""
        if lanes is not None and lanes > self.lanes:
            self.lanes, self.t_cap = lanes, 0
        if T > self.t_cap:
            a = self.arch
            self.t_cap = max(T, 2 * self.t_cap)
            n = workspace_size(self.t_cap, self.lanes, a.input_size, a.hidden_size, a.gates)
            self.buf = np.zeros(n, self.dtype)
        return self.buf

    def views(self, T: int):
        """(xn, gi, gh, out_a, out_b) as the kernel carves them, for the trainer's use of the normalised input."""
        a, B = self.arch, self.lanes
        I, H, GH = a.input_size, a.hidden_size, a.gates * a.hidden_size
        w = self.ensure(T)
        p0 = T * B * I
        p1 = p0 + T * B * GH
        p2 = p1 + B * GH
        p3 = p2 + T * B * H
        return (w[:p0].reshape(T, B, I), w[p0:p1].reshape(T, B, GH), w[p1:p2].reshape(B, GH),
                w[p2:p3].reshape(T, B, H), w[p3:p3 + T * B * H].reshape(T, B, H))


def forward_table(arch: Architecture, layout: PackedLayout, fast: bool) -> np.ndarray:
    """The int64 table of sizes and offsets the kernels read for ``arch`` (once per model)."""
    return model_table(CELL_CODES[arch.cell], ACT_CODES[arch.activation], fast, arch.num_layers,
                       arch.input_size, arch.hidden_size, arch.out_size if arch.output_size else -1,
                       arch.gates, layout.offsets, layout.extra)


def run_forward(mi: np.ndarray, theta: np.ndarray, x, h, c, ws: Workspace, y, save=None, apply_act=True,
                lens=None):
    """Advance lanes through the weights ``theta`` (table ``mi`` from ``forward_table``):
    x (T, B, I) -> y (T, B, O); h, c (L, B, H) in place.

    The one Python entry point to the forward kernel, shared by the trainer (which passes its
    own, changing parameters) and the tests (a Stream or a Bank calls the same kernel through
    ``stream_push_kernel``/``bank_step_kernel``).
    ``save`` (L, T, B, SAVE_WIDTH*H) receives the activations backprop needs;
    ``lens`` (B,) int64 lets lane b advance only lens[b] <= T frames.
    """
    mode = (MODE_APPLY_ACT if apply_act else 0) | (MODE_SAVE if save is not None else 0)
    forward_kernel(mi, mode, theta, x, ws.no_lens if lens is None else lens, h, c,
                   ws.ensure(x.shape[0], x.shape[1]), y, ws.no_save if save is None else save)


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
                 extra_meta: dict | None = None, delay: int = 0):
        dtype = np.dtype(dtype)
        if dtype.type not in _DTYPES:
            raise ShapeError(f"model dtype must be float32 or float64, got {dtype}")
        self.arch = arch
        self.layout = PackedLayout(arch)
        self.dtype = dtype
        self.theta = aligned_copy(self.layout.pack(tensors, dtype))
        self.theta.setflags(write=False)  # weights are shared by every stream: read-only
        self.labels = list(labels) if labels is not None else None
        self.frontend = frontend
        self.name = name
        self.extra_meta = dict(extra_meta or {})
        if arch.bidirectional and delay:
            raise ShapeError(f"a bidirectional model sees the whole sequence; delay must be 0, got {delay}")
        if arch.vocab_size is not None and delay:
            raise ShapeError(f"a token model predicts the next token from the tokens so far; delay must be 0, got {delay}")
        # Look-ahead of a unidirectional model, frames: output row t is the prediction for frame t - delay.
        self.delay = int(delay)
        self._cell_code = CELL_CODES[arch.cell]
        self._act_code = ACT_CODES[arch.activation]
        # Vectorised tanh/sigmoid (max abs error 1e-6) in float32; exact libm in float64,
        # which is the precision used for checks.
        self.fast = dtype == np.float32
        # A bidirectional model runs through streamrnn.nn.bidir (one table per direction), never a stream.
        self._mi = None if arch.bidirectional else forward_table(arch, self.layout, self.fast)

    # --- construction -------------------------------------------------------------
    @classmethod
    def random(cls, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
               output_size: int | None = None, activation: str = "identity", seed: int = 0,
               init: str = "pytorch", dtype=np.float32, **kw) -> "Model":
        """A randomly initialised model (PyTorch's default init unless ``init='glorot'``)."""
        arch = Architecture(cell, input_size, hidden_size, num_layers, output_size, activation,
                            has_norm=kw.pop("has_norm", False), vocab_size=kw.pop("vocab_size", None),
                            bidirectional=kw.pop("bidirectional", False))
        tensors = init_tensors(arch, np.random.default_rng(seed), init)
        return cls(arch, tensors, dtype=dtype, **kw)

    def with_theta(self, theta: np.ndarray) -> "Model":
        """A model of the same architecture and metadata with new packed parameters."""
        m = object.__new__(Model)
        m.__dict__.update(self.__dict__)
        m.theta = aligned_copy(np.asarray(theta, dtype=self.dtype))
        m.theta.setflags(write=False)
        return m

    def astype(self, dtype) -> "Model":
        """The same model computing in another precision (float64 for checks)."""
        return Model(self.arch, self.tensors(), labels=self.labels, frontend=self.frontend,
                     name=self.name, dtype=dtype, extra_meta=self.extra_meta, delay=self.delay)

    # --- properties ------------------------------------------------------------------
    cell = property(lambda self: self.arch.cell)
    input_size = property(lambda self: self.arch.input_size)
    hidden_size = property(lambda self: self.arch.hidden_size)
    num_layers = property(lambda self: self.arch.num_layers)
    output_size = property(lambda self: self.arch.out_size)
    activation = property(lambda self: self.arch.activation if self.arch.output_size else None)
    bidirectional = property(lambda self: self.arch.bidirectional)

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

    def require_streamable(self) -> None:
        """Raise ``StreamingError`` if this model cannot run frame by frame (a bidirectional model)."""
        if self.arch.bidirectional:
            raise StreamingError(
                f"model{' ' + repr(self.name) if self.name else ''} is bidirectional: its reverse direction reads the sequence from the "
                f"end, so it needs the whole sequence and cannot stream; use model.forward(x) (or streamrnn eval) "
                f"offline, or for live use train a unidirectional model with look-ahead (model.delay = D frames: "
                f"it sees D future frames at D frames of latency; docs/training.md)")

    def tensors(self) -> dict[str, np.ndarray]:
        """PyTorch-named, PyTorch-layout copies of every parameter."""
        return self.layout.unpack(self.theta)

    def __repr__(self):
        a = self.arch
        head = f", head={a.output_size}/{a.activation}" if a.output_size else ""
        more = (", bidirectional" if a.bidirectional else "") + (f", delay={self.delay}" if self.delay else "")
        return (f"Model({a.cell}, input={a.input_size}, hidden={a.hidden_size}, "
                f"layers={a.num_layers}{head}{more}, params={self.n_params}, dtype={self.dtype})")

    # --- use ----------------------------------------------------------------------------
    def stream(self) -> "Stream":
        """A new stream with zero initial state (``StreamingError`` for a bidirectional model)."""
        return Stream(self)

    def audio_stream(self, sample_rate: float | None = None, **kw):
        """One stream from raw audio to model outputs (resampler, front end, hidden state).

        Needs a model with ``frontend`` metadata; ``kw`` (``nonfinite``, ``quality``) go to
        ``streamrnn.audio.stream.AudioStream``.
        """
        from streamrnn.audio.stream import AudioStream

        self.require_streamable()
        return AudioStream(self, sample_rate, **kw)

    def audio_bank(self, capacity: int, sample_rate: float | None = None, **kw):
        """Many audio streams at once: a resampler and front end per stream, one ``Bank`` step for
        all (``streamrnn.audio.stream.AudioBank``; ``kw``: ``nonfinite``, ``quality``, ``threads``)."""
        from streamrnn.audio.stream import AudioBank

        self.require_streamable()
        return AudioBank(self, capacity, sample_rate, **kw)

    def bank(self, capacity: int, threads: int = 1) -> "Bank":
        """States for up to ``capacity`` streams, advanced together by one kernel call
        (split across ``threads`` Numba threads if more than 1; see ``streamrnn.nn.parallel``)."""
        return Bank(self, capacity, threads)

    def forward(self, x) -> np.ndarray:
        """Offline: run a whole sequence x (T, I) from zero state; returns y (T, O).

        A bidirectional model reads the sequence both ways (``streamrnn.nn.bidir``); scratch is
        allocated once per call for the T frames.  NaN/Inf in x raise ``InputError``.

        >>> import numpy as np, streamrnn
        >>> m = streamrnn.Model.random("gru", 3, 4, num_layers=2, output_size=1, bidirectional=True)
        >>> m.forward(np.zeros((7, 3), np.float32)).shape
        (7, 1)
        """
        if not self.arch.bidirectional:
            return self.stream().push(x)
        from streamrnn.nn.bidir import BidirForward

        x = self.check_frames(x)
        bad = count_nonfinite(x)
        if bad:
            raise InputError(f"x contains {bad} NaN/Inf values")
        T = x.shape[0]
        y = np.empty((T, self.output_size), self.dtype)
        if T:
            BidirForward(self.arch, 1, self.dtype, self.fast).forward(
                self.theta, x.reshape(T, 1, self.input_size), np.array([T], np.int64),
                y.reshape(T, 1, self.output_size))
        return y

    def embed(self, ids) -> np.ndarray:
        """Token model: the frames of token ids (T,) int -> (T, input_size), rows of ``embedding.weight``.

        ``InputError`` for a model without an embedding or an id outside [0, vocab_size).
        """
        V = self.arch.vocab_size
        if V is None:
            raise InputError(f"model {self.name!r} has no embedding: it reads feature frames, not token ids")
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ShapeError(f"token ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise InputError(f"token id out of range [0, {V}): min {ids.min()}, max {ids.max()}")
        return np.ascontiguousarray(self.layout.embed(self.theta, ids.astype(np.int64)))

    def save(self, path) -> None:
        """Write this model as a model file (``docs/model-format.md``), atomically."""
        modelfile.save_model(self, path)

    def check_frames(self, x, what: str = "x") -> np.ndarray:
        """Validate the shape and dtype of a (T, input_size) block; returns it C-contiguous in this
        model's dtype.  (Finiteness is checked by the kernels' entry points.)"""
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise ShapeError(f"{what} must be a floating-point array, got dtype {x.dtype}")
        if x.ndim != 2 or x.shape[1] != self.input_size:
            hint = ""
            if x.ndim == 1 and self.frontend is not None:  # audio samples pushed where frames go
                hint = (" (1-D audio? model.audio_stream(sample_rate) takes samples and computes the "
                        f"{self.input_size} features per frame; for one frame use x[None, :])")
            elif x.ndim == 1:
                hint = " (for one frame use x[None, :])"
            raise ShapeError(f"{what} must have shape (T, {self.input_size}), got {x.shape}{hint}")
        return np.ascontiguousarray(x, dtype=self.dtype)


class Stream:
    """The carried state of one stream of a model: push frames, get outputs.

    ``push`` accepts any chunking: frame by frame, all at once or in random
    blocks, the outputs are the same.
    """

    def __init__(self, model: Model):
        model.require_streamable()
        self.model = model
        a = model.arch
        L, H = a.num_layers, a.hidden_size
        # One flat buffer per stream, h | c | scratch, so the compiled push takes 5 arguments, not 7.
        self._buf = np.zeros(stream_buffer_size(L, a.input_size, H, a.gates), dtype=model.dtype)
        self.h = self._buf[: L * H].reshape(L, 1, H)  # (L, 1, H) views into _buf
        self.c = self._buf[L * H : 2 * L * H].reshape(L, 1, H)
        self.n_frames = 0  # frames consumed since the last reset
        # what the fast path of push compares x with, looked up once
        self._dtype, self._n_in, self._n_out = model.dtype, a.input_size, a.out_size

    def push(self, x) -> np.ndarray:
        """x (T, input_size) -> y (T, output_size); the hidden state moves on by T frames.

        NaN/Inf in x raise ``InputError`` and leave the state untouched.
        """
        # Fast path, the live frame-by-frame case: already a C-contiguous (T, I) array of the
        # model's dtype (builtin dtypes are singletons, so ``is`` is exact; any other x takes
        # check_frames, which converts or raises the clear error).
        if not (type(x) is np.ndarray and x.dtype is self._dtype and x.ndim == 2
                and x.shape[1] == self._n_in and x.flags.c_contiguous):
            x = self.model.check_frames(x)
        T = x.shape[0]
        y = np.empty((T, self._n_out), self._dtype)
        if T:
            m = self.model
            bad = stream_push_kernel(m._mi, m.theta, x, self._buf, y)
            if bad:
                raise InputError(f"x contains {bad} NaN/Inf values; they would poison the hidden state")
            self.n_frames += T
        return y

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
        check_snapshot(snap, "stream", "Stream", self.model.signature(), key="signature", against="model")
        self.h[...] = snap["h"]
        self.c[...] = snap["c"]
        self.n_frames = int(snap["n_frames"])


class Bank:
    """The states of many streams of one model, advanced together.

    Each layer's state is one (capacity, H) block, so one kernel call advances every
    stream that has frames and reads the weights once for all of them.  Streams join
    and leave at any time; a stream in a bank computes exactly (bit for bit) what a
    ``Stream`` of the same model computes on the same input, and snapshots move freely
    between the two.

    >>> import numpy as np, streamrnn
    >>> m = streamrnn.Model.random("gru", input_size=4, hidden_size=8, output_size=1, activation="sigmoid")
    >>> bank = m.bank(capacity=100)
    >>> bank.open("mic0"); bank.open("mic1")
    >>> out = bank.push_many({"mic0": np.zeros((3, 4), np.float32), "mic1": np.ones((5, 4), np.float32)})
    >>> out["mic0"].shape, out["mic1"].shape, len(bank)
    ((3, 1), (5, 1), 2)
    """

    MAX_CAPACITY = 1 << 20

    def __init__(self, model: Model, capacity: int, threads: int = 1):
        model.require_streamable()
        if not isinstance(capacity, (int, np.integer)) or not 1 <= capacity <= self.MAX_CAPACITY:
            raise CapacityError(f"bank capacity must be an integer in [1, {self.MAX_CAPACITY}], got {capacity!r}")
        self.threads = 1
        if isinstance(threads, bool) or threads != 1:  # the parallel module (and its compile) only when asked for
            from streamrnn.nn.parallel import check_threads

            self.threads = check_threads(threads)
        self._pws = np.zeros(0, model.dtype)  # scratch of the lane groups, grown on demand
        self._group = BANK_GROUP  # lanes per group (tests use small groups to reach every path)
        a = model.arch
        self.model, self.capacity = model, int(capacity)
        self.h = np.zeros((a.num_layers, self.capacity, a.hidden_size), model.dtype)  # (L, capacity, H)
        self.c = np.zeros_like(self.h)
        self.n_frames = np.zeros(self.capacity, np.int64)
        self._slot: dict = {}
        self._free = list(range(self.capacity - 1, -1, -1))  # pop() hands out low slots first
        self._open = np.zeros(self.capacity, bool)  # slot -> open?, for push_block's bulk checks
        self._seen = np.zeros(self.capacity, np.int64)  # push_block's duplicate check
        self._one = np.zeros(3, np.int64)  # a one-stream push_many's slots and offsets (_push_one)
        self._parts: dict = {}  # T -> push_audio's scratch view (one lane's bank_part_size), frames and y shape, made once
        self._part_sizes: dict = {}  # _advance's scratch size per (block length T, group)

    def __len__(self):
        return len(self._slot)

    def __contains__(self, sid):
        return sid in self._slot

    @property
    def ids(self) -> list:
        return list(self._slot)

    def _get(self, sid) -> int:
        try:
            return self._slot[sid]
        except KeyError:
            raise StreamIdError(f"stream {sid!r} is not open in this bank") from None

    def open(self, sid) -> None:
        """Add a stream with zero state."""
        if sid in self._slot:
            raise StreamExistsError(f"stream {sid!r} is already open (close it first, or reset it)")
        if not self._free:
            raise CapacityError(f"bank is full: {self.capacity} streams open (capacity {self.capacity})")
        slot = self._free.pop()
        self._slot[sid] = slot
        self._open[slot] = True
        self._zero(slot)

    def close(self, sid) -> None:
        """Remove a stream; its slot is reused by the next ``open``."""
        slot = self._get(sid)
        del self._slot[sid]
        self._open[slot] = False
        self._free.append(slot)

    def reset(self, sid) -> None:
        """Zero one stream's state."""
        self._zero(self._get(sid))

    def _zero(self, slot):
        self.h[:, slot] = 0
        self.c[:, slot] = 0
        self.n_frames[slot] = 0

    def push(self, sid, x) -> np.ndarray:
        """Advance one stream (a one-stream ``push_many``)."""
        return self.push_many({sid: x})[sid]

    def push_many(self, frames: dict) -> dict:
        """Advance every stream in ``frames`` ({id: x (T_i, input_size)}) in one kernel call.

        Returns {id: y (T_i, output_size)} (views of one fresh output array, one region per
        stream).  All inputs are validated first; if any is invalid nothing is computed and
        the error names the stream.  The Python work per stream is a handful of C-level
        passes (slot look-up, type check, ``np.concatenate``, the output views); frames
        are gathered, states read and written, and the lanes advanced in compiled code.
        """
        m = self.model
        n = len(frames)
        if n == 1:  # one stream (a live source): no concatenation, no per-call index arrays
            y = self._push_one(frames)
            if y is not None:
                return y
        xs = list(frames.values())
        try:
            slots = np.fromiter(map(self._slot.__getitem__, frames), np.int64, n)
        except KeyError:
            slots = None
        x = None
        # fast path: every x a 2-D array of the model's dtype (np.concatenate takes any strides)
        if n and slots is not None and set(map(type, xs)) == {np.ndarray} and set(map(_DTYPE, xs)) == {m.dtype} \
                and set(map(_NDIM, xs)) == {2}:
            try:
                x = np.concatenate(xs)  # (N, I): a fresh C-contiguous array
            except ValueError:  # widths differ: the per-stream check below names the stream
                x = None
            if x is not None and x.shape[1] != m.input_size:
                x = None
        if x is None:
            slots, xs = self._check_many(frames)
            x = np.concatenate(xs) if n else np.zeros((0, m.input_size), m.dtype)
        lens = np.fromiter(map(len, xs), np.int64, n)
        offs = np.zeros(n + 1, np.int64)  # stream i owns rows offs[i]:offs[i+1]
        np.cumsum(lens, out=offs[1:])
        total = x.shape[0]
        y = np.empty((total, m.output_size), m.dtype)
        if total:
            bad = self._advance(x, offs, slots, y, int(lens.max()))
            if bad:  # nothing was computed: name the first stream at fault
                for sid, xi in zip(frames, xs):
                    bad = count_nonfinite(np.ascontiguousarray(xi))
                    if bad:
                        raise InputError(f"stream {sid!r}: x contains {bad} NaN/Inf values; nothing was computed")
            self.n_frames[slots] += lens
        ends = offs.tolist()
        return {sid: y[a:b] for sid, a, b in zip(frames, ends, ends[1:])}

    def _push_one(self, frames: dict):
        """``push_many`` of one stream whose frames need no conversion: {id: y}, or None (the general
        path then converts or names the error).  After each sleep of a paced live stream every
        NumPy call runs on cold caches (tens of us each), so this path makes as few as it can:
        the kernel's index arrays are the bank's own, filled in place."""
        m = self.model
        ((sid, x),) = frames.items()
        slot = self._slot.get(sid)
        if not (slot is not None and type(x) is np.ndarray and x.dtype is m.dtype and x.ndim == 2
                and x.shape[1] == m.input_size and x.flags.c_contiguous):
            return None
        T = x.shape[0]
        y = np.empty((T, m.output_size), m.dtype)
        if T:
            one = self._one  # [slot, 0, T]: slots (1,) and offs (2,) of a one-stream call
            one[0], one[2] = slot, T
            bad = self._advance(x, one[1:], one[:1], y, T)
            if bad:
                raise InputError(f"stream {sid!r}: x contains {bad} NaN/Inf values; nothing was computed")
            self.n_frames[slot] += T
        return {sid: y}

    def push_audio(self, features, fslot: int, slot: int, x: np.ndarray) -> np.ndarray:
        """One mono stream's samples through its front end (row ``fslot`` of a ``FeatureBank`` of the
        model's front end) and its bank ``slot`` in one kernel call -> y (t, output_size), t the
        frames the samples complete: what ``bank.push_many({id: features.push_one(fslot, x)})``
        returns, bit for bit, without the Python and NumPy calls between the two (a paced live
        stream pays each of them on cold caches after every sleep).

        x (n,) float32/float64, C-contiguous, checked by the caller (``FeatureBank.push_one``'s
        contract); ``slot`` from ``slots``.  A float32 model only (the front end writes float32
        frames; ShapeError otherwise).  AudioError for NaN/Inf samples (nothing computed, no state changed).

        >>> import numpy as np, streamrnn
        >>> from streamrnn.audio import LogMel
        >>> from streamrnn.audio.stream import FeatureBank
        >>> m = streamrnn.Model.random("gru", 40, 8, output_size=1, activation="sigmoid", frontend=LogMel().to_dict())
        >>> fb, bank = FeatureBank(m.frontend, capacity=2), m.bank(capacity=2)
        >>> fb.open("mic0"); bank.open("mic0")
        >>> bank.push_audio(fb, fb.slot("mic0"), int(bank.slots(["mic0"])[0]), np.zeros(1600, np.float32)).shape
        (8, 1)
        """
        m = self.model
        if m.dtype is not _FLOAT32:
            raise ShapeError(f"push_audio takes a float32 model (the front end's frames), got {m.dtype}: "
                             f"push_many(features.push_many(...)) converts")
        t = features._one_setup(fslot, x)
        try:  # the kernel's scratch and the block's frames (they never leave it), y's shape
            ws, frames, y_shape = self._parts[t]
        except KeyError:  # a new block length (a live source has one or two)
            if len(self._parts) >= 64:  # blocks of many lengths (a ZeroMQ producer's): bounded
                self._parts.clear()
            a = m.arch
            ws = self._scratch(bank_part_size(t, a.num_layers, a.input_size, a.hidden_size, a.gates, m.output_size, 1))
            frames, y_shape = np.empty((t, features.n_features), np.float32), (t, m.output_size)
            self._parts[t] = ws, frames, y_shape
        y = np.empty(y_shape, np.float32)
        self._one[0] = slot
        states, n_left, skip, hop, pre, use_fft, itab, ftab, n_scratch = features.kernel_consts
        bad, peak = features._bad_peak
        r = audio_bank_one_kernel(x, features._one, bad, peak, states, n_left, skip, hop, pre, use_fft, itab, ftab,
                                  features._data, frontend_scratch(n_scratch), frames, m._mi, m.theta, self._one,
                                  self.h, self.c, ws, y, 1)
        features._one_done(fslot, x, t)  # AudioError if the front end found NaN/Inf
        if r:  # cannot happen (finite samples give finite frames): said, like push_many
            raise InputError(f"slot {slot}: the front end's frames contain {-r} NaN/Inf values; the model "
                             f"computed nothing")
        self.n_frames[slot] += t
        return y

    def _advance(self, x, offs, slots, y, T: int) -> int:
        """One kernel call: x (N, I) rows of the n = len(slots) streams (stream i owns rows
        offs[i]:offs[i+1], at most T), y (N, O) written; single- or multi-threaded.  Returns the
        kernel's NaN/Inf count (nothing computed if not 0)."""
        m, a = self.model, self.model.arch
        n = slots.shape[0]
        key = (T, self._group)
        part = self._part_sizes.get(key)
        if part is None:  # per block length (a handful of them), not per call
            if len(self._part_sizes) >= 256:  # bounded whatever lengths the input brings
                self._part_sizes.clear()
            part = self._part_sizes[key] = bank_part_size(T, a.num_layers, a.input_size, a.hidden_size, a.gates,
                                                   m.output_size, self._group)
        n_groups = -(-n // self._group)
        if self.threads > 1 and n_groups > 1:
            from streamrnn.nn.parallel import bank_step_parallel

            return bank_step_parallel(self.threads, m._mi, m.theta, x, offs, slots, self.h, self.c,
                                      self._scratch(n_groups * part), y, self._group, part)
        return bank_step_kernel(m._mi, m.theta, x, offs, slots, self.h, self.c, self._scratch(part), y, self._group)

    def push_rows(self, slots, x, offs) -> np.ndarray:
        """Advance n streams by their rows of one concatenated block, in one kernel call with no Python
        work per stream: stream i (bank row ``slots[i]``, from ``slots(ids)``, each at most once) owns
        x[offs[i]:offs[i+1]] (x (N, input_size), offs (n + 1,) rising from 0 to N; a stream may have
        no rows) -> y (N, output_size), the outputs in x's layout.  What a caller whose front ends
        already write one block (``FeatureBank.push_rows``) passes on; the lanes compute exactly what
        ``push_many`` and lone ``Stream``s compute.  ShapeError, StreamIdError, ValueError and
        InputError as ``push_block``; on any error nothing is computed.
        """
        m = self.model
        slots, offs = np.asarray(slots, np.int64), np.asarray(offs, np.int64)
        n = slots.shape[0]
        x = np.asarray(x)
        if x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != m.input_size:
            raise ShapeError(f"x must be a floating-point array of shape (N, {m.input_size}), got {x.dtype} {x.shape}")
        lens = offs[1:] - offs[:-1]
        if slots.ndim != 1 or offs.shape != (n + 1,) or offs[0] != 0 or offs[n] != x.shape[0] or (n and lens.min() < 0):
            raise ValueError(f"offs must rise from 0 to len(x)={x.shape[0]} in {n + 1} steps for {n} slots")
        if n and (slots.min() < 0 or slots.max() >= self.capacity or not self._open[slots].all()):
            bad = next(int(s) for s in slots if not (0 <= s < self.capacity and self._open[s]))
            raise StreamIdError(f"slot {bad} is not an open stream of this bank (capacity {self.capacity})")
        lanes = np.arange(n)
        self._seen[slots] = lanes
        if (self._seen[slots] != lanes).any():
            raise ValueError("slots repeat a stream: each stream may appear once per call")
        return self._push_rows(slots, np.ascontiguousarray(x, dtype=m.dtype), offs, lens, int(lens.max()) if n else 0)

    def _push_rows(self, slots, x, offs, lens, T: int) -> np.ndarray:
        """``push_rows`` of checked input (slots open and distinct, int64; x (N, input_size) C-contiguous
        in the model's dtype; offs rising from 0 to N; lens = its steps, T their largest): the checks a
        caller that opened the streams itself has already made (``ModelProcessor``), not repeated per
        call.  InputError for NaN/Inf (nothing computed)."""
        y = np.empty((x.shape[0], self.model.output_size), self.model.dtype)
        if x.shape[0]:
            bad = self._advance(x, offs, slots, y, T)
            if bad:
                n = slots.shape[0]
                i = next(i for i in range(n) if not np.isfinite(x[offs[i]:offs[i + 1]]).all())
                sid = next(k for k, v in self._slot.items() if v == slots[i])
                raise InputError(f"stream {sid!r} (slot {int(slots[i])}): x contains NaN/Inf values; nothing was computed")
            self.n_frames[slots] += lens
        return y

    def slots(self, ids) -> np.ndarray:
        """The bank rows of the open streams ``ids`` as an int64 array (n,), for ``push_block``.

        A slot stays valid until its stream closes; a caller that keeps its frames in one array
        looks the slots up once, when streams join, not on every call.  StreamIdError (a KeyError) for an id that
        is not open.
        """
        try:
            return np.fromiter(map(self._slot.__getitem__, ids), np.int64)
        except KeyError as e:
            raise StreamIdError(f"stream {e.args[0]!r} is not open in this bank") from None

    def push_block(self, slots, x) -> np.ndarray:
        """Advance the n streams at ``slots`` by T frames each in one kernel call, with no Python
        work per stream: x (n, T, input_size) -> y (n, T, output_size) (a fresh array).

        ``slots`` (n,) from ``slots(ids)``, each at most once.  Lane i computes exactly (bit for
        bit) what ``push_many({id_i: x[i]})`` and a lone ``Stream`` compute.  ``ShapeError`` for
        a wrong shape or dtype kind, ``StreamIdError`` (a ``KeyError``) for a slot that is not an open stream,
        ``ValueError`` for a repeated slot, ``InputError`` (naming the stream) for NaN/Inf; on
        any error nothing is computed and no state changes.

        >>> import numpy as np, streamrnn
        >>> m = streamrnn.Model.random("gru", input_size=4, hidden_size=8, output_size=1, activation="sigmoid")
        >>> bank = m.bank(capacity=10)
        >>> for sid in ("a", "b", "c"): bank.open(sid)
        >>> slots = bank.slots(["a", "c"])
        >>> x = np.ones((2, 5, 4), np.float32)
        >>> y = bank.push_block(slots, x)
        >>> y.shape, bool(np.array_equal(y[1], m.forward(x[1])))
        ((2, 5, 1), True)
        """
        m = self.model
        slots = np.asarray(slots)
        if slots.ndim != 1 or (slots.size and slots.dtype.kind not in "iu"):
            raise ShapeError(f"slots must be a 1-D integer array (Bank.slots), got {slots.dtype} {slots.shape}")
        x = np.asarray(x)
        n = slots.shape[0]
        if x.dtype.kind != "f" or x.ndim != 3 or x.shape[0] != n or x.shape[2] != m.input_size:
            raise ShapeError(f"x must be a floating-point array of shape ({n}, T, {m.input_size}) for {n} slots, "
                             f"got {x.dtype} {x.shape}")
        slots = slots.astype(np.int64, copy=False)
        if n and (slots.min() < 0 or slots.max() >= self.capacity or not self._open[slots].all()):
            bad = next(int(s) for s in slots if not (0 <= s < self.capacity and self._open[s]))
            raise StreamIdError(f"slot {bad} is not an open stream of this bank (capacity {self.capacity})")
        lanes = np.arange(n)
        self._seen[slots] = lanes  # a repeated slot holds one lane number, so another lane finds it differs
        if (self._seen[slots] != lanes).any():
            raise ValueError("slots repeat a stream: each stream may appear once per call")
        x = np.ascontiguousarray(x, dtype=m.dtype)
        T = x.shape[1]
        y = np.empty((n, T, m.output_size), m.dtype)
        if n and T:
            offs = np.arange(0, (n + 1) * T, T, dtype=np.int64)
            bad = self._advance(x.reshape(n * T, m.input_size), offs, slots, y.reshape(n * T, m.output_size), T)
            if bad:
                i = int(np.argmin(np.isfinite(x).all(axis=(1, 2))))
                sid = next(k for k, v in self._slot.items() if v == slots[i])
                raise InputError(f"stream {sid!r} (slot {int(slots[i])}): x contains "
                                 f"{int((~np.isfinite(x[i])).sum())} NaN/Inf values; nothing was computed")
            self.n_frames[slots] += T
        return y

    def _check_many(self, frames: dict):
        """(slots (n,) int64, frames as (T_i, input_size) arrays of the model's dtype), one stream at a
        time: the slow path of ``push_many``, which names the first stream at fault."""
        m = self.model
        slots = np.empty(len(frames), np.int64)
        xs = []
        for i, (sid, x) in enumerate(frames.items()):
            slots[i] = self._get(sid)
            try:
                xs.append(m.check_frames(x))
            except (ShapeError, InputError) as e:
                raise type(e)(f"stream {sid!r}: {e}") from None
        return slots, xs

    def _scratch(self, size: int) -> np.ndarray:
        """``size`` elements of the bank's scratch, grown geometrically (never allocated per call)."""
        if self._pws.shape[0] < size:  # on a cache line: the kernels align every region they carve to it
            self._pws = aligned_copy(np.zeros(2 * size, self.model.dtype))
            self._parts.clear()  # push_audio's views of the old one
        return self._pws[:size]

    def snapshot_rows(self, ids) -> dict:
        """The states of the open streams ``ids`` in one dict of arrays (h, c (L, n, H), n_frames (n,)):
        what ``snapshot`` of each gives, with what they share (version, signature) once.
        ``split_rows`` gives back each stream's ``snapshot`` dict.  StreamIdError for an id not open.

        >>> import numpy as np, streamrnn
        >>> bank = streamrnn.Model.random("gru", input_size=4, hidden_size=8).bank(capacity=4)
        >>> for sid in ("a", "b"): bank.open(sid)
        >>> _ = bank.push_many({"a": np.ones((3, 4), np.float32), "b": np.ones((1, 4), np.float32)})
        >>> one = bank.split_rows(bank.snapshot_rows(["a", "b"]))[1]
        >>> bool(np.array_equal(one["h"], bank.snapshot("b")["h"])), one["n_frames"]
        (True, 1)
        """
        slots = self.slots(ids)
        return {"version": SNAPSHOT_VERSION, "kind": "stream_rows", "signature": self.model.signature(),
                "h": self.h[:, slots], "c": self.c[:, slots], "n_frames": self.n_frames[slots]}

    @staticmethod
    def split_rows(rows: dict) -> list:
        """``snapshot_rows``'s dict -> each stream's ``snapshot`` dict, in order (views of its arrays).
        SnapshotError for another kind of dict."""
        if not isinstance(rows, dict) or rows.get("kind") != "stream_rows":
            raise SnapshotError("not a bank's snapshot_rows dict")
        h, c, nf = rows["h"], rows["c"], rows["n_frames"]
        return [{"version": rows["version"], "kind": "stream", "signature": rows["signature"], "h": h[:, i:i + 1],
                 "c": c[:, i:i + 1], "n_frames": int(nf[i])} for i in range(len(nf))]

    def snapshot(self, sid) -> dict:
        """The stream's state as a ``Stream`` snapshot (restorable into a Stream or a bank slot)."""
        slot = self._get(sid)
        return {"version": SNAPSHOT_VERSION, "kind": "stream", "signature": self.model.signature(),
                "h": self.h[:, slot : slot + 1].copy(), "c": self.c[:, slot : slot + 1].copy(),
                "n_frames": int(self.n_frames[slot])}

    def restore(self, sid, snap: dict) -> None:
        check_snapshot(snap, "stream", "Stream", self.model.signature(), key="signature", against="model")
        slot = self._get(sid)
        self.h[:, slot : slot + 1] = snap["h"]
        self.c[:, slot : slot + 1] = snap["c"]
        self.n_frames[slot] = int(snap["n_frames"])


def load_model(path_or_name, *, dtype=np.float32, max_bytes: int = modelfile.MAX_MODEL_BYTES) -> Model:
    """Load and validate a model file, or a bundled model by name (``"vad"``).

    Raises ModelFileError naming the file and the defect (nothing is ever unpickled).

    >>> import streamrnn, tempfile, os
    >>> m = streamrnn.Model.random("lstm", input_size=4, hidden_size=6, num_layers=2, output_size=1,
    ...                            activation="sigmoid", labels=["speech"])
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> m.save(path)
    >>> streamrnn.load_model(path)
    Model(lstm, input=4, hidden=6, layers=2, head=1/sigmoid, params=631, dtype=float32)
    """
    return Model(dtype=dtype, **modelfile.read_model_file(path_or_name, max_bytes=max_bytes))


save_model = modelfile.save_model
