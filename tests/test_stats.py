"""Latency histogram: percentiles within one bin (6 %) of the exact ones, in constant memory."""

import math

import numpy as np

from streamrnn.stats import LatencyHistogram, Stats


def test_percentiles_are_within_one_bin_of_numpy():
    rng = np.random.default_rng(5)
    x = 10.0 ** rng.uniform(-5, 0, 20000)  # 10 us .. 1 s
    h = LatencyHistogram()
    for v in x:
        h.add(float(v))
    assert h.n == len(x) and h.max == x.max()
    for q in (1, 50, 90, 99, 100):
        exact = np.percentile(x, q, method="inverted_cdf")  # the sample at rank ceil(q n / 100)
        got = h.percentile(q)
        assert exact <= got * (1 + 1e-12), (q, exact, got)  # the upper edge of its bin...
        assert got <= exact * 10 ** (1 / 40) * (1 + 1e-12), (q, exact, got)  # ...at most one bin (6 %) above


def test_extremes_and_empty():
    h = LatencyHistogram()
    assert h.percentile(50) is None and h.summary_ms() == {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    h.add(0.0)  # at or below 1 us: the underflow bin
    h.add(1e6)  # far above the top decade: the overflow bin, capped by the max seen
    assert h.counts[0] == 1 and h.counts[-1] == 1
    assert h.percentile(50) == 1e-6 and h.percentile(100) == 1e6


def test_stats_interval_rolls_and_total_keeps():
    s = Stats()
    for v in (0.001, 0.002, 0.004):
        s.latency(v)
    first = s.snapshot(roll=True)
    s.latency(0.5)
    second = s.snapshot(roll=True)
    assert first["latency"]["n"] == 3 and first["latency_interval"]["n"] == 3
    assert second["latency"]["n"] == 4 and second["latency_interval"]["n"] == 1
    assert math.isclose(second["latency_interval"]["max_ms"], 500.0)
    assert second["latency"]["p50_ms"] < 5.0 < second["latency"]["max_ms"]


def test_latency_many_of_few_and_many_values_counts_what_latency_of_each_counts():
    """The inlined path (< 64 values) and the NumPy path (>= 64): the same bins, counts, n and max as
    ``latency`` called once per value, in both histograms."""
    rng = np.random.default_rng(1)
    for k in (1, 5, 63, 64, 300):
        v = np.concatenate([[0.0, -1e-3, 1e-6], 10 ** rng.uniform(-6, 3, k)])[:k]
        one, many = Stats(), Stats()
        for x in v:
            one.latency(float(x))
        many.latency_many(list(v))
        for h1, h2 in ((one.lat_total, many.lat_total), (one.lat_interval, many.lat_interval)):
            assert (h1.counts, h1.n, h1.max) == (h2.counts, h2.n, h2.max), k
