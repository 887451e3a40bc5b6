"""``streamrnn serve``: N workers behind one ingress and one egress endpoint.

The supervisor (the process that calls ``run_service``) owns every outside socket:

* the **ingress** (``--source``, ``zmq+pull://`` bound or ``zmq+sub://`` connected), read by the
  ``Router`` thread, which forwards each message to worker ``shard_of(stream, N)``;
* the **egress** (``--sink zmq+pub://``), the XPUB side of an XSUB/XPUB proxy the workers publish into;
* the **control** socket the workers report on (ready, exit) and the optional metrics endpoint.

Workers are local processes (``multiprocessing``'s *spawn* start method: no fork of a process
with threads and ZeroMQ contexts) or, with ``--ray``, Ray actors (``streamrnn.serve.ray_backend``).
Each runs ``streamrnn.serve.worker.run_worker``.  A worker that dies is started again; the
replacement restores its streams from the last snapshot.  Setting ``stop`` (SIGTERM/SIGINT in the
CLI) drains: the router stops reading, every worker ends its streams (``eos``) and exits 0.
Internal sockets are IPC files in a private 0700 directory (local workers) or TCP on the nodes'
addresses (Ray).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time

from streamrnn.config import ServeConfig, StreamConfig, to_dict
from streamrnn.errors import ConfigError, StreamRNNError
from streamrnn.runtime.pipeline import STATS_STREAM
from streamrnn.serve.metrics import ServiceStats, serve_metrics
from streamrnn.serve.routing import EgressProxy, Router
from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.sources import new_epoch

log = logging.getLogger(__name__)

RESTART_BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0)  # s before the 1st, 2nd... restart of a worker that keeps dying


def check_serve_config(config: StreamConfig) -> None:
    """ConfigError unless ``config`` has what ``serve`` serves: a ZeroMQ source (the ingress) and
    exactly one ``zmq+pub://`` sink (the egress), and a model."""
    from streamrnn.transport.endpoints import parse_zmq_uri

    if not config.model:
        raise ConfigError("serve needs a model: --model (or `model` in the config / STREAMRNN_MODEL)")
    if not config.source.startswith(("zmq+pull", "zmq+sub")):
        raise ConfigError(f"serve's --source is its ingress: zmq+pull://HOST:PORT (producers push) or "
                          f"zmq+sub://HOST:PORT (it subscribes), not {config.source!r}")
    parse_zmq_uri(config.source, allowed=("pull", "sub"))
    if len(config.sink) != 1 or not config.sink[0].startswith("zmq+pub"):
        raise ConfigError(f"serve's --sink is its egress: exactly one zmq+pub://HOST:PORT, not "
                          f"{', '.join(config.sink)}")
    ep = parse_zmq_uri(config.sink[0], allowed=("pub",))
    if not ep.bind:
        raise ConfigError(f"serve's egress {config.sink[0]!r} must bind (consumers connect to it)")


class LocalWorkers:
    """Workers as local processes started with ``multiprocessing``'s spawn method."""

    name = "local"

    def __init__(self, rundir: str, state_dir: str):
        import multiprocessing

        self.mp = multiprocessing.get_context("spawn")
        self.rundir, self.state_dir = rundir, state_dir
        self.procs: dict[int, object] = {}

    def ingress_endpoint(self, i: int) -> tuple[str, str]:
        """(URI the worker's source binds, address the router connects to)."""
        path = os.path.join(self.rundir, f"w{i}.in")
        return f"zmq+pull+ipc://{path}", f"ipc://{path}"

    def egress_endpoint(self) -> tuple[str, str]:
        """(URI of the workers' pub sink, address the proxy's XSUB binds)."""
        path = os.path.join(self.rundir, "egress.sock")
        return f"zmq+pub+ipc://{path}?connect", f"ipc://{path}"

    def control_address(self) -> str:
        return f"ipc://{os.path.join(self.rundir, 'control.sock')}"

    def store_spec(self) -> dict:
        return {"kind": "dir", "path": self.state_dir}

    def start(self, i: int, spec: dict) -> dict:
        from streamrnn.serve.worker import worker_main

        p = self.mp.Process(target=worker_main, args=(json.dumps(spec),), name=f"streamrnn-worker-{i}")
        p.start()
        self.procs[i] = p
        return {"pid": p.pid, "node": socket.gethostname()}

    def alive(self, i: int) -> bool:
        return i in self.procs and self.procs[i].is_alive()

    def exitcode(self, i: int):
        return self.procs[i].exitcode

    def terminate(self, i: int) -> None:
        p = self.procs[i]
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)

    def join(self, i: int, timeout: float) -> int | None:
        p = self.procs[i]
        p.join(timeout)
        if p.is_alive():
            log.error("worker %d did not drain in %.0f s: killed", i, timeout)
            p.kill()
            p.join(5)
        return p.exitcode

    def close(self) -> None:
        pass


