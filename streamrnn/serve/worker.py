"""One worker of ``streamrnn serve``: the ordinary pipeline on a worker-internal source, with
periodic snapshots of its streams and a restore when it replaces a dead worker.

A worker is ``run_stream``'s pipeline (``build_pipeline``) whose source is the PULL socket the
router feeds (``zmq+pull+ipc://RUNDIR/w<i>.in``) and whose sink is a PUB socket connected to the
egress proxy.  Every ``snapshot_interval`` s, between two reads, it writes the state of all its
streams into its store entry ``worker-<i>`` (``streamrnn.serve.store``): per stream the pipeline's
bookkeeping, the front end and resampler, the bank row, the event machines and what the source
knows of the input (descriptor, epoch, next seq and sample_index).

A replacement worker restores that entry before it reads anything.  Each restored stream gets a
new output epoch (its sender restarted) and its descriptor at once; its first input chunk shows
how much input the restored state never saw (``samples_lost`` = the chunk's sample_index minus the
snapshot's next sample_index), and before the first prediction the worker publishes a ``restore``
event (docs/protocol.md, "Restored streams") with ``frames_lost`` = floor(samples_lost x frame
rate / sample rate); the outputs stay on the producer's clock (their sample_index jumps by
``frames_lost``) and the first prediction carries the gap flag.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time

from streamrnn.audio.stream import FeatureBank
from streamrnn.errors import SnapshotError
from streamrnn.nn.model import Bank
from streamrnn.runtime.events import EventDetector
from streamrnn.runtime.pipeline import Pipeline, StreamSlot, _BankedState
from streamrnn.serve.routing import shard_of
from streamrnn.serve.store import pack, unpack
from streamrnn.stats import LatencyHistogram
from streamrnn.transport import wire
from streamrnn.transport.sinks import ZmqSink

log = logging.getLogger(__name__)

STATE_FORMAT = "streamrnn-serve-state/2"  # the "format" of a worker's state tree (bank and front-end rows as columns)
STATE_FORMAT_1 = "streamrnn-serve-state/1"  # each stream's rows in its own entry: still restored
_OWN_DESC_KEYS = frozenset(("stream", "epoch", "input"))  # what differs between the out_desc of two streams


def worker_name(index: int) -> str:
    """The store entry of worker ``index``."""
    return f"worker-{index}"


class WorkerPipeline(Pipeline):
    """A ``Pipeline`` whose streams can be snapshotted to a tree and restored from one."""

    def __init__(self, *args, worker: int = 0, workers: int = 1, **kw):
        super().__init__(*args, **kw)
        self.worker, self.workers = int(worker), int(workers)
        self._resume: dict[str, dict] = {}  # restored streams whose first input has not arrived yet

    # --- snapshot ----------------------------------------------------------------------------
    def snapshot_state(self) -> dict:
        """Every open stream's state as one tree (arrays, dicts, lists, JSON scalars).  The bank rows of
        all streams and the front ends in the processor's ``FeatureBank`` are stored as columns
        (``Bank.snapshot_rows``, ``FeatureBank.snapshot_rows``: what the streams share once, one array
        per field); a stream's own entry keeps its scalars (and a ``FeatureStream``'s snapshot)."""
        pp = self.processor
        streams, ids, fb_ids, descs = [], [], [], []
        for s in self.slots.values():
            src = self.source.stream_state(s.stream)
            if src is None:  # its input ended or was forgotten in this very read: nothing to resume
                continue
            resume = self._resume.get(s.stream)
            if resume is not None:  # restored, no input since: keep the older snapshot's clock
                src = dict(src, next_index=resume["snapshot_sample"])
            banked = isinstance(s.proc, _BankedState)
            if banked:
                fb_ids.append(s.stream)
            ids.append(s.stream)
            d = s.out_desc  # all but its own keys (the model descriptor, labels...): once per distinct value
            common = {k: None if k in _OWN_DESC_KEYS else v for k, v in d.items()}  # None: kept in place, the order too
            j = next((j for j, t in enumerate(descs) if t == common), None)
            if j is None and len(descs) < 16:
                j = len(descs)
                descs.append(common)
            own = d if j is None else {k: v for k, v in d.items() if k in _OWN_DESC_KEYS}
            streams.append({
                "stream": s.stream, "in_epoch": s.in_epoch, "key": list(s.key), "out_desc": own, "out_desc_common": j,
                "pending_flags": s.pending_flags, "samples": s.samples, "frames": s.frames,
                "frame0": s.frame0, "last_t_capture": s.last_t_capture,
                # the t_capture of the last plausible pred (JSON has no -inf: None before the first)
                "last_pred_t": None if s.last_pred_t == -math.inf else s.last_pred_t,
                # a FeatureStream's snapshot (None: feature frames); a FeatureBank row's: feature_rows[frontend_row]
                "frontend": None if banked else s.proc.snapshot(), "frontend_row": len(fb_ids) - 1 if banked else None,
                "events": None if s.detector is None else s.detector.snapshot(),
                "source": src})
        return {"format": STATE_FORMAT, "worker": self.worker, "t": time.time(), "streams": streams,
                "out_desc_common": descs,  # a stream's out_desc: its own keys and descs[its out_desc_common]
                "bank_rows": pp.bank.snapshot_rows(ids),  # row i: streams[i]'s
                "feature_rows": pp.features.snapshot_rows(fb_ids) if fb_ids else None,
                }

    def restore_state(self, tree: dict) -> int:
        """Reopen the streams of a ``snapshot_state`` tree (before any read); returns how many.  A tree
        of the previous format (each stream's bank and front-end snapshots in its own entry) too."""
        if not isinstance(tree, dict) or tree.get("format") not in (STATE_FORMAT, STATE_FORMAT_1):
            log.error("worker %d: state is not %s; starting empty", self.worker, STATE_FORMAT)
            return 0
        streams = tree.get("streams", [])
        banks = fronts = None
        if tree["format"] == STATE_FORMAT:
            try:
                banks = Bank.split_rows(tree["bank_rows"])
                fronts = FeatureBank.split_rows(tree["feature_rows"]) if tree["feature_rows"] is not None else []
                if len(banks) != len(streams):
                    raise SnapshotError(f"{len(banks)} bank rows for {len(streams)} streams")
            except Exception as e:  # noqa: BLE001 (a damaged tree: said, and the worker starts empty)
                self.stats.count("restore_errors", type(e).__name__)
                log.error("worker %d: state's rows are damaged (%s); starting empty", self.worker, e)
                return 0
        n = 0
        for i, st in enumerate(streams):
            if shard_of(str(st.get("stream")), self.workers) != self.worker:
                continue  # a state directory of a service with another number of workers: not routed here
            try:
                if banks is not None:  # the stream's rows back in its entry
                    k = st["frontend_row"]
                    st = dict(st, bank=banks[i], frontend=st["frontend"] if k is None else fronts[k])
                    j = st["out_desc_common"]
                    if j is not None:
                        st["out_desc"] = {**tree["out_desc_common"][j], **st["out_desc"]}
                self._restore_stream(st)
                n += 1
            except Exception as e:  # noqa: BLE001 (one bad stream must not keep the others from resuming)
                self.stats.count("restore_errors", type(e).__name__)
                log.error("worker %d: stream %r not restored: %s", self.worker, st.get("stream"), e)
        self.stats.add("streams_restored", n)
        return n

    def _restore_stream(self, st: dict) -> None:
        sid = st["stream"]
        content, rate, channels, dtype = st["key"]
        proc = self.processor.open(sid, content, float(rate), int(channels))
        try:
            proc.restore(st["frontend"])  # into a FeatureStream or the stream's FeatureBank row
            self.processor.bank.restore(sid, st["bank"])
            pp = self.processor
            det = None
            if pp.event_params is not None:
                det = EventDetector(pp.labels(pp.describe(proc)["n"]), pp.event_params, proc.frame_rate)
                det.restore(st["events"])
        except BaseException:
            proc.close()
            raise
        slot = StreamSlot(sid, int(st["in_epoch"]), (content, float(rate), int(channels), dtype), proc, det)
        slot.samples, slot.frames, slot.frame0 = int(st["samples"]), int(st["frames"]), int(st["frame0"])
        slot.pending_flags = int(st["pending_flags"])
        slot.last_t_capture = float(st["last_t_capture"])
        slot.last_pred_t = -math.inf if st.get("last_pred_t") is None else float(st["last_pred_t"])
        slot.out_desc = dict(st["out_desc"], epoch=slot.out_epoch)  # a new output epoch: the sender restarted
        self.slots[sid] = slot
        self.source.resume_stream(sid, st["source"])
        self._resume[sid] = {"snapshot_sample": int(st["source"]["next_index"] or 0),
                             "snapshot_frame": slot.frame0 + slot.frames - self.processor.delay}
        self._send_desc(slot)

    # --- the first input after a restore ------------------------------------------------------------
    def _prepare(self, ch):
        resume = self._resume.pop(ch.stream, None)
        slot = self.slots.get(ch.stream)
        if resume is not None and slot is not None and ch.epoch == slot.in_epoch:
            lost = max(0, int(ch.sample_index) - resume["snapshot_sample"])
            frames_lost = int(lost * slot.proc.frame_rate // ch.rate)
            slot.frame0 += frames_lost
            if lost:
                slot.pending_flags |= wire.FLAG_GAP
            frame = resume["snapshot_frame"] + frames_lost
            ev = {"event": "restore", "stream": ch.stream, "frame": frame, "time": frame / slot.proc.frame_rate,
                  "frames_lost": frames_lost, "snapshot_frame": resume["snapshot_frame"],
                  "samples_lost": lost, "snapshot_sample": resume["snapshot_sample"],
                  "resume_sample": int(ch.sample_index), "worker": self.worker}
            self._emit(wire.Message(wire.EVENT, ch.stream, epoch=slot.out_epoch, seq=slot.next_seq(wire.EVENT),
                                    sample_index=frame, t_capture=ch.t_capture, meta=ev))
            self.stats.count("events", "restore")
            self.stats.add("frames_lost", frames_lost)
        return super()._prepare(ch)

    def stats_snapshot(self, roll=True) -> dict:
        d = super().stats_snapshot(roll=roll)
        h = self.stats.lat_total  # the whole histogram (sparse), so the service can merge percentiles exactly
        d.update(scope="worker", worker=self.worker, pid=os.getpid(),
                 latency_bins={str(i): c for i, c in enumerate(h.counts) if c}, latency_max_s=h.max)
        return d


def merge_latency(stats_list) -> LatencyHistogram:
    """One histogram of every worker's ``latency_bins`` (their stats messages): exact percentiles."""
    h = LatencyHistogram()
    for d in stats_list:
        for i, c in (d.get("latency_bins") or {}).items():
            h.counts[int(i)] += int(c)
            h.n += int(c)
        h.max = max(h.max, float(d.get("latency_max_s") or 0.0))
    return h


# --- the worker process ----------------------------------------------------------------------------
class InternalPubSink(ZmqSink):
    """The worker's PUB socket into the egress proxy, sized like its source (``hwm_seconds`` of every
    stream's messages) and with ``XPUB_NODROP``: a full queue is counted in ``drops.hwm`` of the
    worker's stats instead of being lost silently inside libzmq."""

    def open(self):
        import zmq

        super().open()
        self._sock.setsockopt(zmq.XPUB_NODROP, 1)


def worker_config(spec: dict):
    """The worker's StreamConfig: the service's, with the worker-internal source and sink (no CurveZMQ
    on them: they are IPC sockets in the service's private 0700 directory)."""
    import dataclasses

    from streamrnn.config import StreamConfig, from_dict

    cfg = from_dict(StreamConfig, spec["config"])
    return dataclasses.replace(cfg, source=spec["ingress"], sink=(spec["egress"],), duration=0.0,
                               curve_secret_key=None, curve_server_key=None, curve_allow=None)


class Snapshotter:
    """``on_tick`` of a worker: every ``interval`` s it takes its streams' state (in the loop's thread,
    between two reads: consistent) and hands the packed bytes to a writer thread (the file system's
    latency never stalls the streams; a write still running when the next is due makes that one wait
    for the next interval, counted in ``snapshots_skipped``).  It also notices the death of its
    supervisor and then stops the worker (an orphan would hold its sockets forever)."""

    def __init__(self, pipe: WorkerPipeline, store, name: str, interval: float, stop: threading.Event,
                 parent_pid: int | None):
        self.pipe, self.store, self.name, self.interval, self.stop = pipe, store, name, interval, stop
        self.parent_pid = parent_pid
        self.next = time.monotonic() + interval
        self._pending: bytes | None = None
        self._cv = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="streamrnn-snapshots", daemon=True)
        self._writer.start()

    def __call__(self, now: float) -> None:
        if now < self.next:
            return
        self.next = now + self.interval
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            log.warning("worker %d: the supervisor is gone; stopping", self.pipe.worker)
            self.stop.set()
            return
        self.save()

    def save(self) -> None:
        stats = self.pipe.stats
        with self._cv:
            if self._pending is not None:
                stats.add("snapshots_skipped")
                return
        t0 = time.perf_counter()
        try:
            data = pack(self.pipe.snapshot_state())
        except Exception as e:  # noqa: BLE001 (a state that cannot be packed must not stop the streams)
            stats.count("snapshot_errors", type(e).__name__)
            log.error("worker %d: snapshot failed: %s", self.pipe.worker, e)
            return
        stats.add("snapshot_us", int((time.perf_counter() - t0) * 1e6))
        with self._cv:
            self._pending = data
            self._cv.notify()

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._closed:
                    self._cv.wait()
                if self._pending is None:
                    return
                data = self._pending
            try:
                self.store.put(self.name, data)
                self.pipe.stats.add("snapshots")
            except Exception as e:  # noqa: BLE001 (a full disk must not stop the streams; counted and logged)
                self.pipe.stats.count("snapshot_errors", type(e).__name__)
                log.error("worker %d: writing the snapshot failed: %s", self.pipe.worker, e)
            with self._cv:
                self._pending = None
                self._cv.notify_all()

    def close(self) -> None:
        """Wait for a write in progress, then end the writer."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._writer.join(30)


def open_store(spec: dict):
    kind = spec["store"]["kind"]
    if kind == "dir":
        from streamrnn.serve.store import DirStore

        return DirStore(spec["store"]["path"])
    if kind == "ray":
        from streamrnn.serve.store import ActorStore

        return ActorStore(spec["store"]["name"], spec["store"].get("namespace"))
    raise ValueError(f"unknown store kind {kind!r}")


def run_worker(spec: dict, stop: threading.Event, on_ready=None) -> int:
    """Run one worker until ``stop`` is set: restore its state (if any), serve, snapshot; on a clean
    stop every stream gets ``eos`` and the state entry is deleted.  Returns the exit status (0)."""
    from streamrnn.runtime.run import build_pipeline, stream_model

    cfg = worker_config(spec)
    index = int(spec["index"])
    plain = build_pipeline(cfg, model=stream_model(cfg))
    sink = InternalPubSink(spec["egress"], plain.stats, cfg.hwm_seconds, msgs_per_second=25.0 * max(4, cfg.max_streams))
    pipe = WorkerPipeline(plain.source, [sink], plain.processor, config=cfg, stats=plain.stats, worker=index,
                          workers=int(spec["workers"]))
    store = open_store(spec)
    name = worker_name(index)
    tick = Snapshotter(pipe, store, name, float(spec["snapshot_interval"]), stop, spec.get("parent_pid"))

    def ready(p):
        data = store.get(name)
        n = p.restore_state(unpack(data, f"state of {name} in {store.describe()}")) if data else 0
        if n:
            log.info("worker %d: restored %d stream(s) from %s", index, n, store.describe())
        if on_ready is not None:
            on_ready(p, n)

    try:
        pipe.run(stop, on_ready=ready, on_tick=tick)
    finally:
        tick.close()
    store.delete(name)  # drained: every stream ended, nothing to resume
    return 0


def worker_main(spec_json: str) -> None:
    """Entry point of a local worker process (``multiprocessing`` spawn): ``spec_json`` is a JSON
    object (index, config, ingress, egress, control, store, snapshot_interval, log_level)."""
    import sys

    import zmq

    spec = json.loads(spec_json)
    index = int(spec["index"])
    logging.basicConfig(level=int(spec.get("log_level", logging.WARNING)),
                        format=f"%(asctime)s worker-{index} %(name)s %(levelname)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the supervisor drains us
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    ctx = zmq.Context.instance()
    ctl = ctx.socket(zmq.PUSH)
    ctl.setsockopt(zmq.LINGER, 1000)
    ctl.connect(spec["control"])

    def tell(event: str, **kw):
        ctl.send(json.dumps({"event": event, "worker": index, "pid": os.getpid(), **kw}).encode())

    try:
        rc = run_worker(spec, stop, on_ready=lambda p, n: tell("ready", restored=n))
    except Exception as e:
        log.exception("worker %d failed", index)
        tell("failed", error=str(e))
        rc = 1
    # Drained: a later SIGTERM must not end the exit.  A process-group SIGTERM (systemd's default stop,
    # `timeout`) reaches us and the supervisor, which then sends its own; Python puts the default
    # action back while it shuts down, so that second one would kill us (exit -15).  An ignored
    # signal stays ignored.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tell("exit", rc=rc)
    ctl.close()
    sys.exit(rc)
