"""The one real-time loop: source -> (front end) -> model bank -> events -> sinks.

Everything runs in the thread that calls ``Pipeline.run``: the source's
sockets and the sinks' sockets are created, used and closed there. What runs is
a ``Processor``: ``ModelProcessor`` (every stream's hidden state in one ``Bank``,
one kernel call per read for all streams) or ``FeatureProcessor`` (the front end
alone).  Per stream, a ``StreamSlot`` in ``Pipeline.slots`` owns the output side
(its ``StreamState``: front end and bank slot; event machines; output sequence
numbers).  ``streamrnn.run_stream`` builds and runs it.

>>> import numpy as np, streamrnn
>>> from streamrnn.transport.sources import Chunk
>>> from streamrnn.transport.sinks import Sink
>>> class Keep(Sink):
...     def __init__(self): super().__init__(); self.msgs = []
...     def write(self, m): self.msgs.append(m)
>>> m = streamrnn.Model.random("gru", input_size=3, hidden_size=8, output_size=1, activation="sigmoid")
>>> keep = Keep()
>>> p = Pipeline(None, [keep], model=m)
>>> x = np.ones((5, 3), np.float32)
>>> p.process(Chunk("s0", 1, "features", x, 100.0, 0, 0.0, desc={}))
>>> preds = [q for q in keep.msgs if q.kind_name == "pred"]
>>> bool(np.allclose(preds[0].data, m.forward(x)))
True
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from operator import attrgetter

import numpy as np

from streamrnn.config import StreamConfig
from streamrnn.errors import AudioError, ConfigError, InputError, SnapshotError, StreamRNNError
from streamrnn.runtime.events import EventDetector
from streamrnn.runtime.warmup import compile_front_end_elsewhere, warm_up_blocks
from streamrnn.stats import RecentIds, Stats
from streamrnn.transport import wire
from streamrnn.transport.sources import MAX_AGE, Chunk, Source, new_epoch

log = logging.getLogger(__name__)

STATS_STREAM = wire.STATS_STREAM  # reserved stream id of the process-wide stats messages
# s of input a resampled stream keeps for snapshots: the pipeline takes none, so the least soxr allows
# for a replay (exact restores at 44.1 kHz would keep ~5 s per stream: AudioStream's default)
PIPELINE_HISTORY = 1.0
# Plausible capture times (docs/protocol.md, "Capture times"): the source counts data whose capture
# times fall outside the window (implausible_time[future|past]); predictions whose latency is outside
# 0..MAX_AGE s are left out of the latency statistics (one bad clock must not poison p50/p99/max).
MAX_FRAME0 = 2**62  # a lost start's first frame, capped so output frame numbers fit the wire's uint64


# --- processors: what turns one stream's input rows into output rows ---------------------
class Processor:
    """What the pipeline runs: the one interface of its two implementations.

    ``open(sid, content, rate, channels)`` makes one stream's state (a ``StreamState``; InputError
    if the stream's content does not fit); ``run({sid: frames})`` advances every stream with new
    frames at once (or with a block its ``StreamState.prepare`` deferred, which ``run`` then takes
    through the front end with the others) and returns ``({sid: outputs}, {sid: error})``.  ``kind``/``content`` name the
    output messages; ``labels`` and ``event_params`` say whether outputs become events.
    """

    kind: int          # wire.PRED or wire.DATA
    content: str       # "pred" or "features" (the descriptor's content)
    event_params = None  # EventParams when the outputs are probabilities to run hysteresis on
    delay = 0          # D, frames of look-ahead: the row computed at frame k answers for frame k - D

    def open(self, sid: str, content: str, rate: float, channels: int) -> "StreamState":
        raise NotImplementedError

    def run(self, frames: dict) -> tuple[dict, dict]:
        raise NotImplementedError

    def labels(self, n: int):
        return None

    def describe(self, state: "StreamState") -> dict:
        """Descriptor fields of a stream: ``n`` (values per row) and extra metadata."""
        raise NotImplementedError

    def warm_up(self, rates, block_seconds: float | None = None) -> None:
        """Run every kernel once (compile or load from the cache) for streams at these rates, in
        blocks of ``block_seconds`` (a paced source's blocks: only the front end's few-frame
        kernel compiles) or, None, in one 0.5 s block (also its tiled kernel, for big blocks)."""
        for r in rates:
            st = self.open("_warm_up", "audio", r, 1)
            for x in warm_up_blocks(r, block_seconds):
                f = st.prepare(x)
                if f.shape[0]:  # a _Deferred block (banked stream) has a shape, not a len
                    self.run({"_warm_up": f})
            st.close()


class StreamState:
    """One stream's carried input state: its front end (None for feature frames) and a close hook.

    ``prepare(x)`` turns input rows into the rows ``Processor.run`` takes; frame k of the output
    depends on input rows up to ``frame_end_sample(k)``.
    """

    def __init__(self, fe=None, frame_rate: float | None = None, on_close=None):
        self.fe = fe
        self.frame_rate = float(fe.frame_rate if fe is not None else frame_rate)
        self._on_close = on_close

    def prepare(self, x):
        return self.fe.push(x) if self.fe is not None else x

    def frame_end_sample(self, k: int) -> int:
        return self.fe.frame_end_sample(k) if self.fe is not None else k + 1

    def snapshot(self) -> dict | None:
        """The front end's versioned snapshot (``FeatureStream.snapshot``), None for feature frames."""
        return None if self.fe is None else self.fe.snapshot()

    def restore(self, snap: dict | None) -> None:
        """Put back a ``snapshot`` of a stream with the same input (SnapshotError otherwise)."""
        if self.fe is not None:
            self.fe.restore(snap)
        elif snap is not None:
            raise SnapshotError("a front-end snapshot cannot be restored into a stream of feature frames")

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()