class Service:
    """The supervisor of one ``serve``: build with ``Service(config, serve)``, then ``run(stop)``."""

    def __init__(self, config: StreamConfig, serve: ServeConfig | None = None):
        self.config = config.validate()
        self.serve = serve or ServeConfig()
        check_serve_config(self.config)
        self.n = int(self.serve.workers)
        self.router_stats = Stats()
        self.stats = ServiceStats(self.n, self.router_stats)
        self.started: list[float] = [0.0] * self.n
        self.restarts = [0] * self.n
        self.exit_codes: dict[int, int | None] = {}
        self._ready = [False] * self.n
        self._ever_ready = [False] * self.n
        self.router = None
        self._stopping = False
        self._epoch = new_epoch()
        self._stats_seq = 0
        self.rundir = None
        self.backend = None

    # --- setup -------------------------------------------------------------------------------------
    def _spec(self, i: int) -> dict:
        b = self.backend
        return {"index": i, "workers": self.n, "config": to_dict(self.config),
                "ingress": b.ingress_endpoint(i)[0], "egress": b.egress_endpoint()[0],
                "control": b.control_address(), "store": b.store_spec(),
                "snapshot_interval": self.serve.snapshot_interval, "parent_pid": os.getpid(),
                "log_level": logging.getLogger().getEffectiveLevel()}

    def _make_backend(self):
        if self.serve.ray is not None:
            from streamrnn.serve.ray_backend import RayWorkers

            return RayWorkers(self.serve.ray, self.rundir, self.n)
        state = self.serve.state_dir or os.path.join(self.rundir, "state")
        return LocalWorkers(self.rundir, state)

    def _start_worker(self, i: int) -> None:
        info = self.backend.start(i, self._spec(i))
        self.started[i] = time.monotonic()
        self._ready[i] = False
        self.stats.set_worker(i, up=False, restarts=self.restarts[i], **info)
        log.info("worker %d started (%s)", i, ", ".join(f"{k} {v}" for k, v in info.items()))

    # --- the run -------------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, on_ready=None) -> int:
        """Start everything, serve until ``stop`` is set, drain; returns the exit status (0: every
        worker drained cleanly).  ``on_ready(service)`` is called once every worker is ready and
        the ingress is routed.  Raises ConfigError (a busy port, a worker that cannot start)."""
        import zmq

        from streamrnn.runtime.run import curve_config, stream_model
        from streamrnn.transport.endpoints import close_socket, hwm_messages, open_socket, parse_zmq_uri

        stop = stop or threading.Event()
        cfg = self.config
        stream_model(cfg)  # a bad model fails here, once, before any worker starts
        curve = curve_config(cfg)
        self.rundir = tempfile.mkdtemp(prefix="streamrnn-serve-")  # 0700: only this user reaches the IPC files
        ctx = zmq.Context()
        msgs = 25.0 * max(4, cfg.max_streams)  # per worker: a block every 40 ms of each stream
        hwm = hwm_messages(msgs * self.n, cfg.hwm_seconds)
        socks, proxy, router, metrics, ingress = [], None, None, None, None
        rc = 0
        try:
            self.backend = self._make_backend()
            ctl = ctx.socket(zmq.PULL)
            ctl.setsockopt(zmq.LINGER, 0)
            ctl.bind(self.backend.control_address())
            socks.append(ctl)
            stats_addr = f"ipc://{os.path.join(self.rundir, 'stats.sock')}"
            proxy = EgressProxy(ctx, self.backend.egress_endpoint()[1], [cfg.sink[0], stats_addr], hwm, curve)
            proxy.start()
            stats_sub = ctx.socket(zmq.SUB)
            stats_sub.setsockopt(zmq.LINGER, 0)
            stats_sub.setsockopt(zmq.SUBSCRIBE, f"out/{STATS_STREAM}/".encode())
            stats_sub.connect(stats_addr)
            socks.append(stats_sub)
            pub = ctx.socket(zmq.PUB)  # the aggregate stats message, into the proxy like a worker's
            pub.setsockopt(zmq.LINGER, 200)
            pub.connect(self.backend.egress_endpoint()[1])
            socks.append(pub)
            ingress = open_socket(ctx, parse_zmq_uri(cfg.source, allowed=("pull", "sub")), hwm=hwm,
                                  max_message_bytes=2 * cfg.max_message_bytes + 4096, curve=curve)
            outs = []
            for i in range(self.n):
                o = ctx.socket(zmq.PUSH)
                o.setsockopt(zmq.LINGER, 0)
                o.setsockopt(zmq.SNDHWM, hwm_messages(msgs, cfg.hwm_seconds))
                socks.append(o)
                outs.append(o)
            if self.serve.metrics:
                metrics = serve_metrics(self.stats, self.serve.metrics)
            for i in range(self.n):
                self._start_worker(i)
            self._wait_ready(ctl, stop)  # returns early if stop is set: then straight to the drain
            if not stop.is_set():
                for i, o in enumerate(outs):
                    o.connect(self.backend.ingress_endpoint(i)[1])
                router = self.router = Router(ingress, outs, self.router_stats)
                router.start()
                if on_ready is not None:
                    on_ready(self)
                self._loop(stop, ctl, stats_sub, pub)
                router.stop()  # drain: no more input, every worker ends its streams and exits
            self._stopping = True
            rc = self._drain(ctl, stats_sub)
            self._publish_stats(pub)
            time.sleep(0.3)  # the proxy forwards the workers' last messages and the aggregate
        finally:
            self._stopping = True
            if router is not None:
                router.stop()
            if self.backend is not None:
                self._kill_all()
            if metrics is not None:
                metrics[0].shutdown()
            if proxy is not None:
                proxy.stop()
            for s in socks:
                s.close(0)
            if ingress is not None:
                close_socket(ingress, 0)
            ctx.term()
            if self.backend is not None:
                self.backend.close()
            shutil.rmtree(self.rundir, ignore_errors=True)
        return rc

    def _wait_ready(self, ctl, stop) -> None:
        deadline = time.monotonic() + self.serve.ready_timeout
        while not all(self._ready):
            if stop.is_set():
                return
            if time.monotonic() > deadline:
                late = [i for i, r in enumerate(self._ready) if not r]
                raise ConfigError(f"worker(s) {late} not ready after {self.serve.ready_timeout:g} s")
            for i in range(self.n):
                if not self._ready[i] and not self.backend.alive(i):
                    raise ConfigError(f"worker {i} exited while starting (exit code {self.backend.exitcode(i)}); "
                                      f"see its log lines above")
            self._control(ctl, 100)

    def _control(self, ctl, timeout_ms: int) -> None:
        """Handle the workers' reports (ready, failed, exit) for up to ``timeout_ms``."""
        import zmq

        if not ctl.poll(timeout_ms):
            return
        while True:
            try:
                msg = json.loads(ctl.recv(zmq.NOBLOCK))
            except zmq.Again:
                return
            except ValueError:
                continue
            i = int(msg.get("worker", -1))
            if not 0 <= i < self.n:
                continue
            ev = msg.get("event")
            if ev == "ready":
                if getattr(self.backend, "restarts_itself", False) and self._ever_ready[i]:
                    self.restarts[i] += 1  # Ray restarted the actor
                self._ready[i] = self._ever_ready[i] = True
                where = {k: msg[k] for k in ("node", "node_id", "address") if k in msg}
                self.stats.set_worker(i, up=True, pid=msg.get("pid"), restored=msg.get("restored", 0),
                                      restarts=self.restarts[i], **where)
                moved = self.backend.ready(i, msg) if hasattr(self.backend, "ready") else None
                if moved is not None and self.router is not None:
                    self.router.redirect(i, moved, msg["address"])
                log.info("worker %d ready (pid %s, %s stream(s) restored)", i, msg.get("pid"), msg.get("restored"))
            elif ev == "failed":
                log.error("worker %d failed: %s", i, msg.get("error"))
            elif ev == "exit":
                self.stats.set_worker(i, up=False)

    def _loop(self, stop, ctl, stats_sub, pub) -> None:
        t_stats = time.monotonic() + self.config.stats_interval
        next_start = [0.0] * self.n
        while not stop.is_set():
            self._control(ctl, 50)
            self._read_stats(stats_sub)
            now = time.monotonic()
            for i in range(self.n):
                if self.backend.alive(i):
                    continue
                if next_start[i] == 0.0:  # just found dead
                    self.stats.set_worker(i, up=False)
                    delay = RESTART_BACKOFF[min(self.restarts[i], len(RESTART_BACKOFF) - 1)]
                    if now - self.started[i] > 60:  # it ran for a while: a fresh failure
                        delay = 0.0
                    log.error("worker %d died (exit code %s); restarting in %g s", i, self.backend.exitcode(i), delay)
                    next_start[i] = now + delay
                if now >= next_start[i]:
                    self.restarts[i] += 1
                    next_start[i] = 0.0
                    self._start_worker(i)
            if now >= t_stats:
                self._publish_stats(pub)
                t_stats = now + self.config.stats_interval

    def _read_stats(self, stats_sub) -> None:
        import zmq

        while True:
            try:
                frames = stats_sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                m = wire.decode(frames)
            except StreamRNNError:
                continue
            if m.kind == wire.STATS and m.meta:
                self.stats.update(m.meta)

    def _publish_stats(self, pub) -> None:
        meta = self.stats.aggregate()
        m = wire.Message(wire.STATS, STATS_STREAM, epoch=self._epoch, seq=self._stats_seq, t_capture=time.time(),
                         t_send=time.time(), meta=meta)
        self._stats_seq += 1
        pub.send_multipart(wire.encode(m))

    def _drain(self, ctl, stats_sub) -> int:
        for i in range(self.n):
            self.backend.terminate(i)
        deadline = time.monotonic() + self.serve.drain_timeout
        rc = 0
        for i in range(self.n):
            code = self.backend.join(i, max(0.1, deadline - time.monotonic()))
            self.exit_codes[i] = code
            if code != 0:
                log.error("worker %d exited with %s while draining", i, code)
                rc = 1
        t_end = time.monotonic() + 0.3
        while time.monotonic() < t_end:  # their last stats messages
            self._control(ctl, 20)
            self._read_stats(stats_sub)
        return rc

    def _kill_all(self) -> None:
        for i in range(self.n):
            if self.backend.alive(i):
                self.backend.terminate(i)
                self.backend.join(i, 5)

    def summary(self) -> str:
        agg = self.stats.aggregate()
        c = agg["counters"]
        lat = agg["latency"]
        drops = sum((c.get("drops") or {}).values())
        return (f"streamrnn serve: {self.n} worker(s), {sum(self.restarts)} restart(s); messages in "
                f"{agg['router'].get('messages_in', 0)}, out {c.get('messages_out', 0)}; frames out "
                f"{c.get('frames_out', 0)}; drops {drops}; latency p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")


def run_service(config: StreamConfig, serve: ServeConfig | None = None, stop: threading.Event | None = None,
                on_ready=None) -> int:
    """Run ``streamrnn serve``: ``Service(config, serve).run(stop, on_ready)``; returns the exit status."""
    return Service(config, serve).run(stop, on_ready)


