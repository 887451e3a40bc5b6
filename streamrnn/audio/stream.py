"""Streams from raw audio: ``FeatureStream`` (resampler + front end), ``AudioStream`` (+ model) and
``AudioBank`` (many audio streams of one model, one bank step for all).

Each stream owns all of its carried state (resampler history, leftover samples,
pre-emphasis, hidden state) and nothing else; models and front-end settings
are shared.  Input: (n,) mono or (n, channels) (downmixed by the mean of the
channels), float32/float64 in [-1, 1] or int16 (scaled by 1/32768), at
``sample_rate`` (the input rate); a different rate from the front end's is
resampled with soxr (see ``streamrnn.audio.resample``).

>>> import numpy as np
>>> from streamrnn.audio import LogMel
>>> fs = FeatureStream(LogMel(), sample_rate=48000)
>>> f = fs.push(np.zeros((4800, 2), np.float32))     # 100 ms of stereo at 48 kHz
>>> f.shape[1], fs.frame_rate
(40, 100.0)
"""

from __future__ import annotations

import logging
import math

import numpy as np

from streamrnn.audio.checks import as_signal, check_rate, fix_nonfinite, guarded_restore, nonfinite_error
from streamrnn.audio.frontend import _scratch, as_frontend
from streamrnn.audio.kernels import _frame_counts_kernel, _frames_kernel, _push_many_kernel, all_finite
from streamrnn.audio.resample import Resampler, downmix
from streamrnn.errors import AudioError, CapacityError, ConfigError, SnapshotError, StreamExistsError, StreamIdError
from streamrnn.snapshot import SNAPSHOT_VERSION, check_snapshot

FLOAT_PEAK_LIMIT = 4.0  # |sample| of float input: 12 dB above full scale is no clipping accident

log = logging.getLogger(__name__)


def out_of_range_peak(x: np.ndarray) -> float:
    """The block's peak |x| when float samples go beyond ``FLOAT_PEAK_LIMIT`` (int16-scale audio
    sent as float, say), else 0.0.  int16 input is always in range.

    >>> out_of_range_peak(np.array([0.5, -0.9], np.float32)), out_of_range_peak(np.array([300.0, -2.0]))
    (0.0, 300.0)
    """
    if x.dtype.kind != "f" or x.size == 0:
        return 0.0
    peak = max(float(x.max()), -float(x.min()))  # no temporary array
    return peak if peak > FLOAT_PEAK_LIMIT else 0.0


def warn_out_of_range(peak: float) -> None:
    """The one warning of a stream whose float samples go beyond ``FLOAT_PEAK_LIMIT``."""
    log.warning("float samples peak at %.4g, far outside [-1, 1] (limit %g): int16-scale audio sent as float? "
                "Divide by 32768. Such blocks are counted, not logged again", peak, FLOAT_PEAK_LIMIT)


