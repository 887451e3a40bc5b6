"""The ``streamrnn/1`` wire protocol: encode and decode three-frame ZeroMQ messages.

Every message is three frames: **topic** (ASCII ``in/<stream>/<kind>`` or
``out/<stream>/<kind>``), a 64-byte little-endian **header**
(``<4sBBBBIIQQQddQ``) and a **payload** (a raw C-contiguous array, UTF-8 JSON,
or nothing). The full specification is ``docs/protocol.md``.

``decode`` validates everything and raises ``WireError(reason, message)``
where ``reason`` is one of ``REASONS``, the names the stats count
rejections under.

>>> import numpy as np
>>> m = Message(kind=DATA, stream="mic0", direction="in", epoch=7, seq=0, sample_index=0,
...             t_capture=1.5, data=np.zeros((4, 1), np.float32))
>>> back = decode(encode(m))
>>> back.topic, back.data.shape, back.epoch
('in/mic0/data', (4, 1), 7)
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass

import numpy as np

from streamrnn.config import DEFAULT_MAX_MESSAGE_BYTES  # noqa: F401 (the default of decode and of every socket)
from streamrnn.errors import WireError

FORMAT = "streamrnn/1"
MAGIC = b"SRNN"
VERSION = 1
HEADER = struct.Struct("<4sBBBBIIQQQddQ")
HEADER_SIZE = HEADER.size  # 64 bytes
assert HEADER_SIZE == 64

# --- message kinds: header code <-> topic name ---------------------------------------------
DATA, PRED, DESC, HEARTBEAT, EOS, EVENT, STATS = 1, 2, 3, 4, 5, 6, 7
KIND_NAMES = {DATA: "data", PRED: "pred", DESC: "desc", HEARTBEAT: "hb", EOS: "eos",
              EVENT: "event", STATS: "stats"}
KIND_CODES = {v: k for k, v in KIND_NAMES.items()}
ARRAY_KINDS = (DATA, PRED)           # payload: raw (n_rows, n_cols) array
JSON_KINDS = (DESC, EVENT, STATS)    # payload: UTF-8 JSON object
EMPTY_KINDS = (HEARTBEAT, EOS)       # payload: empty

# --- dtypes: header code <-> numpy ----------------------------------------------------------
DT_NONE, DT_F32, DT_F64, DT_I16 = 0, 1, 2, 5
DTYPES = {DT_F32: np.dtype("<f4"), DT_F64: np.dtype("<f8"), DT_I16: np.dtype("<i2")}
DTYPE_NAMES = {DT_NONE: "none", DT_F32: "float32", DT_F64: "float64", DT_I16: "int16"}

# --- flags ------------------------------------------------------------------------------------
FLAG_GAP = 1 << 0        # data was lost before this message (seq or sample_index jumped)
FLAG_OVERFLOW = 1 << 1   # the source's queue overflowed (oldest blocks dropped)
FLAG_RESET = 1 << 2      # the state of this stream was reset just before this message
FLAG_END = 1 << 3        # last message of the stream (end-of-stream)
FLAGS_KNOWN = FLAG_GAP | FLAG_OVERFLOW | FLAG_RESET | FLAG_END
FLAG_NAMES = {FLAG_GAP: "gap", FLAG_OVERFLOW: "overflow", FLAG_RESET: "reset", FLAG_END: "end"}
# The flags each kind may carry (docs/protocol.md, "Flags"); any other is rejected as "flags".  An
# end-of-stream message must carry FLAG_END.
KIND_FLAGS = {DATA: FLAG_GAP | FLAG_OVERFLOW | FLAG_RESET | FLAG_END, PRED: FLAG_GAP | FLAG_OVERFLOW | FLAG_RESET,
              DESC: 0, HEARTBEAT: 0, EOS: FLAG_END, EVENT: 0, STATS: 0}

STREAM_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
STATS_STREAM = "_stats"  # reserved: the server's own stats messages (out/_stats/stats); never an input stream
MAX_EPOCH = 2**53 - 1    # epochs are 1..2^53-1: exact in every language's JSON numbers
DIRECTIONS = ("in", "out")
CONTENTS = ("audio", "features", "pred")

# Every reason decode() can reject a message for: the stats count rejections by these names.
REASONS = (
    "frames",         # not exactly 3 frames
    "too_large",      # the whole message exceeds the configured maximum
    "header_size",    # header frame is not exactly 64 bytes
    "magic",          # header does not start with b"SRNN"
    "version",        # protocol version other than 1
    "kind",           # unknown message kind (not 1..7)
    "dtype",          # unknown dtype, or a dtype that does not fit the kind
    "flags",          # reserved flag bits (4..7) set, a flag the kind may not carry, or an eos without end
    "topic",          # topic is not ASCII in|out/<stream>/<kind name>
    "stream_id",      # stream id does not match [A-Za-z0-9._-]{1,64} (or input uses the reserved _stats)
    "kind_mismatch",  # topic kind name disagrees with the header's kind
    "payload_size",   # payload length disagrees with n_rows x n_cols x itemsize, n_cols = 0 for an array,
    #                   n_rows or n_cols nonzero for a JSON or empty kind, or a payload on hb/eos
    "non_finite",     # NaN/Inf samples, or NaN/Inf timestamps
    "json",           # JSON payload is not valid UTF-8 JSON of an object
    "descriptor",     # descriptor JSON lacks a field or has a bad value
)


def check_stream_id(stream: str) -> str:
    """Return ``stream`` if it is a valid stream id, else raise WireError('stream_id')."""
    if not isinstance(stream, str) or not STREAM_ID.fullmatch(stream):
        raise WireError("stream_id", f"stream id {stream!r} does not match [A-Za-z0-9._-]{{1,64}}")
    return stream


def make_topic(direction: str, stream: str, kind: int) -> str:
    """``in/<stream>/<kind name>`` or ``out/<stream>/<kind name>``."""
    return f"{direction}/{stream}/{KIND_NAMES[kind]}"


@dataclass
class Message:
    """One decoded (or to-be-encoded) streamrnn/1 message.

    ``data`` is the (n_rows, n_cols) array for data/pred, ``meta`` the JSON
    object for desc/event/stats; both None for heartbeat/end-of-stream.
    """

    kind: int
    stream: str
    direction: str = "out"
    flags: int = 0
    epoch: int = 0
    seq: int = 0
    sample_index: int = 0
    t_capture: float = 0.0
    t_send: float = 0.0
    ref_seq: int = 0
    data: np.ndarray | None = None
    meta: dict | None = None
    dtype: int = DT_NONE   # filled by decode/encode from data
    n_bytes: int = 0       # total size on the wire (set by decode)

    @property
    def topic(self) -> str:
        return make_topic(self.direction, self.stream, self.kind)

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    def flag_names(self) -> list[str]:
        return flag_names(self.flags)

    def to_json(self, with_data: bool = True) -> dict:
        """A JSON-able dict of every field (the form ``streamrnn listen`` prints)."""
        d = {"topic": self.topic, "kind": self.kind_name, "stream": self.stream,
             "direction": self.direction, "flags": self.flag_names(), "epoch": self.epoch,
             "seq": self.seq, "sample_index": self.sample_index, "t_capture": self.t_capture,
             "t_send": self.t_send, "ref_seq": self.ref_seq, "dtype": DTYPE_NAMES[self.dtype]}
        if self.data is not None:
            d["shape"] = list(self.data.shape)
            if with_data:
                d["data"] = self.data.tolist()
        if self.meta is not None:
            d["meta"] = self.meta
        return d


def _dtype_code(a: np.ndarray) -> int:
    for code, dt in DTYPES.items():
        if a.dtype == dt or a.dtype == dt.newbyteorder("="):
            return code
    raise WireError("dtype", f"array dtype {a.dtype} cannot be sent (float32, float64 or int16)")


def encode(m: Message) -> list[bytes]:
    """The three frames of ``m`` (topic, 64-byte header, payload).

    Array kinds take ``m.data`` (2-D; 1-D is sent as one column), JSON kinds take
    ``m.meta``. Raises WireError for values the protocol cannot carry.
    """
    if m.kind not in KIND_NAMES:
        raise WireError("kind", f"kind {m.kind!r} is not one of 1..7")
    if m.direction not in DIRECTIONS:
        raise WireError("topic", f"direction {m.direction!r} is not 'in' or 'out'")
    check_stream_id(m.stream)
    if m.flags & ~FLAGS_KNOWN & 0xFF or not 0 <= m.flags <= 0xFF:
        raise WireError("flags", f"flags {m.flags:#x} set reserved bits (known: {FLAGS_KNOWN:#x})")
    n_rows = n_cols = 0
    dtype = DT_NONE
    if m.kind in ARRAY_KINDS:
        if m.data is None:
            raise WireError("payload_size", f"{KIND_NAMES[m.kind]} message needs an array")
        a = np.asarray(m.data)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise WireError("payload_size", f"array must be 2-D (rows, cols), got shape {a.shape}")
        dtype = _dtype_code(a)
        a = np.ascontiguousarray(a, dtype=DTYPES[dtype])
        n_rows, n_cols = a.shape
        payload = a.tobytes()
    elif m.kind in JSON_KINDS:
        try:
            payload = json.dumps(m.meta if m.meta is not None else {}, separators=(",", ":"),
                                 allow_nan=False).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as e:  # NaN/Inf, non-JSON objects, cycles
            raise WireError("json", f"{KIND_NAMES[m.kind]} of {m.stream!r} cannot be sent as JSON: {e}") from None
    else:
        payload = b""
    header = HEADER.pack(MAGIC, VERSION, m.kind, dtype, m.flags, n_rows, n_cols, m.epoch, m.seq,
                         m.sample_index, float(m.t_capture), float(m.t_send), m.ref_seq)
    return [m.topic.encode("ascii"), header, payload]


def _check_descriptor(meta: dict, stream: str, epoch: int) -> None:
    def bad(msg):
        raise WireError("descriptor", f"descriptor of {stream!r}: {msg}")

    if meta.get("format") != FORMAT:
        bad(f"format {meta.get('format')!r} is not {FORMAT!r}")
    if meta.get("stream") != stream:
        bad(f"stream {meta.get('stream')!r} disagrees with the topic's {stream!r}")
    ep = meta.get("epoch")
    if not isinstance(ep, int) or isinstance(ep, bool) or not 1 <= ep <= MAX_EPOCH:
        bad(f"epoch {ep!r} is not an integer in 1..2^53-1")
    if ep != epoch:
        bad(f"epoch {ep!r} disagrees with the header's {epoch}")
    if meta.get("content") not in CONTENTS:
        bad(f"content {meta.get('content')!r} is not one of {', '.join(CONTENTS)}")
    if meta.get("dtype") not in ("float32", "float64", "int16"):
        bad(f"dtype {meta.get('dtype')!r} is not float32, float64 or int16")
    ch = meta.get("channels")
    if not isinstance(ch, int) or isinstance(ch, bool) or not 1 <= ch <= 65535:
        bad(f"channels {ch!r} is not an integer in 1..65535")
    rate = meta.get("rate")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not (0 < rate < 1e7):
        bad(f"rate {rate!r} is not a number in (0, 1e7)")
    if "labels" not in meta:
        bad("labels is missing (null or a list of strings)")
    labels = meta["labels"]
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        bad(f"labels {labels!r} is not null or a list of strings")


def decode(frames, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Validate and decode the frames of one message.

    Raises ``WireError(reason, message)`` with ``reason`` in ``REASONS``. The
    returned array (for data/pred) is a read-only view of the payload in
    native byte order.
    """
    if not isinstance(frames, (list, tuple)) or len(frames) != 3:
        n = len(frames) if isinstance(frames, (list, tuple)) else "?"
        raise WireError("frames", f"expected 3 frames (topic, header, payload), got {n}")
    topic_b, header, payload = frames
    if type(topic_b) is not bytes or type(header) is not bytes or type(payload) is not bytes:
        topic_b, header, payload = bytes(topic_b), bytes(header), bytes(payload)
    total = len(topic_b) + len(header) + len(payload)
    if max_bytes is not None and total > max_bytes:
        raise WireError("too_large", f"message of {total} bytes exceeds the maximum of {max_bytes}")
    if len(header) != HEADER_SIZE:
        raise WireError("header_size", f"header is {len(header)} bytes, expected {HEADER_SIZE}")
    (magic, version, kind, dtype, flags, n_rows, n_cols, epoch, seq, sample_index,
     t_capture, t_send, ref_seq) = HEADER.unpack(header)
    if magic != MAGIC:
        raise WireError("magic", f"magic {magic!r} is not {MAGIC!r}")
    if version != VERSION:
        raise WireError("version", f"protocol version {version} is not supported (this is {FORMAT}; "
                                   f"only version {VERSION} is understood)")
    if kind not in KIND_NAMES:
        raise WireError("kind", f"kind {kind} is not one of 1..7")
    if kind in ARRAY_KINDS and dtype not in DTYPES:
        raise WireError("dtype", f"dtype {dtype} is not valid for {KIND_NAMES[kind]} (1 float32, 2 float64, 5 int16)")
    if kind not in ARRAY_KINDS and dtype != DT_NONE:
        raise WireError("dtype", f"dtype {dtype} is not valid for {KIND_NAMES[kind]} (must be 0)")
    if flags & ~FLAGS_KNOWN:
        raise WireError("flags", f"flags {flags:#04x} set reserved bits (known: {FLAGS_KNOWN:#04x})")
    if flags & ~KIND_FLAGS[kind]:
        raise WireError("flags", f"flags {flags:#04x}: {KIND_NAMES[kind]} may carry only "
                                 f"{_flag_list(KIND_FLAGS[kind])}")
    if kind == EOS and not flags & FLAG_END:
        raise WireError("flags", f"eos must carry the end flag ({FLAG_END:#04x}), got flags {flags:#04x}")
    try:
        topic = topic_b.decode("ascii")
    except UnicodeDecodeError:
        raise WireError("topic", f"topic {topic_b[:80]!r} is not ASCII") from None
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] not in DIRECTIONS:
        raise WireError("topic", f"topic {topic[:80]!r} is not in|out/<stream>/<kind>")
    direction, stream, kname = parts
    check_stream_id(stream)
    if kname not in KIND_CODES:
        raise WireError("topic", f"topic kind {kname!r} is not one of {', '.join(KIND_CODES)}")
    if KIND_CODES[kname] != kind:
        raise WireError("kind_mismatch", f"topic says {kname!r} but the header says kind {kind} "
                                         f"({KIND_NAMES[kind]})")
    if not (math.isfinite(t_capture) and math.isfinite(t_send)):
        raise WireError("non_finite", f"timestamps must be finite (t_capture={t_capture}, t_send={t_send})")
    m = Message(kind=kind, stream=stream, direction=direction, flags=flags, epoch=epoch, seq=seq,
                sample_index=sample_index, t_capture=t_capture, t_send=t_send, ref_seq=ref_seq,
                dtype=dtype, n_bytes=total)
    if kind in ARRAY_KINDS:
        dt = DTYPES[dtype]
        want = n_rows * n_cols * dt.itemsize
        if n_cols == 0 or len(payload) != want:
            raise WireError("payload_size", f"payload is {len(payload)} bytes but n_rows={n_rows} x "
                                            f"n_cols={n_cols} x {dt.itemsize} = {want} (n_cols >= 1)")
        a = np.frombuffer(payload, dtype=dt).reshape(n_rows, n_cols)
        if dt.kind == "f" and not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise WireError("non_finite", f"{bad} NaN/Inf values in {KIND_NAMES[kind]} of {stream!r}")
        m.data = a if dt.isnative else a.astype(dt.newbyteorder("="))
    elif kind in JSON_KINDS:
        if n_rows or n_cols:
            raise WireError("payload_size", f"{KIND_NAMES[kind]} must have n_rows = n_cols = 0, "
                                            f"got {n_rows} x {n_cols}")
        try:
            meta = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
            raise WireError("json", f"{KIND_NAMES[kind]} payload is not UTF-8 JSON ({e})") from None
        if not isinstance(meta, dict):
            raise WireError("json", f"{KIND_NAMES[kind]} payload must be a JSON object, "
                                    f"got {type(meta).__name__}")
        if kind == DESC:
            _check_descriptor(meta, stream, epoch)
        m.meta = meta
    else:
        if payload or n_rows or n_cols:
            raise WireError("payload_size", f"{KIND_NAMES[kind]} must have an empty payload and "
                                            f"n_rows = n_cols = 0, got {len(payload)} bytes, {n_rows} x {n_cols}")
    return m


