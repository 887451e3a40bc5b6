"""Kernels are cached on disk: a second process loads them and compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

WORKLOAD = r"""
import json, numpy as np, numba, streamrnn
from streamrnn.nn import kernels
for cell in ("gru", "lstm", "rnn_tanh", "rnn_relu"):
    for act in ("identity", "sigmoid", "softmax"):
        m = streamrnn.Model.random(cell, 4, 6, num_layers=2, output_size=2, activation=act, has_norm=True)
        m.stream().push(np.zeros((3, 4), np.float32))
        b = m.bank(3); b.open(0); b.push(0, np.zeros((2, 4), np.float32))
b = m.bank(4, threads=2); b._group = 1  # the threaded bank (two groups) too
b.open(0); b.open(1); b.push_many({0: np.zeros((2, 4), np.float32), 1: np.zeros((1, 4), np.float32)})
bm = streamrnn.Model.random("lstm", 4, 6, num_layers=2, output_size=2, has_norm=True, bidirectional=True)
bm.forward(np.zeros((3, 4), np.float32))  # the bidirectional path: its own kernels and tables
from streamrnn.nn import bidir, parallel
stats = {}
for mod in (kernels, parallel, bidir):
    for name in dir(mod):
        f = getattr(mod, name)
        if isinstance(f, numba.core.registry.CPUDispatcher) and f.signatures:
            stats[name] = {"hits": sum(f.stats.cache_hits.values()), "misses": sum(f.stats.cache_misses.values())}
print(json.dumps(stats))
"""


def run(cache_dir):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    r = subprocess.run([sys.executable, "-c", WORKLOAD], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_second_process_compiles_nothing(tmp_path):
    first = run(tmp_path)
    assert first["stream_push_kernel"]["misses"] > 0  # the empty cache forced compilation
    second = run(tmp_path)
    for name in ("stream_push_kernel", "bank_step_kernel", "bank_step_parallel_kernel", "reverse_lanes_kernel",
                 "join_directions_kernel"):
        assert second[name]["hits"] > 0, (name, second)
    compiled = {k: v["misses"] for k, v in second.items() if v["misses"]}
    assert not compiled, f"recompiled in the second process: {compiled}"
    assert list(tmp_path.rglob("*.nbi")), "no index files written to NUMBA_CACHE_DIR"