class FeatureStream:
    """Resampler (if the input rate differs) + front end: push samples, get feature frames.

    ``frontend``: LogMel, MFCC or a settings dict (a fresh copy is made: the
    stream owns its state).  ``nonfinite``: "error" (default) rejects NaN/Inf
    samples with AudioError; "zero" replaces them with 0 and counts them in
    ``n_nonfinite``.
    """

    def __init__(self, frontend, sample_rate, nonfinite: str = "error", quality: str = "HQ",
                 history_seconds: float | None = None):
        self.frontend = as_frontend(frontend)
        self.sample_rate = check_rate(sample_rate, "sample_rate")
        fix_nonfinite(np.zeros(1), nonfinite)  # validates the mode
        self.nonfinite = nonfinite
        fe_rate = self.frontend.sample_rate
        self.resampler = (None if self.sample_rate == fe_rate else
                          Resampler(self.sample_rate, fe_rate, 1, quality, history_seconds))
        self.reset()

    @property
    def n_features(self) -> int:
        return self.frontend.n_features

    @property
    def frame_rate(self) -> float:
        """Frames per second (front-end rate / hop_length), whatever the input rate."""
        return self.frontend.frame_rate

    @property
    def n_frames(self) -> int:
        """Frames emitted since the last reset."""
        return self.frontend.n_frames

    def frame_end_sample(self, k: int) -> int:
        """Exclusive end, in input-rate samples, of the input frame ``k`` depends on.

        Frame k covers front-end samples [k*hop, k*hop + win); the last one,
        k*hop + win - 1, is at time (k*hop + win - 1) / fe_rate.  With a
        resampler, that output sample also depends on input up to the filter's
        lookahead past that time (``Resampler.lookahead``, measured from soxr's
        impulse response).  Emission can come later still: soxr holds back
        ``Resampler.delay()`` output samples until more input arrives.
        """
        fe = self.frontend
        last = k * fe.hop_length + fe.win_length - 1  # front-end sample index
        if self.resampler is None:
            return last + 1
        r = self.resampler
        return int(math.floor(last * self.sample_rate / fe.sample_rate + r.lookahead)) + 1

    def push(self, samples) -> np.ndarray:
        """samples (n,) or (n, channels) -> (t, n_features) float32 frames completed by them.

        Float blocks whose peak is beyond ``FLOAT_PEAK_LIMIT`` are processed as they are, counted
        in ``n_out_of_range`` and warned about once per stream (float audio belongs in [-1, 1])."""
        if self.resampler is None and type(samples) is np.ndarray:
            if samples.ndim == 2 and samples.shape[1] == 1:
                samples = samples[:, 0]  # mono as (n, 1), the wire's layout: a view, no copy
            if samples.ndim == 1:
                # the common case (mono at the front end's rate): the front end's kernel checks,
                # converts and pre-emphasises and measures the peak (float input; int16 arrives
                # scaled into range); NaN/Inf are counted here, not in the front end
                y, bad, peak = self.frontend._push(samples, self.nonfinite, "samples")
                self.n_nonfinite += bad
                if peak > FLOAT_PEAK_LIMIT and samples.dtype.kind == "f":
                    self._out_of_range(peak)
                return y
        if type(samples) is np.ndarray:
            peak = out_of_range_peak(samples)
            if peak:
                self._out_of_range(peak)
        x = as_signal(samples, "samples", allow_2d=True)
        x, bad = fix_nonfinite(x, self.nonfinite, "samples")  # before soxr: NaN would spoil its state
        self.n_nonfinite += bad
        x = downmix(x)
        if self.resampler is not None:
            x = self.resampler.push(x)
        return self.frontend._push(x, "error", "samples")[0]

    def _out_of_range(self, peak: float) -> None:
        if not self.n_out_of_range:
            warn_out_of_range(peak)
        self.n_out_of_range += 1

    def reset(self) -> None:
        """Back to the start of a new signal (resampler, leftover samples, counters)."""
        if self.resampler is not None:
            self.resampler.reset()
        self.frontend.reset()
        self.n_nonfinite = 0  # NaN/Inf input samples replaced by 0 since reset (nonfinite="zero")
        self.n_out_of_range = 0  # float blocks with a peak beyond FLOAT_PEAK_LIMIT since reset

    def _settings(self) -> dict:
        return {"sample_rate": self.sample_rate, "frontend": self.frontend.to_dict()}

    def snapshot(self) -> dict:
        """Versioned state: resampler (input history to replay), front end, counters."""
        return _feature_stream_snapshot(self._settings(), None if self.resampler is None else self.resampler.snapshot(),
                                        self.frontend.snapshot(), self.n_nonfinite)

    def restore(self, snap: dict) -> None:
        """Put back a snapshot from a FeatureStream with the same input rate and front end."""
        check_snapshot(snap, "feature_stream", "FeatureStream", self._settings())
        if not all(k in snap for k in ("frontend", "resampler", "n_nonfinite")):
            raise SnapshotError("malformed FeatureStream snapshot: missing keys")
        before = (self.frontend.snapshot(), None if self.resampler is None else self.resampler.snapshot())
        try:
            self.frontend.restore(snap["frontend"])
            if self.resampler is not None:
                self.resampler.restore(snap["resampler"])
            self.n_nonfinite = int(snap["n_nonfinite"])
        except (SnapshotError, TypeError, ValueError) as e:  # put the stream back as it was
            self.frontend.restore(before[0])
            if self.resampler is not None:
                self.resampler.restore(before[1])
            raise e if isinstance(e, SnapshotError) else SnapshotError(f"malformed snapshot: {e!r}") from None


def _feature_stream_snapshot(settings: dict, resampler, frontend: dict, n_nonfinite: int) -> dict:
    """A ``FeatureStream``'s snapshot dict (``FeatureBank.snapshot`` writes the same one)."""
    return {"version": SNAPSHOT_VERSION, "kind": "feature_stream", "settings": settings,
            "resampler": resampler, "frontend": frontend, "n_nonfinite": int(n_nonfinite)}


