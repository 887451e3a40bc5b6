#!/usr/bin/env python3
"""Where the CPU of one live stream goes: `streamrnn stream --model vad --source demo` paced in real
time, in this process, with each part of the loop wrapped in a thread-CPU timer.

    python tools/live_profile.py [--seconds 10] [--sink null]

Prints the process's CPU seconds per audio second after start-up and, per part, the thread CPU
time, the number of calls and the time per call.  The timers add a little of their own (two
``time.thread_time`` calls per wrapped call); the parts nest (source.read includes the file read,
process_many the front end, the bank and the outputs).  On a shared machine use several runs.
"""

from __future__ import annotations

import argparse
import collections
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sink", default="null")
    a = ap.parse_args(argv)

    from streamrnn.config import StreamConfig
    from streamrnn.runtime import pipeline as P
    from streamrnn.runtime.run import build_pipeline

    p = build_pipeline(StreamConfig(model="vad", source="demo", sink=(a.sink,), duration=a.seconds))
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
    wrap(p.source, "_take", "  file read (decoded ahead)")
    wrap(p, "process_many", "process_many")
    wrap(P.StreamState, "prepare", "  prepare (front end)")
    wrap(P._BankedState, "prepare", "  prepare (check, defer)")
    wrap(p.processor, "run", "  processor.run (front end + bank)")
    wrap(p, "_emit_output", "  outputs (message, sinks, stats, events)")
    wrap(p, "_periodic_desc", "descriptors, heartbeats (1/s)")
    wrap(p, "_send_stats", "stats message (1/s)")
    t = {}

    def ready(_):
        acc.clear()
        cnt.clear()
        t["c0"], t["w0"] = time.process_time(), time.monotonic()

    p.run(on_ready=ready)
    c, w = time.process_time() - t["c0"], time.monotonic() - t["w0"]
    print(f"{c:.3f} CPU s over {w:.2f} s of paced audio: {c / w:.4f} CPU s per audio s "
          f"({c / w * 20000:.0f} us per 20 ms block)")
    for k, v in sorted(acc.items(), key=lambda kv: -kv[1]):
        print(f"  {k:42s} {v * 1e3:8.1f} ms {cnt[k]:6d} calls {v / cnt[k] * 1e6:8.1f} us/call")


if __name__ == "__main__":
    main()
