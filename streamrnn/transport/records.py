"""Text records: the one layout of every text output (``docs/formats.md``).

``stream`` and ``features`` (sinks ``stdout``, ``jsonl:``, ``csv:``) and ``listen`` all write the
records made here, schema version ``SCHEMA`` (the ``"v"`` field of every JSON record, the ``v``
column of CSV).  A prediction or feature message becomes one record per row (frame); events,
descriptors, end-of-stream, stats and heartbeats one record per message; ``listen`` adds the wire
fields and the records of malformed messages.

>>> import numpy as np
>>> from streamrnn.transport import wire
>>> rec = Records()
>>> _ = list(rec.make(wire.Message(wire.DESC, "mic0", meta=wire.descriptor("mic0", 0, "pred", "float32", 1, 100.0))))
>>> m = wire.Message(wire.PRED, "mic0", sample_index=41, data=np.array([[0.5]], np.float32))
>>> [(r["type"], r["frame"], r["time"], r["y"]) for r in rec.make(m)]
[('pred', 41, 0.41, [0.5])]
"""

from __future__ import annotations

import json
import math
from itertools import chain, repeat
from operator import truediv

from streamrnn.transport import wire

_json_str = json.encoder.encode_basestring_ascii  # what json.dumps(str) returns (ensure_ascii)

SCHEMA = 1  # bump with any change a reader of version 1 would misread (docs/formats.md, "Versions")

# CSV: these columns, then one per output value (named by the descriptor's labels, else y0.. / x0..)
CSV_COLUMNS = ("v", "type", "stream", "epoch", "frame", "time", "t_capture", "seq", "flags",
               "event", "label", "probability", "start_time", "duration", "reason")
CSV_TYPES = ("pred", "features", "event", "eos")  # desc, stats and hb records stay out of CSV


def row_type(m: wire.Message, desc: dict) -> str:
    """The record type of an array message's rows: ``pred`` (model outputs), ``features`` or
    ``audio`` (a data message, by its stream's descriptor ``desc``; ``data`` when none was seen)."""
    if m.kind == wire.PRED:
        return "pred"
    content = desc.get("content")
    return content if content in ("features", "audio") else "data"


def values_key(rtype: str) -> str:
    """``y`` for model outputs, ``x`` for features, samples and other data."""
    return "y" if rtype == "pred" else "x"


class Records:
    """Makes the records of messages; keeps each stream's latest descriptor per direction (an
    input's and an output's differ; its rate gives ``time``, its content a data message's type).

    ``make(m)`` yields the record dicts of one message; ``wire=True`` adds ``direction``,
    ``topic``, ``t_send`` and ``ref_seq`` (what ``listen`` shows), ``with_data=False`` drops the
    values (``y``/``x``) and keeps their count (``n``)."""

    def __init__(self, wire_fields: bool = False, with_data: bool = True):
        self.descs: dict[tuple[str, str], dict] = {}  # (direction, stream) -> descriptor
        self.wire_fields = wire_fields
        self.with_data = with_data

    def _head(self, m: wire.Message, rtype: str) -> dict:
        d = {"v": SCHEMA, "type": rtype, "stream": m.stream, "epoch": m.epoch}
        if self.wire_fields:
            d.update(direction=m.direction, topic=m.topic, t_send=m.t_send, ref_seq=m.ref_seq)
        return d

    def desc(self, m: wire.Message) -> dict:
        """The latest descriptor of ``m``'s stream in ``m``'s direction ({} if none yet)."""
        return self.descs.get((m.direction, m.stream)) or {}

    def make(self, m: wire.Message):
        if m.kind == wire.DESC:
            self.descs[(m.direction, m.stream)] = m.meta
            yield {**self._head(m, "desc"), **m.meta}
        elif m.kind in wire.ARRAY_KINDS:
            yield from self.rows(m)
        elif m.kind == wire.EVENT:
            yield {**self._head(m, "event"), "seq": m.seq, **m.meta}
        elif m.kind == wire.EOS:
            yield {**self._head(m, "eos"), "frames": m.sample_index, "flags": m.flag_names()}
        elif m.kind == wire.STATS:
            yield {**self._head(m, "stats"), "t_capture": m.t_capture, "stats": m.meta}
        elif m.kind == wire.HEARTBEAT:
            yield {**self._head(m, "hb"), "seq": m.seq, "t_capture": m.t_capture}

    def rows(self, m: wire.Message):
        """One record per row of an array message: frame index, time (s; None without a rate),
        capture time, seq, flags (on the first row) and the values."""
        rtype = row_type(m, self.desc(m))
        rate = float(self.desc(m).get("rate") or 0) or None
        key = values_key(rtype)
        flags = m.flag_names()
        head = self._head(m, rtype)
        if rtype == "audio":  # samples: one record per block, not one per sample
            yield {**head, "frame": m.sample_index, "time": round(m.sample_index / rate, 6) if rate else None,
                   "t_capture": m.t_capture, "seq": m.seq, "flags": flags, "n": m.data.shape[0],
                   **({key: m.data.tolist()} if self.with_data else {})}
            return
        for i, row in enumerate(m.data.tolist()):
            k = m.sample_index + i
            r = {**head, "frame": k, "time": round(k / rate, 6) if rate else None, "t_capture": m.t_capture,
                 "seq": m.seq, "flags": flags if i == 0 else []}
            if self.with_data:
                r[key] = row
            else:
                r["n"] = len(row)
            yield r

    def lines(self, m: wire.Message) -> str:
        """The JSON lines of ``make(m)`` (compact separators), fast for prediction and feature rows."""
        if m.kind in wire.ARRAY_KINDS and not self.wire_fields and self.with_data:
            rtype = row_type(m, self.desc(m))
            if rtype in ("pred", "features") and m.data.size and _finite(m.data):
                return row_lines(m, self.desc(m), rtype)
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in self.make(m))


    def pred_lines(self, stream: str, flags: int, epoch: int, seq: int, sample_index: int, t_capture: float,
                   ref_seq: int, data) -> str | None:
        """``lines`` of an outgoing prediction message given by its fields (a ``wire.Outputs`` row, no
        ``Message`` built), or None where ``lines`` would take its ``json.dumps`` path (values not
        finite, no values, wire fields, no data): the caller then builds the message."""
        if self.wire_fields or not self.with_data or not data.size or not _finite(data):
            return None
        return _row_lines(stream, epoch, sample_index, t_capture, seq, flags, data,
                          self.descs.get(("out", stream)) or {}, "pred")


