"""Sticky routing of ``streamrnn serve``: which worker owns a stream, the ingress router, the egress proxy.

A stream id always lands on worker ``shard_of(id, n)`` = ``zlib.crc32(id.encode("utf-8")) % n``
(CRC-32 as in zlib, gzip and PNG: any language can compute the same shard map).  The ingress
``Router`` reads every message of the one ingress socket and forwards it, unchanged and without
decoding more than its topic frame, to the owner's socket; the egress is a ZeroMQ XSUB/XPUB proxy
(``zmq.proxy_steerable``, in C: no Python per message).  ``tools/ingress_bench.py`` measured the
router against the alternatives (docs/operations.md, "Running on many cores").

>>> shard_of("mic0", 4), shard_of("mic1", 4), shard_of("mic0", 4)
(1, 3, 1)
>>> topic_stream(b"in/mic0/data")
b'mic0'
"""

from __future__ import annotations

import logging
import threading
import zlib

from streamrnn.stats import Stats

log = logging.getLogger(__name__)


def shard_of(stream_id: str | bytes, n: int) -> int:
    """The worker (0..n-1) that owns ``stream_id``: CRC-32 of its UTF-8 bytes, modulo ``n``."""
    b = stream_id.encode("utf-8") if isinstance(stream_id, str) else stream_id
    return zlib.crc32(b) % n


def topic_stream(topic: bytes) -> bytes | None:
    """The ``<stream>`` of a topic ``in/<stream>/<kind>`` (bytes), or None if it has no such shape."""
    a = topic.find(b"/")
    b = topic.find(b"/", a + 1) if a >= 0 else -1
    return topic[a + 1:b] if b > a + 1 else None


class Router:
    """Forward every ingress message to the worker that owns its stream (a thread; ``stop()`` ends it).

    ``ingress`` is a bound or connected ZeroMQ socket made in the calling thread's context (it is
    used only by the router's thread from ``start()`` on); ``outputs[i]`` are PUSH sockets to the
    workers.  A message the router cannot place (not 3 frames, a topic without a stream) goes to
    worker 0, whose decoder counts it under its ``bad.<reason>``.  A worker whose queue is full
    (it is slower than its share, or it is restarting) loses the message: counted in the router's
    ``Stats`` as ``drops.worker_hwm`` and per worker in ``router_drops[w<i>]``.
    """

    def __init__(self, ingress, outputs: list, stats: Stats | None = None):
        self.ingress, self.outputs = ingress, list(outputs)
        self.stats = stats if stats is not None else Stats()
        self.n_routed = [0] * len(self.outputs)
        # every counter exists before the thread starts: a reader in another thread (metrics, the
        # aggregate) then never sees the dicts change size while it iterates
        self.stats.add("messages_in", 0)
        self.stats.count("drops", "worker_hwm", 0)
        for i in range(len(self.outputs)):
            self.stats.count("router_drops", f"w{i}", 0)
        self._stop = threading.Event()
        self._moves: list[tuple[int, str, str]] = []  # (worker, old address, new address), applied by the thread
        self._thread = threading.Thread(target=self._run, name="streamrnn-router", daemon=True)

    def redirect(self, worker: int, old: str, new: str) -> None:
        """Send worker ``worker``'s messages to ``new`` from now on (a restarted Ray actor's ingress);
        messages still queued for ``old`` are lost (the restored streams count them as a gap)."""
        self._moves.append((worker, old, new))

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import zmq

        sock, n = self.ingress, len(self.outputs)
        sends = [o.send for o in self.outputs]
        routed, crc, find = self.n_routed, zlib.crc32, bytes.find
        recv, again, nb, more = sock.recv, zmq.Again, zmq.NOBLOCK, zmq.SNDMORE | zmq.NOBLOCK
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            while self._moves:  # sockets belong to this thread: it moves them
                w, old, new = self._moves.pop(0)
                if old:
                    try:
                        self.outputs[w].disconnect(old)
                    except zmq.ZMQError:
                        pass
                self.outputs[w].connect(new)
                log.info("worker %d's ingress moved: %s -> %s", w, old, new)
            if not poller.poll(50):  # ms: stop() acts within 50 ms
                continue
            got = 0
            for _ in range(4096):  # drain what is queued, then look at stop again
                # Frame by frame, unrolled for the 3 frames of every streamrnn/1 message: a third of the
                # Python work of recv_multipart/send_multipart (tools/ingress_bench.py); a frame's .more
                # says where its message ends, for free.
                try:
                    f0 = recv(nb, copy=False)
                except again:
                    break
                got += 1
                if f0.more:
                    f1 = recv(nb, copy=False)  # the rest of a message is always there with its first frame
                    if f1.more:
                        f2 = recv(nb, copy=False)
                        if not f2.more:
                            t = f0.bytes
                            a = find(t, b"/")
                            b = find(t, b"/", a + 1)
                            w = crc(t[a + 1:b]) % n if a >= 0 and b > a + 1 else 0
                            try:  # a PUSH queue takes a message whole or not at all (its first frame decides)
                                send = sends[w]
                                send(f0, more, copy=False)
                                send(f1, more, copy=False)
                                send(f2, nb, copy=False)
                                routed[w] += 1
                            except again:
                                self._dropped(w)
                            continue
                        frames = [f0, f1, f2]
                    else:
                        frames = [f0, f1]
                else:
                    frames = [f0]
                while frames[-1].more:
                    frames.append(recv(nb, copy=False))
                self._forward(frames, 0)  # not 3 frames: whole, to worker 0, which counts it as bad
            self.stats.add("messages_in", got)

    def _dropped(self, w: int) -> None:
        self.stats.count("drops", "worker_hwm")
        self.stats.count("router_drops", f"w{w}")

    def _forward(self, frames: list, w: int) -> None:
        import zmq

        try:
            for f in frames[:-1]:
                self.outputs[w].send(f, zmq.SNDMORE | zmq.NOBLOCK, copy=False)
            self.outputs[w].send(frames[-1], zmq.NOBLOCK, copy=False)
            self.n_routed[w] += 1
        except zmq.Again:
            self._dropped(w)