class _Deferred:
    """A block of a banked stream (``_BankedState``) waiting for its tick's one front-end call."""

    __slots__ = ("fslot", "bslot", "x", "shape")

    def __init__(self, fslot: int, bslot: int, x: np.ndarray):
        self.fslot, self.bslot, self.x = fslot, bslot, x  # x (n,) mono samples, float
        self.shape = x.shape  # what the pipeline reads of a prepared block: its length


_FSLOT, _BSLOT, _X = attrgetter("fslot"), attrgetter("bslot"), attrgetter("x")


class _BankedState(StreamState):
    """A mono audio stream at the front end's own rate: its front end is a row of the processor's
    ``FeatureBank``.  ``prepare`` only checks the block and defers it; ``ModelProcessor.run``
    advances every deferred block of a tick in one front-end call and one bank call."""

    def __init__(self, features, sid: str, bslot: int, on_close):
        from streamrnn.audio.kernels import all_finite

        super().__init__(None, features.frame_rate, on_close)
        self.features, self.sid, self.fslot, self.bslot = features, sid, features.slot(sid), bslot
        self._all_finite = all_finite  # looked up once: prepare runs per block

    def prepare(self, x):
        x = x[:, 0] if x.ndim == 2 else x  # (n, 1), the sources' layout: a view
        if x.dtype.kind != "f":
            from streamrnn.audio.checks import as_signal

            x = as_signal(x, "samples")
        if not self._all_finite(x):  # refused now, like a FeatureStream's push: the tick's call never sees it
            from streamrnn.audio.checks import nonfinite_error

            raise nonfinite_error(x, "samples")
        return _Deferred(self.fslot, self.bslot, x)

    def frame_end_sample(self, k: int) -> int:
        return self.features.frame_end_sample(k)

    def snapshot(self) -> dict:
        """The stream's row of the ``FeatureBank`` as a ``FeatureStream`` snapshot (the same dict)."""
        return self.features.snapshot(self.sid)

    def restore(self, snap: dict) -> None:
        self.features.restore(self.sid, snap)


