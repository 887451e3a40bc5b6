"""Transport: the streamrnn/1 wire protocol (``wire``), ZeroMQ endpoints (``endpoints``),
sources (``sources.open_source``) and sinks (``sinks.open_sink``)."""
