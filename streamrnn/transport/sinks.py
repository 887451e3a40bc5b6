"""Sinks: where predictions, events and stats go.

URIs (``open_sink``): ``stdout``, ``jsonl:PATH``, ``csv:PATH``, ``zmq+pub://HOST:PORT``,
``zmq+push://HOST:PORT`` (and ``zmq+pub+ipc://PATH``, ``zmq+push+ipc://PATH``), ``null``.

Every sink gets every output ``wire.Message`` (``write``) from the pipeline's
thread, a tick's pred/data messages at once (``write_outputs``, a ``wire.Outputs``: by
default ``write`` of each), and keeps what it shows: ZeroMQ sinks send all of them (streamrnn/1);
text sinks write one line per prediction row and per event, plus descriptors
(when they change) and end-of-stream lines.

Text sinks (``stdout``, ``jsonl:``, ``csv:``) write the records of ``records.Records``, whose
layout (schema version ``records.SCHEMA``) is documented in ``docs/formats.md``::

    {"v":1,"type":"pred","stream":"mic0","epoch":12,"frame":41,"time":0.41,"t_capture":1700000000.12,"seq":3,"flags":[],"y":[0.93]}
    {"v":1,"type":"event","stream":"mic0","epoch":12,"seq":0,"event":"start","label":"speech","frame":30,"time":0.3,...}
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from pathlib import Path

from streamrnn.config import StreamConfig
from streamrnn.errors import ConfigError
from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.records import CSV_TYPES, Records, csv_header, csv_row, values_key
from streamrnn.transport.endpoints import (RateLimitedLog, ZmqSocketOwner, hwm_messages, is_zmq_uri, open_socket,
                                           parse_zmq_uri, wait_for_subscribers)

log = logging.getLogger(__name__)


class Sink:
    """Base class: ``open()``, ``write(msg)``, ``flush()``, ``close()`` from one thread."""

    uri: str | None = None  # the URI it was built from (open_sink), what the start-up line names

    def __init__(self, stats: Stats | None = None):
        self.stats = stats if stats is not None else Stats()

    def open(self) -> None:
        pass

    def write(self, m: wire.Message) -> None:
        raise NotImplementedError

    def write_outputs(self, batch: wire.Outputs) -> None:
        """The pred/data messages of one tick (``wire.Outputs``): each to ``write`` unless a sink
        takes them at once."""
        for m in batch.messages():
            self.write(m)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.flush()

    def describe(self) -> str:
        return type(self).__name__

    @property
    def writes_stdout(self) -> bool:
        """Whether this sink writes the process's standard output (whose reader may go away)."""
        return False


class NullSink(Sink):
    """``null``: discards everything (benchmarks, or stats only)."""

    def write(self, m):
        pass

    def write_outputs(self, batch):
        pass


class RecordFile:
    """A text file written in whole records (lines), for the jsonl and csv sinks.

    ``write(text)`` takes complete records only and buffers them (``limit`` bytes); ``flush()``
    writes the buffer with ``os.write`` until done.  When a write fails (disk full, a file size
    limit), the file is truncated back to the end of the last record written completely (the
    records of the buffer that did fit stay) and the error is raised: the file never ends in a
    partial line, whatever the failing write left.
    """

    def __init__(self, path, limit: int = 1 << 16):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._buf: list[str] = []
        self._n = 0  # characters buffered
        self._limit = limit
        self._good = 0  # bytes on disk that end with a complete record

    def write(self, text: str) -> None:
        self._buf.append(text)
        self._n += len(text)
        if self._n >= self._limit:
            self.flush()

    def flush(self) -> None:
        if not self._buf or self._fd is None:
            return
        data = "".join(self._buf).encode("utf-8")
        self._buf.clear()
        self._n = 0
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, memoryview(data)[done:])
        except OSError:
            # keep the complete records the failing flush did write, cut the partial one
            keep = self._good + data.rfind(b"\n", 0, done) + 1
            try:  # (not possible on /dev/full and such: nothing to undo there)
                os.ftruncate(self._fd, keep)
                os.lseek(self._fd, keep, os.SEEK_SET)
                self._good = keep
            except OSError:
                pass
            raise
        self._good = os.lseek(self._fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)


