"""ZeroMQ endpoint URIs and socket set-up shared by sources, sinks and ``listen``.

URIs: ``zmq+PATTERN://HOST:PORT`` (TCP) or ``zmq+PATTERN+ipc://PATH`` (IPC, e.g.
``zmq+pull+ipc:///tmp/in.sock``) with PATTERN one of sub, pull, pub, push, and an
optional ``?bind`` / ``?connect`` (override the usual direction), for sub
``?topic=PREFIX``, and for pub ``?wait_subscribers=N`` (with ``&wait_timeout=SECONDS``, default
10): wait at start-up until N subscriptions arrive, so that listeners started first see the
stream's first message. Publishers and pullers bind, subscribers and pushers connect.

>>> e = parse_zmq_uri("zmq+sub://127.0.0.1:5555?topic=in/mic0/")
>>> e.pattern, e.address, e.bind, e.topic
('sub', 'tcp://127.0.0.1:5555', False, 'in/mic0/')
"""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass
from pathlib import Path
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
    wait_subscribers: int = 0     # pub only: subscriptions to wait for when opened
    wait_timeout: float = 10.0    # s: the longest such wait


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
    known = ("bind", "connect", "topic", "wait_subscribers", "wait_timeout")
    unknown = set(q) - set(known)
    if unknown:
        raise ConfigError(f"{uri!r}: unknown option(s) {', '.join(sorted(unknown))} ({', '.join(known)})")
    if "bind" in q and "connect" in q:
        raise ConfigError(f"{uri!r}: ?bind and ?connect together")
    bind = True if "bind" in q else False if "connect" in q else BINDS_BY_DEFAULT[pattern]
    topic = q["topic"][0] if "topic" in q else None
    if topic is not None and pattern != "sub":
        raise ConfigError(f"{uri!r}: ?topic only applies to sub")
    wait = _wait_options(uri, q, pattern)
    if address.startswith("tcp://"):
        host = address[6:].rpartition(":")[0]
        if not bind and host in ALL_INTERFACES:
            raise ConfigError(f"{uri!r}: cannot connect to {host!r}; name the host")
    return Endpoint(pattern, address, bind, topic, uri, *wait)


