"""ZeroMQ endpoint URIs and socket set-up shared by sources, sinks and ``listen``.

URIs: ``zmq+PATTERN://HOST:PORT`` (TCP) or ``zmq+PATTERN+ipc://PATH`` (IPC, e.g.
``zmq+pull+ipc:///tmp/in.sock``) with PATTERN one of sub, pull, pub, push, and an
optional ``?bind`` / ``?connect`` (override the usual direction) and, for sub,
``?topic=PREFIX``. Publishers and pullers bind, subscribers and pushers connect.

>>> e = parse_zmq_uri("zmq+sub://127.0.0.1:5555?topic=in/mic0/")
>>> e.pattern, e.address, e.bind, e.topic
('sub', 'tcp://127.0.0.1:5555', False, 'in/mic0/')
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from urllib.parse import parse_qs

from streamrnn.errors import ConfigError

log = logging.getLogger(__name__)

PATTERNS = ("sub", "pull", "pub", "push")
BINDS_BY_DEFAULT = {"sub": False, "pull": True, "pub": True, "push": False}
ALL_INTERFACES = ("*", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True)
class Endpoint:
    pattern: str        # sub | pull | pub | push
    address: str        # tcp://HOST:PORT or ipc://PATH
    bind: bool
    topic: str | None   # subscription prefix (sub only)
    uri: str


def is_zmq_uri(uri: str) -> bool:
    return uri.startswith("zmq+")


def parse_zmq_uri(uri: str, allowed=PATTERNS) -> Endpoint:
    """Parse a ``zmq+...`` URI; raise ConfigError naming the problem."""
    base, _, query = uri.partition("?")
    scheme, sep, rest = base.partition("://")
    parts = scheme.split("+")
    if not sep or parts[0] != "zmq" or len(parts) not in (2, 3) or parts[1] not in PATTERNS:
        raise ConfigError(f"unknown ZeroMQ URI {uri!r}: expected zmq+PATTERN://HOST:PORT or "
                          f"zmq+PATTERN+ipc://PATH with PATTERN one of {', '.join(allowed)}")
    pattern = parts[1]
    if pattern not in allowed:
        raise ConfigError(f"{uri!r}: pattern {pattern!r} cannot be used here (use {', '.join(allowed)})")
    if len(parts) == 3:
        if parts[2] != "ipc":
            raise ConfigError(f"{uri!r}: transport {parts[2]!r} is not supported (tcp or ipc)")
        if not rest:
            raise ConfigError(f"{uri!r}: missing IPC path")
        address = f"ipc://{rest}"
    else:
        host, colon, port = rest.rpartition(":")
        host = host or "127.0.0.1"  # zmq+pub://:5556 -> loopback only, never all interfaces
        if not colon or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"{uri!r}: expected HOST:PORT with a port in 1..65535")
        address = f"tcp://{host}:{int(port)}"
    q = parse_qs(query, keep_blank_values=True)
    unknown = set(q) - {"bind", "connect", "topic"}
    if unknown:
        raise ConfigError(f"{uri!r}: unknown option(s) {', '.join(sorted(unknown))} (bind, connect, topic)")
    if "bind" in q and "connect" in q:
        raise ConfigError(f"{uri!r}: ?bind and ?connect together")
    bind = True if "bind" in q else False if "connect" in q else BINDS_BY_DEFAULT[pattern]
    topic = q["topic"][0] if "topic" in q else None
    if topic is not None and pattern != "sub":
        raise ConfigError(f"{uri!r}: ?topic only applies to sub")
    if address.startswith("tcp://"):
        host = address[6:].rpartition(":")[0]
        if not bind and host in ALL_INTERFACES:
            raise ConfigError(f"{uri!r}: cannot connect to {host!r}; name the host")
    return Endpoint(pattern, address, bind, topic, uri)


def hwm_messages(msgs_per_second: float, seconds: float = 2.0) -> int:
    """High-water mark holding about ``seconds`` of messages (at least 16)."""
    return max(16, int(math.ceil(msgs_per_second * seconds)))


def open_socket(ctx, ep: Endpoint, *, hwm: int, max_message_bytes: int | None = None,
                linger_ms: int = 200):
    """Create, configure and bind/connect a socket for ``ep`` in the calling thread.

    Linger is short (exit never hangs), high-water marks hold ``hwm`` messages,
    reconnects back off from 100 ms to 5 s, and receivers refuse frames above
    ``max_message_bytes`` with libzmq's own MAXMSGSIZE (which drops that peer's
    connection). Raises ConfigError if the address cannot be bound or connected.
    """
    import zmq

    kind = {"sub": zmq.SUB, "pull": zmq.PULL, "pub": zmq.PUB, "push": zmq.PUSH}[ep.pattern]
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, linger_ms)
    s.setsockopt(zmq.SNDHWM, hwm)
    s.setsockopt(zmq.RCVHWM, hwm)
    s.setsockopt(zmq.RECONNECT_IVL, 100)        # ms: first reconnect attempt
    s.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)   # ms: back-off ceiling
    if max_message_bytes is not None and ep.pattern in ("sub", "pull"):
        s.setsockopt(zmq.MAXMSGSIZE, int(max_message_bytes))
    if ep.pattern == "sub":
        s.setsockopt_string(zmq.SUBSCRIBE, ep.topic if ep.topic is not None else "")
    try:
        if ep.bind:
            host = ep.address[6:].rpartition(":")[0] if ep.address.startswith("tcp://") else None
            if host in ALL_INTERFACES:
                log.warning("binding %s on all network interfaces (%s): anyone who can reach this "
                            "machine can connect", ep.pattern, ep.address)
            s.bind(ep.address)
        else:
            s.connect(ep.address)
    except zmq.ZMQError as e:
        s.close(0)
        verb = "bind" if ep.bind else "connect"
        raise ConfigError(f"cannot {verb} {ep.uri} ({ep.address}): {e.strerror}") from None
    log.info("%s %s %s (hwm %d messages)", ep.pattern, "bound to" if ep.bind else "connected to",
             ep.address, hwm)
    return s