class ModelProcessor(Processor):
    """Model predictions: every stream's hidden state is one slot of one ``Bank``, so one kernel
    call per read advances them all and reads the weights once.  Mono audio streams at the front
    end's own rate keep their front-end state in one ``FeatureBank``: one more kernel call per
    read runs all their front ends (other rates and multi-channel streams: a ``FeatureStream`` each)."""

    kind, content = wire.PRED, "pred"

    def __init__(self, model, config: StreamConfig | None = None):
        config = config or StreamConfig()
        self.model = model
        self.delay = int(model.delay)
        self.bank = model.bank(max(1, int(config.max_streams)), config.threads)
        self.features = None
        if model.frontend is not None:
            from streamrnn.audio.stream import FeatureBank

            self.features = FeatureBank(model.frontend, self.bank.capacity)
        self._rows_cache = None  # _run_deferred's (ids, front-end rows, bank rows) of the last read
        self._offs = np.zeros(0, np.int64)  # _run_deferred's sample offsets, grown geometrically
        if config.events.enabled and model.activation == "sigmoid":
            self.event_params = config.events
        self._fused = model.dtype == np.float32  # Bank.push_audio: the front end writes float32 frames

    def _run_one(self, sid: str, d: "_Deferred") -> tuple[dict, dict]:
        """One deferred block alone in its tick (a live source): front end and bank in one kernel
        call (a float32 model), else the two one-stream entries."""
        try:
            if self._fused:
                return {sid: self.bank.push_audio(self.features, d.fslot, d.bslot, d.x)}, {}
            return {sid: self.bank.push(sid, self.features.push_one(d.fslot, d.x))}, {}
        except StreamRNNError as e:
            return {}, {sid: e}

    def open(self, sid, content, rate, channels) -> StreamState:
        from streamrnn.audio.stream import FeatureStream

        m = self.model
        if content == "audio":
            if m.frontend is None:
                raise InputError(f"model {m.name or ''!s} takes feature frames ({m.input_size} "
                                 f"values per frame) but the stream carries audio")
            fb = self.features
            if channels == 1 and float(rate) == fb.sample_rate:
                self.bank.open(sid)
                fb.open(sid)
                self._rows_cache = None

                def close():
                    self._rows_cache = None  # the id may come back on other rows
                    self.bank.close(sid)
                    fb.close(sid)

                return _BankedState(fb, sid, int(self.bank.slots([sid])[0]), close)
            fe = FeatureStream(m.frontend, rate, history_seconds=PIPELINE_HISTORY)
        else:
            if channels != m.input_size:
                raise InputError(f"feature frames have {channels} values but the model takes {m.input_size}")
            fe = None
        self.bank.open(sid)
        return StreamState(fe, rate, lambda: self.bank.close(sid))

    def run(self, frames: dict) -> tuple[dict, dict]:
        if len(frames) == 1:  # one stream in the tick (a live source): straight to its one kernel call
            (sid, f), = frames.items()
            if type(f) is _Deferred and f.shape[0]:
                return self._run_one(sid, f)
        todo = {sid: f for sid, f in frames.items() if f.shape[0]}
        if not todo:
            return {}, {}
        deferred = {sid: f for sid, f in todo.items() if type(f) is _Deferred}
        if not deferred:
            return self._run_frames(todo)
        outs, errors = self._run_deferred(deferred)
        if len(deferred) < len(todo):
            more, errors2 = self._run_frames({sid: f for sid, f in todo.items() if type(f) is not _Deferred})
            outs.update(more)
            errors.update(errors2)
        return outs, errors

    def _run_deferred(self, deferred: dict) -> tuple[dict, dict]:
        """The tick's deferred blocks: one front-end call (``FeatureBank.push_rows``) writes every
        stream's frames into one block, which one bank call (``Bank.push_rows``) takes as it is."""
        items = list(deferred.values())
        n = len(items)
        if n == 1:  # one stream with audio (beside feature-frame streams)
            return self._run_one(*next(iter(deferred.items())))
        ids = list(deferred)
        c = self._rows_cache  # the streams with data are often last read's: their slot arrays again
        if c is not None and c[0] == ids:
            fslots, bslots = c[1], c[2]
        else:  # dropped by every open and close (ModelProcessor.open, _BankedState's close)
            fslots = np.fromiter(map(_FSLOT, items), np.int64, n)
            bslots = np.fromiter(map(_BSLOT, items), np.int64, n)
            self._rows_cache = (ids, fslots, bslots)
        xs = list(map(_X, items))
        offs = self._offs
        if offs.shape[0] < n + 1:
            offs = self._offs = np.zeros(max(2 * (n + 1), 64), np.int64)
        offs = offs[:n + 1]
        np.cumsum(np.fromiter(map(len, xs), np.int64, n), out=offs[1:])
        try:  # prepare checked every block (finite, mono) and open checked the slots: no checks again
            frames, fo, t, tmax = self.features._push_rows(fslots, np.concatenate(xs), offs, reuse=True)
            if frames.dtype != self.bank.model.dtype:  # a float64 model
                frames = frames.astype(self.bank.model.dtype)
            y = self.bank._push_rows(bslots, frames, fo, t, tmax)
        except StreamRNNError as e:  # cannot happen (prepare refused non-finite blocks): skip the tick, said
            return {}, dict.fromkeys(deferred, e)
        ends = fo.tolist()
        return {sid: y[a:b] for sid, a, b in zip(ids, ends, ends[1:])}, {}

    def _run_frames(self, todo: dict) -> tuple[dict, dict]:
        try:
            return self.bank.push_many(todo), {}
        except StreamRNNError:  # one bad stream: run them one by one so the others go on
            outs, errors = {}, {}
            for sid, f in todo.items():
                try:
                    outs[sid] = self.bank.push(sid, f)
                except StreamRNNError as e:
                    errors[sid] = e
            return outs, errors

    def labels(self, n: int):
        return list(self.model.labels) if self.model.labels else [f"y{j}" for j in range(n)]

    def describe(self, state) -> dict:
        m = self.model
        desc = {"name": m.name, "cell": m.cell, "input_size": m.input_size, "hidden_size": m.hidden_size,
                "num_layers": m.num_layers, "output_size": m.output_size, "activation": m.activation}
        if m.delay:
            desc["delay"] = m.delay  # frames: preds arrive that late, indexed by their own frame
        return {"n": m.output_size, "model": desc}

    def warm_up(self, rates, block_seconds: float | None = None) -> None:
        m = self.model
        # a cold cache: the front end compiles in a helper process meanwhile (None: cached, or no front end)
        helper = compile_front_end_elsewhere(m.frontend, rates, block_seconds) if m.frontend else None
        # the bank's kernel (not a Stream's: the pipeline never runs one; 2 s of first compile)
        st = self.open("_warm_up", "features", 100.0, m.input_size)
        self.run({"_warm_up": np.zeros((4, m.input_size), np.float32)})
        st.close()
        if helper is not None:
            try:
                helper.wait(timeout=300)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
        if m.frontend is not None:
            super().warm_up(rates, block_seconds)  # the front end's kernels (from the cache the helper filled)
        if self.event_params is not None:
            n = m.output_size
            EventDetector(self.labels(n), self.event_params, 100.0).push(np.zeros((2, n), np.float32))