def model_frontend(model):
    """The front end of ``model`` (a fresh object); ConfigError if it has none or it does not fit."""
    if model.frontend is None:
        raise ConfigError("model has no 'frontend' metadata: it takes feature frames, not audio "
                          "(use model.stream() with frames)")
    fe = as_frontend(model.frontend)
    if fe.n_features != model.input_size:
        raise ConfigError(f"front end yields {fe.n_features} features per frame but the model takes "
                          f"{model.input_size}")
    return fe


def _restore_pair(features, model_restore, model_snapshot, snap, what: str) -> None:
    """Restore an audio stream's two parts from an ``audio_stream`` snapshot, or neither: a failed
    restore leaves the stream as it was."""
    check_snapshot(snap, "audio_stream", what)
    if "features" not in snap or "model" not in snap:
        raise SnapshotError(f"malformed {what} snapshot: needs 'features' and 'model'")
    before = (features.snapshot(), model_snapshot())
    try:
        model_restore(snap["model"])
        features.restore(snap["features"])
    except (SnapshotError, KeyError, TypeError, ValueError) as e:
        features.restore(before[0])
        model_restore(before[1])
        if isinstance(e, SnapshotError):
            raise
        raise SnapshotError(f"malformed {what} snapshot: {e!r}") from None


class AudioStream:
    """Raw audio in, model outputs out: FeatureStream + ``model.stream()``.

    ``sample_rate``: the input rate (None: the front end's).  ``push(samples)``
    -> (t, model.output_size) for the frames the samples complete.  The model's
    ``norm`` tensors (input normalisation) are applied by the model kernel.

    >>> import numpy as np, streamrnn
    >>> from streamrnn.audio import LogMel
    >>> m = streamrnn.Model.random("gru", 40, 8, output_size=2, activation="softmax",
    ...                            frontend=LogMel().to_dict())
    >>> s = m.audio_stream(sample_rate=8000)
    >>> s.push(np.zeros(8000, np.float32)).shape[1]
    2
    """

    def __init__(self, model, sample_rate=None, nonfinite: str = "error", quality: str = "HQ",
                 history_seconds: float | None = None):
        self.model = model
        fe = model_frontend(model)
        rate = fe.sample_rate if sample_rate is None else sample_rate
        self.features = FeatureStream(fe, rate, nonfinite=nonfinite, quality=quality,
                                      history_seconds=history_seconds)
        self.stream = model.stream()

    sample_rate = property(lambda self: self.features.sample_rate, doc="Input sample rate (Hz).")
    frame_rate = property(lambda self: self.features.frame_rate, doc="Frames (outputs) per second.")
    n_features = property(lambda self: self.features.n_features)
    n_frames = property(lambda self: self.features.n_frames, doc="Frames (outputs) since reset.")
    n_nonfinite = property(lambda self: self.features.n_nonfinite, doc="NaN/Inf samples replaced by 0.")
    output_size = property(lambda self: self.model.output_size)
    frontend = property(lambda self: self.features.frontend)

    def frame_end_sample(self, k: int) -> int:
        """See ``FeatureStream.frame_end_sample``: input samples output k depends on (exclusive end)."""
        return self.features.frame_end_sample(k)

    def push(self, samples) -> np.ndarray:
        """samples (n,) or (n, channels) -> (t, output_size) outputs for the completed frames."""
        x = self.features.push(samples)  # (t, F) float32
        return self.stream.push(x)

    def reset(self) -> None:
        self.features.reset()
        self.stream.reset()

    def snapshot(self) -> dict:
        """Versioned state of everything carried: resampler, leftover samples, pre-emphasis, hidden state."""
        return {"version": SNAPSHOT_VERSION, "kind": "audio_stream", "features": self.features.snapshot(),
                "model": self.stream.snapshot()}

    def restore(self, snap: dict) -> None:
        """Put back a snapshot from an AudioStream (or an AudioBank slot) of a model of the same shape
        and front end, at the same input rate; a failed restore leaves the stream as it was."""
        _restore_pair(self.features, self.stream.restore, self.stream.snapshot, snap, "AudioStream")


