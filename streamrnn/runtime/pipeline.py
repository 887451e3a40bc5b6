"""The one real-time loop: source -> (front end) -> model stream -> events -> sinks.

Everything runs in the thread that calls ``Pipeline.run``: the source's
sockets and the sinks' sockets are created, used and closed there. Per stream,
a ``StreamSlot`` in ``Pipeline.slots`` owns all carried state (processor =
front end + hidden state, event machines, output sequence numbers); a batched
bank can replace the processors later without changing the loop.

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

import dataclasses
import logging
import os
import sys
import threading
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrnn.config import convert, read_toml
from streamrnn.errors import ConfigError, StreamRNNError
from streamrnn.runtime.events import EventDetector, EventParams
from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.sources import Chunk, Source, new_epoch

log = logging.getLogger(__name__)

STATS_STREAM = "_stats"  # reserved stream id of the process-wide stats messages


# --- configuration -------------------------------------------------------------------------------
LIMITS = {                              # upper bounds of StreamConfig values (docs/operations.md)
    "max_streams": 4096,                # streams: each holds a model state and a resampler
    "max_message_bytes": 256 * 2**20,   # bytes: libzmq's MAXMSGSIZE is twice this
    "max_model_bytes": 4 * 2**30,       # bytes
    "queue_seconds": 60.0,              # s of microphone audio held in memory
    "hwm_seconds": 60.0,                # s of messages queued per ZeroMQ socket
    "channels": 64,
    "rate": 1_000_000,                  # Hz
}

# Seconds of warm-up after which the user is told that the kernels are compiling (a warm
# start loads them from the on-disk cache in about 0.5 s).
COMPILE_NOTICE_AFTER = 2.0
COMPILE_NOTICE = ("compiling the Numba kernels (first run on this machine or after an upgrade, about 20 s); "
                  "they are cached on disk and later starts take under a second")


@dataclass(frozen=True)
class StreamConfig:
    """Options of ``streamrnn stream`` / ``features``; precedence CLI > STREAMRNN_* env > TOML > these."""

    model: str | None = None            # model file or bundled name
    source: str = "mic"                 # source URI (see transport.sources)
    sink: tuple[str, ...] = ("stdout",)  # sink URIs (see transport.sinks)
    stream_id: str | None = None        # id of a single-stream source (default mic0, file0, stdin0, demo0)
    duration: float = 0.0               # s of wall-clock time to run; 0 = until the source ends or a signal
    rate: int = 16000                   # Hz: stdin sample rate; microphone rate
    format: str = "s16le"               # stdin sample format: s16le | f32le
    channels: int = 1                   # stdin / microphone channels
    block_ms: float = 20.0              # ms of audio per block read from mic, file, stdin
    realtime: bool | None = None        # pace file sources like a live microphone; None: the demo yes, files no
    json: bool = False                  # JSON lines on stdout even on a terminal
    events: bool = True                 # hysteresis events for sigmoid outputs
    on_threshold: float = 0.5           # probability that starts a segment
    off_threshold: float = 0.35         # probability below which a segment may end
    min_on: float = 0.1                 # s: shortest segment
    min_off: float = 0.2                # s: shortest gap (shorter dips are bridged)
    max_segment: float = 30.0           # s: longest segment before it is cut
    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES  # bytes: larger messages are refused
    max_streams: int = 64               # concurrent streams of a ZeroMQ source
    idle_timeout: float = 0.0           # s without data after which a stream is closed; 0 = never
    threads: int = 1                    # Numba threads sharing the bank's model step (1: single-threaded)
    queue_seconds: float = 2.0          # s of audio the microphone queue holds before dropping the oldest
    hwm_seconds: float = 2.0            # s of messages each ZeroMQ socket queues
    stats_interval: float = 1.0         # s between stats messages (kind 7)
    desc_interval: float = 1.0          # s between repeated descriptors (and heartbeats)
    max_model_bytes: int = 256 * 2**20  # bytes: larger model files are refused before reading
    curve_secret_key: str | None = None  # CurveZMQ key pair (.key_secret): binding sockets encrypt
    curve_server_key: str | None = None  # server's public key (.key): connecting sockets encrypt
    curve_allow: str | None = None      # directory of client public keys (*.key) a binding socket accepts

    def event_params(self) -> EventParams:
        return EventParams(self.on_threshold, self.off_threshold, self.min_on, self.min_off,
                           self.max_segment).validate()

    def validate(self) -> "StreamConfig":
        if self.duration < 0:
            raise ConfigError(f"duration must be >= 0 s, got {self.duration}")
        if self.format not in ("s16le", "f32le"):
            raise ConfigError(f"format {self.format!r} is not s16le or f32le")
        for k, lo in (("rate", 1), ("channels", 1), ("max_streams", 1), ("max_message_bytes", 128),
                      ("max_model_bytes", 8)):
            if getattr(self, k) < lo:
                raise ConfigError(f"{k} must be >= {lo}, got {getattr(self, k)}")
        for k, hi in LIMITS.items():  # hard caps: each bounds memory a config typo could exhaust
            if getattr(self, k) > hi:
                raise ConfigError(f"{k} = {getattr(self, k)} is above the limit of {hi}")
        if self.threads != 1:
            from streamrnn.nn.parallel import check_threads

            check_threads(self.threads)
        if self.idle_timeout < 0:
            raise ConfigError(f"idle_timeout must be >= 0 s (0 = never), got {self.idle_timeout}")
        for k in ("block_ms", "queue_seconds", "hwm_seconds", "stats_interval", "desc_interval"):
            if not getattr(self, k) > 0:
                raise ConfigError(f"{k} must be > 0, got {getattr(self, k)}")
        if not self.sink:
            raise ConfigError("at least one sink is needed")
        self.event_params()
        return self


def _field_types():
    hints = typing.get_type_hints(StreamConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(StreamConfig)}


def _coerce(name: str, value, tp, origin: str):
    """Convert a TOML/env/option value to the field's type (``config.convert``, shared with the
    training configs); the ConfigError also names where the value came from."""
    try:
        return convert(value, tp, name)
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}") from None


def load_stream_config(path=None, env=None, overrides: dict | None = None) -> StreamConfig:
    """Merge defaults < TOML file ``path`` < ``STREAMRNN_*`` env < ``overrides`` (non-None values).

    Unknown TOML keys are errors (they are usually typos).
    """
    fields = _field_types()
    values: dict = {}
    if path is not None:
        p = Path(path)
        data = read_toml(p)
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"config {str(p)!r}: unknown key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(fields)})")
        for k, v in data.items():
            values[k] = _coerce(k, v, fields[k], f"config {p}")
    env = os.environ if env is None else env
    for k, tp in fields.items():
        ev = env.get("STREAMRNN_" + k.upper())
        if ev is not None and ev != "":
            values[k] = _coerce(k, ev, tp, f"environment STREAMRNN_{k.upper()}")
    for k, v in (overrides or {}).items():
        if k not in fields:
            raise ConfigError(f"unknown option {k!r}")
        if v is None or (isinstance(v, tuple) and not v):
            continue
        values[k] = _coerce(k, v, fields[k], f"option --{k.replace('_', '-')}")
    return StreamConfig(**values).validate()


# --- processors: what turns one stream's input rows into output rows ---------------------
class BankProcessor:
    """One stream's share of the pipeline's model bank: its own front end (for audio) and
    one slot of the bank, which every stream's frames advance together (``Pipeline._run_model``).

    ``features(x)`` turns input rows into model frames; ``push(x)`` does that and runs the
    model for this stream alone.  Frame k depends on input rows up to ``frame_end_sample(k)``.
    """

    def __init__(self, bank, sid: str, fe=None, frame_rate: float | None = None):
        self.bank, self.sid, self.fe = bank, sid, fe
        self.frame_rate = float(fe.frame_rate if fe is not None else frame_rate)
        self.n_outputs = bank.model.output_size
        bank.open(sid)

    def features(self, x):
        return self.fe.push(x) if self.fe is not None else x

    def push(self, x):
        f = self.features(x)
        if f.shape[0] == 0:
            return np.zeros((0, self.n_outputs), np.float32)
        return self.bank.push(self.sid, f)

    def reset(self):
        if self.fe is not None:
            self.fe.reset()
        self.bank.reset(self.sid)

    def close(self):
        self.bank.close(self.sid)

    def frame_end_sample(self, k: int) -> int:
        return self.fe.frame_end_sample(k) if self.fe is not None else k + 1


def make_processor(mode: str, model, frontend, content: str, rate: float, channels: int, bank=None,
                   sid: str = ""):
    """The processor for one stream, or InputError/ShapeError if the content does not fit."""
    from streamrnn.errors import InputError
    from streamrnn.audio.stream import FeatureStream

    if mode == "features":
        if content != "audio":
            raise InputError(f"the features command needs audio, got {content!r}")
        return FeatureStream(frontend, rate)
    if content == "audio":
        if model.frontend is None:
            raise InputError(f"model {model.name or ''!s} takes feature frames ({model.input_size} "
                             f"values per frame) but the stream carries audio")
        fe = FeatureStream(model.frontend, rate)
    else:
        if channels != model.input_size:
            raise InputError(f"feature frames have {channels} values but the model takes {model.input_size}")
        fe = None
    if bank is None:
        bank = model.bank(1)
    return BankProcessor(bank, sid, fe, rate)


@dataclass
class StreamSlot:
    """All carried state of one stream (input bookkeeping, processor, events, output seqs)."""

    stream: str
    in_epoch: int
    key: tuple
    proc: object
    detector: EventDetector | None
    out_epoch: int = field(default_factory=new_epoch)
    out_desc: dict = field(default_factory=dict)
    seqs: dict = field(default_factory=lambda: {k: 0 for k in wire.KIND_NAMES})
    pending_flags: int = 0
    samples: int = 0        # input rows pushed into proc since the last reset
    frames: int = 0         # output rows produced since the last reset
    last_t_capture: float = 0.0
    last_out: float = 0.0   # monotonic time of the last pred/data message
    last_in: float = field(default_factory=time.monotonic)  # monotonic time of the last input chunk
    last_ref_seq: int = 0

    def next_seq(self, kind: int) -> int:
        s = self.seqs[kind]
        self.seqs[kind] = s + 1
        return s


class Pipeline:
    """Runs one source into sinks through a model (``mode="pred"``) or a front end (``"features"``)."""

    def __init__(self, source: Source | None, sinks: list, model=None, frontend=None,
                 config: StreamConfig | None = None, stats: Stats | None = None, mode: str = "pred"):
        if mode not in ("pred", "features"):
            raise ConfigError(f"mode {mode!r} is not pred or features")
        if mode == "pred" and model is None:
            raise ConfigError("a model is needed to stream predictions")
        if mode == "features" and frontend is None:
            raise ConfigError("a front end is needed to stream features")
        self.source, self.sinks, self.model, self.frontend, self.mode = source, list(sinks), model, frontend, mode
        self.config = config or StreamConfig()
        self.stats = stats if stats is not None else (source.stats if source is not None else Stats())
        self.slots: dict[str, StreamSlot] = {}
        self._readers_gone = False  # every sink's reader closed its pipe: stop quietly
        # Every stream's hidden state lives in one bank: one kernel call per read advances them all.
        self.bank = (model.bank(max(1, int(self.config.max_streams)), self.config.threads)
                     if mode == "pred" else None)
        self._events = (mode == "pred" and self.config.events and model.activation == "sigmoid")
        self._event_params = self.config.event_params() if self._events else None
        self._stats_seq = 0
        self._bad_streams: set[str] = set()
        self._stats_epoch = new_epoch()

    # --- output ------------------------------------------------------------------------------
    def _sink_call(self, s, method: str, *args) -> None:
        try:
            getattr(s, method)(*args)
        except BrokenPipeError:
            # The reader went away (`streamrnn stream ... | head`): not a failure. Drop that
            # sink; when none is left, end the run normally (exit 0), like any Unix filter.
            log.info("sink %s: reader closed the pipe; sink closed", s.describe())
            self.sinks.remove(s)
            if sys.stdout in (getattr(s, "_f", None), getattr(s, "out", None)):
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
        m.t_send = time.time()
        for s in list(self.sinks):
            self._sink_call(s, "write", m)
        self.stats.add("messages_out")

    def _labels(self, n: int):
        if self.mode == "pred" and self.model.labels:
            return list(self.model.labels)
        return [f"y{j}" for j in range(n)] if self.mode == "pred" else None

    def _make_out_desc(self, slot: StreamSlot, ch: Chunk) -> dict:
        p = slot.proc
        if self.mode == "pred":
            m = self.model
            n = m.output_size
            extra = {"model": {"name": m.name, "cell": m.cell, "input_size": m.input_size,
                               "hidden_size": m.hidden_size, "num_layers": m.num_layers,
                               "output_size": n, "activation": m.activation}}
            content = "pred"
        else:
            n = p.n_features
            extra = {"frontend": self.frontend.to_dict() if hasattr(self.frontend, "to_dict") else self.frontend}
            content = "features"
        extra["input"] = {"epoch": ch.epoch, "content": ch.content, "rate": ch.rate,
                          "channels": int(ch.data.shape[1])}
        return wire.descriptor(slot.stream, slot.out_epoch, content, "float32", n, p.frame_rate,
                               labels=self._labels(n), **extra)

    def _send_desc(self, slot):
        self._emit(wire.Message(wire.DESC, slot.stream, epoch=slot.out_epoch,
                                seq=slot.next_seq(wire.DESC), sample_index=slot.frames,
                                t_capture=slot.last_t_capture, meta=slot.out_desc))

    # --- streams -----------------------------------------------------------------------------
    def _open_slot(self, ch: Chunk, key) -> StreamSlot | None:
        if ch.stream == STATS_STREAM:
            self.stats.count("bad", "stream_id")
            return None
        try:
            proc = make_processor(self.mode, self.model, self.frontend, ch.content, ch.rate, key[2],
                                  self.bank, ch.stream)
        except StreamRNNError as e:
            self.stats.count("bad", "content")
            if ch.stream not in self._bad_streams:
                self._bad_streams.add(ch.stream)
                log.warning("stream %s skipped: %s", ch.stream, e)
            return None
        det = (EventDetector(self._labels(self.model.output_size), self._event_params, proc.frame_rate)
               if self._events else None)
        slot = StreamSlot(ch.stream, ch.epoch, key, proc, det)
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
                                seq=slot.next_seq(wire.EOS), sample_index=slot.frames,
                                t_capture=slot.last_t_capture, ref_seq=slot.last_ref_seq))
        self.slots.pop(slot.stream, None)
        close = getattr(slot.proc, "close", None)
        if close is not None:
            close()  # frees the stream's bank slot
        log.info("stream %s closed (%s) after %d frames", slot.stream, reason, slot.frames)

    def _send_events(self, slot, events, t_capture):
        for ev in events:
            ev = dict(ev, stream=slot.stream)
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
        batch: dict[str, tuple] = {}
        for ch in chunks:
            if ch.stream in batch:
                self._run_model(batch)
            item = self._prepare(ch)
            if item is not None:
                batch[ch.stream] = item
        self._run_model(batch)

    def _prepare(self, ch: Chunk):
        """Stream bookkeeping and the front end for one chunk: (slot, chunk, frames, s0) or None."""
        key = (ch.content, float(ch.rate), int(ch.data.shape[1]))
        slot = self.slots.get(ch.stream)
        reset = False
        if slot is not None and (slot.in_epoch != ch.epoch or slot.key != key or ch.flags & wire.FLAG_RESET):
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
        slot.pending_flags |= ch.flags & (wire.FLAG_GAP | wire.FLAG_OVERFLOW)
        slot.last_ref_seq = ch.seq
        slot.last_in = time.monotonic()
        n = ch.data.shape[0]
        s0 = slot.samples
        frames = None
        if n:
            try:
                # features mode: the front end's frames are the output; pred: the model's input
                frames = slot.proc.push(ch.data) if self.mode == "features" else slot.proc.features(ch.data)
            except StreamRNNError as e:
                self.stats.count("bad", "input")
                log.warning("stream %s: block of %d rows skipped: %s", ch.stream, n, e)
            else:
                slot.samples += n
                self.stats.add("frames_in", n)
        return slot, ch, frames, s0

    def _run_model(self, batch: dict) -> None:
        """One bank call for every prepared stream with frames, then emit each stream's outputs."""
        if self.mode == "pred":
            todo = {sid: it[2] for sid, it in batch.items() if it[2] is not None and it[2].shape[0]}
            outs = {}
            if todo:
                try:
                    outs = self.bank.push_many(todo)
                except StreamRNNError:  # one bad stream: run them one by one so the others go on
                    for sid, f in todo.items():
                        try:
                            outs[sid] = self.bank.push(sid, f)
                        except StreamRNNError as e:
                            self.stats.count("bad", "input")
                            log.warning("stream %s: %d frames skipped: %s", sid, f.shape[0], e)
        else:
            outs = {sid: it[2] for sid, it in batch.items() if it[2] is not None}
        for sid, (slot, ch, _, s0) in batch.items():
            y = outs.get(sid)
            if y is not None and y.shape[0]:
                self._emit_output(slot, ch, y, s0)
            if ch.end:
                self._close_slot(slot, "end of stream")
        batch.clear()

    def _emit_output(self, slot: StreamSlot, ch: Chunk, y, s0: int) -> None:
        t = y.shape[0]
        k0 = slot.frames
        # Capture time of the newest input row the last output row depends on.
        s_end = slot.proc.frame_end_sample(k0 + t - 1)
        t_cap = ch.t_capture + (s_end - 1 - s0) / ch.rate
        slot.last_t_capture = t_cap
        kind = wire.PRED if self.mode == "pred" else wire.DATA
        m = wire.Message(kind, ch.stream, flags=slot.pending_flags, epoch=slot.out_epoch,
                         seq=slot.next_seq(kind), sample_index=k0, t_capture=t_cap,
                         ref_seq=ch.seq, data=np.ascontiguousarray(y, dtype=np.float32))
        slot.pending_flags = 0
        slot.frames += t
        self._emit(m)
        self.stats.latency(m.t_send - t_cap)
        self.stats.add("frames_out", t)
        slot.last_out = time.monotonic()
        if slot.detector is not None:
            self._send_events(slot, slot.detector.push(y), t_cap)

    # --- periodic --------------------------------------------------------------------------------
    def _periodic_desc(self):
        now = time.monotonic()
        for slot in list(self.slots.values()):
            if self.config.idle_timeout and now - slot.last_in >= self.config.idle_timeout:
                # A producer gone without an end-of-stream: free its state; if it comes back
                # (after its next descriptor) it starts a new output stream.
                self._close_slot(slot, "idle")
                self.stats.count("closed", "idle")
                forget = getattr(self.source, "forget", None)
                if forget is not None:
                    forget(slot.stream)
                continue
            self._send_desc(slot)
            if now - slot.last_out >= self.config.desc_interval:
                self._emit(wire.Message(wire.HEARTBEAT, slot.stream, epoch=slot.out_epoch,
                                        seq=slot.next_seq(wire.HEARTBEAT), sample_index=slot.frames,
                                        t_capture=slot.last_t_capture))

    def stats_snapshot(self, roll=True) -> dict:
        streams = {s.stream: {"epoch": s.out_epoch, "input_epoch": s.in_epoch, "frames_in": s.samples,
                              "frames_out": s.frames} for s in self.slots.values()}
        return self.stats.snapshot({"format": wire.FORMAT, "streams": streams}, roll=roll)

    def _send_stats(self):
        seq = self._stats_seq
        self._stats_seq += 1
        self._emit(wire.Message(wire.STATS, STATS_STREAM, epoch=self._stats_epoch, seq=seq,
                                t_capture=time.time(), meta=self.stats_snapshot()))

    # --- lifecycle -------------------------------------------------------------------------------
    def warm_up(self, rate: float | None = None) -> float:
        """Compile (or load from cache) every kernel before real data arrives; returns seconds.

        Loading the cached kernels takes well under a second; if the warm-up is still running
        after ``COMPILE_NOTICE_AFTER`` seconds, the kernels are being compiled (first run on
        this machine, or after an upgrade), and a warning says so instead of a silent wait.
        """
        notice = threading.Timer(COMPILE_NOTICE_AFTER, log.warning, (COMPILE_NOTICE,))
        notice.daemon = True
        notice.start()
        try:
            return self._warm_up(rate)
        finally:
            notice.cancel()

    def _warm_up(self, rate: float | None) -> float:
        t0 = time.perf_counter()
        # an unknown input rate (ZeroMQ sources): also load the resampler, for streams at other rates
        rates = [float(rate)] if rate else [16000.0, 48000.0]
        if self.mode == "features" or (self.model is not None and self.model.frontend is not None):
            for r in rates:
                p = make_processor(self.mode, self.model, self.frontend, "audio", r, 1)
                # 0.5 s of quiet noise: enough samples for several frames through every kernel.
                x = np.random.default_rng(0).standard_normal((int(r // 2), 1)).astype(np.float32) * 1e-3
                p.push(x)
        if self.model is not None:
            self.model.stream().push(np.zeros((4, self.model.input_size), np.float32))
        if self._events:
            n = self.model.output_size
            EventDetector(self._labels(n), self._event_params, 100.0).push(np.zeros((2, n), np.float32))
        dt = time.perf_counter() - t0
        log.info("warm-up (kernel compile/cache load) took %.3f s", dt)
        return dt

    def run(self, stop: threading.Event | None = None, on_ready=None) -> Stats:
        """Open everything, loop until the source ends, ``duration`` passes or ``stop`` is set.

        On exit (any of those) open segments are ended, every stream gets an
        end-of-stream message, a last stats message is sent and sinks are flushed.
        """
        cfg = self.config
        stop = stop or threading.Event()
        opened = []
        try:
            for s in self.sinks:  # first: a busy port fails before any waiting
                s.open()
                opened.append(s)
            # Compile before the source opens, so a microphone's first blocks never wait for the JIT.
            self.warm_up(getattr(self.source, "expected_rate", None))
            self.source.open()
            if on_ready is not None:
                on_ready()
            t_start = time.monotonic()
            t_desc = t_start + cfg.desc_interval
            t_stats = t_start + cfg.stats_interval
            while not stop.is_set() and not self._readers_gone:
                self.process_many(self.source.read(0.05))  # short timeout: signals act within 50 ms
                now = time.monotonic()
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
            for slot in list(self.slots.values()):
                self._close_slot(slot, "shutdown")
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