class FeatureProcessor(Processor):
    """The front end alone: each audio stream's features are its output rows."""

    kind, content = wire.DATA, "features"

    def __init__(self, frontend):
        self.frontend = frontend

    def open(self, sid, content, rate, channels) -> StreamState:
        from streamrnn.audio.stream import FeatureStream

        if content != "audio":
            raise InputError(f"the features command needs audio, got {content!r}")
        return StreamState(FeatureStream(self.frontend, rate, history_seconds=PIPELINE_HISTORY))

    def run(self, frames: dict) -> tuple[dict, dict]:
        return frames, {}

    def describe(self, state) -> dict:
        return {"n": state.fe.n_features, "frontend": self.frontend.to_dict()}


@dataclass
class StreamSlot:
    """All carried state of one stream (input bookkeeping, processor, events, output seqs)."""

    stream: str
    in_epoch: int
    key: tuple
    proc: StreamState
    detector: EventDetector | None
    out_epoch: int = field(default_factory=new_epoch)
    out_desc: dict = field(default_factory=dict)
    seqs: dict = field(default_factory=lambda: {k: 0 for k in wire.KIND_NAMES})
    pending_flags: int = 0
    samples: int = 0        # input rows pushed into proc since the last reset
    frames: int = 0         # model (or front-end) frames produced since the last reset; a model with
    #                         look-ahead D emits the row of frame k once frame k + D is in: frames - D rows
    last_t_capture: float = 0.0
    last_pred_t: float = -math.inf  # t_capture of the last plausible pred: the next one is never earlier
    last_out: float = 0.0   # monotonic time of the last pred/data message
    last_in: float = field(default_factory=time.monotonic)  # monotonic time of the last input chunk
    frame0: int = 0         # frame of the producer's clock the slot's first frame is (a lost start: > 0)

    def next_seq(self, kind: int) -> int:
        s = self.seqs[kind]
        self.seqs[kind] = s + 1
        return s


