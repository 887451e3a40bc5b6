"""Hysteresis state machine: a hand-checked sequence and hypothesis properties."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streamrnn.errors import ConfigError
from streamrnn.runtime.events import EventDetector, EventParams, Hysteresis


def segments(events):
    """[(start, end, reason)] from an event list, checking strict start/end alternation."""
    out, open_start = [], None
    for e in events:
        if e["event"] == "start":
            assert open_start is None, "two starts in a row"
            open_start = e["frame"]
        else:
            assert open_start is not None, "end without start"
            assert e["start_frame"] == open_start
            out.append((open_start, e["frame"], e["reason"]))
            open_start = None
    return out, open_start


def test_hand_checked_sequence():
    # on=0.6 off=0.4 min_on=3 min_off=2 max_len=8, frames:
    p = [0.1, 0.7, 0.9, 0.2,                # 1..2 high but drops below off at 3: spurious, no event
         0.7, 0.5, 0.45, 0.8,               # 4: candidate; 4,5,6 >= off -> start at 4 (decided at 6)
         0.3, 0.9,                          # 8: one-frame dip (< min_off=2) is bridged
         0.3, 0.2, 0.1,                     # 10,11 below off -> end at 10 (decided at 11)
         0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9,  # 13..23: start 13, cut at 21
         0.1, 0.1, 0.9, 0.9, 0.9]           # 24..: start 26? min_off from 21 ok -> start 26 at 28
    h = Hysteresis(on=0.6, off=0.4, min_on=3, min_off=2, max_len=8)
    ev = h.push(p) + h.flush()
    got = [(e["event"], e["frame"], e.get("reason")) for e in ev]
    assert got == [("start", 4, None), ("end", 10, "off"),
                   ("start", 13, None), ("end", 21, "max_length"),
                   ("start", 26, None), ("end", 29, "end_of_stream")]


def test_min_off_blocks_immediate_restart_after_cut():
    # After a max-length cut at 4, high frames 4.. may not start a segment until 4 + min_off = 7.
    h = Hysteresis(on=0.5, off=0.5, min_on=1, min_off=3, max_len=4)
    ev = h.push([0.9] * 12)
    assert [(e["event"], e["frame"]) for e in ev] == [("start", 0), ("end", 4), ("start", 7), ("end", 11)]


def test_detector_times_labels_and_params_in_seconds():
    params = EventParams(on_threshold=0.5, off_threshold=0.3, min_on=0.05, min_off=0.05, max_segment=10)
    d = EventDetector(["speech", "music"], params, frame_rate=100.0)
    y = np.zeros((40, 2), np.float32)
    y[10:30, 0] = 0.9
    ev = d.push(y[:20]) + d.push(y[20:]) + d.flush()
    assert [(e["label"], e["event"], e["frame"]) for e in ev] == [("speech", "start", 10), ("speech", "end", 30)]
    assert ev[1]["time"] == pytest.approx(0.30) and ev[1]["duration"] == pytest.approx(0.20)


@pytest.mark.parametrize("kw", [dict(on_threshold=0.3, off_threshold=0.5), dict(min_on=-1),
                                dict(max_segment=0.05, min_on=0.1), dict(on_threshold=1.5)])
def test_bad_params_are_refused(kw):
    with pytest.raises(ConfigError):
        EventParams(**kw).validate()


probs = st.lists(st.floats(0, 1, allow_nan=False), min_size=0, max_size=300)


@settings(max_examples=300, deadline=None)
@given(probs, st.floats(0, 1), st.floats(0, 1), st.integers(1, 10), st.integers(1, 10),
       st.integers(0, 30), st.data())
def test_properties(p, a, b, min_on, min_off, extra, data):
    on, off = max(a, b), min(a, b)
    max_len = min_on + extra
    h = Hysteresis(on, off, min_on, min_off, max_len)
    # any chunking gives the same events
    cuts = sorted(data.draw(st.lists(st.integers(0, len(p)), max_size=5)))
    ev = []
    for lo, hi in zip([0] + cuts, cuts + [len(p)]):
        ev += h.push(p[lo:hi])
    ev += h.flush()
    whole = Hysteresis(on, off, min_on, min_off, max_len)
    assert ev == whole.push(p) + whole.flush()
    segs, still_open = segments(ev)
    assert still_open is None  # flush closes everything
    prev_end = None
    for s, e, reason in segs:
        assert min_on <= e - s <= max_len
        assert p[s] >= on                           # starts where the probability reached on
        assert all(x >= off for x in p[s:s + min_on])
        if reason == "off":
            assert all(x < off for x in p[e:e + min_off]) and e + min_off <= len(p)
        if prev_end is not None:
            assert s - prev_end >= min_off
        prev_end = e
        assert 0 <= s < e <= len(p)


class ReferenceHysteresis:
    """Plain-Python reference of the state machine (one column), written from the docstring rules."""

    def __init__(self, on, off, min_on, min_off, max_len):
        self.on, self.off, self.min_on, self.min_off, self.max_len = on, off, min_on, min_off, max_len
        self.state, self.frame, self.start, self.end, self.last_end, self.peak = "off", 0, 0, 0, -(1 << 62), 0.0

    def push(self, probs):
        out = []
        for p in probs:
            k = self.frame
            if self.state == "off" and p >= self.on and k >= self.last_end + self.min_off:
                self.start, self.peak, self.state = k, p, "pending_on"
            elif self.state == "pending_on":
                if p < self.off:
                    self.state = "off"
                else:
                    self.peak = max(self.peak, p)
            elif self.state == "on" and p < self.off:
                self.end, self.state = k, "pending_off"
            elif self.state == "pending_off" and p >= self.off:
                self.state = "on"
            if self.state == "pending_on" and k - self.start + 1 >= self.min_on:
                out.append({"event": "start", "frame": self.start, "probability": self.peak, "column": 0})
                self.state = "on"
            if self.state == "on" and k - self.start + 1 > self.max_len:
                out.append(self._end(self.start + self.max_len, "max_length"))
            elif self.state == "pending_off" and k - self.end + 1 >= self.min_off:
                out.append(self._end(self.end, "off"))
            self.frame = k + 1
        return out

    def _end(self, e, reason):
        self.last_end, self.state = e, "off"
        return {"event": "end", "frame": e, "start_frame": self.start, "length": e - self.start,
                "reason": reason, "column": 0}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1, allow_nan=False), min_size=3, max_size=3), max_size=200),
       st.floats(0, 1), st.floats(0, 1), st.integers(1, 6), st.integers(1, 6), st.integers(0, 20))
def test_kernel_equals_python_reference_for_every_column(rows, a, b, min_on, min_off, extra):
    on, off = max(a, b), min(a, b)
    y = np.array(rows, np.float64).reshape(-1, 3)
    h = Hysteresis(on, off, min_on, min_off, min_on + extra, n_labels=3)
    got = h.push(y)
    for j in range(3):
        ref = ReferenceHysteresis(on, off, min_on, min_off, min_on + extra).push(list(y[:, j]))
        mine = [dict(e, column=0) for e in got if e["column"] == j]
        assert mine == ref
