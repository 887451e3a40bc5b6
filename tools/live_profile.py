#!/usr/bin/env python3
"""Where the CPU of one live stream goes: `streamrnn stream --model vad --source demo` paced in real
time, in this process, with each part of the loop wrapped in a thread-CPU timer.

    python tools/live_profile.py [--seconds 10] [--sink null]
    python tools/live_profile.py --floors [--seconds 4] [--repeats 3]
    python tools/live_profile.py --dispatch [--seconds 4] [--repeats 3]

Prints the process's CPU seconds per audio second after start-up and, per part, the thread CPU
time, the number of calls and the time per call.  The timers add a little of their own (two
``time.thread_time`` calls per wrapped call, themselves on cold caches); the parts nest (source.read
includes the file read, process_many the front end + model call and the outputs).  On a shared
machine use several runs.

``--floors``: what a paced 20 ms block costs at the least, each in its own paced loop (the same
sleep-until-due loop as ``tools/bench.py --only live``), interleaved over ``--repeats``, medians:
the loop alone (sleep and wake-up), 200 calls of one Python function (repeated code is cheap: only
distinct code and data pay for the cold caches), one call of a trivial Numba kernel, a Numba kernel that only
reads the model's weights (one value per 64-byte line), one that reads the front end's tables,
the front end + model kernel call of a block (``Bank.push_audio``), that call after the weights and
tables were read (their misses paid by the reads), that call twice (the second on warm caches), and
that call in a tight loop (warm caches).  The differences are the cold-cache costs of each part:
what is left of the first call beyond its data is its code (the compiled kernels are several
hundred KB; the path a block runs misses in the instruction caches after every sleep) and Python.

``--dispatch``: what Numba's dispatcher costs for ``audio_bank_one_kernel``'s 23 arguments, paced and
warm: kernels that do nothing, called with those 23 arguments and with one, through the dispatcher
and through their compiled entry points (a measurement only).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import numpy as np
from numba import njit

from bench_sections import _paced  # noqa: E402  (tools/ is this script's directory)


@njit(cache=True)
def _touch(a):
    """One value of each 64-byte line of a float32/float64 array: what reading it cold costs."""
    s = 0.0
    step = 64 // a.itemsize
    for i in range(0, a.shape[0], step):
        s += a[i]
    return s


def _nothing():
    return None


@njit(cache=True)
def _nothing1(a0):
    return 0


@njit(cache=True)
def _nothing23(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21,
               a22):
    return 0


def floors(seconds: float, repeats: int) -> None:
    import streamrnn
    from streamrnn.audio.stream import FeatureBank
    from streamrnn.transport.sources import demo_path

    import soundfile as sf

    m = streamrnn.load_model("vad")
    fb, bank = FeatureBank(m.frontend, 1), m.bank(1)
    fb.open("a")
    bank.open("a")
    x = sf.read(str(demo_path()), dtype="float32")[0]
    tb = fb.frontend._tables
    tables = np.concatenate([tb.ftab.view(np.float64), tb.itab.view(np.float64)])
    small = np.zeros(16, np.float32)
    def calls(b, n=200):
        for _ in range(n):
            _nothing()

    steps = {
        "loop alone (sleep, wake-up)": lambda b: None,
        "+ 200 calls of one Python function": calls,
        "+ a trivial Numba call": lambda b: _touch(small),
        f"+ read the weights ({m.theta.nbytes // 1024} KB)": lambda b: _touch(m.theta),
        f"+ read the front end's tables ({tables.nbytes // 1024} KB)": lambda b: _touch(tables),
        "+ front end + model of the block (Bank.push_audio)": lambda b: bank.push_audio(fb, 0, 0, b),
        "  the same after reading the weights and tables": lambda b: (_touch(m.theta), _touch(tables),
                                                                        bank.push_audio(fb, 0, 0, b)),
        "  the same, twice per block": lambda b: (bank.push_audio(fb, 0, 0, b), bank.push_audio(fb, 0, 0, b)),
    }
    for f in steps.values():
        f(x[:320])

    runs = {k: [] for k in steps}
    for _ in range(repeats):
        for k, f in steps.items():
            runs[k].append(_paced(f, x, 320, seconds) * 320 / 16000)  # CPU s per block
    print(f"paced 20 ms blocks, {seconds:g} s each, median of {repeats} (range), CPU us per block:")
    for k, v in runs.items():
        print(f"  {k:58s} {np.median(v) * 1e6:7.1f} ({min(v) * 1e6:.0f}-{max(v) * 1e6:.0f})")
    b = np.ascontiguousarray(x[:320])
    t0, n = time.process_time(), 20000
    for _ in range(n):
        bank.push_audio(fb, 0, 0, b)
    print(f"  {'Bank.push_audio in a tight loop (warm caches)':58s} {(time.process_time() - t0) / n * 1e6:7.1f}")


def dispatch(seconds: float, repeats: int) -> None:
    """What Numba's dispatcher costs for ``audio_bank_one_kernel``'s 23 arguments: a kernel that does
    nothing, called with the same 23 arguments (their types: the same dispatch work) and with one,
    paced and in a tight loop.  Also the same kernels' compiled entry points called directly (Numba
    internals, ``overloads[sig].entry_point``: a measurement only, not a supported way to call them)."""
    import streamrnn
    from streamrnn.audio.frontend import _scratch as frontend_scratch
    from streamrnn.audio.stream import FeatureBank

    m = streamrnn.load_model("vad")
    fb, bank = FeatureBank(m.frontend, 1), m.bank(1)
    fb.open("a")
    bank.open("a")
    x = np.zeros(320, np.float32)
    t = fb._one_setup(0, x)
    states, n_left, skip, hop, pre, use_fft, itab, ftab, n_scratch = fb.kernel_consts
    bad, peak = fb._bad_peak
    args = (x, fb._one, bad, peak, states, n_left, skip, hop, pre, use_fft, itab, ftab, fb._data,
            frontend_scratch(n_scratch), np.empty((t, m.input_size), np.float32), m._mi, m.theta, bank._one,
            bank.h, bank.c, bank._scratch(16), np.empty((t, 1), np.float32), 1)
    _nothing23(*args)
    _nothing1(x)
    e23 = _nothing23.overloads[_nothing23.signatures[0]].entry_point
    e1 = _nothing1.overloads[_nothing1.signatures[0]].entry_point
    steps = {"loop alone (sleep, wake-up)": (lambda *a: None, (x,)),
             "+ a do-nothing kernel, 1 argument (dispatcher)": (_nothing1, (x,)),
             "+ its compiled entry point, 1 argument": (e1, (x,)),
             "+ a do-nothing kernel, audio_bank_one_kernel's 23 arguments": (_nothing23, args),
             "+ its compiled entry point, 23 arguments": (e23, args)}
    runs = {k: [] for k in steps}
    for _ in range(repeats):
        for k, (f, a) in steps.items():
            runs[k].append(_paced(lambda b, f=f, a=a: f(*a), np.zeros(640, np.float32), 320, seconds) * 320 / 16000)  # CPU s per block
    print(f"paced 20 ms blocks, {seconds:g} s each, median of {repeats} (range), CPU us per block; "
          f"then a tight loop (warm), us per call:")
    for k, v in runs.items():
        f, a = steps[k]
        c0, nt = time.process_time(), 50000
        for _ in range(nt):
            f(*a)
        warm = (time.process_time() - c0) / nt
        print(f"  {k:62s} {np.median(v) * 1e6:7.1f} ({min(v) * 1e6:.0f}-{max(v) * 1e6:.0f})  warm {warm * 1e6:5.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sink", default="null")
    ap.add_argument("--floors", action="store_true", help="the cold-cache floors of a paced block (see above)")
    ap.add_argument("--dispatch", action="store_true", help="what Numba's dispatch of 23 arguments costs (see above)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    if a.floors:
        return floors(a.seconds, a.repeats)
    if a.dispatch:
        return dispatch(a.seconds, a.repeats)

    from streamrnn.config import StreamConfig
    from streamrnn.runtime import pipeline as P
    from streamrnn.runtime.run import build_pipeline

    p = build_pipeline(StreamConfig(model="vad", source="demo", sink=(a.sink,), duration=a.seconds,
                                    json=a.sink == "stdout"))
    acc, cnt = collections.Counter(), collections.Counter()
    clk = time.thread_time

    def wrap(obj, name, label):
        f = getattr(obj, name)

        def timed(*args, **kw):
            t0 = clk()
            try:
                return f(*args, **kw)
            finally:
                acc[label] += clk() - t0
                cnt[label] += 1

        setattr(obj, name, timed)

    wrap(p.source, "read", "source.read (sleep, file, chunk)")
    wrap(p.source, "_take", "  file read (a block of the decoded second)")
    wrap(p, "process_many", "process_many")
    wrap(P.StreamState, "prepare", "  prepare (front end; not on the lean path)")
    wrap(P._BankedState, "prepare", "  prepare (check, defer; not on the lean path)")
    wrap(p.processor, "run", "  processor.run (front end + model; not on the lean path)")
    wrap(p, "_process_lone", "  the lean path of a lone block (_process_lone)")
    wrap(p.processor.bank, "push_audio", "    Bank.push_audio (one kernel call)")
    wrap(p, "_emit_output", "    output row, events (_emit_output)")
    wrap(p, "_write_outputs", "    sinks, stats (_write_outputs)")
    wrap(p, "_periodic_desc", "descriptors, heartbeats (1/s)")
    wrap(p, "_send_stats", "stats message (1/s)")
    t = {}

    def ready(_):
        acc.clear()
        cnt.clear()
        t["c0"], t["w0"] = time.process_time(), time.monotonic()

    p.run(on_ready=ready)
    c, w = time.process_time() - t["c0"], time.monotonic() - t["w0"]
    out = sys.stderr if a.sink == "stdout" else sys.stdout  # stdout carries the JSON lines then
    print(f"{c:.3f} CPU s over {w:.2f} s of paced audio: {c / w:.4f} CPU s per audio s "
          f"({c / w * 20000:.0f} us per 20 ms block)", file=out)
    for k, v in sorted(acc.items(), key=lambda kv: -kv[1]):
        print(f"  {k:42s} {v * 1e3:8.1f} ms {cnt[k]:6d} calls {v / cnt[k] * 1e6:8.1f} us/call", file=out)


if __name__ == "__main__":
    main()
