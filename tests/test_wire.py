"""streamrnn/1 encode/decode: round trips, the exact header layout, and every rejection reason."""

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streamrnn.errors import WireError
from streamrnn.transport import wire

HDR = struct.Struct("<4sBBBBIIQQQddQ")


def raw(topic=b"in/s0/data", magic=b"SRNN", version=1, kind=1, dtype=1, flags=0, n_rows=2, n_cols=3,
        epoch=5, seq=0, sample_index=0, t_capture=1.0, t_send=2.0, ref_seq=0, payload=None):
    """Frames built by hand from the spec (independent of wire.encode)."""
    if payload is None:
        payload = np.arange(n_rows * n_cols, dtype="<f4").tobytes()
    return [topic, HDR.pack(magic, version, kind, dtype, flags, n_rows, n_cols, epoch, seq,
                            sample_index, t_capture, t_send, ref_seq), payload]


def desc_frames(stream="s0", epoch=5, json_stream=None, **over):
    d = {"format": "streamrnn/1", "stream": json_stream or stream, "epoch": epoch, "content": "audio",
         "dtype": "float32", "channels": 1, "rate": 16000.0, "labels": None}
    d.update(over)
    return raw(topic=f"in/{stream}/desc".encode(), kind=3, dtype=0, n_rows=0, n_cols=0, epoch=epoch,
               payload=json.dumps(d).encode())


def test_header_is_64_bytes_little_endian_in_spec_order():
    m = wire.Message(wire.PRED, "mic0", flags=wire.FLAG_GAP | wire.FLAG_RESET, epoch=0x0102030405060708,
                     seq=9, sample_index=11, t_capture=1.25, t_send=2.5, ref_seq=13,
                     data=np.array([[0.5, -1.0]], np.float32))
    topic, header, payload = wire.encode(m)
    assert topic == b"out/mic0/pred"
    assert len(header) == 64
    assert header[:4] == b"SRNN" and header[4] == 1 and header[5] == 2 and header[6] == 1
    assert header[7] == 0b101
    assert header[8:12] == (1).to_bytes(4, "little") and header[12:16] == (2).to_bytes(4, "little")
    assert header[16:24] == bytes([8, 7, 6, 5, 4, 3, 2, 1])  # epoch, little-endian
    assert HDR.unpack(header)[8:] == (9, 11, 1.25, 2.5, 13)
    assert payload == np.array([[0.5, -1.0]], "<f4").tobytes()


@pytest.mark.parametrize("dt,code", [(np.float32, 1), (np.float64, 2), (np.int16, 5)])
def test_array_roundtrip_each_dtype(dt, code):
    a = (np.arange(12).reshape(4, 3) - 6).astype(dt)
    f = wire.encode(wire.Message(wire.DATA, "a.b-c_1", direction="in", epoch=3, seq=4, data=a))
    assert f[1][6] == code
    m = wire.decode(f)
    assert m.data.dtype == np.dtype(dt) and np.array_equal(m.data, a)
    assert (m.direction, m.stream, m.kind, m.epoch, m.seq) == ("in", "a.b-c_1", wire.DATA, 3, 4)


def test_json_and_empty_kinds_roundtrip():
    ev = {"event": "start", "label": "speech", "frame": 3}
    m = wire.decode(wire.encode(wire.Message(wire.EVENT, "s", meta=ev)))
    assert m.meta == ev and m.topic == "out/s/event"
    for k, name, flags in ((wire.HEARTBEAT, "hb", 0), (wire.EOS, "eos", wire.FLAG_END)):
        f = wire.encode(wire.Message(k, "s", flags=flags))
        assert f[0] == f"out/s/{name}".encode() and f[2] == b""
        assert wire.decode(f).flags == flags
    d = wire.descriptor("s", 7, "pred", "float32", 2, 100.0, labels=["a", "b"], model={"name": "m"})
    assert wire.decode(wire.encode(wire.Message(wire.DESC, "s", epoch=7, meta=d))).meta == d


def test_hand_built_frames_decode():
    m = wire.decode(raw())
    assert m.data.tolist() == [[0, 1, 2], [3, 4, 5]] and m.t_capture == 1.0 and m.t_send == 2.0
    assert wire.decode(desc_frames()).meta["rate"] == 16000.0