class _TextSink(Sink):
    """Shared bookkeeping of text sinks: the records (``records.Records``) of what they show."""

    SHOWN = (wire.PRED, wire.DATA, wire.EVENT, wire.DESC, wire.EOS)  # not stats or heartbeats

    def __init__(self, stats=None):
        super().__init__(stats)
        self.rec = Records()
        self._f = None
        self._own = True  # close the file at the end (False for stdout)

    def shows(self, m: wire.Message) -> bool:
        """Outputs only (array messages going out), each descriptor once until it changes."""
        if m.kind not in self.SHOWN or (m.kind == wire.DATA and m.direction != "out"):
            return False
        return m.kind != wire.DESC or self.rec.desc(m) != m.meta

    def records(self, m: wire.Message):
        if self.shows(m):
            yield from self.rec.make(m)

    def flush(self):
        if self._f is not None:
            self._f.flush()

    def close(self):
        f, self._f = self._f, None
        if f is not None:
            try:
                f.flush()
            finally:
                if self._own:
                    f.close()


class JsonLinesSink(_TextSink):
    """``jsonl:PATH`` (or stdout with ``json=True``): one JSON object per line."""

    writes_stdout = property(lambda self: self._f is sys.stdout)

    def __init__(self, path=None, stats=None, stream=None):
        super().__init__(stats)
        self.path = Path(path) if path is not None else None
        self._f = stream
        self._own = False

    def open(self):
        if self.path is not None:
            try:
                self._f = RecordFile(self.path)  # whole lines only, even when the disk fills up
            except OSError as e:
                raise ConfigError(f"cannot write {str(self.path)!r}: {e.strerror}") from None
            self._own = True
        elif self._f is None:
            self._f = sys.stdout

    def write(self, m):
        if self.shows(m):
            self._f.write(self.rec.lines(m))
        if m.kind == wire.EOS:  # a finished stream is complete on disk
            self._f.flush()

    def write_outputs(self, batch):
        """A tick's predictions written from their rows (``Records.pred_lines``), without a ``Message``
        per row (a live stream pays each Python call on cold caches after every sleep): the bytes
        ``write`` writes for each; a row with NaN/Inf or no values sends the tick to ``write``."""
        if batch.kind != wire.PRED:
            return super().write_outputs(batch)
        lines = self.rec.pred_lines
        texts = [lines(*row) for row in batch.rows]
        if None in texts:
            return super().write_outputs(batch)
        self._f.write("".join(texts))

    def describe(self):
        return f"JSON lines to {self.path or 'stdout'}"


class CsvSink(_TextSink):
    """``csv:PATH``: one row per prediction (or feature) frame, per event and per end of stream, in the
    columns of ``records.CSV_COLUMNS`` then one per output value (docs/formats.md)."""

    def __init__(self, path, stats=None):
        super().__init__(stats)
        self.path = Path(path)
        self._f = self._w = None
        self._n = None  # values per row, fixed by the header

    def open(self):
        try:
            self._f = RecordFile(self.path)  # csv.writer writes one whole row per write call
        except OSError as e:
            raise ConfigError(f"cannot write {str(self.path)!r}: {e.strerror}") from None
        self._w = csv.writer(self._f)

    def write(self, m):
        for r in self.records(m):
            t = r["type"]
            if t not in CSV_TYPES:
                continue
            if self._n is None:  # the header, from the first row's values or the descriptor's width
                d = self.rec.desc(m)
                vals = r.get(values_key(t)) if t in ("pred", "features") else None
                self._n = len(vals) if vals is not None else len(d.get("labels") or ()) or int(d.get("channels") or 0)
                rtype = t if t in ("pred", "features") else d.get("content", "pred")
                self._w.writerow(csv_header(d, rtype, self._n))
            self._w.writerow(csv_row(r, self._n))

    def describe(self):
        return f"CSV to {self.path}"


class TerminalSink(_TextSink):
    """``stdout`` on a TTY: a live line (time, probability, bar) and one line per event."""

    BAR = 20
    MIN_INTERVAL = 0.05  # s between live-line redraws (20 per second is plenty for eyes)
    writes_stdout = property(lambda self: self.out is sys.stdout)

    def __init__(self, stats=None, out=None):
        super().__init__(stats)
        self.out = out or sys.stdout
        self._last = 0.0
        self._live = False

    def _line(self, text):
        self.out.write("\r\x1b[K" + text)
        self._live = True

    def write(self, m):
        for r in self.records(m):
            if r["type"] in ("pred", "features"):
                now = time.monotonic()
                if now - self._last < self.MIN_INTERVAL:
                    continue
                self._last = now
                labels = self.rec.desc(m).get("labels") or []
                y = r[values_key(r["type"])]
                j = max(range(len(y)), key=lambda i: y[i]) if len(y) > 1 else 0
                p = y[j]
                lab = labels[j] if j < len(labels) else f"y{j}"
                fill = int(round(max(0.0, min(1.0, p)) * self.BAR))
                t = r["time"] if r["time"] is not None else r["frame"]
                self._line(f"{m.stream} {t:9.2f} s  {lab:<10} {p:6.3f} |{'#' * fill}{' ' * (self.BAR - fill)}|")
            elif r["type"] == "event":
                if self._live:
                    self.out.write("\r\x1b[K")
                extra = f" ({r['duration']:.2f} s)" if r["event"] == "end" else ""
                self.out.write(f"{r['stream']} {r['time']:9.2f} s  {r['label']} {r['event']}{extra}\n")
                self._live = False
            elif r["type"] == "eos":
                self.out.write(("\n" if self._live else "") + f"{r['stream']} end of stream\n")
                self._live = False
        self.out.flush()

    def close(self):
        if self._live:
            self.out.write("\n")
        self.out.flush()


