"""Fuzzing (issue 8): hypothesis properties on every decoder of untrusted input, and a short
bounded run of tools/fuzz_wire.py against a real `streamrnn stream` subprocess on 127.0.0.1.

Property: only the typed errors of streamrnn.errors escape (never IndexError, struct.error,
UnicodeDecodeError, RecursionError ...); what is accepted is well formed.
(tests/test_wire.py has the simpler random-frame and mutated-header properties.)
"""

import importlib.util
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import streamrnn
from streamrnn.audio.files import read_labels
from streamrnn.config import TrainConfig, load_config
from streamrnn.errors import AudioError, ConfigError, ModelFileError, WireError
from streamrnn.config import load_stream_config
from streamrnn.runtime.pipeline import Pipeline
from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.sinks import Sink
from streamrnn.transport.sources import ZmqSource

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fuzz_wire", ROOT / "tools" / "fuzz_wire.py")
fuzz_wire = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_wire)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- streamrnn/1 messages ---------------------------------------------------------------------
@FAST
@given(st.randoms(use_true_random=False), st.integers(1, 4))
def test_mutated_messages_of_every_kind_are_rejected_by_name(rnd, n_mut):
    for frames in fuzz_wire.valid_messages(rnd):
        for _ in range(n_mut):
            frames = fuzz_wire.mutate(frames, rnd)
        try:
            m = wire.decode(frames)
        except WireError as e:
            assert e.reason in wire.REASONS
        else:  # accepted: well formed
            assert m.kind in wire.KIND_NAMES and wire.STREAM_ID.fullmatch(m.stream)
            if m.kind in wire.ARRAY_KINDS:
                assert m.data.ndim == 2 and m.data.shape[1] >= 1
                assert m.data.dtype.kind == "i" or np.isfinite(m.data).all()
            elif m.kind in wire.JSON_KINDS:
                assert isinstance(m.meta, dict)


