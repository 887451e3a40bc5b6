"""Listen to any streamrnn/1 traffic: decode every message of a ZeroMQ endpoint (``streamrnn listen``).

The loop of ``streamrnn listen`` as a function: the socket is created, polled and closed in the
calling thread; each message's records (or a ``bad`` record for a refused one, with its reason)
go to ``on_message`` as JSON-able dicts in the layout of ``docs/formats.md`` (what ``stream``'s
text sinks write, plus the wire fields); counts by kind and by rejection reason come back as ``Stats``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.endpoints import close_socket, open_socket, parse_zmq_uri
from streamrnn.transport.records import Records, bad_record

log = logging.getLogger(__name__)

CURVE_SILENCE_S = 5.0  # s without a message after which a CurveZMQ listener says the keys may not match


def listen_endpoint(url: str, topic: str = ""):
    """The endpoint of a listen URL: ``zmq+sub://``/``zmq+pull://`` (and ``+ipc``) URIs, or a bare
    ``tcp://HOST:PORT``/``ipc://PATH`` (subscribe, connect); ``topic`` is the subscription prefix."""
    if url.startswith(("tcp://", "ipc://")):
        scheme, rest = url.split("://", 1)
        url = f"zmq+sub://{rest}" if scheme == "tcp" else f"zmq+sub+ipc://{rest}"
    ep = parse_zmq_uri(url, allowed=("sub", "pull"))
    if ep.pattern == "sub":
        ep = dataclasses.replace(ep, topic=topic if ep.topic is None else ep.topic)
    return ep


def listen(url: str, on_message, *, topic: str = "", count: int = 0, duration: float = 0.0,
           with_data: bool = True, max_message_bytes: int | None = None, curve=None,
           stop: threading.Event | None = None, on_ready=None) -> Stats:
    """Decode the traffic at ``url`` until ``count`` messages (0: no limit), ``duration`` seconds
    (0: no limit) or ``stop`` is set; returns the counts (``messages`` by kind, ``bad`` by reason).

    ``on_message(record)`` gets each record of each message (``records.Records`` with the wire
    fields: one per prediction or feature row, one per other message; ``with_data=False`` leaves
    the values out), or ``{"v": 1, "type": "bad", "reason": reason, "error": text}`` for a
    malformed one.  ``on_ready(endpoint)`` is called once
    the socket is open.  ``curve``: a ``CurveConfig`` or None; a CurveZMQ listener that hears nothing
    for ``CURVE_SILENCE_S`` seconds logs (once) that the keys may not match, which CurveZMQ never
    reports to the rejected side.  Raises ConfigError/WireError for a
    bad URL, ZMQError if the address cannot be bound or connected.
    """
    import zmq

    ep = listen_endpoint(url, topic)
    mmb = max_message_bytes or wire.DEFAULT_MAX_MESSAGE_BYTES
    stop = stop or threading.Event()
    # reconnect every 100 ms (no back-off): a stream started after the listener is heard from its start
    sock = open_socket(zmq.Context.instance(), ep, hwm=10000, max_message_bytes=2 * mmb + 4096, curve=curve,
                       reconnect_max_ms=100)
    stats = Stats()
    rec = Records(wire_fields=True, with_data=with_data)
    try:
        if on_ready is not None:
            on_ready(ep)
        t_end = time.monotonic() + duration if duration else None
        t_silent = time.monotonic() + CURVE_SILENCE_S if curve is not None else None
        n = 0
        while not stop.is_set() and (not count or n < count) and (t_end is None or time.monotonic() < t_end):
            if not sock.poll(50):  # short: a signal or stop acts within 50 ms
                if t_silent is not None and time.monotonic() >= t_silent:
                    t_silent = None
                    log.warning("%s: nothing received for %g s over CurveZMQ: if the sender is running, the keys "
                                "may not match (--curve-server-key must be the sender's public key, and a sender "
                                "with --curve-allow must hold this listener's public key)", ep.address,
                                CURVE_SILENCE_S)
                continue
            t_silent = None
            frames = sock.recv_multipart()
            n += 1
            try:
                m = wire.decode(frames, mmb)
            except wire.WireError as e:
                stats.count("bad", e.reason)
                on_message(bad_record(e.reason, str(e)))
                continue
            stats.count("messages", m.kind_name)
            for r in rec.make(m):
                on_message(r)
    finally:
        close_socket(sock, 0)
    return stats
