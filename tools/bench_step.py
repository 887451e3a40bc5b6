#!/usr/bin/env python3
"""Per-frame time of the streaming step: streamrnn's Numba kernel vs plain NumPy, one run.

    python tools/bench_step.py [--frames 2000] [--repeats 5] [--json out.json]
                               [--baseline DIR] [--vad] [--cells gru,lstm,rnn_tanh] [--hidden 64,128,256]

For every cell (GRU, LSTM, RNN-tanh) at hidden 64/128/256, input 40, one
layer, batch 1, it times
  * ``push1``:  ``stream.push(x[t:t+1])`` frame by frame (the live case, per-call overhead included),
  * ``block``:  ``stream.push(x)`` with 100-frame blocks (file processing),
  * ``numpy``:  a float32 NumPy step written from the equations (W @ x per frame),
and prints the median over repeats in microseconds per frame and the ratio numpy/streamrnn.

``--vad`` adds the bundled VAD model (2-layer GRU, hidden 48, sigmoid head): push1, 10- and
100-frame blocks, and a bank of 500 streams advanced 10 frames each by one ``push_many``
(microseconds per stream-frame).

``--baseline DIR`` times an older copy of the kernels beside the current ones, interleaved in
the same process (the machine is shared, so separate runs are not comparable).  DIR holds
that version's ``kernels.py`` and ``model.py``, e.g.::

    mkdir -p /tmp/base && for f in kernels model; do
        git show REV:streamrnn/nn/$f.py > /tmp/base/$f.py; done

Each version builds its own ``Model`` from the same tensors and runs its own ``Stream`` and
``Bank`` classes on it; the largest output
difference to the current kernels is printed (float32 rounding level, not bit-equal when
the baseline predates fused multiply-add).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import time

import numpy as np

import streamrnn
from streamrnn.nn import model as current_model


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


def load_baseline(directory):
    """Import DIR/kernels.py and DIR/model.py as modules; the model module uses those kernels.

    The kernels module gets its own name so Numba's disk cache keeps it apart from the current one.
    """
    d = pathlib.Path(directory)
    spec = importlib.util.spec_from_file_location("baseline_kernels", d / "kernels.py")
    kernels = importlib.util.module_from_spec(spec)
    sys.modules["baseline_kernels"] = kernels
    spec.loader.exec_module(kernels)
    src = (d / "model.py").read_text().replace("from streamrnn.nn.kernels import", "from baseline_kernels import")
    mod = type(sys)("baseline_model")
    mod.__file__ = str(d / "model.py")
    sys.modules["baseline_model"] = mod
    exec(compile(src, str(d / "model.py"), "exec"), mod.__dict__)
    return mod


def interleaved(cases, repeats):
    """cases {name: (fn, n_units)} -> {name: median us per unit}, the cases interleaved per repeat."""
    times = {k: [] for k in cases}
    for _ in range(repeats):
        for k, (fn, n) in cases.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) / n * 1e6)
    return {k: float(np.median(v)) for k, v in times.items()}


def step_rows(a, impls, x):
    """Single-layer cells: push1 and 100-frame blocks per implementation, plus the NumPy step."""
    rows = []
    names = list(impls)
    head = " ".join(f"{'push1 ' + n:>15} {'block ' + n:>15}" for n in names)
    print(f"{'cell':9} {'H':>4} {head} {'numpy us':>9}" + ("  push1 old/new  block old/new" if len(names) > 1 else ""))
    frames1 = [x[t:t + 1] for t in range(a.frames)]
    blocks = [x[t:t + 100] for t in range(0, a.frames, 100)]
    for cell in a.cells.split(","):
        for H in (int(v) for v in a.hidden.split(",")):
            # each implementation builds its own Model (the weights' placement in memory is part of it)
            streams = {n: mod.Stream(mod.Model.random(cell, 40, H, output_size=None, seed=0)) for n, mod in impls.items()}
            m = streams["current"].model
            outs = {n: np.concatenate([s.push(f) for f in frames1]) for n, s in streams.items()}
            cases = {}
            for n, s in streams.items():
                cases[f"push1 {n}"] = ((lambda s=s: [s.push(f) for f in frames1]), a.frames)
                cases[f"block {n}"] = ((lambda s=s: [s.push(b) for b in blocks]), a.frames)
            step = numpy_stepper(m)
            nref = min(a.frames, 1000)
            cases["numpy"] = ((lambda: [step(x[t]) for t in range(nref)]), nref)
            r = interleaved(cases, a.repeats)
            row = dict(cell=cell, hidden=H, numpy_us=r["numpy"])
            line = f"{cell:9} {H:4d} " + " ".join(f"{r['push1 ' + n]:15.2f} {r['block ' + n]:15.2f}" for n in names)
            line += f" {r['numpy']:9.2f}"
            for n in names:
                row[f"push1_us_{n}"], row[f"block_us_{n}"] = r[f"push1 {n}"], r[f"block {n}"]
            if len(names) > 1:
                row["max_abs_diff"] = float(np.abs(outs["current"] - outs["baseline"]).max())
                line += (f"  {r['push1 baseline'] / r['push1 current']:13.2f}x {r['block baseline'] / r['block current']:13.2f}x"
                         f"  (max |diff| {row['max_abs_diff']:.1e})")
            print(line)
            rows.append(row)
    return rows


def vad_rows(a, impls):
    """The bundled VAD (2-layer GRU, H=48): push1, 10/100-frame blocks, a bank of 500 streams x 10 frames."""
    m = streamrnn.load_model("vad")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((a.frames, m.input_size)).astype(np.float32)
    n_streams, per = 500, 10
    batch = {i: rng.standard_normal((per, m.input_size)).astype(np.float32) for i in range(n_streams)}
    cases, results = {}, {}
    for n, mod in impls.items():
        mm = mod.Model(m.arch, m.tensors(), labels=m.labels, frontend=m.frontend, name=m.name)
        s = mod.Stream(mm)
        bank = mod.Bank(mm, 600)
        for i in batch:
            bank.open(i)
        results[n] = bank.push_many(batch)
        for size in (1, 10, 100):
            chunks = [x[t:t + size] for t in range(0, a.frames, size)]
            cases[f"push{size} {n}"] = ((lambda s=s, ch=chunks: [s.push(c) for c in ch]), a.frames)
        cases[f"bank500x10 {n}"] = ((lambda b=bank: b.push_many(batch)), n_streams * per)
    r = interleaved(cases, a.repeats)
    print(f"\nbundled VAD {m!r}\n{'case':12} " + " ".join(f"{n + ' us/frame':>22}" for n in impls))
    rows = []
    for case in ("push1", "push10", "push100", "bank500x10"):
        line = f"{case:12} " + " ".join(f"{r[f'{case} {n}']:22.3f}" for n in impls)
        if len(impls) > 1:
            line += f"   baseline/current {r[f'{case} baseline'] / r[f'{case} current']:.2f}x"
        print(line)
        rows.append(dict(case=case, **{f"us_per_frame_{n}": r[f"{case} {n}"] for n in impls}))
    if len(impls) > 1:
        d = max(float(np.abs(results["current"][i] - results["baseline"][i]).max()) for i in batch)
        print(f"bank outputs: max |current - baseline| = {d:.1e}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cells", default="gru,lstm,rnn_tanh")
    ap.add_argument("--hidden", default="64,128,256")
    ap.add_argument("--baseline", help="directory with an older kernels.py and model.py, timed in the same run")
    ap.add_argument("--vad", action="store_true", help="also time the bundled VAD model and a bank of 500 streams")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    impls = {"current": current_model}
    if a.baseline:
        impls["baseline"] = load_baseline(a.baseline)
    x = np.random.default_rng(0).standard_normal((a.frames, 40)).astype(np.float32)
    report = {"step": step_rows(a, impls, x)}
    if a.vad:
        report["vad"] = vad_rows(a, impls)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
