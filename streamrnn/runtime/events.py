"""Hysteresis: turn per-frame probabilities into start/end events.

One ``Hysteresis`` per label per stream. Frames are counted from the start of
the stream (its epoch); durations are in frames here, the pipeline converts
seconds with the front end's frame rate.

A segment ``[start, end)`` (frames) begins where the probability first reaches
``on`` and it stays >= ``off`` for at least ``min_on`` frames; it ends at the
first frame of a run of at least ``min_off`` frames below ``off`` (shorter
dips are bridged), or is cut at ``max_len`` frames. After a segment ends, a new
one starts no earlier than ``min_off`` frames later. So every segment is
``min_on <= length <= max_len`` frames and the events alternate start, end.

>>> h = Hysteresis(on=0.5, off=0.3, min_on=2, min_off=2, max_len=100)
>>> [(e["event"], e["frame"]) for e in h.push([0.1, 0.9, 0.8, 0.4, 0.1, 0.1, 0.1])]
[('start', 1), ('end', 4)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from streamrnn.compiling import announce_compiles
from streamrnn.config import EventParams  # the [events] settings, defined once in config
from streamrnn.errors import ConfigError, SnapshotError
from streamrnn.snapshot import SNAPSHOT_VERSION, check_snapshot

announce_compiles()  # the first compile of a kernel says so on stderr (cold cache)

OFF, PENDING_ON, ON, PENDING_OFF = 0, 1, 2, 3


_EV_START, _EV_END = 0, 1
_REASONS = ("off", "max_length", "end_of_stream")
# per-label state columns
_ST, _FRAME, _START, _END, _LAST_END = range(5)


@njit(cache=True, error_model="numpy")
def _hysteresis_kernel(y, on, off, min_on, min_off, max_len, st, peak, ev, ev_peak):
    """Advance the state machines of every column of y (T, n) by T frames.

    st (n, 5) int64 [state, next frame, start, candidate end, end of last segment] and
    peak (n,) float64 are updated in place.  Events go to ev (>= T*n, 4) int64 rows
    [column, type (0 start, 1 end), frame, reason (0 off, 1 max_length)] and ev_peak
    (start probability peak); returns the number written, frame by frame.
    """
    T, n = y.shape
    n_ev = 0
    for t in range(T):
        for j in range(n):
            p = y[t, j]
            k = st[j, _FRAME]
            s = st[j, _ST]
            if s == OFF:
                if p >= on and k >= st[j, _LAST_END] + min_off:
                    st[j, _START] = k
                    peak[j] = p
                    s = PENDING_ON
            elif s == PENDING_ON:
                if p < off:
                    s = OFF
                else:
                    peak[j] = max(peak[j], p)
            elif s == ON:
                if p < off:
                    st[j, _END] = k
                    s = PENDING_OFF
            else:  # PENDING_OFF
                if p >= off:
                    s = ON
            # decisions that complete on this frame
            if s == PENDING_ON and k - st[j, _START] + 1 >= min_on:
                ev[n_ev, 0], ev[n_ev, 1], ev[n_ev, 2], ev[n_ev, 3], ev[n_ev, 4] = j, _EV_START, st[j, _START], st[j, _START], 0
                ev_peak[n_ev] = peak[j]
                n_ev += 1
                s = ON
            if s == ON and k - st[j, _START] + 1 > max_len:
                # frames start .. start+max_len-1 make a full segment; this frame is not in it
                e = st[j, _START] + max_len
                ev[n_ev, 0], ev[n_ev, 1], ev[n_ev, 2], ev[n_ev, 3], ev[n_ev, 4] = j, _EV_END, e, st[j, _START], 1
                n_ev += 1
                st[j, _LAST_END] = e
                s = OFF  # a new segment may start min_off frames later, from p >= on again
            elif s == PENDING_OFF and k - st[j, _END] + 1 >= min_off:
                ev[n_ev, 0], ev[n_ev, 1], ev[n_ev, 2], ev[n_ev, 3], ev[n_ev, 4] = j, _EV_END, st[j, _END], st[j, _START], 0
                n_ev += 1
                st[j, _LAST_END] = st[j, _END]
                s = OFF
            st[j, _ST] = s
            st[j, _FRAME] = k + 1
    return n_ev


class Hysteresis:
    """State machines of ``n_labels`` output columns; ``push`` probabilities, get event dicts.

    Events: ``{"event": "start", "frame": s, "probability": p}`` and
    ``{"event": "end", "frame": e, "start_frame": s, "length": e - s, "reason":
    "off" | "max_length" | "end_of_stream"}``, plus ``"column"`` (the label index).
    Frames are stream frame indices.  The per-frame work is a Numba kernel; a pure
    Python reference of the same machine is in tests/test_events.py.
    """

    def __init__(self, on: float, off: float, min_on: int, min_off: int, max_len: int, n_labels: int = 1):
        if not 0 <= off <= on <= 1:
            raise ConfigError(f"need 0 <= off ({off}) <= on ({on}) <= 1")
        if min_on < 1 or min_off < 1 or max_len < min_on:
            raise ConfigError(f"need min_on >= 1, min_off >= 1, max_len >= min_on frames "
                              f"(got {min_on}, {min_off}, {max_len})")
        self.on, self.off, self.min_on, self.min_off, self.max_len = on, off, min_on, min_off, max_len
        self.n_labels = int(n_labels)
        self._params = (float(on), float(off), min_on, min_off, max_len)  # the kernel's, converted once
        self._st = np.zeros((self.n_labels, 5), np.int64)
        self._peak = np.zeros(self.n_labels, np.float64)
        self._ev = np.zeros((64, 5), np.int64)  # grows with the block length, never per frame
        self._ev_peak = np.zeros(64, np.float64)
        self.reset()

    def reset(self) -> None:
        self._st[:] = 0  # OFF, frame 0
        self._st[:, _LAST_END] = -(1 << 62)  # no previous segment (for min_off)
        self._peak[:] = 0.0

    @property
    def active(self) -> bool:
        """True while a segment of any column has started and not ended."""
        return bool(np.isin(self._st[:, _ST], (ON, PENDING_OFF)).any())

    def push(self, probs) -> list[dict]:
        """Advance by one probability (per column) per frame; returns the events decided on these frames."""
        y = probs
        if not (type(y) is np.ndarray and y.ndim == 2 and y.dtype.char in "fd" and y.flags.c_contiguous):
            # a model's float32 rows go in as they are (the kernel compares them in float64: the same
            # decisions and peaks as converting first, without a copy per block)
            y = np.asarray(probs, dtype=np.float64)
            y = np.ascontiguousarray(y.reshape(-1, 1) if y.ndim == 1 else y)
        if y.shape[1] != self.n_labels:
            raise ValueError(f"expected {self.n_labels} probability column(s), got shape {y.shape}")
        cap = y.shape[0] * self.n_labels  # at most one event per column per frame
        if cap > len(self._ev):
            self._ev = np.zeros((cap, 5), np.int64)
            self._ev_peak = np.zeros(cap, np.float64)
        n = _hysteresis_kernel(y, *self._params, self._st, self._peak, self._ev, self._ev_peak)
        out = []
        for i in range(n):
            j, typ, frame, start, reason = (int(v) for v in self._ev[i])
            if typ == _EV_START:
                out.append({"event": "start", "frame": frame, "probability": float(self._ev_peak[i]), "column": j})
            else:
                out.append(self._end(j, start, frame, _REASONS[reason]))
        return out

    @staticmethod
    def _end(j: int, s: int, e: int, reason: str) -> dict:
        return {"event": "end", "frame": e, "start_frame": s, "length": e - s, "reason": reason, "column": j}

    def _settings(self) -> dict:
        return {"on": float(self.on), "off": float(self.off), "min_on": int(self.min_on),
                "min_off": int(self.min_off), "max_len": int(self.max_len), "n_labels": self.n_labels}

    def snapshot(self) -> dict:
        """Versioned state of every column's machine: ``st`` (n_labels, 5) int64 [state, next frame,
        start, candidate end, end of last segment] and ``peak`` (n_labels,) float64."""
        return {"version": SNAPSHOT_VERSION, "kind": "hysteresis", "settings": self._settings(),
                "st": self._st.copy(), "peak": self._peak.copy()}

    def restore(self, snap: dict) -> None:
        """Put back a snapshot of a ``Hysteresis`` with the same settings (SnapshotError otherwise)."""
        check_snapshot(snap, "hysteresis", "Hysteresis", self._settings())
        try:
            st = np.asarray(snap["st"], np.int64).reshape(self._st.shape)
            peak = np.asarray(snap["peak"], np.float64).reshape(self._peak.shape)
        except (KeyError, TypeError, ValueError) as e:
            raise SnapshotError(f"malformed Hysteresis snapshot: {e!r}") from None
        self._st[:], self._peak[:] = st, peak

    def flush(self) -> list[dict]:
        """End open segments at the current frame (end of stream); a pending start is dropped."""
        out = []
        for j in range(self.n_labels):
            s = self._st[j, _ST]
            if s == ON:
                out.append(self._end(j, int(self._st[j, _START]), int(self._st[j, _FRAME]), "end_of_stream"))
            elif s == PENDING_OFF:
                out.append(self._end(j, int(self._st[j, _START]), int(self._st[j, _END]), "end_of_stream"))
            if s in (ON, PENDING_OFF):
                self._st[j, _LAST_END] = out[-1]["frame"]
            self._st[j, _ST] = OFF
        return out


class EventDetector:
    """Hysteresis over every output column (label) of one stream, one kernel call per block: the
    start/end events of ``streamrnn stream``, with the same settings (``EventParams``, seconds).

    ``push(y)`` takes probabilities (T, n_labels) and returns the events they complete, each a dict
    with ``event`` ("start"/"end"), ``label``, ``frame`` and ``time`` (s from the stream's start);
    an end also has ``start_time``, ``duration`` and ``reason``.  ``flush()`` ends an open segment
    at the end of the signal.  Raises ConfigError for bad settings.

    >>> import numpy as np
    >>> det = EventDetector(["speech"], EventParams(min_on=0.02, min_off=0.02), frame_rate=100.0)
    >>> y = np.r_[np.zeros(10), np.ones(30), np.zeros(10)].astype(np.float32)[:, None]
    >>> [(e["event"], e["time"]) for e in det.push(y) + det.flush()]
    [('start', 0.1), ('end', 0.4)]
    """

    def __init__(self, labels, params: EventParams | None = None, frame_rate: float = 100.0):
        self.labels = list(labels)
        self.frame_rate = float(frame_rate)
        self.params = (params or EventParams()).validate()
        self.machine = Hysteresis(**self.params.in_frames(frame_rate), n_labels=len(self.labels))

    @classmethod
    def for_stream(cls, stream, params: EventParams | None = None) -> "EventDetector":
        """A detector for the outputs of ``stream`` (an ``AudioStream`` or ``AudioBank``): its model's
        labels (``y0``, ``y1``... if it has none) at its frame rate."""
        m = stream.model
        labels = m.labels or [f"y{j}" for j in range(m.output_size)]
        return cls(labels, params, stream.frame_rate)

    def push(self, y) -> list[dict]:
        """y (T, n_labels) probabilities -> events sorted by frame, with label and time (s)."""
        events = self.machine.push(y)
        if not events:  # most blocks of a live stream: nothing more to do
            return events
        events = [self._finish(ev) for ev in events]
        events.sort(key=lambda e: (e["frame"], e["event"] == "start"))
        return events

    def flush(self) -> list[dict]:
        return [self._finish(ev) for ev in self.machine.flush()]

    def reset(self) -> None:
        self.machine.reset()

    def snapshot(self) -> dict:
        """Versioned state (the hysteresis machines; labels and frame rate are checked on restore)."""
        return {"version": SNAPSHOT_VERSION, "kind": "event_detector",
                "settings": {"labels": self.labels, "frame_rate": self.frame_rate},
                "machine": self.machine.snapshot()}

    def restore(self, snap: dict) -> None:
        """Put back a snapshot of a detector with the same labels, frame rate and settings.

        >>> det = EventDetector(["speech"], EventParams(min_on=0.02, min_off=0.02), frame_rate=100.0)
        >>> _ = det.push(np.ones((5, 1)))
        >>> other = EventDetector(["speech"], EventParams(min_on=0.02, min_off=0.02), frame_rate=100.0)
        >>> other.restore(det.snapshot())
        >>> [(e["event"], e["frame"]) for e in other.flush()]
        [('end', 5)]
        """
        check_snapshot(snap, "event_detector", "EventDetector",
                       {"labels": self.labels, "frame_rate": self.frame_rate})
        if "machine" not in snap:
            raise SnapshotError("malformed EventDetector snapshot: missing 'machine'")
        self.machine.restore(snap["machine"])

    def _finish(self, ev: dict) -> dict:
        ev["label"] = self.labels[ev.pop("column")]
        ev["time"] = ev["frame"] / self.frame_rate
        if ev["event"] == "end":
            ev["start_time"] = ev["start_frame"] / self.frame_rate
            ev["duration"] = ev["length"] / self.frame_rate
        return ev