@pytest.mark.parametrize("payload", [b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe{}", b"{} x", b'{"a": NaN}'])
def test_hostile_json_payloads_are_json_errors(payload):
    # regression: 100 000 nested brackets raised RecursionError out of wire.decode
    hdr = wire.HEADER.pack(b"SRNN", 1, wire.EVENT, 0, 0, 0, 0, 1, 0, 0, 0.0, 0.0, 0)
    with pytest.raises(WireError) as e:
        wire.decode([b"in/s/event", hdr, payload])
    assert e.value.reason == "json"


class _Keep(Sink):
    def __init__(self):
        super().__init__()
        self.n = 0

    def write(self, m):
        self.n += 1


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                     | st.text(max_size=8), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=6)
_DESC_KEYS = ["format", "stream", "epoch", "content", "dtype", "channels", "rate", "labels"]


@pytest.fixture(scope="module")
def desc_models():
    from streamrnn.audio import LogMel

    fe = LogMel(n_mels=16)
    audio = streamrnn.Model.random("gru", input_size=fe.n_features, hidden_size=6, output_size=1,
                                   activation="sigmoid", frontend=fe.to_dict())
    feat = streamrnn.Model.random("gru", input_size=3, hidden_size=6, output_size=1, activation="sigmoid")
    return audio, feat


@FAST
@given(st.data())
def test_descriptors_then_data_through_source_and_pipeline(desc_models, data):
    """Random descriptor values (and data that follows them) never crash the source or the pipeline."""
    ep = 9
    d = wire.descriptor("s", ep, data.draw(st.sampled_from(["audio", "features", "pred"])),
                        data.draw(st.sampled_from(["float32", "int16", "float64"])), data.draw(st.integers(1, 3)),
                        data.draw(st.sampled_from([16000.0, 8000.0, 100.0, 7.0, 0.5, 1e-300, 9.9e6])))
    for k in data.draw(st.lists(st.sampled_from(_DESC_KEYS), max_size=3)):
        d[k] = data.draw(_JSON)
    stats = Stats()
    src = ZmqSource("zmq+pull://127.0.0.1:1", stats=stats)  # never opened: _accept only
    keep = _Keep()
    pipe = Pipeline(None, [keep], model=data.draw(st.sampled_from(desc_models)), stats=stats)
    msgs = [wire.Message(wire.DESC, "s", direction="in", epoch=ep, meta=d)]
    for i in range(data.draw(st.integers(1, 3))):
        dt = data.draw(st.sampled_from([np.float32, np.int16, np.float64]))
        x = np.ones((data.draw(st.sampled_from([0, 1, 160, 700])), data.draw(st.integers(1, 3))), dt)
        msgs.append(wire.Message(wire.DATA, "s", direction="in", epoch=ep, seq=i, data=x))
    msgs.append(wire.Message(wire.EOS, "s", direction="in", epoch=ep, flags=wire.FLAG_END))
    for m in msgs:
        try:
            m = wire.decode(wire.encode(m))  # encode refuses NaN/Inf in JSON with WireError("json")
        except WireError as e:
            assert e.reason in ("descriptor", "json")
            continue
        ch = src._accept(m)
        if ch is not None:
            pipe.process(ch)  # StreamRNNError inside is counted, never raised


# --- label files ----------------------------------------------------------------------------------
_LABEL_BYTES = st.lists(st.one_of(
    st.sampled_from([b"\t", b"\n", b"\r\n", b"0.5", b"1e309", b"nan", b"-1", b"\\", b"\xff", b"\x85", b"speech",
                     b"\xe2\x80\xa8", b" ", b"1" * 400]),
    st.binary(max_size=6)), max_size=30).map(b"".join)


@settings(max_examples=250, deadline=None)
@given(_LABEL_BYTES)
def test_label_files_parse_or_raise_audio_error(tmp_path_factory, raw):
    p = tmp_path_factory.mktemp("lab", numbered=True) / "l.txt"
    p.write_bytes(raw)
    try:
        labels = read_labels(p)
    except AudioError as e:
        assert str(p) in str(e)
    else:
        for start, end, lab in labels:
            assert math.isfinite(start) and math.isfinite(end) and 0 <= start <= end and lab.strip() == lab and lab


# --- TOML configs ------------------------------------------------------------------------------------
_TOML_TOKENS = st.sampled_from([b"=", b"[", b"]", b"[[a]]", b'"', b"inf", b"nan", b"-1", b"9" * 5000, b"1e999",
                                b"true", b"{}", b"[1,2]", b"\n", b"#", b"\xff", b"[" * 3000, b"a.b = 1\n",
                                b"1979-05-27T07:32:00Z", b"0x7f", b'"\\u0000"'])


def _mutations(src: bytes):
    return st.lists(st.tuples(st.integers(0, len(src)), st.integers(0, 8), _TOML_TOKENS), min_size=1, max_size=3)


def _apply(src: bytes, muts) -> bytes:
    b = bytearray(src)
    for pos, n, tok in muts:
        b[pos:pos + n] = tok
    return bytes(b)


TINY = (ROOT / "configs" / "tiny.toml").read_bytes()
STREAM = (ROOT / "configs" / "stream.toml").read_bytes()


@settings(max_examples=200, deadline=None)
@given(_mutations(TINY), _mutations(STREAM))
def test_mutated_configs_load_or_raise_config_error(tmp_path_factory, m1, m2):
    d = tmp_path_factory.mktemp("cfg", numbered=True)
    (d / "t.toml").write_bytes(_apply(TINY, m1))
    (d / "s.toml").write_bytes(_apply(STREAM, m2))
    for load in (lambda: load_config(TrainConfig, d / "t.toml", env={}), lambda: load_stream_config(d / "s.toml", env={})):
        try:
            load()
        except ConfigError:
            pass


@pytest.mark.parametrize("text", [b"a = " + b"[" * 5000, b"x = " + b"9" * 5000, b"\xff\xfe = 1", b"rate = 1e999"])
def test_config_regressions(tmp_path, text):
    # regressions: RecursionError, ValueError (int digits limit), UnicodeDecodeError escaped both loaders
    (tmp_path / "c.toml").write_bytes(text)
    with pytest.raises(ConfigError):
        load_config(TrainConfig, tmp_path / "c.toml", env={})
    with pytest.raises(ConfigError):
        load_stream_config(tmp_path / "c.toml", env={})


# --- model files -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    return fuzz_wire._real_model_file(tmp_path_factory.mktemp("seed")).read_bytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_model_files_load_or_raise_model_file_error(model_bytes, tmp_path, data):
    (hlen,) = struct.unpack("<Q", model_bytes[:8])
    b = bytearray(model_bytes)
    where = data.draw(st.sampled_from(["header", "anywhere", "truncate"]))
    if where == "header":
        for _ in range(data.draw(st.integers(1, 3))):
            pos = data.draw(st.integers(8, 8 + hlen - 1))
            b[pos:pos + data.draw(st.integers(0, 4))] = data.draw(
                st.sampled_from([b"1", b"-", b'"', b"[", b"{}", b"null", b"9" * 30, b"x", b"2.5", b"true"]))
        b[:8] = struct.pack("<Q", hlen + (len(b) - len(model_bytes)))  # keep the length field consistent
    elif where == "anywhere":
        for _ in range(data.draw(st.integers(1, 6))):
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    else:
        b = b[:data.draw(st.integers(0, len(b) - 1))]
    p = tmp_path / "m.safetensors"
    p.write_bytes(bytes(b))
    try:
        m = streamrnn.load_model(p)
    except ModelFileError:
        return
    assert np.isfinite(m.theta).all()  # accepted: every weight finite, the model runs
    m.stream().push(np.zeros((2, m.input_size), np.float32))


@pytest.mark.parametrize("header", [
    {"__metadata__": {"streamrnn": "{}"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": ["a", 4]}},
    {"__metadata__": {"streamrnn": 5}},
    {"__metadata__": [1, 2]},
    {"w": "x"},
    {"__metadata__": {"streamrnn": json.dumps({"format": 1, "cell": {"a": 1}})}},
    {"__metadata__": {"streamrnn": json.dumps({"format": 1, "cell": "gru", "input_size": 2, "hidden_size": 2,
                                               "num_layers": 1, "head": {"activation": ["x"]}})}},
    {"__metadata__": {"streamrnn": "[" * 50_000}},
])
def test_forged_safetensors_headers_are_model_file_errors(tmp_path, header):
    # regressions: TypeError from forged data_offsets / metadata / unhashable cell names
    raw = json.dumps(header).encode()
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(ModelFileError):
        streamrnn.load_model(tmp_path / "m.safetensors")


# --- the whole thing: garbage at a running `streamrnn stream` -------------------------------
def test_short_fuzz_run_against_the_stream_command(tmp_path):
    r = fuzz_wire.fuzz_process(1500, seed=3, workdir=tmp_path, max_message_bytes=8192)
    assert not r["crashed"] and r["exit_code"] == 0 and not r["traceback"], r.get("stderr_tail")
    assert r["messages_in"] == 1500                      # every message reached the source
    assert r["counted"] == r["expected"]                 # each rejection under its named reason
    assert sum(r["expected"].values()) == r["garbage"] > 900 and len(r["expected"]) >= 10
    assert r["rows_out"] == r["rows_in"] > 0 and r["max_abs_error"] <= 1e-5  # every valid row processed
    assert r["gaps"] == {}                               # and nothing valid was lost


def test_short_extreme_values_run_leaves_the_neighbour_untouched(tmp_path):
    # issue 13: well-formed messages with absurd rates, channels, times, seq/sample_index and many ids
    r = fuzz_wire.fuzz_extreme(1500, seed=4, workdir=tmp_path, ids=500, max_message_bytes=16384)
    assert not r["crashed"] and r["exit_code"] == 0 and not r["traceback"], r.get("stderr_tail")
    assert r["finite_json"] and r["rss_peak_mib"] <= 1024
    assert sum(r["refused"].values()) > 100 and set(r["refused"]) == {"rate", "channels"}
    assert r["neighbour_rows"] == r["neighbour_expected"] > 0 and r["neighbour_max_abs_error"] <= 1e-5
    assert r["neighbour_flags"] == [] and r["ok"], r.get("stderr_tail")


def test_fuzz_tool_decoder_part_finds_no_crash(tmp_path):
    rep = fuzz_wire.fuzz_decoders(150, seed=5, workdir=tmp_path)
    assert set(rep) == {"wire", "descriptor", "labels", "train_config", "stream_config", "model_file"}
    for target, r in rep.items():
        assert r["crashes"] == [], (target, r["crashes"][:3])
        assert r["inputs"] == 150 and sum(r["rejected"].values()) > 0


@pytest.mark.parametrize("key,value", [("hop_length", 10**20), ("sample_rate", -1), ("n_mels", "x")])
def test_absurd_front_end_values_in_a_real_model_file(model_bytes, tmp_path, key, value):
    # regression (tools/fuzz_wire.py): hop_length=10**20 raised OverflowError out of load_model
    (hlen,) = struct.unpack("<Q", model_bytes[:8])
    head = json.loads(model_bytes[8:8 + hlen])
    meta = json.loads(head["__metadata__"]["streamrnn"])
    meta["frontend"][key] = value
    head["__metadata__"]["streamrnn"] = json.dumps(meta)
    raw = json.dumps(head).encode()
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + model_bytes[8 + hlen:])
    with pytest.raises(ModelFileError, match="invalid 'frontend' metadata"):
        streamrnn.load_model(tmp_path / "m.safetensors")
