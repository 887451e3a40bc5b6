"""Access control and resource limits: no pickle, loopback binds (and a warning otherwise),
libzmq's MAXMSGSIZE, CurveZMQ encryption and client authentication (real sockets on 127.0.0.1
and the real CLI), `streamrnn keygen`, and the caps on streams, queues and model files."""

import json
import logging
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth

import streamrnn
from streamrnn.errors import ConfigError, ModelFileError
from streamrnn.config import LIMITS, StreamConfig, load_stream_config
from streamrnn.stats import Stats
from streamrnn.transport import wire
from streamrnn.transport.endpoints import (CurveConfig, close_socket, exposure_warning, is_loopback_host,
                                           open_socket, parse_zmq_uri, write_keypair)
from streamrnn.transport.sinks import ZmqSink
from streamrnn.transport.sources import ZmqSource

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "streamrnn"
sys.path.insert(0, str(Path(__file__).parent))
from test_cli_stream import Proc, free_port  # noqa: E402


# --- no pickle anywhere ------------------------------------------------------------------------
def _sources():
    return sorted(p for p in list(PKG.rglob("*.py")) + list((ROOT / "tools").rglob("*.py")))


def test_no_pickle_in_the_package_or_tools():
    bad = []
    for p in _sources():
        text = p.read_text(encoding="utf-8")
        for i, line in enumerate(text.splitlines(), 1):
            if re.search(r"\bimport\s+(c?pickle|dill|joblib|shelve|marshal)\b|\bfrom\s+(c?pickle|dill|joblib|shelve)\b"
                         r"|allow_pickle\s*=\s*True|recv_pyobj|send_pyobj|torch\.load\(", line):
                bad.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_every_np_load_refuses_pickles():
    calls = []
    for p in _sources():
        text = p.read_text(encoding="utf-8")
        for m in re.finditer(r"np\.load\(([^()]*(?:\([^()]*\)[^()]*)*)\)", text):
            calls.append((p, m.group(1)))
            assert "allow_pickle=False" in m.group(1), f"{p}: np.load({m.group(1)}) without allow_pickle=False"
    assert calls  # the data loader does use np.load: the check is not vacuous


def test_a_pickled_npz_is_refused(tmp_path):
    from streamrnn.errors import TrainingError
    from streamrnn.train.data import load_npz_folder

    np.savez(tmp_path / "evil.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(3))
    with pytest.raises(TrainingError, match="pickled objects are refused"):
        load_npz_folder(tmp_path)


# --- bind addresses ---------------------------------------------------------------------------
def test_default_host_is_loopback():
    assert parse_zmq_uri("zmq+pub://:5556").address == "tcp://127.0.0.1:5556"
    assert parse_zmq_uri("zmq+pull://:5555").address == "tcp://127.0.0.1:5555"


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True),
                                       ("[::1]", True), ("0.0.0.0", False), ("*", False), ("192.0.2.7", False),
                                       ("eth0", False), ("[::]", False), ("10.1.2.3", False)])
def test_loopback_detection(host, loop):
    assert is_loopback_host(host) is loop