class Pipeline:
    """Runs one source into sinks through a ``Processor`` (``ModelProcessor`` or ``FeatureProcessor``;
    ``model=`` is short for ``ModelProcessor(model, config)``)."""

    def __init__(self, source: Source | None, sinks: list, processor: Processor | None = None, *, model=None,
                 config: StreamConfig | None = None, stats: Stats | None = None):
        self.config = config or StreamConfig()
        if processor is None:
            if model is None:
                raise ConfigError("a processor (or a model) is needed")
            processor = ModelProcessor(model, self.config)
        self.source, self.sinks, self.processor = source, list(sinks), processor
        self.stats = stats if stats is not None else (source.stats if source is not None else Stats())
        self.slots: dict[str, StreamSlot] = {}
        self._readers_gone = False  # every sink's reader closed its pipe: stop quietly
        self._stats_seq = 0
        self._bad_streams = RecentIds(1024)  # streams already named in the log (bounded)
        self._stats_epoch = new_epoch()
        self._outputs = wire.Outputs(self.processor.kind)  # this tick's pred/data messages, not yet written
        self._latency_from: list[float] = []  # the t_capture of each plausible one among them
        # a lone block of a banked stream goes straight to Bank.push_audio (_process_lone)
        self._lone = type(self.processor) is ModelProcessor and self.processor._fused and self.processor.features is not None

    # --- output ------------------------------------------------------------------------------
    def _sink_call(self, s, method: str, *args) -> None:
        try:
            getattr(s, method)(*args)
        except BrokenPipeError:
            # The reader went away (`streamrnn stream ... | head`): not a failure. Drop that
            # sink; when none is left, end the run normally (exit 0), like any Unix filter.
            log.info("sink %s: reader closed the pipe; sink closed", s.describe())
            self.sinks.remove(s)
            if s.writes_stdout:
                try:  # later flushes of the dead stdout (here and at interpreter exit) go nowhere
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                except (OSError, ValueError):
                    pass
            if not self.sinks:
                self._readers_gone = True
        except OSError as e:
            # A broken file sink (disk full, removed mount) must not stop the others.
            log.error("sink %s failed and is closed: %s", s.describe(), e)
            self.stats.count("sink_errors", type(s).__name__)
            self.sinks.remove(s)
            try:
                s.close()
            except OSError:
                pass
            if not self.sinks:
                raise StreamRNNError(f"every sink failed (last: {s.describe()}: {e})") from None

    def _emit(self, m: wire.Message) -> None:
        if self._outputs.rows:  # the outputs before it go first: every sink sees the messages in order
            self._write_outputs()
        m.t_send = time.time()
        for s in list(self.sinks):
            self._sink_call(s, "write", m)
        self.stats.add("messages_out")

    def _write_outputs(self) -> None:
        """Hand the tick's pred/data messages to every sink at once (``Sink.write_outputs``), all with
        one send time."""
        out, lat = self._outputs, self._latency_from
        self._outputs, self._latency_from = wire.Outputs(out.kind), []
        out.t_send = t = time.time()
        for s in list(self.sinks):
            if hasattr(s, "write_outputs"):
                self._sink_call(s, "write_outputs", out)
            else:  # a sink with write alone
                for m in out.messages():
                    self._sink_call(s, "write", m)
        self.stats.add("messages_out", len(out))
        self.stats.add("frames_out", sum([r[-1].shape[0] for r in out.rows]))
        if lat:  # the source counted the data whose times are not plausible (implausible_time)
            # a live tick's one or two values as Python floats (the same float64 differences): no NumPy
            # call, which costs tens of microseconds on the cold caches after each sleep
            self.stats.latency_many([t - v for v in lat] if len(lat) < 64 else t - np.array(lat))

    def _make_out_desc(self, slot: StreamSlot, ch: Chunk) -> dict:
        extra = self.processor.describe(slot.proc)
        n = extra.pop("n")
        extra["input"] = {"epoch": ch.epoch, "content": ch.content, "rate": ch.rate,
                          "channels": int(ch.data.shape[1])}
        return wire.descriptor(slot.stream, slot.out_epoch, self.processor.content, "float32", n,
                               slot.proc.frame_rate, labels=self.processor.labels(n), **extra)

    def _send_desc(self, slot):
        self._emit(wire.Message(wire.DESC, slot.stream, epoch=slot.out_epoch,
                                seq=slot.next_seq(wire.DESC), sample_index=slot.frame0 + slot.frames,
                                t_capture=slot.last_t_capture, meta=slot.out_desc))

    # --- streams -----------------------------------------------------------------------------
    def _open_slot(self, ch: Chunk, key) -> StreamSlot | None:
        if ch.stream == STATS_STREAM:
            self.stats.count("bad", "stream_id")
            return None
        try:
            proc = self.processor.open(ch.stream, ch.content, ch.rate, key[2])
        except StreamRNNError as e:
            self.stats.count("bad", "content")
            if self._bad_streams.add(ch.stream):
                log.warning("stream %s skipped: %s", ch.stream, e)
            return None
        pp = self.processor
        det = (EventDetector(pp.labels(pp.describe(proc)["n"]), pp.event_params, proc.frame_rate)
               if pp.event_params is not None else None)
        slot = StreamSlot(ch.stream, ch.epoch, key, proc, det)
        if ch.sample_index > 0 or ch.seq > 0:
            # The stream's start was lost (a subscription not yet live, this server restarted, an idle
            # close): its state starts afresh mid-stream, so the first outputs carry reset (and the
            # source's gap); outputs and events stay on the producer's sample clock: frame k of the
            # slot is frame frame0 + k of the stream.
            slot.frame0 = min(int(ch.sample_index * proc.frame_rate / ch.rate), MAX_FRAME0)
            slot.pending_flags |= wire.FLAG_RESET
        slot.out_desc = self._make_out_desc(slot, ch)
        slot.last_t_capture = ch.t_capture
        self.slots[ch.stream] = slot
        self.stats.add("streams_opened")
        log.info("stream %s: %s at %g/s -> %s", ch.stream, ch.content, ch.rate, slot.out_desc["content"])
        self._send_desc(slot)
        return slot

    def _close_slot(self, slot: StreamSlot, reason: str) -> None:
        if slot.detector is not None:
            self._send_events(slot, slot.detector.flush(), slot.last_t_capture)
        self._emit(wire.Message(wire.EOS, slot.stream, flags=wire.FLAG_END, epoch=slot.out_epoch,
                                seq=slot.next_seq(wire.EOS), sample_index=slot.frame0 + slot.frames,
                                t_capture=slot.last_t_capture))
        self.slots.pop(slot.stream, None)
        slot.proc.close()  # frees the stream's bank slot
        log.info("stream %s closed (%s) after %d frames", slot.stream, reason, slot.frames)

    def _send_events(self, slot, events, t_capture):
        for ev in events:
            ev = dict(ev, stream=slot.stream)
            if slot.frame0:  # on the producer's clock (a lost start)
                ev["frame"] += slot.frame0
                ev["time"] = ev["frame"] / slot.proc.frame_rate
                if "start_frame" in ev:
                    ev["start_frame"] += slot.frame0
                    ev["start_time"] = ev["start_frame"] / slot.proc.frame_rate
            self._emit(wire.Message(wire.EVENT, slot.stream, epoch=slot.out_epoch,
                                    seq=slot.next_seq(wire.EVENT), sample_index=ev["frame"],
                                    t_capture=t_capture, meta=ev))
            self.stats.count("events", ev["event"])

    def process(self, ch: Chunk) -> None:
        """Run one chunk through its stream's state and emit the outputs."""
        self.process_many([ch])

    def process_many(self, chunks) -> None:
        """Run chunks (of any streams) through their streams' states and emit the outputs.

        Each chunk goes through its own stream's front end; then one bank call advances the
        model of every stream that has new frames, so the weights are read once for all of
        them.  A stream that appears twice is split into successive bank calls, keeping order.
        """
        if len(chunks) == 1 and self._lone:  # a live source's block: the lean path when nothing changes
            ch = chunks[0]
            slot = self.slots.get(ch.stream)
            if (slot is not None and type(slot.proc) is _BankedState and not ch.end and ch.data.shape[0]
                    and ch.data.dtype.kind == "f" and not self._input_changed(slot, ch, self._input_key(ch))):
                return self._process_lone(slot, ch)
        batch: dict[str, tuple] = {}
        for ch in chunks:
            if ch.stream in batch:
                self._run_model(batch)
            item = self._prepare(ch)
            if item is not None:
                batch[ch.stream] = item
        self._run_model(batch)

    def _process_lone(self, slot: StreamSlot, ch: Chunk) -> None:
        """``process_many([ch])`` for a block of an open banked stream (``_BankedState``) of a float32
        model, with no reset, no end and float samples (a live source's every block): the same
        bookkeeping, outputs, events and stats, in fewer calls: no batch, no deferred block, and no
        separate NaN/Inf check (``Bank.push_audio`` finds NaN/Inf itself and computes nothing; the
        block is then refused as ``_BankedState.prepare`` refuses it).  A paced stream pays every
        distinct Python function and Numba dispatch on cold caches after each sleep."""
        x = ch.data[:, 0]  # (n, 1), the sources' layout: a view
        n = x.shape[0]
        self._note_input(slot, ch)
        s0, proc = slot.samples, slot.proc
        try:
            y = self.processor.bank.push_audio(proc.features, proc.fslot, proc.bslot, x)
        except AudioError as e:  # NaN/Inf samples (push_audio's only AudioError): nothing computed
            self._block_refused(ch, n, e)
            return
        except StreamRNNError as e:
            self._block_taken(slot, n)
            self._model_failed(ch.stream, n, e)
            return
        self._block_taken(slot, n)
        if y.shape[0]:
            self._emit_output(slot, ch, y, s0, time.time())
        if self._outputs.rows:
            self._write_outputs()

    @staticmethod
    def _input_key(ch: Chunk) -> tuple:
        """What the producer sends (its descriptor's content, rate, channels, dtype): a change resets."""
        return ch.content, float(ch.rate), int(ch.data.shape[1]), (ch.desc or {}).get("dtype")

    @staticmethod
    def _input_changed(slot: StreamSlot, ch: Chunk, key: tuple) -> bool:
        return slot.in_epoch != ch.epoch or slot.key != key or bool(ch.flags & wire.FLAG_RESET)

    @staticmethod
    def _note_input(slot: StreamSlot, ch: Chunk) -> None:
        slot.pending_flags |= ch.flags & (wire.FLAG_GAP | wire.FLAG_OVERFLOW)
        slot.last_in = time.monotonic()

    def _block_taken(self, slot: StreamSlot, n: int) -> None:
        slot.samples += n
        self.stats.add("frames_in", n)

    def _block_refused(self, ch: Chunk, n: int, e: StreamRNNError) -> None:
        self.stats.count("bad", "input")
        log.warning("stream %s: block of %d rows skipped: %s", ch.stream, n, e)

    def _model_failed(self, sid: str, n: int, e: StreamRNNError) -> None:
        self.stats.count("bad", "input")
        log.warning("stream %s: %d frames skipped: %s", sid, n, e)

    def _prepare(self, ch: Chunk):
        """Stream bookkeeping and the front end for one chunk: (slot, chunk, frames, s0) or None."""
        key = self._input_key(ch)
        slot = self.slots.get(ch.stream)
        reset = False
        if slot is not None and self._input_changed(slot, ch, key):
            # The producer restarted (new epoch) or changed what it sends: the old state is
            # meaningless for the new audio. End the old output stream and start afresh.
            self._close_slot(slot, "input reset")
            self.stats.count("resets", "epoch" if slot.in_epoch != ch.epoch else
                             "descriptor" if slot.key != key else "flag")
            slot, reset = None, True
        if slot is None:
            if ch.data.shape[0] == 0 and ch.end:
                return None
            slot = self._open_slot(ch, key)
            if slot is None:
                self.stats.count("drops", "bad_stream", ch.data.shape[0])
                return None
            if reset:
                slot.pending_flags |= wire.FLAG_RESET
        self._note_input(slot, ch)
        n = ch.data.shape[0]
        s0 = slot.samples
        frames = None
        if n:
            try:
                frames = slot.proc.prepare(ch.data)  # the stream's front end (if any)
            except StreamRNNError as e:
                self._block_refused(ch, n, e)
            else:
                self._block_taken(slot, n)
        return slot, ch, frames, s0

    def _run_model(self, batch: dict) -> None:
        """One bank call for every prepared stream with frames, then emit each stream's outputs."""
        outs, errors = self.processor.run({sid: it[2] for sid, it in batch.items() if it[2] is not None})
        for sid, e in errors.items():
            self._model_failed(sid, batch[sid][2].shape[0], e)
        now = time.time()  # one clock reading for the tick's outputs (their plausibility)
        for sid, (slot, ch, _, s0) in batch.items():
            y = outs.get(sid)
            if y is not None and y.shape[0]:
                self._emit_output(slot, ch, y, s0, now)
            if ch.end:
                self._close_slot(slot, "end of stream")
        batch.clear()
        if self._outputs.rows:
            self._write_outputs()

    def _emit_output(self, slot: StreamSlot, ch: Chunk, y, s0: int, now: float) -> None:
        """Queue ``y`` (the stream's new output rows) for the tick's write, and feed its events; ``now``:
        the tick's time.time(), which judges the capture time plausible."""
        t = y.shape[0]
        k0 = slot.frames
        # Capture time of the newest input row the last output row depends on (at most the newest row
        # received: a resampler's look-ahead is an estimate; and not after its message arrived: a
        # producer that stamps a block with the time it sends it puts its later rows in the future).
        s_end = min(slot.proc.frame_end_sample(k0 + t - 1), slot.samples)
        t_cap = ch.t_capture + (s_end - 1 - s0) / ch.rate
        if not math.isfinite(t_cap):  # never publish a non-finite time (rates are bounded: cannot happen)
            t_cap = ch.t_capture
        if ch.time_ok:
            t_cap = min(t_cap, ch.t_arrival)
        # judged on arrival by the source
        plausible = ch.time_ok and 0.0 <= now - t_cap <= MAX_AGE
        if plausible:
            # Monotonic on any input: a producer replaying faster than real time stamps each block
            # "now minus its duration", so the rows of consecutive blocks overlap in time, and a
            # resampler's output (16000.5 Hz) ends at a different row of each block.
            t_cap = max(t_cap, slot.last_pred_t)
            slot.last_pred_t = t_cap
        slot.last_t_capture = t_cap
        slot.frames += t
        # Look-ahead: the row computed at frame k answers for frame k - D, so it is reported with that
        # frame's index (audio clock); the first D rows answer for no frame and are not emitted.
        delay = self.processor.delay
        skip = min(t, max(0, delay - k0))
        if skip == t:
            return
        if skip:
            y = y[skip:]
        kind = self.processor.kind
        # written with the tick's other outputs (_write_outputs), before any other message
        self._outputs.append(ch.stream, slot.pending_flags, slot.out_epoch, slot.next_seq(kind),
                             slot.frame0 + k0 + skip - delay, t_cap, ch.seq, np.ascontiguousarray(y, dtype=np.float32))
        slot.pending_flags = 0
        if plausible:
            self._latency_from.append(t_cap)
        slot.last_out = time.monotonic()
        if slot.detector is not None:
            self._send_events(slot, slot.detector.push(y), t_cap)

    def close_all(self, reason: str) -> None:
        """End every open stream: open segments end (events), each gets its end-of-stream message."""
        for slot in list(self.slots.values()):
            self._close_slot(slot, reason)

    # --- periodic --------------------------------------------------------------------------------
    def _periodic_desc(self):
        now = time.monotonic()
        if self.config.idle_timeout:
            self.source.reap_idle(self.config.idle_timeout)  # announced streams that never sent data
        for slot in list(self.slots.values()):
            if self.config.idle_timeout and now - slot.last_in >= self.config.idle_timeout:
                # A producer gone without an end-of-stream: free its state; if it comes back
                # (after its next descriptor) it starts a new output stream.
                self._close_slot(slot, "idle")
                self.stats.count("closed", "idle")
                self.source.forget(slot.stream)
                continue
            self._send_desc(slot)
            if now - slot.last_out >= self.config.desc_interval:
                self._emit(wire.Message(wire.HEARTBEAT, slot.stream, epoch=slot.out_epoch,
                                        seq=slot.next_seq(wire.HEARTBEAT), sample_index=slot.frame0 + slot.frames,
                                        t_capture=slot.last_t_capture))

    def stats_snapshot(self, roll=True) -> dict:
        streams = {s.stream: {"epoch": s.out_epoch, "input_epoch": s.in_epoch, "frames_in": s.samples,
                              "frames_out": s.frames} for s in self.slots.values()}
        return self.stats.snapshot({"format": wire.FORMAT, "streams": streams}, roll=roll)

    def summary(self) -> str:
        """The run's stats for humans (the CLI prints it on stderr at exit)."""
        return self.stats.summary(latency_note=self.source.latency_note())

    def _send_stats(self):
        seq = self._stats_seq
        self._stats_seq += 1
        self._emit(wire.Message(wire.STATS, STATS_STREAM, epoch=self._stats_epoch, seq=seq,
                                t_capture=time.time(), meta=self.stats_snapshot()))

    # --- lifecycle -------------------------------------------------------------------------------
    def warm_up(self, rate: float | None = None) -> float:
        """Compile (or load from cache) every kernel before real data arrives; returns seconds.

        Loading the cached kernels takes well under a second; when a kernel has to be compiled
        (first run on this machine, or after an upgrade) ``streamrnn.compiling`` logs one warning
        saying so, instead of a silent wait.
        """
        t0 = time.perf_counter()
        # an unknown input rate (ZeroMQ sources): also load the resampler, for streams at other rates
        # a paced source (microphone, a real-time file or the demo) delivers block_ms blocks, a few
        # frames each: the front end's tiled kernel (big blocks) is not compiled for it
        paced = getattr(self.source, "paced", False)
        self.processor.warm_up([float(rate)] if rate else [16000.0, 48000.0],
                               self.config.block_ms / 1000 if paced else None)
        dt = time.perf_counter() - t0
        log.info("warm-up (kernel compile/cache load) took %.3f s", dt)
        return dt

    def tick_seconds(self) -> float:
        """Seconds between two reads of the source (``StreamConfig.tick_ms``; its default None: the
        source's ``default_tick_ms``: ``DEFAULT_TICK_MS`` for a ZeroMQ source, whose many streams'
        messages arrive one by one, and 0 for a single-stream source, which returns a block when one
        is due: a wait would only delay it).

        >>> import streamrnn
        >>> m = streamrnn.Model.random("gru", input_size=3, hidden_size=8, output_size=1)
        >>> Pipeline(None, [], model=m, config=StreamConfig(tick_ms=5)).tick_seconds()
        0.005
        """
        ms = self.config.tick_ms
        if ms is None:
            ms = self.source.default_tick_ms if self.source is not None else 0.0
        return ms / 1000

    def run(self, stop: threading.Event | None = None, on_ready=None, on_tick=None) -> Stats:
        """Open everything, loop until the source ends, ``duration`` passes or ``stop`` is set.

        On exit (any of those) open segments are ended, every stream gets an
        end-of-stream message, a last stats message is sent and sinks are flushed.
        ``on_tick(now)`` (monotonic s), if given, is called in the loop's thread after every read
        (at least every 50 ms plus the tick), between chunks: where ``streamrnn serve``'s workers snapshot.
        A multi-stream source is read at most once per ``tick_seconds()`` (``StreamConfig.tick_ms``):
        the messages of many streams that arrive within a tick take one wake-up and one bank call;
        a read that stopped at its limits with more waiting (``source.backlog``) is followed at once;
        ``stats`` counts ``reads`` (reads that returned data) and the ``read_chunks`` they returned.
        """
        cfg = self.config
        stop = stop or threading.Event()
        opened = []
        try:
            for s in self.sinks:  # first: a busy port fails before any waiting
                s.open()
                opened.append(s)
            # Compile before the source opens, so a microphone's first blocks never wait for the JIT.
            self.warm_up(self.source.expected_rate)
            self.source.open()
            if on_ready is not None:
                on_ready(self)
            t_start = time.monotonic()
            t_desc = t_start + cfg.desc_interval
            t_stats = t_start + cfg.stats_interval
            tick = self.tick_seconds()
            t_read = -math.inf  # monotonic s of the last read's return
            while not stop.is_set() and not self._readers_gone:
                if tick and not self.source.backlog:
                    # At most one read per tick: what arrived meanwhile is read at once (one wake-up, one
                    # bank call for every stream); stop.wait ends the wait as soon as stop is set.  A read
                    # that stopped at its limits (a backlog) is followed by the next one at once.
                    wait = t_read + tick - time.monotonic()
                    if wait > 0 and stop.wait(wait):
                        break
                chunks = self.source.read(0.05)  # short timeout: signals act within 50 ms
                now = t_read = time.monotonic()
                if chunks:
                    self.stats.add("reads")
                    self.stats.add("read_chunks", len(chunks))
                    self.process_many(chunks)
                    now = time.monotonic()
                if on_tick is not None:
                    on_tick(now)
                if now >= t_desc:
                    self._periodic_desc()
                    for s in list(self.sinks):  # files readable (tail -f) within a second
                        self._sink_call(s, "flush")
                    t_desc = now + cfg.desc_interval
                if now >= t_stats:
                    self._send_stats()
                    t_stats = now + cfg.stats_interval
                if cfg.duration and now - t_start >= cfg.duration:
                    log.info("duration of %g s reached", cfg.duration)
                    break
                if self.source.exhausted:
                    break
            self.close_all("shutdown")
            self._send_stats()
            for s in list(self.sinks):
                self._sink_call(s, "flush")
        finally:
            try:
                self.source.close()
            finally:
                for s in opened:
                    if s not in self.sinks:
                        continue  # already closed when it failed
                    try:
                        s.close()
                    except OSError as e:
                        log.error("closing sink %s failed: %s", s.describe(), e)
                        self.stats.count("sink_errors", type(s).__name__)
        return self.stats
