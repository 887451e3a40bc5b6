#!/usr/bin/env python3
"""The "serve" section of tools/bench.py: real-time 16 kHz streams through `streamrnn serve` with 1, 2 and
all cores, against one `streamrnn stream` process, and a paper projection to N machines.

    python tools/bench_serve.py [--streams 800] [--repeats 3] [--tick-ms MS] [--direct]   # prints JSON

`tools/loadgen.py` sends N streams of 100 ms int16 blocks in real time through the one ingress; for each
case (stream, serve --workers 1, 2, ..., all cores, and the control "2 x stream": two `stream` processes,
each fed half the streams by its own load generator, what a user without `serve` shards by hand;
interleaved repeats, medians) it records the CPU
seconds of the workers (every child process of the service), of the supervisor (its router and egress
proxy threads) and of the load generator, drops, frames out and the p50/p99 latency of the summary line.

Two measures of what `serve --workers 2` carries against `stream`:
- **CPU capacity** (the default): per-worker cost = worker CPU seconds per stream-second; capacity with k
  workers = k / cost (each worker on its own core).  It counts the workers only: not the supervisor (router
  and proxy, reported beside it as a fraction of a core), nor the load generator (reported too), which on a
  bigger machine run on other cores.  One router core forwards ``router_msg_per_s`` messages/s
  (tools/ingress_bench.py), i.e. router_msg_per_s / 10 streams of 100 ms blocks: the bound of one service.
- **Direct** (``--direct``): the largest N (in steps) that each case carries on this machine as it is, with
  the load generator, router and proxy on the same cores: no drops, every frame out, p99 < 100 ms and the
  generator on time.
A machine shared with other work gives noisy numbers: the medians of interleaved repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

from bench_sections import _cpu_seconds, _free_port  # noqa: E402


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            pass
    return out


def _cpu(pids) -> float:
    total = 0.0
    for p in pids:
        try:
            total += _cpu_seconds(p)
        except OSError:
            pass
    return total


SHARDED = "shard2"  # the control case: two `stream` processes, each fed half the streams by its own load generator


def _case_name(workers) -> str:
    return {None: "stream", SHARDED: "2 x stream (sharded by hand)"}.get(workers, f"serve x{workers}")


def _start(cmd: list, env: dict, ready: str) -> tuple:
    """A `streamrnn` process started and waited for (its ready line on stderr): (process, stderr lines so far)."""
    proc = subprocess.Popen([sys.executable, "-m", "streamrnn", *cmd], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    t_end = time.monotonic() + 120
    err_lines = []
    while time.monotonic() < t_end:  # wait for the ready line (workers loaded their kernels)
        line = proc.stderr.readline()
        err_lines.append(line)
        if ready in line or not line:
            break
    return proc, err_lines


def _summary(err: str, serve: bool) -> tuple:
    """(p50, p99 ms or None, drops, frames out or None) from the summary `stream` or `serve` prints at exit."""
    if serve:
        lat = re.search(r"latency p50 ([\d.]+) ms, p99 ([\d.]+) ms", err)
        drops = re.search(r"; drops (\d+);", err)
        frames = re.search(r"frames out (\d+)", err)
    else:
        lat = re.search(r"latency\s+p50 ([\d.]+) ms, p99 ([\d.]+) ms", err)
        drops = re.search(r"drops\s+(\d+)", err)
        frames = re.search(r"frames_out\s+(\d+)", err)
    return ([float(lat.group(1)), float(lat.group(2))] if lat else None, int(drops.group(1)) if drops else 0,
            int(frames.group(1)) if frames else None)


def run_case(workers, n: int, seconds: float, block_ms: int = 100, tick_ms: float | None = None) -> dict:
    """One run: ``workers`` None = `streamrnn stream`, ``SHARDED`` = two `stream` processes with n/2 streams
    each (what a user without `serve` would do), else `streamrnn serve --workers K`; ``tick_ms`` None: the
    default read tick."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    serve = workers not in (None, SHARDED)
    shards = 2 if workers == SHARDED else 1
    procs, gens, ports = [], [], []
    for _ in range(shards):
        p_in = _free_port()
        ports.append(p_in)
        common = ["--model", "vad", "--source", f"zmq+pull://127.0.0.1:{p_in}", "--no-events",
                  "--max-streams", str(n + 8)] + ([] if tick_ms is None else ["--tick-ms", str(tick_ms)])
        if not serve:
            # the same egress as serve's (a pub socket), so that only the service's own cost differs
            cmd = ["stream", *common, "--sink", f"zmq+pub://127.0.0.1:{_free_port()}", "--duration", str(seconds + 8)]
        else:
            cmd = ["serve", *common, "--sink", f"zmq+pub://127.0.0.1:{_free_port()}", "--workers", str(workers)]
        procs.append(_start(cmd, env, "streamrnn: serving" if serve else "streamrnn: streaming"))
    for p_in in ports:
        gens.append(subprocess.Popen([sys.executable, str(TOOLS / "loadgen.py"), "--streams", str(n // shards),
                                      "--seconds", str(seconds), "--block-ms", str(block_ms), f"tcp://127.0.0.1:{p_in}"],
                                     env=env, stdout=subprocess.PIPE, text=True))
    time.sleep(1.5)  # every stream has started
    proc = procs[0][0]
    # the CPU counted as the workers': serve's worker processes; `stream`'s own process (each shard's)
    kids = _descendants(proc.pid) if serve else [p.pid for p, _ in procs]
    c_sup0, c_w0, t0 = (_cpu([proc.pid]) if serve else 0.0), _cpu(kids), time.monotonic()
    outs = [g.communicate(timeout=seconds + 120)[0] for g in gens]
    c_sup1, c_w1, t1 = (_cpu([proc.pid]) if serve else 0.0), _cpu(kids), time.monotonic()
    if serve:
        time.sleep(1.0)
        proc.terminate()
    lat, drops, frames, sent = [], 0, 0, {"messages": 0, "behind_s": 0.0, "cpu_s": 0.0}
    for (p, err_lines), out in zip(procs, outs):
        err = "".join(err_lines) + p.communicate(timeout=120)[1]
        l_, d_, f_ = _summary(err, serve)
        lat.append(l_)
        drops += d_
        frames = None if f_ is None or frames is None else frames + f_
        g = json.loads(out.strip().splitlines()[-1])
        sent["messages"] += g["messages"]
        sent["behind_s"] = max(sent["behind_s"], g["behind_s"])
        sent["cpu_s"] += g.get("cpu_s") or 0.0
    wall = t1 - t0
    worker_cpu, sup_cpu = (c_w1 - c_w0), (c_sup1 - c_sup0)
    per = n // shards
    return {"case": _case_name(workers), "workers": workers, "streams": per * shards,
            "tick_ms": tick_ms,
            "wall_s": round(wall, 2), "worker_cpu_s": round(worker_cpu, 3), "supervisor_cpu_s": round(sup_cpu, 3),
            "cpu_s_per_stream_s": worker_cpu / (per * shards * wall), "messages_sent": sent["messages"],
            "generator_behind_s": sent["behind_s"], "generator_cpu_s": sent["cpu_s"],
            # the VAD's frames (25 ms window, 10 ms hop at 16 kHz) of every stream's audio
            "frames_expected": per * shards * ((int(seconds * 1000 / block_ms) * 16 * block_ms - 400) // 160 + 1),
            "drops": drops, "frames_out": frames,
            # the shards' latency: the worse of their p50s and p99s
            "latency_ms": [max(x[0] for x in lat), max(x[1] for x in lat)] if all(lat) else None}


def carried(r: dict) -> bool:
    """A run the case carried: no drops, every frame out, p99 under 100 ms, the generator on time."""
    return (not r["drops"] and (r["frames_out"] or 0) >= r["frames_expected"] and r["latency_ms"] is not None
            and r["latency_ms"][1] < 100 and r["generator_behind_s"] < 0.1)


def direct_check(cases, seconds: float, tick_ms, start: int = 800, step: int = 400, top: int = 4000) -> list[dict]:
    """The largest N each case carries on this machine as it is (``carried``), in steps of ``step``
    streams from ``start``: the first N that fails ends the search (one retry, the machine is shared)."""
    out = []
    for c in cases:
        best, tried, n = None, [], start
        while n <= top:
            r = run_case(c, n, seconds, tick_ms=tick_ms)
            ok = carried(r)
            if not ok:  # one retry: another engineer's burst of work can fail one run
                r = run_case(c, n, seconds, tick_ms=tick_ms)
                ok = carried(r)
            tried.append({k: r[k] for k in ("streams", "drops", "frames_out", "frames_expected", "latency_ms",
                                            "generator_behind_s", "worker_cpu_s", "supervisor_cpu_s",
                                            "generator_cpu_s", "wall_s")} | {"carried": ok})
            print("direct", tried[-1], flush=True)
            if not ok:
                break
            best, n = n, n + step
        out.append({"case": _case_name(c), "workers": c, "max_streams": best,
                    "runs": tried})
    base = out[0]["max_streams"]
    for d in out:
        d["vs_stream"] = d["max_streams"] / base if base and d["max_streams"] else None
    return out


def bench_serve(a) -> dict:
    # 800 streams: `stream` at about half a core, each of 2 workers at a quarter; with fewer, what a read costs
    # whatever its size (the poll, two kernel calls) weighs on the workers' small reads (docs/bench.md)
    n = getattr(a, "serve_streams", None) or (200 if a.quick else 800)
    seconds = 5 if a.quick else 10
    repeats = 1 if a.quick else max(3, min(a.repeats, 5))
    cores = os.cpu_count() or 1
    cases = [None, 1, 2, SHARDED] + ([cores] if cores > 2 else [])
    if getattr(a, "cases", None):
        cases = [None if c == "stream" else c if c == SHARDED else int(c) for c in a.cases.split(",")]
    runs = {c: [] for c in cases}
    tick = getattr(a, "tick_ms", None)
    for _ in range(repeats):  # interleaved: other work on the machine hits every case alike
        for c in cases:
            r = run_case(c, n, seconds, tick_ms=tick)
            runs[c].append(r)
            print("serve", r, flush=True)
    router_msg_per_s = getattr(a, "router_msg_per_s", None) or 204_000  # tools/ingress_bench.py, this machine
    rows = []
    for c, rs in runs.items():
        cost = statistics.median(r["cpu_s_per_stream_s"] for r in rs)
        k = 2 if c == SHARDED else c or 1
        lat = [r["latency_ms"] for r in rs if r["latency_ms"]]
        rows.append({"case": rs[0]["case"], "workers": c, "streams": n, "repeats": len(rs),
                     "cpu_s_per_stream_s": cost, "streams_per_core": 1 / cost if cost else None,
                     "capacity_streams": k / cost if cost else None,
                     "drops": [r["drops"] for r in rs],
                     "p99_ms_median": statistics.median(x[1] for x in lat) if lat else None,
                     "p50_ms_median": statistics.median(x[0] for x in lat) if lat else None,
                     "supervisor_cpu_fraction": statistics.median(r["supervisor_cpu_s"] / r["wall_s"] for r in rs),
                     "generator_cpu_fraction": statistics.median((r["generator_cpu_s"] or 0) / seconds for r in rs)})
    base = rows[0]["capacity_streams"]
    for r in rows:
        r["vs_stream"] = r["capacity_streams"] / base if base and r["capacity_streams"] else None
    served = [r["streams_per_core"] for r in rows if r["streams_per_core"] and r["workers"] not in (None, SHARDED)]
    per_core = statistics.median(served) if served else None
    router_streams = router_msg_per_s / 10  # 100 ms blocks: 10 messages/s per stream
    # one service over a Ray cluster has one router; one service per machine (producers shard by the map) has m
    proj = [] if per_core is None else [{"machines": m, "cores_each": 16, "one_service": min(m * 15 * per_core, router_streams),
             "service_per_machine": m * min(15 * per_core, router_streams)} for m in (1, 4, 16)]
    md = ["## Serving on many cores (`streamrnn serve`)", "",
          f"`tools/loadgen.py` sends {n} real-time 16 kHz streams (100 ms int16 blocks) through the one ingress "
          "of `streamrnn serve --model vad --workers K` (or into one `streamrnn stream` process); CPU seconds of "
          "the workers per stream-second give the per-worker cost, and the capacity of K workers is K / cost "
          "(one worker per core). Not counted in it: the supervisor (router and egress proxy) and the load generator, "
          "whose CPU (fractions of a core) the last columns show. The control \"2 x stream (sharded by hand)\": two "
          "`stream` processes, each fed half the streams by its own load generator, counted the same way (K = 2): "
          "what two busy processes beside their load generators cost per stream on this machine without `serve`. "
          f"Read tick: {'the default' if tick is None else f'{tick:g} ms'}. "
          "Medians of interleaved repeats on a machine shared with other work.", "",
          "| case | CPU s per stream-s | streams per core | capacity (streams) | vs stream | drops | p50 / p99 ms | supervisor CPU | loadgen CPU |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['case']} | {r['cpu_s_per_stream_s']:.5f} | {r['streams_per_core']:.0f} | "
                  f"{r['capacity_streams']:.0f} | {r['vs_stream']:.2f}x | {max(d or 0 for d in r['drops'])} | "
                  f"{r['p50_ms_median'] or 0:.1f} / {r['p99_ms_median'] or 0:.1f} | {r['supervisor_cpu_fraction']:.3f} | {r['generator_cpu_fraction']:.3f} |")
    md += [] if per_core is None else ["", f"Projection (paper): {per_core:.0f} streams per worker core; one router core forwards about "
               f"{router_msg_per_s:,.0f} messages/s ({router_streams:,.0f} streams of 100 ms blocks). With 15 worker "
               "cores per 16-core machine, one service over a Ray cluster (one router) / one service per "
               "machine (producers shard by the documented map, crc32 of the id modulo the number of services): "
           + "; ".join(f"{p['machines']} machine(s): {p['one_service']:,.0f} / {p['service_per_machine']:,.0f} streams"
                       for p in proj) + "."]
    direct = None
    if getattr(a, "serve_direct", False):
        start, step = getattr(a, "direct_start", 800), getattr(a, "direct_step", 400)
        direct = direct_check([None, 2], seconds, tick, start=start, step=step)
        md += ["", f"Direct check: the largest number of streams (in steps of {step} from {start}) each case carries on this machine "
                   "as it is, the load generator, router and proxy on the same cores (no drops, every frame out, "
                   "p99 < 100 ms, the generator on time): "
               + "; ".join(f"{d['case']} {d['max_streams'] or 0:,}" + (f" ({d['vs_stream']:.2f}x)" if d["vs_stream"] else "")
                           for d in direct) + "."]
    return {"rows": rows, "runs": {str(k): v for k, v in runs.items()}, "projection": proj, "direct": direct,
            "tick_ms": tick, "markdown": "\n".join(md)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=None, dest="serve_streams", help="streams of every case (default 800)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--router-msg-per-s", type=float, default=None)
    ap.add_argument("--tick-ms", type=float, default=None, help="--tick-ms of every case (default: the default tick)")
    ap.add_argument("--direct", action="store_true", dest="serve_direct",
                    help="also find the largest N that stream and serve --workers 2 carry on this machine")
    ap.add_argument("--direct-start", type=int, default=800, help="the direct check's first N (default 800)")
    ap.add_argument("--direct-step", type=int, default=400, help="the direct check's step (default 400)")
    ap.add_argument("--cases", default=None, help=f"comma-separated cases, e.g. stream,1,2,{SHARDED} (default: stream,1,2,{SHARDED}[,cores]; {SHARDED}: "
                         "two stream processes, each fed half the streams by its own load generator)")
    a = ap.parse_args()
    rep = bench_serve(a)
    print(json.dumps({k: v for k, v in rep.items() if k != "runs"}, indent=1))
    print(rep["markdown"])


if __name__ == "__main__":
    main()