class ZmqSink(ZmqSocketOwner, Sink):
    """``zmq+pub://`` (binds) or ``zmq+push://`` (connects): every message in streamrnn/1.

    Sends never block: a push sink with no peer or a full queue drops the message
    and counts it in ``drops[hwm]``; a pub sink's slow subscribers lose messages
    inside libzmq at their high-water mark (about ``hwm_seconds`` of output).
    """

    def __init__(self, uri, stats=None, hwm_seconds=2.0, msgs_per_second=200.0, curve=None):
        super().__init__(stats)
        self.ep = parse_zmq_uri(uri, allowed=("pub", "push"))
        self.hwm = hwm_messages(msgs_per_second, hwm_seconds)
        self.curve = curve
        self._sock = None
        self._warn_hwm = RateLimitedLog(log)

    def open(self):
        import zmq

        self._zmq = zmq
        self._sock = open_socket(zmq.Context.instance(), self.ep, hwm=self.hwm, curve=self.curve)
        if self.ep.wait_subscribers:  # ?wait_subscribers=N: listeners started first see the first message
            wait_for_subscribers(self._sock, self.ep)

    def write(self, m):
        m.t_send = time.time() if not m.t_send else m.t_send
        self._send(wire.encode(m))

    def write_outputs(self, batch):
        """One tick's pred/data messages: the headers packed together (``wire.Outputs.encode``), then
        each message sent on its own, as ``write`` sends it."""
        batch.t_send = batch.t_send or time.time()
        for frames in batch.encode():
            self._send(frames)

    def _send(self, frames):
        # send_multipart's loop without its per-call overhead (2.3 us of a 3 us send): every frame
        # NOBLOCK, all but the last SNDMORE; libzmq takes a message whole or refuses its first frame
        send, zmq = self._sock.send, self._zmq
        more = int(zmq.NOBLOCK) | int(zmq.SNDMORE)
        try:
            for f in frames[:-1]:
                send(f, more)
            send(frames[-1], int(zmq.NOBLOCK))
        except zmq.Again:
            self.stats.count("drops", "hwm")
            self._warn_hwm(f"{self.describe()}: queue full ({self.hwm} messages, hwm_seconds) or no peer: "
                           f"messages dropped (counted in drops.hwm)")



def open_sink(uri: str, config: StreamConfig | None = None, *, stats=None, curve=None) -> Sink:
    """Build the sink named by ``uri`` (not yet opened) with the settings of ``config`` (json,
    hwm_seconds; default ``StreamConfig()``); ConfigError for an unknown URI."""
    sink = _build_sink(uri, config or StreamConfig(), stats, curve)
    sink.uri = uri
    return sink


def _build_sink(uri: str, c: StreamConfig, stats, curve) -> Sink:
    if uri == "stdout":
        if c.json or not sys.stdout.isatty():
            return JsonLinesSink(stats=stats)
        return TerminalSink(stats=stats)
    if uri == "null":
        return NullSink(stats)
    if uri.startswith("jsonl:") and len(uri) > 6:
        return JsonLinesSink(uri[6:], stats=stats)
    if uri.startswith("csv:") and len(uri) > 4:
        return CsvSink(uri[4:], stats=stats)
    if is_zmq_uri(uri):
        return ZmqSink(uri, stats=stats, hwm_seconds=c.hwm_seconds, curve=curve)
    raise ConfigError(f"unknown sink {uri!r}: use stdout, jsonl:PATH, csv:PATH, zmq+pub://HOST:PORT, "
                      f"zmq+push://HOST:PORT (or zmq+pub+ipc://PATH, zmq+push+ipc://PATH), null")
