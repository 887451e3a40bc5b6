"""The "many" section of tools/bench.py: ``Bank.push_many`` against batched PyTorch, the FMA bound.

    python tools/bench.py --only many            # the section alone (writes to a scratch dir)
    python tools/bench_many.py [--repeats 7] [--n 1,100,1000,10000] [--hidden 48,64]

N streams x 10 frames per call through a 2-layer GRU over 40 features with a sigmoid head
(the bundled VAD's shape: the width the bundled model has (64) is the model itself; any other
width, e.g. the earlier 48, has random weights of the same architecture) against PyTorch's
``nn.GRU`` (batch N, sequence 10, batch_first) + ``nn.Linear`` + sigmoid under ``no_grad``:
the batched alternative a user with many streams picks.  Each (shape, N, threads) case
times both sides interleaved in one process, median wall time of the repeats, in
microseconds per stream-frame.

The bound: one core's fused multiply-add peak, measured in the same run by a small Numba
kernel (a vectorised loop of 32 dependent FMAs per element over an L1-resident array: the
out-of-order core overlaps the elements, so it runs at the FMA units' throughput), timed in
thread CPU time.  The bank is reported as the fraction of that peak its multiply-adds reach
per busy core (its flops over its process CPU time).
"""

from __future__ import annotations

import os
import time

import numpy as np

FRAMES = 10  # frames per stream per call (100 ms of 10 ms frames)


def fma_peak_gflops(repeats: int) -> float:
    """One core's float32 fused-multiply-add throughput, GFLOP/s (2 flops per FMA), best repeat."""
    from numba import njit

    @njit(fastmath={"contract"})
    def chains(x, a, b, reps):
        for _ in range(reps):
            for j in range(x.shape[0]):
                v = x[j]
                for _ in range(32):  # unrolled by LLVM: 32 dependent FMAs per element
                    v = v * a + b
                x[j] = v

    x = np.ones(2048, np.float32)  # 8 KiB: stays in L1
    a, b = np.float32(0.999), np.float32(0.001)
    chains(x, a, b, 1)
    reps = 2000
    best = min(_timed(lambda: chains(x, a, b, reps)) for _ in range(max(repeats, 3)))
    return 2 * 32 * x.size * reps / best / 1e9


def _timed(fn) -> float:
    """CPU seconds of this thread in fn(): what the core did, not the time other processes took it."""
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def macs_per_frame(model) -> int:
    """Multiply-adds of one stream-frame: input and recurrent products of every layer, the head."""
    a = model.arch
    G, H, L = a.gates, a.hidden_size, a.num_layers
    return G * H * (a.input_size + H) + (L - 1) * G * H * 2 * H + H * model.output_size


def vad_width() -> int:
    import streamrnn

    return streamrnn.load_model("vad").hidden_size


def vad_models(hiddens):
    import streamrnn

    vad = streamrnn.load_model("vad")
    out = {}
    for H in hiddens:
        if H == vad.hidden_size:
            out[H] = vad
        else:  # the same architecture at another width (random weights: the time does not depend on them)
            out[H] = streamrnn.Model.random("gru", vad.input_size, H, num_layers=vad.num_layers, output_size=1,
                                            activation="sigmoid", seed=0)
    return out


def _torch_case(torch, model, frames_np, threads):
    a = model.arch
    gru = torch.nn.GRU(a.input_size, a.hidden_size, a.num_layers, batch_first=True)
    lin = torch.nn.Linear(a.hidden_size, model.output_size)
    x = torch.from_numpy(frames_np)  # (N, T, I)
    h = torch.zeros(a.num_layers, frames_np.shape[0], a.hidden_size)

    def run():
        nonlocal h
        torch.set_num_threads(threads)
        with torch.no_grad():
            y, h = gru(x, h)
            torch.sigmoid(lin(y))

    return run


def _bank_case(model, frames, threads):
    bank = model.bank(len(frames), threads=threads)
    for sid in frames:
        bank.open(sid)

    def run():
        bank.push_many(frames)

    return run


def _block_case(model, xs, threads):
    """``Bank.push_block``: the frames already in one (N, T, I) array, the slots looked up once."""
    bank = model.bank(xs.shape[0], threads=threads)
    for i in range(xs.shape[0]):
        bank.open(i)
    slots = bank.slots(range(xs.shape[0]))

    def run():
        bank.push_block(slots, xs)

    return run