# The header as a NumPy structured dtype (the layout of HEADER): decode_data_many reads the headers of
# every message of one read in one np.frombuffer.
HEADER_DTYPE = np.dtype([("magic", "S4"), ("version", "u1"), ("kind", "u1"), ("dtype", "u1"), ("flags", "u1"),
                         ("n_rows", "<u4"), ("n_cols", "<u4"), ("epoch", "<u8"), ("seq", "<u8"),
                         ("sample_index", "<u8"), ("t_capture", "<f8"), ("t_send", "<f8"), ("ref_seq", "<u8")])
assert HEADER_DTYPE.itemsize == HEADER_SIZE
MAX_DATA_TOPICS = 1 << 16  # in/<stream>/data topics remembered as valid (then forgotten all at once)
_data_topics: dict[bytes, str] = {}
_I16_SCALE = np.float32(1.0 / 32768.0)


def data_topic_stream(topic: bytes) -> str | None:
    """The stream id of ``in/<stream>/data`` if ``decode`` accepts that topic for a data message (and the
    stream is not the reserved ``_stats``), else None.  Valid topics are remembered (at most
    ``MAX_DATA_TOPICS``), so a stream's topic is checked once, not per message.

    >>> data_topic_stream(b"in/mic0/data"), data_topic_stream(b"in/mic 0/data"), data_topic_stream(b"in/mic0/pred")
    ('mic0', None, None)
    """
    sid = _data_topics.get(topic)
    if sid is not None or type(topic) is not bytes:
        return sid
    if not topic.startswith(b"in/") or not topic.endswith(b"/data"):
        return None
    try:
        sid = topic[3:-5].decode("ascii")
    except UnicodeDecodeError:
        return None
    if not STREAM_ID.fullmatch(sid) or sid == STATS_STREAM:
        return None
    if len(_data_topics) >= MAX_DATA_TOPICS:
        _data_topics.clear()
    _data_topics[topic] = sid
    return sid