def test_binding_elsewhere_logs_a_warning_naming_the_address(caplog):
    # Checked without binding: no test ever opens a non-loopback address.
    for uri in ("zmq+pub://0.0.0.0:5556", "zmq+pull://192.0.2.7:5555", "zmq+push://10.0.0.1:7000?bind"):
        w = exposure_warning(parse_zmq_uri(uri))
        assert w and "not a loopback address" in w and parse_zmq_uri(uri).address in w and "--curve-allow" in w
    assert "all network interfaces" in exposure_warning(parse_zmq_uri("zmq+pub://0.0.0.0:5556"))
    for uri in ("zmq+pub://127.0.0.1:5556", "zmq+pub://127.0.0.2:5556", "zmq+pub+ipc:///tmp/x.sock",
                "zmq+sub://192.0.2.7:5556"):  # loopback, IPC, or connecting: nothing to say
        assert exposure_warning(parse_zmq_uri(uri)) is None
    # and open_socket logs it when it binds (127.0.0.2 is loopback: no warning; the message path
    # itself is exercised with a monkeypatched check so nothing binds beyond loopback)
    ctx = zmq.Context.instance()
    with caplog.at_level(logging.WARNING, logger="streamrnn.transport.endpoints"):
        s = open_socket(ctx, parse_zmq_uri(f"zmq+pub://127.0.0.2:{free_port()}"), hwm=16)
        close_socket(s, 0)
    assert not caplog.records
    import streamrnn.transport.endpoints as ep_mod

    orig = ep_mod.exposure_warning
    try:
        ep_mod.exposure_warning = lambda ep, curve=None: "binding pub to X, which is not a loopback address"
        with caplog.at_level(logging.WARNING, logger="streamrnn.transport.endpoints"):
            s = open_socket(ctx, parse_zmq_uri(f"zmq+pub://127.0.0.1:{free_port()}"), hwm=16)
            close_socket(s, 0)
    finally:
        ep_mod.exposure_warning = orig
    assert any("not a loopback address" in r.getMessage() for r in caplog.records)


# --- MAXMSGSIZE ---------------------------------------------------------------------------------
def test_receivers_set_libzmq_maxmsgsize_from_max_message_bytes(tmp_path):
    # (what happens above the cap over a real connection: test_pipeline.py
    #  test_frame_beyond_the_hard_cap_drops_only_that_connection)
    src = ZmqSource(f"zmq+pull+ipc://{tmp_path}/a.sock", max_message_bytes=10_000)
    src.open()
    try:
        assert src._sock.getsockopt(zmq.MAXMSGSIZE) == 2 * 10_000 + 4096
    finally:
        src.close()
    sink = ZmqSink(f"zmq+pub+ipc://{tmp_path}/b.sock")
    sink.open()
    try:
        assert sink._sock.getsockopt(zmq.MAXMSGSIZE) == -1  # senders receive nothing
    finally:
        sink.close()


# --- CurveZMQ -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    r = subprocess.run([sys.executable, "-m", "streamrnn", "keygen", str(d / "server"), "--name", "server"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in ("alice", "mallory"):
        write_keypair(d / name, name)
    (d / "allowed").mkdir()
    (d / "allowed" / "alice.key").write_bytes((d / "alice" / "alice.key").read_bytes())
    return d


