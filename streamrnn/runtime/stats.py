"""Moved to ``streamrnn.stats`` (below the transport layer, which counts with it too); this name
stays for code written before issue 14."""

from streamrnn.stats import LatencyHistogram, Stats  # noqa: F401
