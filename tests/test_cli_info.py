"""`streamrnn info`, `--version` and error handling, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import streamrnn
from conftest import small_model


def run(*args):
    return subprocess.run([sys.executable, "-m", "streamrnn", *args], capture_output=True, text=True, timeout=120)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and streamrnn.__version__ in r.stdout


def test_info_text_and_json(tmp_path):
    m = small_model("lstm", layers=2, norm=True)
    m.labels = ["speech", "music", "noise"]
    path = tmp_path / "m.safetensors"
    m.save(path)
    r = run("info", str(path))
    assert r.returncode == 0, r.stderr
    assert "lstm, 2 layer(s), input 5, hidden 7" in r.stdout
    assert f"parameters  {m.n_params}" in r.stdout
    assert "['speech', 'music', 'noise']" in r.stdout
    r = run("info", "--json", str(path))
    d = json.loads(r.stdout)
    assert d["cell"] == "lstm" and d["n_params"] == m.n_params and d["file_bytes"] == path.stat().st_size


def test_info_on_a_bad_file_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage garbage garbage")
    r = run("info", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "streamrnn: error:" in r.stderr and "Traceback" not in r.stderr


def test_bench_command_writes_a_report(tmp_path):
    """`streamrnn bench` runs tools/bench.py; the report's numbers come from the run, not a template."""
    r = run("bench", "--quick", "--only", "bound", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "bench.json").read_text())
    assert rep["bound"]["bandwidth_GBps"] > 0.1
    md = (tmp_path / "bench.md").read_text()
    assert f"{rep['bound']['bandwidth_GBps']:.1f} GB/s" in md



def test_info_says_bidirectional_and_look_ahead(tmp_path):
    streamrnn.Model.random("gru", 3, 4, output_size=1, bidirectional=True).save(tmp_path / "bi.safetensors")
    m = small_model("gru")
    streamrnn.Model(m.arch, m.tensors(), delay=7).save(tmp_path / "d.safetensors")
    assert "gru, 1 layer(s), input 3, hidden 4, bidirectional (offline only)" in run(
        "info", str(tmp_path / "bi.safetensors")).stdout
    assert "look-ahead 7 frame(s)" in run("info", str(tmp_path / "d.safetensors")).stdout