class AudioBank:
    """Many audio streams of one model: a resampler and front end per stream (``FeatureStream``),
    every stream's hidden state in one ``Bank``.

    ``push_many({id: samples})`` runs each stream's samples through its own front end, then advances
    every stream with new frames in one bank step; the outputs are the same, bit for bit, as one
    ``AudioStream`` per id pushed the same samples.  Streams ``open``, ``close`` and ``reset`` at
    any time (``open`` of an open id: StreamExistsError; an unknown id: StreamIdError; a full
    bank: CapacityError); ``snapshot(id)``/``restore(id, snap)`` use ``AudioStream``'s snapshots.

    >>> import numpy as np, streamrnn
    >>> from streamrnn.audio import LogMel
    >>> m = streamrnn.Model.random("gru", 40, 8, output_size=1, activation="sigmoid",
    ...                            frontend=LogMel().to_dict())
    >>> bank = m.audio_bank(capacity=8, sample_rate=16000)
    >>> bank.open("a"); bank.open("b", sample_rate=8000)
    >>> out = bank.push_many({"a": np.zeros(1600, np.float32), "b": np.zeros(800, np.float32)})
    >>> out["a"].shape, out["b"].shape[1], len(bank)
    ((8, 1), 1, 2)
    >>> bank.open("a")
    Traceback (most recent call last):
    ...
    streamrnn.errors.StreamExistsError: stream 'a' is already open (close it first, or reset it)
    """

    def __init__(self, model, capacity: int, sample_rate=None, nonfinite: str = "error", quality: str = "HQ",
                 threads: int = 1, history_seconds: float | None = None):
        self.model = model
        self._fe = model_frontend(model)
        self.sample_rate = check_rate(self._fe.sample_rate if sample_rate is None else sample_rate, "sample_rate")
        fix_nonfinite(np.zeros(1), nonfinite)  # validates the mode
        self.nonfinite, self.quality, self.history_seconds = nonfinite, quality, history_seconds
        self.bank = model.bank(capacity, threads)
        self.features: dict = {}  # id -> FeatureStream (resampler, leftover samples, pre-emphasis)

    capacity = property(lambda self: self.bank.capacity)
    output_size = property(lambda self: self.model.output_size)
    frame_rate = property(lambda self: self._fe.frame_rate, doc="Frames (outputs) per second of every stream.")
    ids = property(lambda self: self.bank.ids)

    def __len__(self):
        return len(self.bank)

    def __contains__(self, sid):
        return sid in self.bank

    def open(self, sid, sample_rate=None) -> None:
        """Add a stream with zero state; its input rate is ``sample_rate`` (default: the bank's)."""
        fs = FeatureStream(self._fe, self.sample_rate if sample_rate is None else sample_rate,
                           nonfinite=self.nonfinite, quality=self.quality, history_seconds=self.history_seconds)
        self.bank.open(sid)
        self.features[sid] = fs

    def close(self, sid) -> None:
        self.bank.close(sid)
        del self.features[sid]

    def reset(self, sid) -> None:
        """Back to the start of a new signal: resampler, front end and hidden state."""
        self.bank.reset(sid)
        self.features[sid].reset()

    def push(self, sid, samples) -> np.ndarray:
        """One stream's samples (a one-stream ``push_many``) -> (t, output_size)."""
        return self.push_many({sid: samples})[sid]

    def push_many(self, samples: dict) -> dict:
        """{id: samples (n,) or (n, channels)} -> {id: outputs (t, output_size)} for the frames completed.

        Every id must be open (StreamIdError names the first that is not; nothing is computed).
        Bad samples raise AudioError naming the stream; the model steps of that call are not run
        (push streams one by one to keep the others going past a bad one)."""
        unknown = [sid for sid in samples if sid not in self.features]
        if unknown:
            raise StreamIdError(f"stream {unknown[0]!r} is not open in this bank")
        frames = {}
        for sid, x in samples.items():
            try:
                frames[sid] = self.features[sid].push(x)  # (t, F) float32
            except AudioError as e:
                raise AudioError(f"stream {sid!r}: {e}") from None
        todo = {sid: f for sid, f in frames.items() if f.shape[0]}
        outs = self.bank.push_many(todo) if todo else {}
        empty = np.zeros((0, self.model.output_size), np.float32)
        return {sid: outs.get(sid, empty) for sid in samples}

    def snapshot(self, sid) -> dict:
        """The stream's state as an ``AudioStream`` snapshot (restorable into either)."""
        model = self.bank.snapshot(sid)  # StreamIdError for an unknown id
        return {"version": SNAPSHOT_VERSION, "kind": "audio_stream", "features": self.features[sid].snapshot(),
                "model": model}

    def restore(self, sid, snap: dict) -> None:
        """Put back an ``AudioStream``/``AudioBank`` snapshot into the open stream ``sid``."""
        self.bank.snapshot(sid)  # StreamIdError for an unknown id
        _restore_pair(self.features[sid], lambda s: self.bank.restore(sid, s), lambda: self.bank.snapshot(sid),
                      snap, "AudioBank")


