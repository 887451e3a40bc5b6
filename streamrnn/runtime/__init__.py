"""Runtime: the real-time loop (``pipeline.Pipeline``, ``pipeline.StreamConfig``), hysteresis
events (``events``) and counters/latency (``stats``)."""