def test_keygen_writes_a_loadable_pair_secret_private_and_never_overwrites(keys):
    pub, sec = keys / "server" / "server.key", keys / "server" / "server.key_secret"
    p_pub, p_none = zmq.auth.load_certificate(pub)
    s_pub, s_sec = zmq.auth.load_certificate(sec)
    assert p_none is None and p_pub == s_pub and len(s_sec) == 40
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    # the pair works: the public key derives from the secret one
    assert zmq.curve_public(s_sec) == s_pub
    r = subprocess.run([sys.executable, "-m", "streamrnn", "keygen", str(keys / "server"), "--name", "server"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "exists" in r.stderr and sec.read_bytes()  # not overwritten


def test_curve_options_are_checked(keys, tmp_path):
    with pytest.raises(ConfigError, match="no secret key"):
        CurveConfig.from_options(secret_key=keys / "alice" / "alice.key")
    with pytest.raises(ConfigError, match="cannot read"):
        CurveConfig.from_options(secret_key=tmp_path / "nope.key_secret")
    with pytest.raises(ConfigError, match="needs --curve-secret-key"):
        CurveConfig.from_options(allow_dir=keys / "allowed")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no client public keys"):
        CurveConfig.from_options(secret_key=keys / "server" / "server.key_secret", allow_dir=tmp_path / "empty")
    assert CurveConfig.from_options() is None


def _sub(ctx, address, server_pub=None, client=None):
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    if server_pub is not None:
        cpub, csec = zmq.auth.load_certificate(client) if client else zmq.curve_keypair()
        s.curve_secretkey, s.curve_publickey, s.curve_serverkey = csec, cpub, server_pub
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(address)
    return s


def _drain(s, t=0.3):
    got = []
    t_end = time.monotonic() + t
    while time.monotonic() < t_end:
        if s.poll(20):
            got.append(s.recv_multipart())
    return got


def test_curve_pub_sink_only_authorised_subscribers_receive(keys):
    server_pub, _ = zmq.auth.load_certificate(keys / "server" / "server.key")
    curve = CurveConfig.from_options(secret_key=keys / "server" / "server.key_secret", allow_dir=keys / "allowed")
    port = free_port()
    sink = ZmqSink(f"zmq+pub://127.0.0.1:{port}", curve=curve, stats=Stats())
    sink.open()
    ctx = zmq.Context.instance()
    addr = f"tcp://127.0.0.1:{port}"
    alice = _sub(ctx, addr, server_pub, keys / "alice" / "alice.key_secret")
    mallory = _sub(ctx, addr, server_pub, keys / "mallory" / "mallory.key_secret")  # encrypted, not allowed
    anon = _sub(ctx, addr, server_pub)                                                # throw-away key
    plain = _sub(ctx, addr)                                                           # no encryption
    others = {"mallory": mallory, "anon": anon, "plain": plain}
    try:
        # wait until alice's handshake and subscription are through
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end:
            sink.write(wire.Message(wire.HEARTBEAT, "warm"))
            if alice.poll(50):
                break
        else:
            raise AssertionError("the authorised subscriber never connected")
        time.sleep(0.3)  # the others had every chance to connect too
        _drain(alice, 0.1)
        n = 50
        for i in range(n):
            sink.write(wire.Message(wire.PRED, "s", epoch=5, seq=i, sample_index=i,
                                    data=np.full((1, 1), i, np.float32)))
        got = [wire.decode(f) for f in _drain(alice, 1.0)]
        assert [m.seq for m in got] == list(range(n)) and all(m.data[0, 0] == m.seq for m in got)
        for name, s in others.items():
            assert _drain(s, 0.2) == [], f"{name} received data"
    finally:
        for s in (alice, *others.values()):
            s.close(0)
        sink.close()
    from streamrnn.transport import endpoints

    assert endpoints._AUTH == {}  # the authenticator thread stopped with its last socket


def test_cli_stream_with_curve_on_both_sides(keys, tmp_path):
    """A CurveZMQ stream service: only alice's producer is processed, only alice's subscriber hears."""
    x = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    m = streamrnn.Model.random("gru", input_size=4, hidden_size=6, output_size=1, activation="sigmoid", seed=1)
    m.save(tmp_path / "m.safetensors")
    p_in, p_out = free_port(), free_port()
    s = Proc(["-m", "streamrnn", "-v", "stream", "--model", "m.safetensors", "--source", f"zmq+pull://127.0.0.1:{p_in}",
              "--sink", f"zmq+pub://127.0.0.1:{p_out}", "--sink", "jsonl:o.jsonl",
              "--curve-secret-key", keys / "server" / "server.key_secret", "--curve-allow", keys / "allowed"],
             tmp_path, "stream")
    try:
        s.ready()
        ctx = zmq.Context.instance()
        server_pub, _ = zmq.auth.load_certificate(keys / "server" / "server.key")
        alice = _sub(ctx, f"tcp://127.0.0.1:{p_out}", server_pub, keys / "alice" / "alice.key_secret")
        plain = _sub(ctx, f"tcp://127.0.0.1:{p_out}")
        mallory_sub = _sub(ctx, f"tcp://127.0.0.1:{p_out}", server_pub, keys / "mallory" / "mallory.key_secret")

        def push(client):
            p = ctx.socket(zmq.PUSH)
            p.setsockopt(zmq.LINGER, 0)
            if client is not None:
                cpub, csec = zmq.auth.load_certificate(client)
                p.curve_secretkey, p.curve_publickey, p.curve_serverkey = csec, cpub, server_pub
            p.connect(f"tcp://127.0.0.1:{p_in}")
            return p

        def msgs(stream, ep, rows):
            yield wire.encode(wire.Message(wire.DESC, stream, direction="in", epoch=ep,
                                           meta=wire.descriptor(stream, ep, "features", "float32", 4, 100.0)))
            for i in range(0, len(rows), 5):
                yield wire.encode(wire.Message(wire.DATA, stream, direction="in", epoch=ep, seq=i // 5,
                                               sample_index=i, t_capture=time.time(), data=rows[i:i + 5]))
            yield wire.encode(wire.Message(wire.EOS, stream, direction="in", epoch=ep, flags=wire.FLAG_END))

        bad_pushers = [push(keys / "mallory" / "mallory.key_secret"), push(None)]
        # wait for alice's subscription: her subscriber hears the stats messages (every second)
        t_end = time.monotonic() + 15
        while not alice.poll(100):
            assert time.monotonic() < t_end, s.err.read_text()
        _drain(alice, 0.1)
        for b, name in zip(bad_pushers, ("evil", "plain")):
            for f in msgs(name, 9, x):
                try:
                    b.send_multipart(f, zmq.NOBLOCK)  # never connects: queued or refused, never delivered
                except zmq.Again:
                    pass
        good = push(keys / "alice" / "alice.key_secret")
        for f in msgs("a", 3, x):
            good.send_multipart(f)
        s.wait_for_file(tmp_path / "o.jsonl", '"type":"eos"')
        time.sleep(0.5)
        heard = [wire.decode(f) for f in _drain(alice, 0.5)]
        assert s.finish(signal.SIGTERM) == 0
        preds = [q for q in heard if q.kind == wire.PRED and q.stream == "a"]
        y = np.concatenate([q.data for q in preds])
        np.testing.assert_allclose(y, m.forward(x), atol=1e-6)
        assert [q.seq for q in preds] == list(range(len(preds)))
        assert {q.stream for q in heard} <= {"a", "_stats"}  # nothing of the refused producers
        assert _drain(plain, 0.1) == [] and _drain(mallory_sub, 0.1) == []
        recs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
        assert {r["stream"] for r in recs} == {"a"}
        assert "CurveZMQ server, clients of" in s.err.read_text()
        for q in (alice, plain, mallory_sub, good, *bad_pushers):
            q.close(0)
    finally:
        s.kill()


# --- resource limits ------------------------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(LIMITS))
def test_every_config_value_has_a_hard_cap_with_a_clear_message(key):
    hi = LIMITS[key]
    over = hi * 2 if isinstance(hi, int) else hi * 2.0
    with pytest.raises(ConfigError, match=rf"{key} = .* is above the limit of {re.escape(str(hi))}"):
        load_stream_config(env={}, overrides={key: over})
    assert getattr(load_stream_config(env={}, overrides={key: hi}), key) == hi


def test_max_streams_hit_is_counted_and_said_once(caplog, tmp_path):
    src = ZmqSource(f"zmq+pull+ipc://{tmp_path}/x.sock", max_streams=2, stats=Stats())
    with caplog.at_level(logging.WARNING, logger="streamrnn.transport.sources"):
        for k in range(6):
            sid = f"s{k}"
            src._accept(wire.decode(wire.encode(wire.Message(
                wire.DESC, sid, direction="in", epoch=1,
                meta=wire.descriptor(sid, 1, "features", "float32", 3, 100.0)))))
            # live streams (with data) hold their place; descriptors alone would make room (closed.no_data)
            src._accept(wire.decode(wire.encode(wire.Message(
                wire.DATA, sid, direction="in", epoch=1, data=np.zeros((1, 3), np.float32)))))
    assert sorted(src.table) == ["s0", "s1"] and src.stats.get("drops", "max_streams") == 4
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "max_streams=2" in msgs[0] and "'s2' refused" in msgs[0]


def test_push_sink_queue_full_is_counted_and_said(caplog, tmp_path):
    sink = ZmqSink(f"zmq+push+ipc://{tmp_path}/nobody.sock", stats=Stats(), hwm_seconds=0.01)  # hwm 16, no peer
    sink.open()
    try:
        with caplog.at_level(logging.WARNING, logger="streamrnn.transport.sinks"):
            for i in range(100):
                sink.write(wire.Message(wire.HEARTBEAT, "s", seq=i))
    finally:
        sink.close()
    assert sink.hwm == 16 and sink.stats.get("drops", "hwm") >= 100 - 16  # at most one queue's worth held
    assert len(caplog.records) == 1 and "queue full" in caplog.records[0].getMessage()


def test_model_size_cap_from_the_api_and_the_cli(tmp_path):
    m = streamrnn.Model.random("lstm", input_size=4, hidden_size=32, output_size=1, activation="sigmoid")
    p = tmp_path / "m.safetensors"
    m.save(p)
    size = p.stat().st_size
    with pytest.raises(ModelFileError, match=rf"file is {size} bytes, above the limit of 1000 bytes"):
        streamrnn.load_model(p, max_bytes=1000)
    assert streamrnn.load_model(p, max_bytes=size).n_params == m.n_params
    r = subprocess.run([sys.executable, "-m", "streamrnn", "stream", "--model", str(p), "--source", "stdin",
                        "--sink", "null", "--max-model-bytes", "1000"], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 2 and f"file is {size} bytes, above the limit of 1000 bytes" in r.stderr
    env_cfg = load_stream_config(env={"STREAMRNN_MAX_MODEL_BYTES": "5000"})
    assert env_cfg.max_model_bytes == 5000 and StreamConfig().max_model_bytes == 256 * 2**20


# --- docs/operations.md stays true ----------------------------------------------------------------
def test_operations_doc_names_every_limit_option_and_existing_test():
    doc = (ROOT / "docs" / "operations.md").read_text()
    for key in LIMITS:
        assert f"`{key}`" in doc or f"`{key}`," in doc or key in doc, key
    for opt in ("--curve-secret-key", "--curve-server-key", "--curve-allow", "streamrnn keygen",
                "--max-message-bytes", "--max-model-bytes", "--max-streams", "Restart=on-failure", "User="):
        assert opt in doc, opt
    # every test the failure table points to exists
    refs = re.findall(r"`(test_\w+\.py)::(test_\w+)`|`::(test_\w+)`", doc)
    last_file = None
    n = 0
    for f, name, bare in refs:
        if f:
            last_file = f
        src = (ROOT / "tests" / (f or last_file)).read_text()
        assert f"def {name or bare}(" in src, (f or last_file, name or bare)
        n += 1
    assert n >= 15


def test_listen_command_as_a_curve_client(keys, tmp_path):
    curve = CurveConfig.from_options(secret_key=keys / "server" / "server.key_secret", allow_dir=keys / "allowed")
    port = free_port()
    sink = ZmqSink(f"zmq+pub://127.0.0.1:{port}", curve=curve, stats=Stats())
    sink.open()
    common = ["-m", "streamrnn", "listen", f"zmq+sub://127.0.0.1:{port}", "--duration", "20",
              "--curve-server-key", keys / "server" / "server.key"]
    alice = Proc([*common, "--count", "5", "--curve-secret-key", keys / "alice" / "alice.key_secret"], tmp_path, "alice")
    mallory = Proc([*common, "--curve-secret-key", keys / "mallory" / "mallory.key_secret"], tmp_path, "mallory")
    try:
        for p in (alice, mallory):
            p.wait_for("err", "listening on")
        t_end = time.monotonic() + 20
        i = 0
        while alice.p.poll() is None and time.monotonic() < t_end:
            sink.write(wire.Message(wire.HEARTBEAT, "s", seq=i))
            i += 1
            time.sleep(0.05)
        assert alice.p.wait(10) == 0
        got = [json.loads(line) for line in alice.out.read_text().splitlines()]
        assert len(got) == 5 and all(m["type"] == "hb" for m in got)
        mallory.p.send_signal(signal.SIGINT)
        assert mallory.p.wait(10) == 0 and mallory.out.read_text() == ""  # heard nothing
    finally:
        alice.kill()
        mallory.kill()
        sink.close()
