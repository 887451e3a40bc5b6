"""transport.listen: the `streamrnn listen` loop as a function (real ZeroMQ sockets on ipc)."""

from __future__ import annotations

import threading

import numpy as np
import zmq

from streamrnn.transport import wire
from streamrnn.transport.listen import listen, listen_endpoint


def test_listen_decodes_counts_and_stops(tmp_path):
    addr = f"{tmp_path}/l.sock"
    got, ready = [], threading.Event()
    stop = threading.Event()
    result = {}

    def run():
        result["stats"] = listen(f"zmq+pull+ipc://{addr}", got.append, stop=stop, with_data=False,
                                 on_ready=lambda ep: ready.set())

    t = threading.Thread(target=run)
    t.start()
    assert ready.wait(10)
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(f"ipc://{addr}")
    push.send_multipart(wire.encode(wire.Message(wire.PRED, "s", epoch=3, seq=5, data=np.eye(2, dtype=np.float32))))
    push.send_multipart([b"out/s/pred", b"BAD!" + bytes(60), b""])
    push.close()
    for _ in range(200):
        if len(got) == 3:
            break
        threading.Event().wait(0.025)
    stop.set()
    t.join(5)
    assert not t.is_alive()
    # one record per row, as the text sinks write them, plus the wire fields
    assert [(r["type"], r["frame"], r["seq"], r["n"]) for r in got[:2]] == [("pred", 0, 5, 2), ("pred", 1, 5, 2)]
    assert "y" not in got[0] and got[0]["topic"] == "out/s/pred" and got[0]["direction"] == "out"  # with_data=False
    assert got[2] == {"v": 1, "type": "bad", "reason": "magic", "error": got[2]["error"]}
    s = result["stats"]
    assert s.get("messages", "pred") == 1 and s.get("bad", "magic") == 1


def test_listen_endpoint_accepts_bare_zeromq_addresses():
    ep = listen_endpoint("tcp://127.0.0.1:5999", topic="out/mic0/")
    assert (ep.pattern, ep.topic) == ("sub", "out/mic0/")
    assert listen_endpoint("zmq+pull+ipc:///tmp/x.sock").pattern == "pull"
