#!/usr/bin/env python3
"""Per-frame time of the streaming step: streamrnn's Numba kernel vs plain NumPy, one run.

    python tools/bench_step.py [--frames 2000] [--repeats 5] [--json out.json]

For every cell (GRU, LSTM, RNN-tanh) at hidden 64/128/256, input 40, one
layer, batch 1, it times
  * ``push1``:  ``stream.push(x[t:t+1])`` frame by frame (the live case, per-call overhead included),
  * ``block``:  ``stream.push(x)`` with 100-frame blocks (file processing),
  * ``numpy``:  a float32 NumPy step written from the equations (W @ x per frame),
and prints the median over repeats in microseconds per frame and the ratio numpy/streamrnn.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import streamrnn


def numpy_stepper(model):
    t = {k: v.astype(np.float32) for k, v in model.tensors().items()}
    cell, H = model.cell, model.hidden_size
    w_ih, w_hh, b_ih, b_hh = (t[f"rnn.{n}_l0"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    h = np.zeros(H, np.float32)
    c = np.zeros(H, np.float32)

    def sig(v):
        return 1.0 / (1.0 + np.exp(-v))

    def step(x):
        nonlocal h, c
        gi = w_ih @ x + b_ih
        gh = w_hh @ h + b_hh
        if cell == "gru":
            r = sig(gi[:H] + gh[:H])
            z = sig(gi[H:2 * H] + gh[H:2 * H])
            n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
            h = (1 - z) * n + z * h
        elif cell == "lstm":
            g = gi + gh
            i, f, o = sig(g[:H]), sig(g[H:2 * H]), sig(g[3 * H:])
            c = f * c + i * np.tanh(g[2 * H:3 * H])
            h = o * np.tanh(c)
        else:
            h = np.tanh(gi + gh)
        return h

    return step


def timeit(fn, n_frames, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) / n_frames * 1e6)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    rows = []
    x = np.random.default_rng(0).standard_normal((a.frames, 40)).astype(np.float32)
    print(f"{'cell':9} {'H':>4} {'push1 us':>9} {'block us':>9} {'numpy us':>9} {'numpy/push1':>11} {'numpy/block':>11}")
    for cell in ("gru", "lstm", "rnn_tanh"):
        for H in (64, 128, 256):
            m = streamrnn.Model.random(cell, 40, H, output_size=None, seed=0)
            s = m.stream()
            s.push(x[:2])  # compile / warm
            frames1 = [x[t:t + 1] for t in range(a.frames)]
            push1 = timeit(lambda: [s.push(f) for f in frames1], a.frames, a.repeats)
            blocks = [x[t:t + 100] for t in range(0, a.frames, 100)]
            block = timeit(lambda: [s.push(b) for b in blocks], a.frames, a.repeats)
            step = numpy_stepper(m)
            nframes = min(a.frames, 1000)
            ref = timeit(lambda: [step(x[t]) for t in range(nframes)], nframes, a.repeats)
            row = dict(cell=cell, hidden=H, push1_us=push1, block_us=block, numpy_us=ref,
                       speedup_push1=ref / push1, speedup_block=ref / block)
            rows.append(row)
            print(f"{cell:9} {H:4d} {push1:9.2f} {block:9.2f} {ref:9.2f} {ref / push1:10.1f}x {ref / block:10.1f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
