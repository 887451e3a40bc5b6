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

from streamrnn.errors import ConfigError

OFF, PENDING_ON, ON, PENDING_OFF = 0, 1, 2, 3


@dataclass(frozen=True)
class EventParams:
    """Event options in seconds (as on the command line and in stream.toml)."""

    on_threshold: float = 0.5    # probability that starts a segment
    off_threshold: float = 0.35  # probability below which a segment may end (<= on_threshold)
    min_on: float = 0.1          # s: shortest segment reported
    min_off: float = 0.2         # s: shortest gap; shorter dips are bridged
    max_segment: float = 30.0    # s: longer segments are cut (a new one may follow)

    def validate(self) -> "EventParams":
        if not 0.0 <= self.off_threshold <= self.on_threshold <= 1.0:
            raise ConfigError(f"need 0 <= off_threshold ({self.off_threshold}) <= on_threshold "
                              f"({self.on_threshold}) <= 1")
        for k in ("min_on", "min_off", "max_segment"):
            if not getattr(self, k) >= 0:
                raise ConfigError(f"{k} must be >= 0 seconds, got {getattr(self, k)}")
        if self.max_segment < self.min_on:
            raise ConfigError(f"max_segment ({self.max_segment} s) must be >= min_on ({self.min_on} s)")
        return self

    def in_frames(self, frame_rate: float) -> dict:
        """Durations rounded to whole frames (min_on >= 1, max_len >= min_on)."""
        min_on = max(1, round(self.min_on * frame_rate))
        return dict(on=self.on_threshold, off=self.off_threshold, min_on=min_on,
                    min_off=max(1, round(self.min_off * frame_rate)),
                    max_len=max(min_on, round(self.max_segment * frame_rate)))


class Hysteresis:
    """State machine of one label; ``push`` probabilities, get event dicts.

    Events: ``{"event": "start", "frame": s, "probability": p}`` and
    ``{"event": "end", "frame": e, "start_frame": s, "length": e - s, "reason":
    "off" | "max_length" | "end_of_stream"}``. Frames are stream frame indices.
    """

    def __init__(self, on: float, off: float, min_on: int, min_off: int, max_len: int):
        if not 0 <= off <= on <= 1:
            raise ConfigError(f"need 0 <= off ({off}) <= on ({on}) <= 1")
        if min_on < 1 or min_off < 1 or max_len < min_on:
            raise ConfigError(f"need min_on >= 1, min_off >= 1, max_len >= min_on frames "
                              f"(got {min_on}, {min_off}, {max_len})")
        self.on, self.off, self.min_on, self.min_off, self.max_len = on, off, min_on, min_off, max_len
        self.reset()

    def reset(self) -> None:
        self.state = OFF
        self.frame = 0               # index of the next frame pushed
        self.start = 0               # candidate or actual segment start
        self.end = 0                 # candidate end (first frame below off)
        self.last_end = -(1 << 62)   # end of the previous segment (for min_off)
        self.peak = 0.0

    @property
    def active(self) -> bool:
        """True while a segment has started and not ended."""
        return self.state in (ON, PENDING_OFF)

    def push(self, probs) -> list[dict]:
        """Advance by one probability per frame; returns the events decided on these frames."""
        out = []
        on, off = self.on, self.off
        for p in probs:
            p = float(p)
            k = self.frame
            st = self.state
            if st == OFF:
                if p >= on and k >= self.last_end + self.min_off:
                    self.start, self.peak, st = k, p, PENDING_ON
            elif st == PENDING_ON:
                if p < off:
                    st = OFF
                else:
                    self.peak = max(self.peak, p)
            elif st == ON:
                if p < off:
                    self.end, st = k, PENDING_OFF
            else:  # PENDING_OFF
                if p >= off:
                    st = ON
            # Decisions that complete on this frame.
            if st == PENDING_ON and k - self.start + 1 >= self.min_on:
                out.append({"event": "start", "frame": self.start, "probability": self.peak})
                st = ON
            if st == ON and k - self.start + 1 > self.max_len:
                # frames start .. start+max_len-1 make a full segment; this frame is not in it
                e = self.start + self.max_len
                out.append(self._end(e, "max_length"))
                st = OFF  # a new segment may start min_off frames later, from p >= on again
            elif st == PENDING_OFF and k - self.end + 1 >= self.min_off:
                out.append(self._end(self.end, "off"))
                st = OFF
            self.state = st
            self.frame = k + 1
        return out

    def _end(self, e: int, reason: str) -> dict:
        ev = {"event": "end", "frame": e, "start_frame": self.start, "length": e - self.start,
              "reason": reason}
        self.last_end = e
        return ev

    def flush(self) -> list[dict]:
        """End an open segment at the current frame (end of stream); a pending start is dropped."""
        out = []
        if self.state == ON:
            out.append(self._end(self.frame, "end_of_stream"))
        elif self.state == PENDING_OFF:
            out.append(self._end(self.end, "end_of_stream"))
        self.state = OFF
        return out


class EventDetector:
    """Hysteresis over every output column (label) of one stream."""

    def __init__(self, labels: list[str], params: EventParams, frame_rate: float):
        self.labels = list(labels)
        self.frame_rate = float(frame_rate)
        kw = params.validate().in_frames(frame_rate)
        self.machines = [Hysteresis(**kw) for _ in self.labels]

    def push(self, y) -> list[dict]:
        """y (T, n_labels) probabilities -> events sorted by frame, with label and time (s)."""
        events = []
        for j, (lab, m) in enumerate(zip(self.labels, self.machines)):
            for ev in m.push(y[:, j]):
                events.append(self._finish(ev, lab))
        events.sort(key=lambda e: (e["frame"], e["event"] == "start"))
        return events

    def flush(self) -> list[dict]:
        return [self._finish(ev, lab) for lab, m in zip(self.labels, self.machines) for ev in m.flush()]

    def reset(self) -> None:
        for m in self.machines:
            m.reset()

    def _finish(self, ev: dict, label: str) -> dict:
        ev["label"] = label
        ev["time"] = ev["frame"] / self.frame_rate
        if ev["event"] == "end":
            ev["start_time"] = ev["start_frame"] / self.frame_rate
            ev["duration"] = ev["length"] / self.frame_rate
        return ev
