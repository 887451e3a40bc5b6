"""The service's view of its workers: the aggregate stats message and the Prometheus endpoint.

Every worker publishes its stats message (``out/_stats/stats``, ``"scope": "worker"``) every
``stats_interval`` s; the supervisor keeps the latest of each (``ServiceStats.update``) and builds
the aggregate (``"scope": "service"``: counters summed over the workers and the router, latency
percentiles of the merged histograms, the registry of which worker runs where).  ``serve_metrics``
exposes the same numbers in Prometheus' text format (``prometheus-client``), one label per worker.

>>> s = ServiceStats(2)
>>> s.update({"scope": "worker", "worker": 0, "counters": {"messages_in": 5, "drops": {"hwm": 1}},
...           "streams": {"a": {}}, "latency_bins": {}, "latency_max_s": 0.0})
>>> agg = s.aggregate()
>>> agg["counters"]["messages_in"], agg["counters"]["drops"], agg["n_streams"]
(5, {'hwm': 1}, 1)
"""

from __future__ import annotations

import threading
import time

from streamrnn.serve.worker import merge_latency


def _add_counters(total: dict, counters: dict) -> None:
    for k, v in counters.items():
        if isinstance(v, dict):
            sub = total.setdefault(k, {})
            for r, n in v.items():
                sub[r] = sub.get(r, 0) + int(n)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            total[k] = total.get(k, 0) + v


class ServiceStats:
    """The latest stats of every worker, the router's counters and the worker registry (thread-safe)."""

    def __init__(self, n_workers: int, router_stats=None):
        self.n = int(n_workers)
        self.router_stats = router_stats
        self.started = time.time()
        self._lock = threading.Lock()
        self.latest: dict[int, dict] = {}
        self.registry: dict[int, dict] = {i: {"up": False, "restarts": 0} for i in range(self.n)}

    def update(self, d: dict) -> None:
        """Keep a worker's stats message (``d["worker"]`` says whose)."""
        if d.get("scope") != "worker":
            return
        with self._lock:
            self.latest[int(d["worker"])] = d

    def set_worker(self, i: int, **fields) -> None:
        """Update the registry entry of worker ``i`` (up, pid, node, endpoint, restarts...)."""
        with self._lock:
            self.registry[i].update(fields)

    def aggregate(self) -> dict:
        """The aggregate stats message's JSON (``"scope": "service"``)."""
        with self._lock:
            latest = dict(self.latest)
            registry = {str(i): dict(r) for i, r in self.registry.items()}
        counters: dict = {}
        for d in latest.values():
            _add_counters(counters, d.get("counters", {}))
        router = {}
        if self.router_stats is not None:
            router = self.router_stats.snapshot(roll=False)["counters"]
            drops = counters.setdefault("drops", {})
            for r, n in router.get("drops", {}).items():
                drops[f"router_{r}"] = drops.get(f"router_{r}", 0) + n
        h = merge_latency(latest.values())
        per_worker = {str(i): {"streams": len(d.get("streams", {})), "counters": d.get("counters", {}),
                               "latency": d.get("latency")} for i, d in sorted(latest.items())}
        return {"format": "streamrnn/1", "scope": "service", "workers": self.n,
                "uptime_s": round(time.time() - self.started, 3), "counters": counters,
                "latency": h.summary_ms(), "n_streams": sum(len(d.get("streams", {})) for d in latest.values()),
                "router": router, "registry": registry, "per_worker": per_worker}


class _Collector:
    """prometheus-client collector over a ``ServiceStats`` (read at every scrape)."""

    def __init__(self, stats: ServiceStats):
        self.stats = stats

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.stats
        agg = s.aggregate()
        with s._lock:
            latest = dict(s.latest)
        up = GaugeMetricFamily("streamrnn_worker_up", "1 while the worker runs and has said it is ready",
                               labels=["worker", "node", "pid"])
        restarts = CounterMetricFamily("streamrnn_worker_restarts", "Times the worker was restarted",
                                       labels=["worker"])
        for i, r in agg["registry"].items():
            up.add_metric([i, str(r.get("node", "")), str(r.get("pid", ""))], 1.0 if r.get("up") else 0.0)
            restarts.add_metric([i], r.get("restarts", 0))
        yield up
        yield restarts
        yield GaugeMetricFamily("streamrnn_workers", "Workers of the service", value=s.n)
        streams = GaugeMetricFamily("streamrnn_streams", "Open streams", labels=["worker"])
        msgs_in = CounterMetricFamily("streamrnn_messages_in", "Messages received", labels=["worker"])
        msgs_out = CounterMetricFamily("streamrnn_messages_out", "Messages published", labels=["worker"])
        frames = CounterMetricFamily("streamrnn_frames_out", "Output frames (predictions)", labels=["worker"])
        drops = CounterMetricFamily("streamrnn_drops", "Dropped messages or rows by reason",
                                    labels=["worker", "reason"])
        lat = GaugeMetricFamily("streamrnn_latency_seconds", "Processing latency percentiles since start "
                                "(t_send - t_capture)", labels=["worker", "quantile"])
        for i, d in sorted(latest.items()):
            w, c = str(i), d.get("counters", {})
            streams.add_metric([w], len(d.get("streams", {})))
            msgs_in.add_metric([w], c.get("messages_in", 0))
            msgs_out.add_metric([w], c.get("messages_out", 0))
            frames.add_metric([w], c.get("frames_out", 0))
            for r, n in (c.get("drops") or {}).items():
                drops.add_metric([w, r], n)
            for q, k in (("0.5", "p50_ms"), ("0.99", "p99_ms")):
                v = (d.get("latency") or {}).get(k)
                if v is not None:
                    lat.add_metric([w, q], v / 1000)
        for r, n in (agg["router"].get("drops") or {}).items():
            drops.add_metric(["router", r], n)
        msgs_in.add_metric(["router"], agg["router"].get("messages_in", 0))
        for q, k in (("0.5", "p50_ms"), ("0.99", "p99_ms")):
            v = agg["latency"].get(k)
            if v is not None:
                lat.add_metric(["all", q], v / 1000)
        yield from (streams, msgs_in, msgs_out, frames, drops, lat)


def serve_metrics(stats: ServiceStats, address: str):
    """Serve ``stats`` in Prometheus' text format at ``http://HOST:PORT/metrics`` (every path answers);
    returns the ``(server, thread)`` of ``prometheus_client.start_http_server`` (``server.shutdown()``)."""
    from prometheus_client import CollectorRegistry, start_http_server

    host, _, port = address.rpartition(":")
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(stats))
    return start_http_server(int(port), addr=host or "127.0.0.1", registry=reg)