def _kernel_case(model, xs):
    """The compiled call alone (what ``push_block`` runs after its checks): the part threads divide."""
    n, T, I = xs.shape
    bank = model.bank(n)
    for i in range(n):
        bank.open(i)
    slots = bank.slots(range(n))
    x = xs.reshape(n * T, I)
    offs = np.arange(0, (n + 1) * T, T, dtype=np.int64)
    y = np.empty((n * T, model.output_size), model.dtype)

    def run():
        bank._advance(x, offs, slots, y, T)

    return run


def _interleaved(cases, repeats, n):
    """{name: fn} -> (median wall us, median CPU us) per stream-frame, the cases interleaved per repeat."""
    for fn in cases.values():
        fn()  # warm: compile, allocate, start the pools
    calls = max(1, 20000 // (n * FRAMES))  # calls per repeat: at least ~20k stream-frames
    wall = {k: [] for k in cases}
    cpu = {k: [] for k in cases}
    for _ in range(repeats):
        for k, fn in cases.items():
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(calls):
                fn()
            wall[k].append((time.perf_counter() - t0) / (calls * n * FRAMES) * 1e6)
            cpu[k].append((time.process_time() - c0) / (calls * n * FRAMES) * 1e6)
    return ({k: float(np.median(v)) for k, v in wall.items()}, {k: float(np.median(v)) for k, v in cpu.items()})


def bench_many(repeats: int, ns=(1, 100, 1000, 10000), hiddens=(48, 64), threads=None) -> dict:
    """Rows of (hidden, N, threads, bank us, torch us, ratio, bank GFLOP/s, fraction of peak)."""
    from streamrnn.nn.parallel import max_threads

    try:
        import torch
    except ImportError:
        torch = None
    all_threads = max_threads()
    threads = threads or sorted({1, all_threads})
    peak = fma_peak_gflops(repeats)
    print(f"many: one core's FMA peak {peak:.1f} GFLOP/s", flush=True)
    rows = []
    rng = np.random.default_rng(0)
    models = vad_models(hiddens)
    inputs = {(H, n): rng.standard_normal((n, FRAMES, models[H].input_size)).astype(np.float32)
              for H in models for n in ns}
    # thread counts outermost: every 1-thread case runs before any pool of more threads exists (an
    # OpenMP pool spins for a while after each call, and on a small machine that takes the core the
    # next case runs on)
    for t in threads:
        for H, model in models.items():
            flops = 2 * macs_per_frame(model)
            for n in ns:
                xs = inputs[(H, n)]
                frames = {f"s{i}": xs[i] for i in range(n)}
                cases = {"bank": _bank_case(model, frames, t), "block": _block_case(model, xs, t)}
                if t == 1:
                    cases["kernel"] = _kernel_case(model, xs)
                if torch is not None:
                    cases["torch"] = _torch_case(torch, model, xs, t)
                med, med_cpu = _interleaved(cases, repeats, n)
                b, tt = med["bank"], med.get("torch")
                gflops = flops / b / 1e3
                row = {"hidden": H, "n": n, "threads": t, "bank_us": b, "block_us": med["block"],
                       "torch_us": tt, "ratio": tt / b if tt else None, "bank_gflops": gflops,
                       # the share of the peak from CPU time (all threads'): what the busy cores achieved
                       "fraction_of_peak": flops / med_cpu["bank"] / 1e3 / peak, "bank_cpu_us": med_cpu["bank"],
                       "torch_cpu_us": med_cpu.get("torch"),
                       "cpu_ratio": med_cpu["torch"] / med_cpu["bank"] if tt else None}
                if t == 1:  # the share of a call that threads divide: the kernel's CPU time over the entry's
                    row["parallel_fraction"] = {e: min(1.0, med_cpu["kernel"] / med_cpu[k])
                                                for e, k in (("push_many", "bank"), ("push_block", "block"))}
                rows.append(row)
                print("many", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    rows.sort(key=lambda r: (r["hidden"], r["n"], r["threads"]))
    notes = [f"machine: {os.cpu_count()} cores; thread counts measured: {', '.join(map(str, threads))}"]
    if torch is None:
        notes.append("PyTorch not installed: its column is skipped (pip install torch; the CPU wheel suffices)")
    return {"peak_gflops": peak, "frames": FRAMES, "rows": rows, "notes": notes,
            "markdown": markdown(peak, rows, notes, threads)}


def markdown(peak, rows, notes, threads) -> str:
    fmt = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = ["## Many streams: `Bank.push_many` vs batched PyTorch", "",
             f"N streams x {FRAMES} frames per call through a 2-layer GRU over 40 features with a sigmoid head "
             f"(hidden {vad_width()}: the bundled VAD; other widths: the same architecture, random weights) against PyTorch "
             f"`nn.GRU` (batch N, sequence {FRAMES}) + `nn.Linear` + sigmoid, both at the same thread count. "
             "Microseconds per stream-frame, median wall time of interleaved repeats in one process; ratio = "
             "PyTorch / streamrnn `push_many`; the CPU ratio is the same from the process's CPU time (on a "
             "shared machine it does not count the time other processes take the core). `push_block` is the "
             "array entry (frames already in one (N, T, I) array, slots looked up once). One core's "
             f"fused-multiply-add peak, measured in the same run: {peak:.1f} GFLOP/s (best repeat, thread CPU "
             "time); the bank's share of it is its flops over its CPU time (all threads), so per busy core.", "",
             "| hidden | N | threads | `push_many` us | `push_block` us | PyTorch us | ratio | CPU ratio | "
             "GFLOP/s | share of FMA peak |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['hidden']} | {r['n']} | {r['threads']} | {fmt(r['bank_us'], 3)} | {fmt(r['block_us'], 3)} | "
                     f"{fmt(r['torch_us'], 3)} | {fmt(r['ratio'])}x | {fmt(r['cpu_ratio'])}x | "
                     f"{fmt(r['bank_gflops'], 1)} | {fmt(100 * r['fraction_of_peak'], 0)} % |")
    lines.append("")
    if len(threads) > 1:
        lines += ["Thread scaling (time at 1 thread / time at t threads, same run):", "",
                  "| hidden | N | threads | `push_many` | `push_block` | PyTorch |", "|---:|---:|---:|---:|---:|---:|"]
        one = {(r["hidden"], r["n"]): r for r in rows if r["threads"] == 1}
        for r in rows:
            base = one.get((r["hidden"], r["n"]))
            if r["threads"] == 1 or base is None:
                continue
            tor = base["torch_us"] / r["torch_us"] if r["torch_us"] else None
            lines.append(f"| {r['hidden']} | {r['n']} | {r['threads']} | {base['bank_us'] / r['bank_us']:.2f}x | "
                         f"{base['block_us'] / r['block_us']:.2f}x | {fmt(tor)}x |")
        lines.append("")
    ext = [r for r in rows if r["threads"] == 1 and r.get("parallel_fraction") and r["n"] >= 1000]
    if ext:
        lines += ["Extrapolated, not measured (this machine has 2 cores): Amdahl's law S(t) = 1 / ((1 - p) + p / t) "
                  "with p the share of a 1-thread call's CPU time spent in the compiled kernel (the part the "
                  "threads divide; the rest is the entry's Python, which stays serial). It assumes the kernel's "
                  "lane groups scale perfectly, so it is an upper bound.", "",
                  "| hidden | N | entry | p | S(4) | S(8) | S(16) |", "|---:|---:|---|---:|---:|---:|---:|"]
        for r in ext:
            for entry, p in r["parallel_fraction"].items():
                cols = " | ".join(f"{1 / ((1 - p) + p / t):.1f}x" for t in (4, 8, 16))
                lines.append(f"| {r['hidden']} | {r['n']} | `{entry}` | {p:.3f} | {cols} |")
        lines.append("")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--n", default="1,100,1000,10000", help="stream counts")
    ap.add_argument("--hidden", default="48,64")
    ap.add_argument("--threads", default=None, help="thread counts (default: 1 and all)")
    a = ap.parse_args()
    th = [int(v) for v in a.threads.split(",")] if a.threads else None
    rep = bench_many(a.repeats, [int(v) for v in a.n.split(",")], [int(v) for v in a.hidden.split(",")], th)
    print(rep["markdown"])


if __name__ == "__main__":
    main()