class FeatureBank:
    """The front ends of many mono streams at the front end's own rate, their carried state (leftover
    samples, pre-emphasis) in one array, advanced in one kernel call: what a stream server runs on
    every tick, instead of one ``FeatureStream.push`` (two kernel calls and their Python) per stream.

    ``push_rows(slots, x, offs)`` is the array entry (stream i, at row ``slots[i]`` from ``slot(id)``,
    owns the samples x[offs[i]:offs[i+1]]); ``push_many({id: samples (n,)})`` the dict one.  A
    stream's frames are bit-identical to its own ``FeatureStream``/``LogMel.push`` of the same
    samples, whatever the chunking.  Streams ``open``, ``close``, ``reset`` at any time
    (StreamExistsError, StreamIdError, CapacityError as ``Bank``'s); ``snapshot(id)``/``restore(id,
    snap)`` write and read a ``FeatureStream``'s snapshot dict (NaN/Inf are refused, never counted,
    so its ``n_nonfinite`` is 0).  Resampled or multi-channel
    streams need a ``FeatureStream`` each.

    >>> import numpy as np
    >>> from streamrnn.audio import LogMel
    >>> fb = FeatureBank(LogMel(), capacity=4)
    >>> fb.open("a"); fb.open("b")
    >>> out = fb.push_many({"a": np.zeros(1600, np.float32), "b": np.zeros(320, np.float32)})
    >>> out["a"].shape, out["b"].shape
    ((8, 40), (0, 40))
    """

    MAX_CAPACITY = 1 << 20  # as Bank's; (capacity, 1 + win_length) float64 are allocated up front

    def __init__(self, frontend, capacity: int):
        fe = as_frontend(frontend)
        if not isinstance(capacity, (int, np.integer)) or not 1 <= capacity <= self.MAX_CAPACITY:
            raise CapacityError(f"capacity must be an integer in [1, {self.MAX_CAPACITY}], got {capacity!r}")
        self.frontend, self.capacity = fe, int(capacity)
        self.sample_rate, self.frame_rate, self.n_features = fe.sample_rate, fe.frame_rate, fe.n_features
        self._win, self._hop = fe.win_length, fe.hop_length
        self.states = np.zeros((self.capacity, 1 + self._win))  # (capacity, 1 + win): LogMel's _state per row
        self.n_left = np.zeros(self.capacity, np.int64)
        self.skip = np.zeros(self.capacity, np.int64)
        self.n_frames = np.zeros(self.capacity, np.int64)
        self._warned = np.zeros(self.capacity, bool)  # the float-range warning, once per stream
        self._slot: dict = {}
        self._free = list(range(self.capacity - 1, -1, -1))
        self._data = np.empty(0)  # frame data of the longest stream of a call, grown on demand
        self._one = np.zeros(6, np.int64)  # push_one's index arrays
        self._bad_peak = (np.zeros(1, np.int64), np.zeros(1))  # push_one's NaN/Inf count and peak
        tb = self.frontend._tables  # the front-end kernel's constant arguments, looked up once
        self.kernel_consts = (self.states, self.n_left, self.skip, self._hop, self.frontend.preemphasis,
                              tb.kernel is _frames_kernel, tb.itab, tb.ftab, tb.n_scratch)
        self._rows = (np.zeros(0, np.int64),) * 4  # _push_rows' t, fo, bad, peak (grown on demand)
        self._frames = np.empty((0, self.n_features), np.float32)  # _push_rows(reuse=True)'s frames

    def __len__(self):
        return len(self._slot)

    def __contains__(self, sid):
        return sid in self._slot

    def slot(self, sid) -> int:
        """The row of the open stream ``sid`` (StreamIdError if it is not open)."""
        try:
            return self._slot[sid]
        except KeyError:
            raise StreamIdError(f"stream {sid!r} is not open in this feature bank") from None

    def open(self, sid) -> None:
        if sid in self._slot:
            raise StreamExistsError(f"stream {sid!r} is already open (close it first, or reset it)")
        if not self._free:
            raise CapacityError(f"feature bank is full: {self.capacity} streams open")
        self._slot[sid] = r = self._free.pop()
        self._zero(r)

    def close(self, sid) -> None:
        self._free.append(self.slot(sid))
        del self._slot[sid]

    def reset(self, sid) -> None:
        self._zero(self.slot(sid))

    def _settings(self) -> dict:  # a FeatureStream's at the front end's own rate
        return {"sample_rate": self.sample_rate, "frontend": self.frontend.to_dict()}

    def snapshot(self, sid) -> dict:
        """Versioned state of stream ``sid`` (leftover samples, pre-emphasis, frame count): the very
        dict a ``FeatureStream`` at the front end's rate writes, so a stream can move between a bank
        and a lone ``FeatureStream`` either way.  StreamIdError if ``sid`` is not open."""
        r = self.slot(sid)
        fe = self.frontend._snapshot_of(self.states[r], self.n_left[r], self.skip[r], self.n_frames[r], 0)
        return _feature_stream_snapshot(self._settings(), None, fe, 0)

    def snapshot_rows(self, ids) -> dict:
        """The states of the open streams ``ids`` in one dict of arrays: what ``snapshot`` of each gives,
        with what they share (version, settings) once and every stream's leftover samples in one
        array (``buffer``, stream i's ``n_left[i]`` values after stream i - 1's).  ``split_rows`` gives
        back each stream's ``snapshot`` dict.  StreamIdError for an id that is not open.

        >>> import numpy as np
        >>> from streamrnn.audio import LogMel
        >>> fb = FeatureBank(LogMel(), capacity=4)
        >>> fb.open("a"); fb.open("b")
        >>> _ = fb.push_many({"a": np.ones(500, np.float32), "b": np.ones(900, np.float32)})
        >>> one = fb.split_rows(fb.snapshot_rows(["a", "b"]))[1]
        >>> bool(np.array_equal(one["frontend"]["buffer"], fb.snapshot("b")["frontend"]["buffer"]))
        True
        """
        r = np.fromiter(map(self.slot, ids), np.int64)
        n_left = self.n_left[r]
        st = self.states[r]  # (n, 1 + win): prev, then the leftover samples (the first n_left of them)
        keep = np.arange(self._win)[None, :] < n_left[:, None]
        return {"version": SNAPSHOT_VERSION, "kind": "feature_rows", "settings": self._settings(),
                "prev": st[:, 0], "n_left": n_left, "skip": self.skip[r], "n_frames": self.n_frames[r],
                "buffer": st[:, 1:][keep]}

    @staticmethod
    def split_rows(rows: dict) -> list:
        """``snapshot_rows``'s dict -> each stream's ``snapshot`` dict, in order (its buffers views of
        the dict's).  SnapshotError for another kind of dict or buffers that do not add up."""
        if not isinstance(rows, dict) or rows.get("kind") != "feature_rows":
            raise SnapshotError("not a feature bank's snapshot_rows dict")
        n_left, buf = np.asarray(rows["n_left"], np.int64), rows["buffer"]
        ends = np.cumsum(n_left).tolist()
        if n_left.ndim != 1 or (len(n_left) and n_left.min() < 0) or (ends[-1] if ends else 0) != len(buf):
            raise SnapshotError(f"feature bank rows: n_left {n_left.tolist()} do not add up to {len(buf)} samples")
        v, settings = rows["version"], rows["settings"]
        fe = settings["frontend"] if isinstance(settings, dict) else None
        out = []
        for i, (a, b) in enumerate(zip([0] + ends, ends)):
            f = {"version": v, "kind": "frontend", "settings": fe, "buffer": buf[a:b], "prev": float(rows["prev"][i]),
                 "skip": int(rows["skip"][i]), "n_frames": int(rows["n_frames"][i]), "n_nonfinite": 0}
            out.append({"version": v, "kind": "feature_stream", "settings": settings, "resampler": None,
                        "frontend": f, "n_nonfinite": 0})  # _feature_stream_snapshot's dict
        return out

    def restore(self, sid, snap: dict) -> None:
        """Put back into stream ``sid`` a snapshot from ``snapshot`` or from a ``FeatureStream`` at the
        front end's rate with the same front end (a front end's own ``LogMel.snapshot()`` too).
        SnapshotError (nothing changed) for any other or a damaged dict; StreamIdError if not open.

        >>> import numpy as np
        >>> from streamrnn.audio import LogMel
        >>> fb, fs = FeatureBank(LogMel(), capacity=2), FeatureStream(LogMel(), 16000)
        >>> _ = fs.push(np.ones(500, np.float32) / 4)
        >>> fb.open("a"); fb.restore("a", fs.snapshot())
        >>> x = np.ones(700, np.float32) / 8
        >>> bool(np.array_equal(fb.push_many({"a": x})["a"], fs.push(x)))
        True
        """
        r = self.slot(sid)
        guarded_restore(lambda s: self._restore_row(r, s), snap, "FeatureBank")

    def _restore_row(self, r: int, snap: dict) -> None:
        if isinstance(snap, dict) and snap.get("kind") == "feature_stream":
            check_snapshot(snap, "feature_stream", "FeatureBank", self._settings(), against="feature bank")
            if snap["resampler"] is not None:
                raise SnapshotError("FeatureBank snapshot carries a resampler state: a feature bank has none")
            snap = snap["frontend"]
        state, n_left, skip, n_frames, _ = self.frontend._read_snapshot(snap, "FeatureBank")
        self.states[r], self.n_left[r], self.skip[r], self.n_frames[r] = state, n_left, skip, n_frames
        self._warned[r] = False

    def _zero(self, r: int) -> None:
        self.states[r] = 0.0
        self.n_left[r] = self.skip[r] = self.n_frames[r] = 0
        self._warned[r] = False

    def frame_end_sample(self, k: int) -> int:
        """Exclusive end (samples) of the input frame ``k`` depends on (``FeatureStream``'s, no resampler)."""
        return k * self._hop + self._win

    def push_rows(self, slots: np.ndarray, x: np.ndarray, offs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """n streams' new samples in one call -> (frames (F, n_features) float32, fo (n + 1,) int64):
        stream i's frames are rows fo[i]:fo[i+1].

        slots (n,) int64 rows from ``slot`` (each at most once); x (N,) float32/float64 samples,
        C-contiguous; offs (n + 1,) int64 with offs[0] = 0, offs[n] = N.  NaN/Inf: AudioError naming
        the first stream at fault, and nothing is computed.  Float samples beyond
        ``FLOAT_PEAK_LIMIT`` are processed and warned about once per stream.
        """
        n = slots.shape[0]
        lens = offs[1:] - offs[:-1]
        if offs.shape[0] != n + 1 or offs[0] != 0 or offs[n] != x.shape[0] or (n and lens.min() < 0):
            raise ValueError(f"offs must rise from 0 to len(x)={x.shape[0]} in {n + 1} steps, got {offs}")
        if n and (slots.min() < 0 or slots.max() >= self.capacity):  # the kernels index rows unchecked
            raise ValueError(f"slots must be rows in [0, {self.capacity}), got {slots.min()}..{slots.max()}")
        if not all_finite(x):
            i = next(i for i in range(n) if not all_finite(x[offs[i]:offs[i + 1]]))
            sid = next(k for k, v in self._slot.items() if v == slots[i])
            raise AudioError(f"stream {sid!r}: {nonfinite_error(x[offs[i]:offs[i + 1]], 'samples')}")
        out, fo, _, _ = self._push_rows(np.ascontiguousarray(slots, np.int64), x, offs)
        return out, fo.copy()

    def _push_rows(self, slots: np.ndarray, x: np.ndarray, offs: np.ndarray, reuse: bool = False):
        """``push_rows`` of checked input (finite samples, offs rising from 0 to len(x), slots open and
        distinct, int64 C-contiguous) -> (frames, fo, t: each stream's frame count, tmax: the largest).
        No NumPy call per stream and no allocation but the frames: the index arrays are the bank's own
        (fo and t views of them, valid until the next call), and with ``reuse`` the frames too (a view of a
        buffer grown geometrically: valid until the next call, for a caller that consumes them at once)."""
        n = slots.shape[0]
        buf = self._rows
        if buf[0].shape[0] < n + 1:  # t, fo, bad, peak: grown geometrically (at most capacity + 1)
            k = min(max(2 * (n + 1), 64), self.capacity + 1)
            self._rows = buf = (np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k))
        t, fo, bad, peak = buf[0][:n], buf[1][:n + 1], buf[2][:n], buf[3][:n]
        # the frames each stream completes: LogMel._push's arithmetic, for all streams at once
        total, need, tmax = _frame_counts_kernel(offs, slots, self.n_left, self.skip, self.n_frames, self._win,
                                                 self._hop, t, fo)
        if reuse:
            if self._frames.shape[0] < total:
                self._frames = np.empty((max(total, 2 * self._frames.shape[0]), self.n_features), np.float32)
            out = self._frames[:total]
        else:
            out = np.empty((total, self.n_features), np.float32)
        if self._data.shape[0] < need:
            self._data = np.empty(2 * need)
        states, n_left, skip, hop, a, use_fft, itab, ftab, n_scratch = self.kernel_consts
        _push_many_kernel(x, offs, slots, states, n_left, skip, t, fo, hop, a, use_fft, itab, ftab, self._data,
                          _scratch(n_scratch), out, bad, peak)
        if n and x.dtype.kind == "f" and peak.max() > FLOAT_PEAK_LIMIT:
            for i in np.flatnonzero(peak > FLOAT_PEAK_LIMIT):
                self._out_of_range(int(slots[i]), float(peak[i]))
        return out, fo, t, tmax

    def push_one(self, slot: int, x: np.ndarray) -> np.ndarray:
        """One stream's samples x (n,) float32/float64, C-contiguous -> its frames (t, n_features):
        ``push_rows`` of one stream without its per-call index arrays (a paced live stream pays
        every NumPy call on cold caches after each sleep).  AudioError for NaN/Inf, nothing computed."""
        t = self._one_setup(slot, x)
        out = np.empty((t, self.n_features), np.float32)
        one, (bad, peak) = self._one, self._bad_peak
        states, n_left, skip, hop, a, use_fft, itab, ftab, n_scratch = self.kernel_consts
        _push_many_kernel(x, one[1:3], one[:1], states, n_left, skip, one[5:], one[3:5], hop, a, use_fft, itab, ftab,
                          self._data, _scratch(n_scratch), out, bad, peak)
        self._one_done(slot, x, t)
        return out

    def _one_setup(self, slot: int, x: np.ndarray):
        """Before a one-stream kernel call (``push_one``, ``Bank.push_audio``): the index arrays
        ``_one`` = [slot, 0, n, 0, t, t] filled, the frame data grown; -> t, the frames the samples complete."""
        n = x.shape[0]
        skip, nl = int(self.skip[slot]), int(self.n_left[slot])
        total = nl + n - min(skip, n)
        t = 1 + (total - self._win) // self._hop if total >= self._win else 0
        one = self._one  # [slot, 0, n, 0, t, t]: slots (1,), offs (2,), fo (2,), t (1,)
        one[0], one[2], one[4], one[5] = slot, n, t, t
        if self._data.shape[0] < total:
            self._data = np.empty(2 * total)
        return t

    def _one_done(self, slot: int, x: np.ndarray, t: int) -> None:
        """After a one-stream kernel call: AudioError if it found NaN/Inf (it computed nothing), the
        frame count, the float-range warning."""
        bad, peak = self._bad_peak
        if bad[0]:
            raise nonfinite_error(x, "samples")
        self.n_frames[slot] += t
        if peak[0] > FLOAT_PEAK_LIMIT and x.dtype.kind == "f":
            self._out_of_range(slot, peak[0])

    def _out_of_range(self, slot: int, peak: float) -> None:
        if not self._warned[slot]:
            self._warned[slot] = True
            warn_out_of_range(peak)

    def push_many(self, samples: dict) -> dict:
        """{id: samples (n,) or (n, 1)} -> {id: frames (t, n_features) float32}, in one kernel call."""
        slots = np.fromiter(map(self.slot, samples), np.int64, len(samples))
        xs = []
        for sid, v in samples.items():
            if not (type(v) is np.ndarray and v.dtype == np.float32):  # float32 as it is, the rest as float64
                v = as_signal(v, f"samples of stream {sid!r}", allow_2d=True)
            if v.ndim == 2:
                if v.shape[1] != 1:
                    raise AudioError(f"stream {sid!r}: a feature bank takes mono samples, got {v.shape[1]} channels")
                v = v[:, 0]
            if v.ndim != 1:
                raise AudioError(f"stream {sid!r}: samples must have shape (n,) or (n, 1), got {v.shape}")
            xs.append(v)  # np.concatenate: float32 if all are, else float64 (exact either way)
        offs = np.zeros(len(xs) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, xs), np.int64, len(xs)), out=offs[1:])
        x = np.concatenate(xs) if xs else np.zeros(0, np.float32)
        out, fo = self.push_rows(slots, x, offs)
        ends = fo.tolist()
        return {sid: out[a:b] for sid, a, b in zip(samples, ends, ends[1:])}
