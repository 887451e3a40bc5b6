#!/usr/bin/env python3
"""Write the `streamrnn/1` conformance vectors (docs/protocol-vectors/): two small fixed models and one
JSON file per case (the messages a producer sends, as hex, and what the server must publish and count).

Every message is packed here with ``struct`` straight from docs/protocol.md (not with
``streamrnn.transport.wire``), and every expected outcome is derived by hand from the document's
rules, written next to the messages; the published rows come from the plain-NumPy references of the
test suite (``tests/naive.py`` for the cells, ``tests/test_frontend.py``'s ``naive_features`` for the
log-mel front end), never from the server.  ``tests/test_protocol_vectors.py`` replays every case
against the real server.

    python tools/make_protocol_vectors.py            # rewrites docs/protocol-vectors/
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import naive  # noqa: E402  (tests/naive.py: the cells' plain-NumPy reference)
import streamrnn  # noqa: E402
from streamrnn.audio import LogMel  # noqa: E402
from test_frontend import naive_features  # noqa: E402

OUT = ROOT / "docs" / "protocol-vectors"
HEADER = struct.Struct("<4sBBBBIIQQQddQ")  # docs/protocol.md, "Header"
KINDS = {"data": 1, "pred": 2, "desc": 3, "hb": 4, "eos": 5, "event": 6, "stats": 7}
GAP, OVERFLOW, RESET, END = 1, 2, 4, 8
FEAT_RATE = 100.0   # frames/s of the features cases
T_BASE = -100.0     # s: the cases' capture times lie 100 s before the replay starts (plausible, never capped)
SERVERS = {  # how the test (and a client author) runs the server for each model's cases
    "features": ["--no-events", "--max-streams", "4", "--max-message-bytes", "4096"],
    "audio": ["--no-events"],
}


def header(kind, flags=0, n_rows=0, n_cols=0, epoch=1, seq=0, sample_index=0, t_capture=0.0, dtype=None,
           magic=b"SRNN", version=1):
    if dtype is None:
        dtype = 1 if kind in (1, 2) else 0
    return HEADER.pack(magic, version, kind, dtype, flags, n_rows, n_cols, epoch, seq, sample_index,
                       t_capture, 0.0, 0)


def desc_json(stream, epoch, content="features", channels=2, rate=FEAT_RATE, **over):
    d = {"format": "streamrnn/1", "stream": stream, "epoch": epoch, "content": content, "dtype": "float32",
         "channels": channels, "rate": rate, "labels": None}
    d.update(over)
    return d


class Case:
    """Messages in order, and the expected outputs, written by hand from the rules."""

    def __init__(self, name, about, model="features"):
        self.name, self.about, self.model = name, about, model
        self.messages, self.outputs, self.counters = [], {}, {}

    # --- what the producer sends ------------------------------------------------------------
    def raw(self, frames, note, t=None):
        m = {"note": note, "frames": [f.hex() for f in frames]}
        if t is not None:
            m["t_capture"] = t  # seconds after t0: the replayer writes t0 + t at header offset 40
        self.messages.append(m)
        return len(self.messages) - 1

    def desc(self, stream, epoch, note="descriptor", **kw):
        d = kw.pop("json", None) or desc_json(stream, epoch, **kw)
        return self.raw([f"in/{stream}/desc".encode(), header(3, epoch=epoch),
                         json.dumps(d).encode()], note)

    def data(self, stream, epoch, seq, idx, x, note="data", flags=0, rate=FEAT_RATE, t=None):
        x = np.ascontiguousarray(x, "<f4")
        return self.raw([f"in/{stream}/data".encode(),
                         header(1, flags, x.shape[0], x.shape[1], epoch, seq, idx),
                         x.tobytes()], note, T_BASE + idx / rate if t is None else t)

    def eos(self, stream, epoch, idx, note="end of stream", flags=END, seq=0):
        return self.raw([f"in/{stream}/eos".encode(), header(5, flags, epoch=epoch, seq=seq, sample_index=idx),
                         b""], note)

    # --- what the server must publish ---------------------------------------------------------
    def out(self, stream, kind, epoch, seq, sample_index, flags=(), **kw):
        o = {"kind": kind, "epoch": epoch, "seq": seq, "sample_index": sample_index, "flags": list(flags),
             "ref_seq": kw.pop("ref_seq", 0)}
        o.update(kw)
        self.outputs.setdefault(stream, []).append(o)

    def to_json(self):
        return {"name": self.name, "about": self.about, "model": self.model, "messages": self.messages,
                "expect": {"outputs": self.outputs, "counters": self.counters}}


def rows(model, x, h0=None):
    """Reference rows of a features model (float64 NumPy cells), and the state after them."""
    y, h, _ = naive.forward(model.cell, model.tensors(), x, model.num_layers, model.activation, h0=h0)
    return y, h


class FeatStream:
    """Bookkeeping of one features stream as the document states it, for writing expected outputs."""

    def __init__(self, case, model, stream, epoch, in_epoch_ordinal=0):
        self.c, self.m, self.s, self.epoch = case, model, stream, epoch
        self.out_epoch = in_epoch_ordinal
        self.h = None
        self.frames = 0      # frames of the current output stream
        self.frame0 = 0
        self.pred_seq = 0
        self.last_t = None

    def open(self, t_open, frame0=0, in_epoch=None):
        self.frame0, self.frames, self.pred_seq, self.h = frame0, 0, 0, None
        self.last_t = t_open
        self.c.out(self.s, "desc", self.out_epoch, 0, frame0, t_capture=t_open,
                   meta={"format": "streamrnn/1", "stream": self.s, "content": "pred", "dtype": "float32",
                         "channels": 1, "rate": FEAT_RATE, "labels": ["a"],
                         "input": {"epoch": self.epoch if in_epoch is None else in_epoch, "content": "features",
                                   "rate": FEAT_RATE, "channels": 2}})

    def consume(self, x, t_first, ref_seq, flags=()):
        y, self.h = rows(self.m, x, self.h)
        t = t_first + (len(x) - 1) / FEAT_RATE   # capture time of its newest row
        self.c.out(self.s, "pred", self.out_epoch, self.pred_seq, self.frame0 + self.frames, flags,
                   ref_seq=ref_seq, t_capture=t, rows=y.tolist())
        self.pred_seq += 1
        self.frames += len(x)
        self.last_t = t

    def close(self):
        self.c.out(self.s, "eos", self.out_epoch, 0, self.frame0 + self.frames, ["end"], t_capture=self.last_t)
        self.out_epoch += 1


def feature_cases(m):
    rng = np.random.default_rng(20)
    X = rng.standard_normal((400, 2)).astype(np.float32)
    cases = []

    def blk(i, n=10):
        return X[10 * i:10 * i + n]

    def t_of(idx):
        return T_BASE + idx / FEAT_RATE

    # basic: a descriptor, three blocks, an end of stream
    c = Case("basic", "A descriptor, three data blocks of 10 frames, eos: one desc, three preds, one eos.")
    s = FeatStream(c, m, "basic", 11)
    c.desc("basic", 11)
    s.open(t_of(0))
    for i in range(3):
        c.data("basic", 11, i, 10 * i, blk(i))
        s.consume(blk(i), t_of(10 * i), i)
    c.eos("basic", 11, 30)
    s.close()
    c.counters = {"streams_opened": 1, "frames_in": 30, "frames_out": 30}
    cases.append(c)

    # every reason of "Limits and malformed messages": a stream whose good blocks surround one bad message
    good = header(1, 0, 10, 2, 12, 1, 10)
    bad = {
        "frames": lambda sid: [f"in/{sid}/data".encode(), good],
        "too_large": lambda sid: [f"in/{sid}/data".encode(), header(1, 0, 600, 2, 12, 1, 10),
                                  np.zeros((600, 2), "<f4").tobytes()],   # 4800-byte payload > 4096
        "header_size": lambda sid: [f"in/{sid}/data".encode(), good[:63], blk(1).tobytes()],
        "magic": lambda sid: [f"in/{sid}/data".encode(), header(1, 0, 10, 2, 12, 1, 10, magic=b"SRNX"),
                              blk(1).tobytes()],
        "version": lambda sid: [f"in/{sid}/data".encode(), header(1, 0, 10, 2, 12, 1, 10, version=2),
                                blk(1).tobytes()],
        "kind": lambda sid: [f"in/{sid}/data".encode(), header(9, 0, 10, 2, 12, 1, 10, dtype=1), blk(1).tobytes()],
        "dtype": lambda sid: [f"in/{sid}/data".encode(), header(1, 0, 10, 2, 12, 1, 10, dtype=3), blk(1).tobytes()],
        "flags": lambda sid: [f"in/{sid}/data".encode(), header(1, 0x10, 10, 2, 12, 1, 10), blk(1).tobytes()],
        "topic": lambda sid: [f"up/{sid}/data".encode(), good, blk(1).tobytes()],
        "stream_id": lambda sid: [b"in/bad id/data", good, blk(1).tobytes()],
        "kind_mismatch": lambda sid: [f"in/{sid}/pred".encode(), good, blk(1).tobytes()],
        "payload_size": lambda sid: [f"in/{sid}/data".encode(), good, blk(1).tobytes()[:-4]],
        "non_finite": lambda sid: [f"in/{sid}/data".encode(), good, np.full((10, 2), np.nan, "<f4").tobytes()],
        "json": lambda sid: [f"in/{sid}/desc".encode(), header(3, epoch=12), b"{not json"],
        "descriptor": lambda sid: [f"in/{sid}/desc".encode(), header(3, epoch=12),
                                   json.dumps(desc_json(sid, 12, dtype="float16")).encode()],
    }
    for reason, make in bad.items():
        sid = f"bad-{reason}"
        c = Case(sid, f"bad.{reason}: one malformed message between two good blocks is skipped and counted; "
                      f"the stream goes on (the second block is seq 1, as if the bad one never came).")
        s = FeatStream(c, m, sid, 12)
        c.desc(sid, 12)
        s.open(t_of(0))
        c.data(sid, 12, 0, 0, blk(0))
        s.consume(blk(0), t_of(0), 0)
        c.raw(make(sid), f"malformed: bad.{reason}")
        c.data(sid, 12, 1, 10, blk(1))
        s.consume(blk(1), t_of(10), 1)
        c.eos(sid, 12, 20)
        s.close()
        c.counters = {f"bad.{reason}": 1, "streams_opened": 1, "frames_in": 20, "frames_out": 20}
        cases.append(c)

    # stream-level checks
    c = Case("bad-mismatch", "bad.mismatch: data whose column count disagrees with its descriptor (3 vs 2).")
    s = FeatStream(c, m, "mism", 13)
    c.desc("mism", 13)
    s.open(t_of(0))
    c.data("mism", 13, 0, 0, blk(0))
    s.consume(blk(0), t_of(0), 0)
    c.data("mism", 13, 1, 10, np.ones((10, 3), np.float32), "3 columns: bad.mismatch")
    c.data("mism", 13, 1, 10, blk(1))
    s.consume(blk(1), t_of(10), 1)
    c.eos("mism", 13, 20)
    s.close()
    c.counters = {"bad.mismatch": 1, "streams_opened": 1, "frames_in": 20, "frames_out": 20}
    cases.append(c)

    c = Case("bad-content", "bad.content: a descriptor with content \"pred\" (what servers publish) is not an "
                            "input; its data then has no descriptor.  Audio for a model without a front end: "
                            "the stream cannot open (bad.content once, its rows in drops.bad_stream).")
    c.desc("cpred", 14, content="pred")
    c.data("cpred", 14, 0, 0, blk(0), "no stream: drops.no_descriptor")
    c.desc("caud", 14, content="audio", channels=1, rate=16000.0)
    c.data("caud", 14, 0, 0, np.zeros((160, 1), np.float32), "audio for a features model", rate=16000.0)
    c.eos("caud", 14, 160)
    c.counters = {"bad.content": 2, "drops.no_descriptor": 1, "drops.bad_stream": 160}
    cases.append(c)

    c = Case("reserved-id", "The stream id _stats is reserved for the server's stats: data, desc and eos "
                            "with it are bad.stream_id.")
    c.desc("_stats", 15)
    c.data("_stats", 15, 0, 0, blk(0))
    c.eos("_stats", 15, 10)
    c.counters = {"bad.stream_id": 3}
    cases.append(c)

    c = Case("refused", "Stream limits: an audio rate of 500 Hz (refused.rate) and 65 audio channels "
                        "(refused.channels); their data is drops.refused, their eos too.")
    c.desc("slow", 16, content="audio", channels=1, rate=500.0)
    c.data("slow", 16, 0, 0, np.zeros((50, 1), np.float32), rate=500.0)
    c.desc("wide", 16, content="audio", channels=65, rate=16000.0)
    c.data("wide", 16, 0, 0, np.zeros((10, 65), np.float32), rate=16000.0)
    c.eos("slow", 16, 50)
    c.eos("wide", 16, 10)
    c.counters = {"refused.rate": 1, "refused.channels": 1, "drops.refused": 4}
    cases.append(c)

    c = Case("no-descriptor", "Data before its descriptor is dropped (drops.no_descriptor), never consumed: the "
                              "same seq 0 after the descriptor is used, not a duplicate.")
    s = FeatStream(c, m, "nodesc", 17)
    c.data("nodesc", 17, 0, 0, blk(0), "before the descriptor")
    c.desc("nodesc", 17)
    s.open(t_of(0))
    c.data("nodesc", 17, 0, 0, blk(0))
    s.consume(blk(0), t_of(0), 0)
    c.eos("nodesc", 17, 10)
    s.close()
    c.counters = {"drops.no_descriptor": 1, "streams_opened": 1, "frames_in": 10, "frames_out": 10}
    cases.append(c)

    c = Case("max-streams", "The server runs with --max-streams 4: four streams with data are open; a fifth "
                            "descriptor is refused (drops.max_streams) and its data has no descriptor.")
    ss = []
    for k in range(4):
        sid = f"ms{k}"
        s = FeatStream(c, m, sid, 18)
        c.desc(sid, 18)
        s.open(t_of(0))
        c.data(sid, 18, 0, 0, blk(k))
        s.consume(blk(k), t_of(0), 0)
        ss.append(s)
    c.desc("ms4", 18)
    c.data("ms4", 18, 0, 0, blk(4))
    for k, s in enumerate(ss):
        c.eos(f"ms{k}", 18, 10)
        s.close()
    c.counters = {"drops.max_streams": 1, "drops.no_descriptor": 1, "streams_opened": 4, "frames_in": 40,
                  "frames_out": 40}
    cases.append(c)

    # flags, gaps, duplicates, stale data
    c = Case("gaps", "A lost seq (gaps.seq) and a jump of sample_index by 5 (gaps.sample_index, gap_samples 5): "
                     "the next pred carries gap; the model sees only the rows it got, pred sample_index counts "
                     "frames produced.")
    s = FeatStream(c, m, "gaps", 19)
    c.desc("gaps", 19)
    s.open(t_of(0))
    c.data("gaps", 19, 0, 0, blk(0))
    s.consume(blk(0), t_of(0), 0)
    c.data("gaps", 19, 2, 10, blk(1), "seq 1 lost")
    s.consume(blk(1), t_of(10), 2, ["gap"])
    c.data("gaps", 19, 3, 25, blk(2), "rows 20..24 lost")
    s.consume(blk(2), t_of(25), 3, ["gap"])
    c.eos("gaps", 19, 35)
    s.close()
    c.counters = {"gaps.seq": 1, "gaps.sample_index": 1, "gap_samples": 5, "streams_opened": 1, "frames_in": 30,
                  "frames_out": 30}
    cases.append(c)

    c = Case("lost-start", "The first data seen has seq 4 and sample_index 40: a gap (both counters, "
                           "gap_samples 40) and the first pred carries gap and reset; outputs stay on the "
                           "producer's clock (desc and first pred at frame 40).")
    s = FeatStream(c, m, "late", 20)
    c.desc("late", 20)
    c.data("late", 20, 4, 40, blk(4))
    s.open(t_of(40), frame0=40)
    s.consume(blk(4), t_of(40), 4, ["gap", "reset"])
    c.data("late", 20, 5, 50, blk(5))
    s.consume(blk(5), t_of(50), 5)
    c.eos("late", 20, 60)
    s.close()
    c.counters = {"gaps.seq": 1, "gaps.sample_index": 1, "gap_samples": 40, "streams_opened": 1, "frames_in": 20,
                  "frames_out": 20}
    cases.append(c)

    c = Case("sender-flags", "The producer's gap and overflow flags pass to the next pred (not counted: the "
                             "producer counted them); end on the last data ends the stream without an eos.")
    s = FeatStream(c, m, "sflags", 21)
    c.desc("sflags", 21)
    s.open(t_of(0))
    c.data("sflags", 21, 0, 0, blk(0), flags=OVERFLOW | GAP)
    s.consume(blk(0), t_of(0), 0, ["gap", "overflow"])
    c.data("sflags", 21, 1, 10, blk(1), flags=END)
    s.consume(blk(1), t_of(10), 1)
    s.close()
    c.counters = {"streams_opened": 1, "frames_in": 20, "frames_out": 20}
    cases.append(c)

    c = Case("reset-flag", "reset on data: the output stream ends (eos), a new one starts with this block "
                           "(fresh state, reset flag, on the producer's clock); reset on a descriptor or an eos "
                           "is bad.flags, as is an eos without end.")
    s = FeatStream(c, m, "rst", 22)
    c.desc("rst", 22)
    s.open(t_of(0))
    c.data("rst", 22, 0, 0, blk(0))
    s.consume(blk(0), t_of(0), 0)
    c.raw([b"in/rst/desc", header(3, RESET, epoch=22), json.dumps(desc_json("rst", 22)).encode()],
          "reset on desc: bad.flags")
    c.eos("rst", 22, 10, "reset on eos: bad.flags", flags=END | RESET)
    c.eos("rst", 22, 10, "eos without end: bad.flags", flags=0)
    c.data("rst", 22, 1, 10, blk(1), "reset", flags=RESET)
    s.close()
    s.open(t_of(10), frame0=10)
    s.consume(blk(1), t_of(10), 1, ["reset"])
    c.eos("rst", 22, 20)
    s.close()
    c.counters = {"bad.flags": 3, "resets.flag": 1, "streams_opened": 2, "frames_in": 20, "frames_out": 20}
    cases.append(c)

    c = Case("duplicate-stale", "A retransmitted block (same epoch and seq: drops.duplicate), a block 3 seqs "
                                "behind and one whose rows were consumed (drops.stale): dropped, never "
                                "processed, no gap.")
    s = FeatStream(c, m, "dup", 23)
    c.desc("dup", 23)
    s.open(t_of(0))
    for i in range(4):
        c.data("dup", 23, i, 10 * i, blk(i))
        s.consume(blk(i), t_of(10 * i), i)
        if i == 1:
            c.data("dup", 23, 1, 10, blk(1), "retransmission of seq 1")
    c.data("dup", 23, 0, 0, blk(0), "seq 0 again, 3 behind: stale")
    c.data("dup", 23, 4, 35, blk(3)[5:], "seq ahead but rows 35..39 consumed: stale")
    c.data("dup", 23, 4, 40, blk(4))
    s.consume(blk(4), t_of(40), 4)
    c.eos("dup", 23, 50)
    s.close()
    c.counters = {"drops.duplicate": 1, "drops.stale": 2, "streams_opened": 1, "frames_in": 50, "frames_out": 50}
    cases.append(c)

    # epochs, descriptors mid-stream, eos
    c = Case("epochs", "A new epoch in a descriptor (the producer restarted): the old output stream ends, a new "
                       "one starts with the reset flag (resets.epoch).  Data of the old epoch afterwards has no "
                       "descriptor.  Epochs 0 and 2^60 are bad.descriptor.")
    s = FeatStream(c, m, "ep", 24)
    c.desc("ep", 24)
    s.open(t_of(0))
    c.data("ep", 24, 0, 0, blk(0))
    s.consume(blk(0), t_of(0), 0)
    c.desc("ep", 0, "epoch 0: bad.descriptor")
    c.desc("ep", 2**60, "epoch 2^60: bad.descriptor")
    c.desc("ep", 25, "new epoch")
    c.data("ep", 24, 1, 10, blk(1), "old epoch: drops.no_descriptor")
    c.data("ep", 25, 0, 0, blk(2))
    s.close()
    s.epoch = 25
    s.open(t_of(0))
    s.consume(blk(2), t_of(0), 0, ["reset"])
    c.eos("ep", 24, 10, "eos of the old epoch: drops.no_descriptor")
    c.eos("ep", 25, 10)
    s.close()
    c.counters = {"bad.descriptor": 2, "resets.epoch": 1, "drops.no_descriptor": 2, "streams_opened": 2,
                  "frames_in": 20, "frames_out": 20}
    cases.append(c)

    c = Case("descriptor-mid-stream", "The same descriptor repeated mid-stream changes nothing; one with a "
                                      "new rate (same epoch) resets (resets.descriptor); a descriptor without "
                                      "labels is bad.descriptor.")
    s = FeatStream(c, m, "dm", 26)
    c.desc("dm", 26)
    s.open(t_of(0))
    c.data("dm", 26, 0, 0, blk(0))
    s.consume(blk(0), t_of(0), 0)
    c.desc("dm", 26, "the same descriptor again")
    no_labels = desc_json("dm", 26)
    del no_labels["labels"]
    c.desc("dm", 26, "labels missing: bad.descriptor", json=no_labels)
    c.data("dm", 26, 1, 10, blk(1))
    s.consume(blk(1), t_of(10), 1)
    c.desc("dm", 26, "rate 50 frames/s: a reset", rate=50.0)
    c.data("dm", 26, 0, 0, blk(2), rate=50.0)
    s.close()
    s.open(T_BASE)
    s.c.outputs["dm"][-1]["meta"]["rate"] = 50.0
    s.c.outputs["dm"][-1]["meta"]["input"]["rate"] = 50.0
    y, s.h = rows(m, blk(2), None)
    c.out("dm", "pred", s.out_epoch, 0, 0, ["reset"], ref_seq=0, t_capture=T_BASE + 9 / 50.0, rows=y.tolist())
    s.frames, s.last_t = 10, T_BASE + 9 / 50.0
    c.eos("dm", 26, 10)
    s.close()
    c.counters = {"bad.descriptor": 1, "resets.descriptor": 1, "streams_opened": 2, "frames_in": 30,
                  "frames_out": 30}
    cases.append(c)

    c = Case("capture-times", "t_capture 0 (more than 3600 s old) and t0 + 1000 s (after its arrival) are "
                              "counted (implausible_time.past / .future), used as sent, left out of latency.")
    s = FeatStream(c, m, "times", 27)
    c.desc("times", 27)
    s.open(0.0)
    c.messages[-1]["note"] = "descriptor"
    c.raw([b"in/times/data", header(1, 0, 10, 2, 27, 0, 0, t_capture=0.0), blk(0).tobytes()],
          "t_capture 0: implausible_time.past")
    s.c.outputs["times"][0]["t_capture"] = {"absolute": 0.0}
    s.consume(blk(0), 0.0, 0)
    s.c.outputs["times"][-1]["t_capture"] = {"absolute": 9 / FEAT_RATE}
    c.data("times", 27, 1, 10, blk(1), "1000 s ahead: implausible_time.future", t=1000.0)
    s.consume(blk(1), 1000.0, 1)
    c.eos("times", 27, 20)
    s.close()
    c.counters = {"implausible_time.past": 1, "implausible_time.future": 1, "streams_opened": 1, "frames_in": 20,
                  "frames_out": 20, "latency.n": 0}
    cases.append(c)
    return cases


def audio_case(m):
    """Frame mapping: window 400, hop 160 at 16 kHz; 16250 samples in uneven blocks -> 100 frames."""
    fe = LogMel(**{k: v for k, v in m.frontend.items() if k != "type"})
    rate, win, hop = 16000.0, fe.win_length, fe.hop_length
    x = (0.1 * np.random.default_rng(21).standard_normal(16250)).astype(np.float32)
    y, _ = rows(m, naive_features(x, fe))
    c = Case("frame-mapping", "Audio at the front end's rate (16 kHz; window 400, hop 160): frame k covers "
                              "samples [160k, 160k + 400); after n samples 1 + (n - 400) // 160 frames exist. "
                              "16250 samples in blocks of 400, 160, 1000, 5000, 9440, 250 give 1, 1, 6, 31, 59, "
                              "2 rows (100 frames); the last 10 samples never complete a frame and are dropped "
                              "at eos (eos sample_index 100).  A pred's t_capture is that of the last sample "
                              "of its last frame.", model="audio")
    c.desc("fm", 31, content="audio", channels=1, rate=rate)
    c.out("fm", "desc", 0, 0, 0, t_capture=T_BASE,
          meta={"format": "streamrnn/1", "stream": "fm", "content": "pred", "dtype": "float32", "channels": 1,
                "rate": 100.0, "labels": ["speech"],
                "input": {"epoch": 31, "content": "audio", "rate": rate, "channels": 1}})
    start, done, seq = 0, 0, 0
    for n in (400, 160, 1000, 5000, 9440, 250):
        c.data("fm", 31, seq, start, x[start:start + n, None], rate=rate)
        total = 1 + (start + n - win) // hop if start + n >= win else 0
        last_end = (total - 1) * hop + win  # exclusive end of the last frame's window
        c.out("fm", "pred", 0, seq, done, ref_seq=seq, t_capture=T_BASE + (last_end - 1) / rate,
              rows=y[done:total].tolist())
        done, start, seq = total, start + n, seq + 1
    c.eos("fm", 31, start)
    c.out("fm", "eos", 0, 0, done, ["end"], t_capture=T_BASE + ((done - 1) * hop + win - 1) / rate)
    c.counters = {"streams_opened": 1, "frames_in": 16250, "frames_out": 100}
    return [c]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    feat = streamrnn.Model.random("gru", input_size=2, hidden_size=3, output_size=1, activation="sigmoid", seed=20,
                                  labels=["a"], name="vectors-features")
    fe = LogMel(n_mels=4)
    aud = streamrnn.Model.random("gru", input_size=fe.n_features, hidden_size=3, output_size=1,
                                 activation="sigmoid", seed=21, labels=["speech"], frontend=fe.to_dict(),
                                 name="vectors-audio")
    feat.save(OUT / "features.safetensors")
    aud.save(OUT / "audio.safetensors")
    feat, aud = streamrnn.load_model(str(OUT / "features.safetensors")), streamrnn.load_model(str(OUT / "audio.safetensors"))
    cases = feature_cases(feat) + audio_case(aud)
    for old in (OUT / "cases").glob("*.json"):
        old.unlink()
    (OUT / "cases").mkdir(exist_ok=True)
    for c in cases:
        (OUT / "cases" / f"{c.name}.json").write_text(json.dumps(c.to_json(), indent=1) + "\n")
    (OUT / "servers.json").write_text(json.dumps(
        {k: {"model": f"{k}.safetensors", "args": v} for k, v in SERVERS.items()}, indent=1) + "\n")
    print(f"{len(cases)} cases in {OUT / 'cases'}")


if __name__ == "__main__":
    main()
