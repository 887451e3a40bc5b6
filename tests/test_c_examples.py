"""A second language: docs/examples/c/ (a producer and a consumer in C against libzmq, from
docs/protocol.md alone) compiled with the system's cc and libzmq3-dev, run against the real CLI
(`streamrnn stream --source zmq+pull://... --sink zmq+pub://...`) on 127.0.0.1.  The consumer's
rows are checked against the same tone run offline through the model (``AudioStream``); the frame
count against the document's rule, 1 + (n - 400) // 160 frames for n samples."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

import streamrnn
from test_cli_stream import ROOT, Proc, free_port, procs, stream_cmd  # noqa: F401 (procs: a fixture)

C_DIR = ROOT / "docs" / "examples" / "c"
MODEL = ROOT / "docs" / "protocol-vectors" / "audio.safetensors"  # window 400, hop 160 at 16 kHz


class Exe(Proc):
    """A compiled program (not Python) with Proc's files and waits."""

    def __init__(self, args, tmp, name):  # noqa: super().__init__ would run it under Python
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        self.p = subprocess.Popen([str(a) for a in args], stdout=open(self.out, "w"), stderr=open(self.err, "w"),
                                  cwd=tmp)


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """producer and consumer built into a temporary folder (CI installs cc, pkg-config and libzmq3-dev)."""
    assert shutil.which("cc") and shutil.which("pkg-config"), "a C compiler and pkg-config are needed (.ci/run)"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libzmq"], capture_output=True, text=True)
    assert flags.returncode == 0, f"libzmq3-dev is needed (.ci/run installs it): {flags.stderr}"
    out = tmp_path_factory.mktemp("cbin")
    built = {}
    for name in ("producer", "consumer"):
        cmd = ["cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out / name), str(C_DIR / f"{name}.c"),
               *shlex.split(flags.stdout), "-lm"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
        built[name] = out / name
    return built


def test_c_producer_and_consumer_against_the_real_cli(tmp_path, programs, procs):
    p_in, p_out = free_port(), free_port()
    srv = Proc(stream_cmd(str(MODEL), f"zmq+pull://127.0.0.1:{p_in}", f"zmq+pub://127.0.0.1:{p_out}",
                          extra=["--no-events"]), tmp_path, "stream",
               env={"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    procs.append(srv)
    srv.ready()
    cons = Exe([programs["consumer"], "--endpoint", f"tcp://127.0.0.1:{p_out}", "--topic", "out/c0/",
                "--until-eos", "1", "--timeout", "30"], tmp_path, "cons")
    procs.append(cons)
    cons.wait_for("out", r'"ready": true')
    time.sleep(0.5)  # the subscription travels to the publisher
    prod = Exe([programs["producer"], "--endpoint", f"tcp://127.0.0.1:{p_in}", "--stream", "c0", "--rate", "16000",
                "--seconds", "1.5", "--tone", "440", "--block", "333", "--epoch", "4242"], tmp_path, "prod")
    procs.append(prod)
    assert prod.finish(timeout=30) == 0, prod.err.read_text()
    sent = json.loads(prod.out.read_text())
    assert sent == {"stream": "c0", "epoch": 4242, "messages": 73, "rows": 24000}
    assert cons.finish(timeout=30) == 0, cons.err.read_text()
    msgs = [json.loads(ln) for ln in cons.out.read_text().splitlines()]
    assert msgs[0] == {"ready": True} and not cons.err.read_text()
    msgs = [m for m in msgs[1:] if m["kind"] not in ("hb",) and not (m["kind"] == "desc" and m["seq"] > 0)]
    kinds = [m["kind"] for m in msgs]
    assert kinds[0] == "desc" and kinds[-1] == "eos" and set(kinds[1:-1]) == {"pred"}, kinds
    desc, preds, eos = msgs[0], msgs[1:-1], msgs[-1]
    assert desc["meta"]["content"] == "pred" and desc["meta"]["rate"] == 100.0
    assert desc["meta"]["input"] == {"epoch": 4242, "content": "audio", "rate": 16000.0, "channels": 1}
    n_frames = 1 + (24000 - 400) // 160  # 148: the document's frame rule
    assert [p["seq"] for p in preds] == list(range(len(preds)))
    assert [p["sample_index"] for p in preds] == list(np.cumsum([0] + [len(p["data"]) for p in preds[:-1]]))
    assert all(p["flags"] == [] and p["epoch"] == desc["epoch"] for p in preds)
    assert [p["ref_seq"] for p in preds] == sorted(p["ref_seq"] for p in preds) and preds[-1]["ref_seq"] == ((n_frames - 1) * 160 + 400 - 1) // 333  # 71
    assert (eos["flags"], eos["sample_index"], eos["ref_seq"], eos["epoch"]) == (["end"], n_frames, 0, desc["epoch"])
    y = np.array([r for p in preds for r in p["data"]], np.float32)
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(24000) / 16000)).astype(np.float32)  # the producer's tone
    np.testing.assert_allclose(y, streamrnn.load_model(str(MODEL)).audio_stream(16000).push(x), atol=1e-5)
    assert srv.finish(signal.SIGTERM) == 0