def decode_data_many(msgs: list, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> list:
    """The data messages of one read, decoded together: what ``decode`` does message by message, with
    the headers read in one ``np.frombuffer`` and the samples converted in one pass per dtype.

    ``msgs``: the messages as received (each a list of frames, ``bytes``).  For each, either a tuple
    ``(stream, epoch, seq, sample_index, t_capture, flags, dtype, data)``, when it is an
    ``in/<stream>/data`` message (stream not ``_stats``) that ``decode`` accepts, of dtype int16 or
    float32 with at least one row; ``data`` is float32 (n_rows, n_cols), int16 samples scaled by
    1/32768 (``sources.to_float32``), a read-only view into one array shared by the read's messages;
    or None: any other message (other kinds, float64, no rows, or one ``decode`` rejects), for
    ``decode`` to take (and to name what is wrong).

    >>> import numpy as np
    >>> m = Message(kind=DATA, stream="mic0", direction="in", epoch=7, seq=3, sample_index=300,
    ...             t_capture=1.5, data=np.full((4, 1), 16384, np.int16))
    >>> [(s, e, q, i, t, f, dt, x.ravel().tolist()) for s, e, q, i, t, f, dt, x in decode_data_many([encode(m)])]
    [('mic0', 7, 3, 300, 1.5, 0, 5, [0.5, 0.5, 0.5, 0.5])]
    >>> decode_data_many([encode(Message(kind=HEARTBEAT, stream="mic0", direction="in"))])
    [None]
    """
    n = len(msgs)
    out = [None] * n
    idx, sids, heads, sizes, totals = [], [], [], [], []
    known = _data_topics.get
    for i, fr in enumerate(msgs):
        if len(fr) == 3:
            t, hd, pl = fr
            if type(hd) is bytes and len(hd) == HEADER_SIZE and type(pl) is bytes and type(t) is bytes:
                sid = known(t) or data_topic_stream(t)
                if sid is not None:
                    idx.append(i)
                    sids.append(sid)
                    heads.append(hd)
                    sizes.append(len(pl))
                    totals.append(len(t) + HEADER_SIZE + len(pl))
    if not idx:
        return out
    h = np.frombuffer(b"".join(heads), HEADER_DTYPE)
    dt, n_rows, n_cols = h["dtype"], h["n_rows"].astype(np.uint64), h["n_cols"].astype(np.uint64)
    size, total = np.array(sizes, np.uint64), np.array(totals, np.uint64)
    item = np.where(dt == DT_I16, 2, 4).astype(np.uint64)
    ok = ((h["magic"] == MAGIC) & (h["version"] == VERSION) & (h["kind"] == DATA)
          & ((dt == DT_I16) | (dt == DT_F32)) & ((h["flags"] & np.uint8(~KIND_FLAGS[DATA] & 0xFF)) == 0)
          & np.isfinite(h["t_capture"]) & np.isfinite(h["t_send"]) & (n_rows >= 1) & (n_cols >= 1)
          & (size % item == 0) & (size // item == n_rows * n_cols))  # no overflow: rows x cols < 2^64
    if max_bytes is not None:
        ok &= total <= max_bytes
    cols = [h[k].tolist() for k in ("epoch", "seq", "sample_index", "t_capture", "flags", "dtype")]
    rows_l, ncols_l = n_rows.tolist(), n_cols.tolist()
    for code in (DT_I16, DT_F32):
        sel = np.flatnonzero(ok & (dt == code)).tolist()
        if not sel:
            continue
        raw = np.frombuffer(b"".join([msgs[idx[j]][2] for j in sel]), DTYPES[code])
        if code == DT_I16:
            x = np.multiply(raw, _I16_SCALE, dtype=np.float32)  # exactly to_float32's one ufunc pass
            finite = None
        else:
            x = raw if raw.dtype.isnative else raw.astype(np.float32)
            starts = np.zeros(len(sel), np.int64)
            np.cumsum([rows_l[j] * ncols_l[j] for j in sel[:-1]], out=starts[1:])
            finite = np.logical_and.reduceat(np.isfinite(x), starts).tolist()  # every message has >= 1 value
        x1 = x.reshape(-1, 1)  # mono (the common case): a message's rows are one slice of this
        a = 0
        for k, j in enumerate(sel):
            r, c = rows_l[j], ncols_l[j]
            b = a + r * c
            if finite is None or finite[k]:  # else decode names the NaN/Inf (non_finite)
                out[idx[j]] = (sids[j], cols[0][j], cols[1][j], cols[2][j], cols[3][j], cols[4][j], code,
                               x1[a:b] if c == 1 else x[a:b].reshape(r, c))
            a = b
    return out


class Outputs:
    """The array messages (pred or data, ``direction`` "out") of one tick of a server, in rows: what
    ``Sink.write_outputs`` takes instead of one ``Message`` object per message.

    ``append(stream, flags, epoch, seq, sample_index, t_capture, ref_seq, data)`` adds a message
    (``data`` a C-contiguous float32 (n_rows, n_cols) array, which must stay unchanged until the
    batch is written); ``t_send`` (Unix s) is the send time of them all.  ``messages()`` gives them as
    ``Message`` objects, ``encode()`` as frames, the headers packed in one NumPy array: both exactly
    what ``encode`` of each ``Message`` gives.

    >>> import numpy as np
    >>> b = Outputs(PRED)
    >>> b.append("mic0", 0, 7, 0, 40, 1.5, 3, np.ones((2, 1), np.float32))
    >>> b.t_send = 2.0
    >>> b.encode() == [encode(m) for m in b.messages()]
    True
    """

    __slots__ = ("kind", "rows", "t_send")

    def __init__(self, kind: int):
        self.kind, self.rows, self.t_send = kind, [], 0.0

    def append(self, stream, flags, epoch, seq, sample_index, t_capture, ref_seq, data) -> None:
        self.rows.append((stream, flags, epoch, seq, sample_index, t_capture, ref_seq, data))

    def __len__(self) -> int:
        return len(self.rows)

    def messages(self):
        """The rows as ``Message`` objects, in order."""
        k, t = self.kind, self.t_send
        for stream, flags, epoch, seq, si, tc, ref, a in self.rows:
            yield Message(k, stream, flags=flags, epoch=epoch, seq=seq, sample_index=si, t_capture=tc, t_send=t,
                          ref_seq=ref, data=a)

    def encode(self) -> list:
        """The frames of every row (topic, header, payload), as ``encode`` makes them; WireError likewise."""
        rows = self.rows
        if not rows:
            return []
        stream, flags, epoch, seq, si, tc, ref, data = zip(*rows)
        if self.kind not in ARRAY_KINDS or not all(type(a) is np.ndarray and a.ndim == 2 and a.dtype == np.float32
                                                   and a.flags.c_contiguous for a in data):
            return [encode(m) for m in self.messages()]  # what only encode checks and converts
        kname = KIND_NAMES[self.kind]
        topics = []
        for s in stream:
            check_stream_id(s)
            topics.append(f"out/{s}/{kname}".encode("ascii"))
        if any(f & ~FLAGS_KNOWN & 0xFF or not 0 <= f <= 0xFF for f in flags):
            return [encode(m) for m in self.messages()]  # raises the flags error of the first bad one
        n = len(rows)
        h = np.zeros(n, HEADER_DTYPE)
        h["magic"], h["version"], h["kind"], h["dtype"], h["flags"] = MAGIC, VERSION, self.kind, DT_F32, flags
        h["n_rows"] = [a.shape[0] for a in data]
        h["n_cols"] = [a.shape[1] for a in data]
        h["epoch"], h["seq"], h["sample_index"], h["ref_seq"] = epoch, seq, si, ref
        h["t_capture"], h["t_send"] = tc, float(self.t_send)
        hb = h.tobytes()
        return [[t, hb[i:i + HEADER_SIZE], a.tobytes()] for t, i, a in zip(topics, range(0, n * HEADER_SIZE, HEADER_SIZE), data)]


def flag_names(bits: int) -> list[str]:
    """The names of the flags set in ``bits`` (``FLAG_NAMES`` order; unknown bits have none).

    >>> flag_names(FLAG_GAP | FLAG_END), flag_names(0)
    (['gap', 'end'], [])
    """
    return [n for b, n in FLAG_NAMES.items() if bits & b]


def _flag_list(bits: int) -> str:
    return " and ".join(flag_names(bits)) or "no flags"


def _no_constant(name):
    # JSON's NaN/Infinity extensions are not JSON: refuse them like any other bad JSON.
    raise ValueError(f"{name} is not valid JSON")


def descriptor(stream: str, epoch: int, content: str, dtype: str, channels: int, rate: float,
               labels=None, **extra) -> dict:
    """A descriptor JSON object (kind 3) with the required fields plus ``extra``."""
    d = {"format": FORMAT, "stream": stream, "epoch": int(epoch), "content": content,
         "dtype": dtype, "channels": int(channels), "rate": float(rate),
         "labels": list(labels) if labels is not None else None}
    d.update(extra)
    return d