class EgressProxy:
    """XSUB (the workers' PUB sockets connect to ``backend``) -> XPUB (bound at ``frontends``): one
    egress endpoint for every worker, forwarded by libzmq.  ``start()``/``stop()``; subscriptions
    travel upstream, so a worker only publishes what someone subscribed to."""

    def __init__(self, ctx, backend: str, frontends: list[str], hwm: int, curve=None):
        self.ctx, self.backend, self.frontends, self.hwm, self.curve = ctx, backend, list(frontends), hwm, curve
        self._thread = None
        self._control = None
        self._ctl_addr = f"inproc://streamrnn-egress-{id(self)}"
        self._error: BaseException | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        import zmq

        self._control = self.ctx.socket(zmq.PAIR)
        self._control.bind(self._ctl_addr)
        self._thread = threading.Thread(target=self._run, name="streamrnn-egress", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        import zmq

        from streamrnn.transport.endpoints import close_socket, open_socket, parse_zmq_uri

        xsub = xpub = ctl = None
        try:
            xsub = self.ctx.socket(zmq.XSUB)
            xsub.setsockopt(zmq.LINGER, 200)
            xsub.setsockopt(zmq.RCVHWM, self.hwm)
            xsub.bind(self.backend)
            # the first frontend is the user's egress (plain or CurveZMQ, as a pub sink binds);
            # the others are internal (the supervisor's stats subscriber)
            ep = parse_zmq_uri(self.frontends[0], allowed=("pub",))
            xpub = open_socket(self.ctx, ep, hwm=self.hwm, curve=self.curve, socket_type=zmq.XPUB)
            for addr in self.frontends[1:]:
                xpub.bind(addr)
            ctl = self.ctx.socket(zmq.PAIR)
            ctl.connect(self._ctl_addr)
        except BaseException as e:  # noqa: BLE001 (handed to start(), which raises it)
            self._error = e
            for s in (xsub, xpub, ctl):
                if s is not None:
                    s.close(0)
            self._ready.set()
            return
        self._ready.set()
        try:
            zmq.proxy_steerable(xpub, xsub, None, ctl)
        except zmq.ContextTerminated:
            pass
        finally:
            xsub.close(200)
            close_socket(xpub, 200)
            ctl.close(0)

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            self._control.send(b"TERMINATE")
        finally:
            self._thread.join(5)
            self._control.close(0)
            self._thread = None