def _finite(a) -> bool:
    # one reduction, no temporary: NaN/Inf make the sum non-finite; a finite sum that overflows
    # only sends the rows down the slow (json.dumps) path, which writes the same bytes
    return math.isfinite(a.sum())


def bad_record(reason: str, error: str) -> dict:
    """The record ``listen`` writes for a message it refused (reason: one of ``wire.REASONS``)."""
    return {"v": SCHEMA, "type": "bad", "reason": reason, "error": error}


def row_lines(m: wire.Message, desc: dict, rtype: str = "pred") -> str:
    """The JSON lines of ``Records().rows(m)`` (``desc``: the stream's descriptor, {} if none), byte
    for byte what ``json.dumps`` writes for each record.

    Built column by column with C-level ``map``/``zip`` and one %-template per row (no Python
    bytecode per row): the per-row ``json.dumps`` was half of the whole pipeline's CPU time on a
    long file, and a per-row f-string loop still a quarter.  Only for finite values (json spells
    NaN/Inf differently from repr)."""
    return _row_lines(m.stream, m.epoch, m.sample_index, m.t_capture, m.seq, m.flags, m.data, desc, rtype)


def _row_lines(stream: str, epoch: int, sample_index: int, t: float, seq: int, flag_bits: int, data, desc: dict,
               rtype: str) -> str:
    """``row_lines`` of a message given by its fields."""
    rate = float(desc.get("rate") or 0) or None
    n = data.shape[0]
    # json.dumps of a str is encode_basestring_ascii of it, of a finite float its repr: the same
    # bytes without json.dumps's Python layers (this runs per message: 50 a second for a live stream)
    head = '{"v":%d,"type":"%s","stream":%s,"epoch":%d,"frame":' % (SCHEMA, rtype, _json_str(stream), epoch)
    mid = ',"t_capture":%s,"seq":%d,"flags":' % (float.__repr__(t) if math.isfinite(t) else json.dumps(t), seq)
    row = (head.replace("%", "%%") + '%d,"time":%s' + mid.replace("%", "%%")
           + '%s,"' + values_key(rtype) + '":[%s]}\n')
    frames = range(sample_index, sample_index + n)
    if rate is None:
        times = repeat("null", n)
    else:  # repr(round(k / rate, 6)), as json.dumps writes the record's float
        times = map(repr, map(round, map(truediv, frames, repeat(rate)), repeat(6)))
    first = json.dumps(wire.flag_names(flag_bits), separators=(",", ":")) if flag_bits else "[]"
    flags = chain((first,), repeat("[]", n - 1))
    cols = data.T.tolist()  # (O, n) Python floats: repr of each is what json.dumps writes
    if len(cols) == 1:
        ys = map(repr, cols[0])
    elif cols:
        ys = map(",".join, zip(*(map(repr, c) for c in cols)))
    else:  # no columns
        ys = repeat("", n)
    return "".join(map(row.__mod__, zip(frames, times, flags, ys)))


def csv_header(desc: dict | None, rtype: str, n_values: int) -> list[str]:
    """The CSV header: ``CSV_COLUMNS`` then one column per value (the descriptor's labels for
    predictions, else ``y0``.. / ``x0``..)."""
    labels = (desc or {}).get("labels") if rtype == "pred" else None
    if not labels or len(labels) != n_values:
        labels = [f"{values_key(rtype)}{j}" for j in range(n_values)]
    return [*CSV_COLUMNS, *labels]


def csv_row(r: dict, n_values: int) -> list:
    """One CSV row of a record (types in ``CSV_TYPES``): the record's fields under ``CSV_COLUMNS``
    (empty where it has none; an end of stream's frame count in ``frame``), then its values."""
    t = r["type"]
    vals = r.get(values_key(t)) or [""] * n_values if t in ("pred", "features") else [""] * n_values
    out = []
    for c in CSV_COLUMNS:
        v = r.get("frames") if (c == "frame" and t == "eos") else r.get(c)
        if c == "flags":
            v = "|".join(v or ())
        elif c == "t_capture" and v is not None:
            v = f"{v:.6f}"
        out.append("" if v is None else v)
    return out + [f"{v:.7g}" if isinstance(v, float) else v for v in vals]