def _wait_options(uri: str, q: dict, pattern: str) -> tuple[int, float]:
    """(wait_subscribers, wait_timeout) of a URI's query; ConfigError naming a bad value."""
    n, timeout = 0, Endpoint.wait_timeout
    if "wait_subscribers" not in q and "wait_timeout" not in q:
        return n, timeout
    if pattern != "pub":
        raise ConfigError(f"{uri!r}: ?wait_subscribers and ?wait_timeout only apply to pub")
    try:
        n = int(q.get("wait_subscribers", ["1"])[0])
        timeout = float(q.get("wait_timeout", [str(timeout)])[0])
    except ValueError:
        n = -1
    if not (1 <= n <= 10_000 and 0 < timeout <= 3600):
        raise ConfigError(f"{uri!r}: ?wait_subscribers must be an integer in 1..10000 and ?wait_timeout "
                          f"seconds in (0, 3600]")
    return n, timeout


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1); False otherwise.

    Interface names and other host names count as exposed (they usually are).

    >>> is_loopback_host("127.0.0.2"), is_loopback_host("[::1]"), is_loopback_host("0.0.0.0")
    (True, True, False)
    """
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def exposure_warning(ep: Endpoint, curve: "CurveConfig | None" = None) -> str | None:
    """The warning to log when ``ep`` binds a TCP address other than loopback, else None."""
    if not ep.bind or not ep.address.startswith("tcp://"):
        return None
    host = ep.address[6:].rpartition(":")[0]
    if is_loopback_host(host):
        return None
    everywhere = " (all network interfaces)" if host in ALL_INTERFACES else ""
    if curve is not None and curve.secret_key is not None and curve.allow_dir is not None:
        guard = f"CurveZMQ is on: only the client keys in {curve.allow_dir} can connect"
    elif curve is not None and curve.secret_key is not None:
        guard = "CurveZMQ encrypts, but any client key is accepted (add --curve-allow DIR to authenticate)"
    else:
        guard = ("anyone who can reach this machine can connect and read or inject streams "
                 "(use --curve-secret-key and --curve-allow)")
    return f"binding {ep.pattern} to {ep.address}{everywhere}, which is not a loopback address: {guard}"


# --- CurveZMQ: encryption and client authentication ---------------------------------------------
@dataclass(frozen=True)
class CurveConfig:
    """CurveZMQ keys of this process (``streamrnn keygen`` writes them; see docs/operations.md).

    Binding sockets (pub/pull by default) are CurveZMQ *servers* when ``secret_key`` is given,
    and accept only the client public keys found in ``allow_dir`` (``*.key`` files) when it is
    given. Connecting sockets (sub/push) are CurveZMQ *clients* when ``server_key`` (the
    server's public key file) is given, using ``secret_key`` as their own key pair (or a fresh
    throw-away pair, which a server with ``allow_dir`` refuses).
    """

    secret_key: Path | None = None   # a .key_secret certificate: this process's key pair
    server_key: Path | None = None   # the server's .key (or .key_secret) certificate
    allow_dir: Path | None = None    # directory of authorised clients' .key certificates
    public: bytes | None = None      # Z85 public key of secret_key
    secret: bytes | None = None      # Z85 secret key of secret_key
    server_public: bytes | None = None

    @classmethod
    def from_options(cls, secret_key=None, server_key=None, allow_dir=None,
                     allow_insecure_key: bool = False) -> "CurveConfig | None":
        """Load and check the key files; None when no option is given; ConfigError naming the file.

        A secret key file that its group or others may read or write is refused (as ssh refuses
        such a private key) unless ``allow_insecure_key``."""
        if not (secret_key or server_key or allow_dir):
            return None
        import zmq
        import zmq.auth

        if not zmq.has("curve"):
            raise ConfigError("this libzmq was built without CurveZMQ support")

        def load(path, what):
            return load_key_file(path, what, secret="secret" in what, allow_insecure=allow_insecure_key)

        public = secret = server_public = None
        if secret_key:
            public, secret = load(secret_key, "CurveZMQ secret key file")
            if not secret:
                raise ConfigError(f"{secret_key}: no secret key in this file (give the .key_secret file "
                                  f"written by `streamrnn keygen`)")
        if server_key:
            server_public, _ = load(server_key, "CurveZMQ server public key file")
        if allow_dir:
            d = Path(allow_dir)
            if not d.is_dir():
                raise ConfigError(f"--curve-allow {str(d)!r} is not a directory of client public keys")
            keys = sorted(d.glob("*.key"))
            if not keys:
                raise ConfigError(f"--curve-allow {str(d)!r} holds no client public keys (*.key files)")
            for k in keys:
                load(k, "client public key file")
            if not secret_key:
                raise ConfigError("--curve-allow needs --curve-secret-key (the server's own key pair)")
        return cls(Path(secret_key) if secret_key else None, Path(server_key) if server_key else None,
                   Path(allow_dir) if allow_dir else None, public, secret, server_public)


MAX_KEY_FILE_BYTES = 64 * 1024  # a certificate is about 300 bytes


def load_key_file(path, what: str, secret: bool = False, allow_insecure: bool = False):
    """(public, secret) Z85 keys of a ZeroMQ certificate file, checked; ConfigError naming the file.

    Checks: a regular file of at most ``MAX_KEY_FILE_BYTES``; keys of 40 Z85 characters (32
    bytes); for ``secret``: a secret key that belongs to the public key, and a file mode that
    gives the group and others no access (ssh's rule) unless ``allow_insecure``.  Messages
    never quote the file's content.
    """
    import stat

    import zmq
    import zmq.auth
    from zmq.utils import z85

    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} {str(p)!r}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"the {what} {str(p)!r} is not a key file (a regular file of at most "
                          f"{MAX_KEY_FILE_BYTES} bytes written by `streamrnn keygen`)")
    try:
        public, sec = zmq.auth.load_certificate(p)
    except (OSError, ValueError, IndexError) as e:  # no key line, not text, a key line without " = "
        why = (e.strerror if isinstance(e, OSError) and e.strerror else "no public key in it"
               if "No public key" in str(e) else "not a ZeroMQ certificate (as `streamrnn keygen` writes)")
        raise ConfigError(f"cannot read the {what} {str(p)!r}: {why}") from None
    for name, k in (("public", public), ("secret", sec)):
        if k is None:
            continue
        try:
            ok = len(k) == 40 and len(z85.decode(k)) == 32
        except (ValueError, KeyError, IndexError, TypeError):
            ok = False
        if not ok:
            raise ConfigError(f"the {what} {str(p)!r} holds a malformed {name} key (expected 40 Z85 characters)")
    if secret and sec and zmq.curve_public(sec) != public:
        raise ConfigError(f"the {what} {str(p)!r}: its public and secret keys do not belong together")
    if secret and sec and st.st_mode & 0o077 and not allow_insecure:
        raise ConfigError(f"the {what} {str(p)!r} is accessible by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                          f"`chmod 600` it, or pass --curve-allow-insecure-key")
    return public, sec


# One ZAP authenticator thread per context, shared by its CurveZMQ server sockets; it stops
# when the last of them closes (close_socket).
_AUTH: dict = {}   # id(ctx) -> [ThreadAuthenticator, set of id(socket), allow_dir]


def _authenticate(ctx, sock, allow_dir: Path) -> None:
    import zmq.auth.thread

    entry = _AUTH.get(id(ctx))
    if entry is None:
        auth = zmq.auth.thread.ThreadAuthenticator(ctx, log=logging.getLogger(__name__ + ".auth"))
        auth.start()
        entry = _AUTH[id(ctx)] = [auth, set(), None]
    if entry[2] is not None and entry[2] != allow_dir:
        raise ConfigError(f"one process can only use one --curve-allow directory ({entry[2]} and {allow_dir})")
    # Re-read on every new socket: keys added to the directory take effect at the next start.
    entry[0].configure_curve(domain="*", location=str(allow_dir))
    entry[2] = allow_dir
    entry[1].add(id(sock))


def close_socket(sock, linger_ms: int | None = None) -> None:
    """Close a socket made by ``open_socket`` (and stop the authenticator with its last user)."""
    for key, entry in list(_AUTH.items()):
        if id(sock) in entry[1]:
            entry[1].discard(id(sock))
            if not entry[1]:
                entry[0].stop()
                del _AUTH[key]
    sock.close(linger_ms)


class RateLimitedLog:
    """Log a warning at most once per ``interval`` seconds (limits hit under a flood stay visible
    without flooding the log; every event is counted in the stats anyway)."""

    def __init__(self, logger, interval: float = 10.0):
        self.logger, self.interval, self._last = logger, interval, -math.inf

    def __call__(self, message: str) -> None:
        import time

        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.logger.warning("%s", message)


def hwm_messages(msgs_per_second: float, seconds: float = 2.0) -> int:
    """High-water mark holding about ``seconds`` of messages (at least 16)."""
    return max(16, int(math.ceil(msgs_per_second * seconds)))


def open_socket(ctx, ep: Endpoint, *, hwm: int, max_message_bytes: int | None = None,
                linger_ms: int = 200, curve: CurveConfig | None = None, reconnect_max_ms: int = 5000,
                socket_type: int | None = None):
    """Create, configure and bind/connect a socket for ``ep`` in the calling thread.

    Linger is short (exit never hangs), high-water marks hold ``hwm`` messages,
    reconnects back off from 100 ms to ``reconnect_max_ms`` (5 s; 100: retry every 100 ms, what
    ``listen`` does so that it hears a stream started after it from its start), a pub endpoint
    with ``wait_subscribers`` is an XPUB socket that reports every subscription (read them with
    ``wait_for_subscribers``), and receivers refuse frames above
    ``max_message_bytes`` with libzmq's own MAXMSGSIZE (which drops that peer's
    connection). With ``curve`` the socket is a CurveZMQ server (binding, with
    ``curve.secret_key``) or client (connecting, with ``curve.server_key``); see
    ``CurveConfig``. Close it with ``close_socket``. Raises ConfigError if the
    address cannot be bound or connected. Binding a non-loopback address logs a
    warning (``exposure_warning``).  ``socket_type`` replaces the pattern's socket type (``zmq.XPUB``
    for ``streamrnn serve``'s egress proxy, configured like a pub sink).
    """
    import zmq

    kind = socket_type or {"sub": zmq.SUB, "pull": zmq.PULL, "pub": zmq.PUB, "push": zmq.PUSH}[ep.pattern]
    if ep.wait_subscribers:
        kind = zmq.XPUB  # a PUB that hands its subscriptions to the application
    s = ctx.socket(kind)
    if ep.wait_subscribers:
        s.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber's subscription, not only a topic's first
    s.setsockopt(zmq.LINGER, linger_ms)
    s.setsockopt(zmq.SNDHWM, hwm)
    s.setsockopt(zmq.RCVHWM, hwm)
    s.setsockopt(zmq.RECONNECT_IVL, 100)        # ms: first reconnect attempt
    s.setsockopt(zmq.RECONNECT_IVL_MAX, max(100, reconnect_max_ms))  # ms: back-off ceiling
    if max_message_bytes is not None and ep.pattern in ("sub", "pull"):
        s.setsockopt(zmq.MAXMSGSIZE, int(max_message_bytes))
    if ep.pattern == "sub":
        s.setsockopt_string(zmq.SUBSCRIBE, ep.topic if ep.topic is not None else "")
    secure = "plain"
    try:
        if ep.bind and curve is not None and curve.secret_key is not None:
            s.curve_secretkey, s.curve_publickey = curve.secret, curve.public
            s.curve_server = True
            secure = "CurveZMQ server"
            if curve.allow_dir is not None:
                _authenticate(ctx, s, curve.allow_dir)
                secure += f", clients of {curve.allow_dir} only"
        elif not ep.bind and curve is not None and curve.server_public is not None:
            if curve.secret is not None:
                pub, sec = curve.public, curve.secret
            else:
                pub, sec = zmq.curve_keypair()  # throw-away identity: encryption without authentication
            s.curve_secretkey, s.curve_publickey, s.curve_serverkey = sec, pub, curve.server_public
            secure = "CurveZMQ client"
    except ConfigError:
        close_socket(s, 0)
        raise
    try:
        if ep.bind:
            warning = exposure_warning(ep, curve)
            if warning:
                log.warning("%s", warning)
            s.bind(ep.address)
        else:
            s.connect(ep.address)
    except zmq.ZMQError as e:
        close_socket(s, 0)
        verb = "bind" if ep.bind else "connect"
        raise ConfigError(f"cannot {verb} {ep.uri} ({ep.address}): {e.strerror}") from None
    log.info("%s %s %s (hwm %d messages, %s)", ep.pattern, "bound to" if ep.bind else "connected to",
             ep.address, hwm, secure)
    return s


def wait_for_subscribers(sock, ep: Endpoint) -> int:
    """Read an XPUB socket's subscriptions until ``ep.wait_subscribers`` arrived or
    ``ep.wait_timeout`` seconds passed; returns how many arrived (a warning says when too few)."""
    import time

    t_end = time.monotonic() + ep.wait_timeout
    n = 0
    while n < ep.wait_subscribers:
        left = t_end - time.monotonic()
        if left <= 0 or not sock.poll(int(min(left, 0.05) * 1000) + 1):
            if left <= 0:
                log.warning("%s: %d of %d subscriber(s) after %g s (wait_timeout); starting anyway",
                            ep.uri, n, ep.wait_subscribers, ep.wait_timeout)
                break
            continue
        msg = sock.recv()
        n += msg[:1] == b"\x01"  # 1: subscribe, 0: unsubscribe
    log.info("%s: %d subscriber(s) arrived", ep.uri, n)
    return n


def write_keypair(directory, name: str = "streamrnn") -> tuple[Path, Path]:
    """Write a CurveZMQ key pair: ``DIR/NAME.key`` (public) and ``DIR/NAME.key_secret`` (mode 0600).

    Refuses to overwrite an existing pair. Returns (public_file, secret_file).
    """
    import os

    import zmq.auth

    from streamrnn.transport.wire import STREAM_ID

    if not STREAM_ID.fullmatch(name):
        raise ConfigError(f"key name {name!r} must match [A-Za-z0-9._-]{{1,64}}")
    d = Path(directory)
    pub, sec = d / f"{name}.key", d / f"{name}.key_secret"
    for p in (pub, sec):
        if p.exists():
            raise ConfigError(f"{p} exists; remove it or choose another --name")
    try:
        d.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
        try:
            zmq.auth.create_certificates(d, name)
        finally:
            os.umask(old)
        os.chmod(pub, 0o644)
        os.chmod(sec, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot write keys in {str(d)!r}: {e.strerror or e}") from None
    return pub, sec


class ZmqSocketOwner:
    """``close`` and ``describe`` shared by the ZeroMQ sources and sinks (``self.ep``, ``self._sock``)."""

    ep: Endpoint
    _sock = None

    def close(self):
        if self._sock is not None:
            close_socket(self._sock)
            self._sock = None

    def describe(self):
        return f"ZeroMQ {self.ep.pattern} {'bound to' if self.ep.bind else 'connected to'} {self.ep.address}"
