"""Counters by named reason and latency percentiles, in constant memory.

The pipeline publishes ``Stats.snapshot()`` every second (kind 7, ``out/_stats/stats``)
and prints ``Stats.summary()`` to stderr at exit. The meaning of every counter
is in ``docs/protocol.md`` ("Stats").

>>> s = Stats()
>>> s.count("bad", "magic"); s.count("bad", "magic"); s.add("frames_in", 10)
>>> for ms in (1, 2, 3, 100):
...     s.latency(ms / 1000)
>>> d = s.snapshot()
>>> d["counters"]["bad"], d["counters"]["frames_in"], d["latency"]["max_ms"]
({'magic': 2}, 10, 100.0)
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, defaultdict

import numpy as np

# Log-spaced latency bins: 1 us .. 1000 s, 40 bins per decade (bin width ~6 %),
# so p50/p99 are exact to ~6 % in constant memory however long the process runs.
_LAT_LO, _LAT_DECADES, _LAT_PER_DECADE = 1e-6, 9, 40
_N_BINS = _LAT_DECADES * _LAT_PER_DECADE + 2  # + underflow and overflow bins


class LatencyHistogram:
    """Latency samples (seconds) in log bins; percentiles are bin upper edges."""

    def __init__(self):
        self.counts = [0] * _N_BINS  # a list: += on one item is 10x cheaper than on a NumPy array
        self.n = 0
        self.max = 0.0

    @staticmethod
    def bin(seconds: float) -> int:
        if seconds <= _LAT_LO:
            return 0
        return min(1 + int(math.log10(seconds / _LAT_LO) * _LAT_PER_DECADE), _N_BINS - 1)

    def add(self, seconds: float, b: int | None = None) -> None:
        """Count one sample (``b``: its bin, if already known)."""
        self.counts[self.bin(seconds) if b is None else b] += 1
        self.n += 1
        if seconds > self.max:
            self.max = seconds

    @staticmethod
    def bins(seconds: np.ndarray) -> np.ndarray:
        """``bin`` of every value of ``seconds`` (1-D float64, s) -> (n,) int64, in one NumPy pass: the same
        bins (a value that NumPy's log10 puts within rounding of a bin edge is binned by ``bin`` itself).

        >>> LatencyHistogram.bins(np.array([0.0, 1e-3, 0.1])).tolist() == [LatencyHistogram.bin(v) for v in (0.0, 1e-3, 0.1)]
        True
        """
        s = np.asarray(seconds, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):  # values <= 0: binned 0 below
            v = np.log10(s / _LAT_LO) * _LAT_PER_DECADE
            edge = np.flatnonzero(np.abs(v - np.round(v)) < 1e-9)
        b = np.minimum(1 + np.floor(np.nan_to_num(v, nan=0.0, posinf=_N_BINS, neginf=0.0)), _N_BINS - 1).astype(np.int64)
        b[s <= _LAT_LO] = 0
        for i in edge.tolist():
            b[i] = LatencyHistogram.bin(float(s[i]))
        return b

    def add_many(self, seconds: np.ndarray, bins: np.ndarray | None = None) -> None:
        """Count every value of ``seconds`` (1-D float64), as ``add`` of each would (``bins``: their
        bins, if already known)."""
        if len(seconds) == 0:
            return
        counts = self.counts
        per_bin = np.bincount(self.bins(seconds) if bins is None else bins, minlength=_N_BINS)
        for b in np.flatnonzero(per_bin).tolist():
            counts[b] += int(per_bin[b])
        self.n += len(seconds)
        m = float(np.max(seconds))
        if m > self.max:
            self.max = m

    def percentile(self, q: float) -> float | None:
        """Upper edge (s) of the bin holding the q-th percentile (0..100), or None if empty."""
        if self.n == 0:
            return None
        k = int(np.searchsorted(np.cumsum(self.counts), math.ceil(q / 100 * self.n)))
        if k == 0:
            return _LAT_LO
        if k == _N_BINS - 1:  # the overflow bin has no upper edge: the largest sample is the truth
            return self.max
        return min(self.max, _LAT_LO * 10 ** (k / _LAT_PER_DECADE))

    def summary_ms(self) -> dict:
        def ms(v):
            return None if v is None else round(v * 1000, 3)

        return {"n": self.n, "p50_ms": ms(self.percentile(50)), "p99_ms": ms(self.percentile(99)),
                "max_ms": ms(self.max if self.n else None)}


class Stats:
    """Named counters (``count(name, reason)`` / ``add(name, n)``) and processing latency.

    Counters never reset during a run; each snapshot also carries the latency
    of the last interval (since the previous snapshot) and of the whole run.
    """

    def __init__(self):
        self.started = time.time()
        self.totals: dict[str, int] = defaultdict(int)
        self.reasons: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.lat_total = LatencyHistogram()
        self.lat_interval = LatencyHistogram()

    def add(self, name: str, n: int = 1) -> None:
        self.totals[name] += int(n)

    def count(self, name: str, reason: str, n: int = 1) -> None:
        self.reasons[name][reason] += int(n)

    def merge_reasons(self, name: str, counts: dict[str, int]) -> None:
        """Add a dict of per-reason counts (e.g. a source's) under ``name``."""
        for r, n in counts.items():
            if n:
                self.reasons[name][r] += int(n)

    def latency(self, seconds: float) -> None:
        # runs per published message (after each sleep of a live stream, on cold caches): the bin
        # once for both histograms, and their ``add`` written out here (two Python calls fewer)
        b = LatencyHistogram.bin(seconds)
        for h in (self.lat_total, self.lat_interval):
            h.counts[b] += 1
            h.n += 1
            if seconds > h.max:
                h.max = seconds

    def latency_many(self, seconds) -> None:
        """``latency`` of every value of ``seconds`` (a sequence of floats, s), binned in one NumPy pass (a
        few: one by one, which costs less than NumPy's fixed cost).

        >>> s = Stats()
        >>> s.latency_many([i / 1000 for i in range(1, 101)])  # 1..100 ms
        >>> s.snapshot()["latency"]["n"], s.snapshot()["latency"]["max_ms"]
        (100, 100.0)
        """
        k = len(seconds)
        if k < 64:  # add() of each, inlined: one bin per value, the counts and maxima once per call
            tot, itv = self.lat_total, self.lat_interval
            ct, ci, bin_, m = tot.counts, itv.counts, LatencyHistogram.bin, 0.0
            for v in seconds:
                v = float(v)
                b = bin_(v)
                ct[b] += 1
                ci[b] += 1
                if v > m:
                    m = v
            tot.n += k
            itv.n += k
            if m > tot.max:
                tot.max = m
            if m > itv.max:
                itv.max = m
            return
        s = np.asarray(seconds, dtype=np.float64)
        b = LatencyHistogram.bins(s)  # once for both histograms
        self.lat_total.add_many(s, b)
        self.lat_interval.add_many(s, b)

    def get(self, name: str, reason: str | None = None) -> int:
        if reason is None:
            return self.totals.get(name, 0) if name in self.totals else sum(self.reasons.get(name, {}).values())
        return self.reasons.get(name, {}).get(reason, 0)

    def snapshot(self, extra: dict | None = None, roll: bool = True) -> dict:
        """A JSON-able dict of all counters and latencies; ``roll`` starts a new interval."""
        counters: dict = dict(sorted(self.totals.items()))
        for name, rs in sorted(self.reasons.items()):
            counters[name] = dict(sorted(rs.items()))
        d = {"uptime_s": round(time.time() - self.started, 3), "counters": counters,
             "latency": self.lat_total.summary_ms(), "latency_interval": self.lat_interval.summary_ms()}
        if extra:
            d.update(extra)
        if roll:
            self.lat_interval = LatencyHistogram()
        return d

    def summary(self, latency: bool = True, latency_note: str | None = None) -> str:
        """Human-readable multi-line summary (printed on stderr at exit); ``latency=False`` leaves out
        the processing-latency line (``listen`` publishes nothing, so it has none); ``latency_note``
        says what the latency is measured from when that is not the capture time."""
        d = self.snapshot(roll=False)
        lines = [f"streamrnn stats after {d['uptime_s']:.1f} s:"]
        for k, v in d["counters"].items():
            if isinstance(v, dict):
                inner = ", ".join(f"{r}={n}" for r, n in v.items()) or "none"
                lines.append(f"  {k:<14} {sum(v.values())} ({inner})")
            else:
                lines.append(f"  {k:<14} {v}")
        lat = d["latency"]
        if latency and lat["n"]:
            lines.append(f"  latency        p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, "
                         f"max {lat['max_ms']} ms over {lat['n']} messages"
                         + (f"\n                 ({latency_note})" if latency_note else ""))
        elif latency:
            lines.append("  latency        no predictions published")
        return "\n".join(lines)


class RecentIds:
    """The ``maxlen`` most recently seen ids (least recently seen forgotten first): a per-id table
    whose size no peer decides (rejected stream ids, streams already named in the log).

    >>> r = RecentIds(2)
    >>> r.add("a"), r.add("a"), r.add("b"), r.add("c"), "a" in r, len(r)
    (True, False, True, True, False, 2)
    """

    def __init__(self, maxlen: int = 1024):
        self.maxlen = int(maxlen)
        self._d: OrderedDict = OrderedDict()

    def add(self, key) -> bool:
        """Remember ``key``; True if it was not remembered (new, or forgotten since)."""
        if key in self._d:
            self._d.move_to_end(key)
            return False
        self._d[key] = None
        if len(self._d) > self.maxlen:
            self._d.popitem(last=False)
        return True

    def discard(self, key) -> None:
        self._d.pop(key, None)

    def __contains__(self, key) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)