BAD = {
    "frames": [[b"in/s0/data", b"x"], raw() + [b""], []],
    "too_large": [raw(n_rows=300, n_cols=1)],                       # 1200-byte payload > 1000
    "header_size": [[b"in/s0/data", b"\0" * 63, b""], [b"in/s0/data", HDR.pack(b"SRNN", 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0) + b"\0", b""]],
    "magic": [raw(magic=b"SRNX")],
    "version": [raw(version=2), raw(version=0)],
    "kind": [raw(kind=0), raw(kind=8)],
    "dtype": [raw(dtype=3), raw(dtype=0), raw(topic=b"in/s0/hb", kind=4, dtype=1, n_rows=0, n_cols=0, payload=b"")],
    "flags": [raw(flags=0x10),
              raw(topic=b"in/s0/eos", kind=5, dtype=0, n_rows=0, n_cols=0, payload=b""),            # eos without end
              raw(topic=b"in/s0/eos", kind=5, dtype=0, flags=0x8 | 0x4, n_rows=0, n_cols=0, payload=b""),
              raw(topic=b"out/s0/pred", kind=2, flags=0x8),                                          # end on pred
              raw(topic=b"in/s0/hb", kind=4, dtype=0, flags=0x1, n_rows=0, n_cols=0, payload=b""),
              desc_frames()[:1] + [desc_frames()[1][:7] + b"\x04" + desc_frames()[1][8:]] + desc_frames()[2:]],
    "topic": [raw(topic=b"in/s0"), raw(topic=b"up/s0/data"), raw(topic=b"in/s0/what"), raw(topic="in/s\u00e9/data".encode())],
    "stream_id": [raw(topic=b"in/" + b"a" * 65 + b"/data"), raw(topic=b"in//data"), raw(topic=b"in/a b/data")],
    "kind_mismatch": [raw(topic=b"in/s0/pred")],
    "payload_size": [raw(payload=b"\0" * 20), raw(n_cols=0, payload=b""),
                     raw(topic=b"in/s0/eos", kind=5, dtype=0, flags=0x8, n_rows=0, n_cols=0, payload=b"x")],
    "non_finite": [raw(payload=np.array([0, 1, np.nan, 3, 4, 5], "<f4").tobytes()),
                   raw(payload=np.array([0, 1, np.inf, 3, 4, 5], "<f4").tobytes()),
                   raw(t_capture=float("nan"))],
    "json": [raw(topic=b"in/s0/desc", kind=3, dtype=0, n_rows=0, n_cols=0, payload=b"{not json"),
             raw(topic=b"in/s0/event", kind=6, dtype=0, n_rows=0, n_cols=0, payload=b"[1, 2]"),
             raw(topic=b"in/s0/stats", kind=7, dtype=0, n_rows=0, n_cols=0, payload=b"\xff\xfe"),
             raw(topic=b"in/s0/event", kind=6, dtype=0, n_rows=0, n_cols=0, payload=b'{"a": NaN}')],
    "descriptor": [desc_frames(content="video"), desc_frames(rate=0), desc_frames(channels=0),
                   desc_frames(format="streamrnn/2"), desc_frames(json_stream="other"),
                   desc_frames(epoch=0), desc_frames(epoch=2**60), desc_frames(epoch=2**53),  # epochs: 1..2^53-1
                   desc_frames()[:2] + [json.dumps({k: v for k, v in json.loads(desc_frames()[2]).items()
                                                    if k != "labels"}).encode()],           # labels is required
                   raw(topic=b"in/s0/desc", kind=3, dtype=0, n_rows=0, n_cols=0, epoch=6,
                       payload=desc_frames()[2])],
}


@pytest.mark.parametrize("reason,frames", [(r, f) for r, fs in BAD.items() for f in fs])
def test_each_malformed_message_is_rejected_with_its_reason(reason, frames):
    with pytest.raises(WireError) as e:
        wire.decode(frames, max_bytes=1000)
    assert e.value.reason == reason, str(e.value)
    assert reason in wire.REASONS


def test_every_reason_is_exercised():
    assert set(BAD) == set(wire.REASONS)


def test_other_version_is_refused_clearly():
    with pytest.raises(WireError, match="protocol version 2 is not supported.*only version 1"):
        wire.decode(raw(version=2))


def test_encode_refuses_what_the_wire_cannot_carry():
    with pytest.raises(WireError) as e:
        wire.encode(wire.Message(wire.DATA, "bad id", data=np.zeros((1, 1), np.float32)))
    assert e.value.reason == "stream_id"
    with pytest.raises(WireError) as e:
        wire.encode(wire.Message(wire.DATA, "s", data=np.zeros((1, 1), np.int64)))
    assert e.value.reason == "dtype"


def test_decoded_array_is_native_and_readonly_view():
    m = wire.decode(raw())
    assert m.data.dtype.isnative and not m.data.flags.writeable


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), min_size=0, max_size=4))
def test_random_frames_never_crash(frames):
    try:
        wire.decode(frames)
    except WireError as e:
        assert e.reason in wire.REASONS


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 63), st.integers(0, 255), st.data())
def test_mutated_valid_header_is_accepted_or_rejected_by_name(pos, byte, data):
    f = raw()
    h = bytearray(f[1])
    h[pos] = byte
    try:
        m = wire.decode([f[0], bytes(h), f[2]])
    except WireError as e:
        assert e.reason in wire.REASONS
    else:
        assert m.data.size * m.data.itemsize == len(f[2])
