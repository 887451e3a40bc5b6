"""Benchmark the log-mel front end: microseconds per frame, and the ratio to librosa.

Settings: 16 kHz, 25 ms window (400), 10 ms hop (160), n_fft 512, 40 mels.
Reports the minimum and the median over repeats (the machine may be shared) for

* ``compute``    offline, one call on the whole signal;
* ``push 10ms``  streaming in 10 ms blocks (one frame per push: includes the Python
  overhead of a push, the cost a live stream pays);
* ``push 100ms`` streaming in 100 ms blocks (10 frames per push: what each stream of
  the many-streams server pays);
* ``1000 streams`` 100 ms pushes round-robin over 1000 front ends with equal settings (the
  stream server's pattern: each stream's tables and state are cold in the CPU cache);
* ``kernel 10``  the frames kernel alone, 10 frames per call from ready float64 samples
  (``push 100ms`` minus this, times 10, is the per-push overhead of the Python wrapper);
* ``push 0``     pushes of one sample that complete no frame: the fixed cost of a push
  (checks, conversion, kernel call), in us per push;
* ``FeatureStream push 100ms``  ``FeatureStream.push`` (same rate, no resampling) in
  100 ms blocks, current module only: what the server's per-stream path pays;
* ``librosa``    ``librosa.feature.melspectrogram(center=False)`` + ``np.log`` on the same signal.

Every row is timed in every repeat, the variants in alternating order, so that load
changes on a shared machine hit them alike; compare the minimums.
``--baseline FILE`` also times the ``LogMel`` of another copy of the module (e.g. the
previous ``streamrnn/audio/frontend.py``, saved with ``git show HEAD~1:streamrnn/audio/frontend.py``),
interleaved with the current one in the same process, and checks that both give
bit-identical frames.

Run:  python tools/bench_frontend.py [--seconds 10] [--repeats 7] [--baseline old_frontend.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import time

import numpy as np

from streamrnn.audio import LogMel


def load_baseline(path):
    """Import a file as a module named after it (Numba's disk cache finds its module by that name)."""
    name = pathlib.Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="signal length (s)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--n-fft", type=int, default=512)
    ap.add_argument("--baseline", help="a frontend.py to compare against, timed in the same run")
    args = ap.parse_args(argv)

    sr, win, hop, n_mels = 16000, 400, 160, 40
    x = np.random.default_rng(0).standard_normal(int(args.seconds * sr)).astype(np.float32) * 0.1
    kw = dict(sample_rate=sr, n_fft=args.n_fft, win_length=win, hop_length=hop, n_mels=n_mels)
    fes = {"streamrnn": LogMel(**kw)}
    if args.baseline:
        fes["baseline"] = load_baseline(args.baseline).LogMel(**kw)
    T = fes["streamrnn"].n_frames_for(len(x))
    for fe in fes.values():
        fe.compute(x[:1000])  # compile / load the cached kernel outside the timing
    if args.baseline:
        same = np.array_equal(fes["streamrnn"].compute(x), fes["baseline"].compute(x))
        print(f"frames bit-identical to the baseline: {same}")

    def stream(fe, block):
        def run():
            fe.reset()
            for i in range(0, len(x), block):
                fe.push(x[i:i + block])
        return run

    one = x[:1].copy()

    def fixed(fe):  # a push that completes no frame, repeated T times: the fixed cost of a push
        def run():
            fe.reset()
            for _ in range(T):
                fe.push(one)
                if fe.pending >= win - 1:
                    fe.reset()
        return run

    def many(fe, n_streams=1000, rounds=3):  # round-robin over many front ends, as the stream server
        group = [type(fe)(**kw) for _ in range(n_streams)]
        blocks = [x[i * 10 * hop:(i + 1) * 10 * hop] for i in range(rounds + 1)]
        for f in group:
            f.push(blocks[0])  # the first push of a stream gives 8 frames, the others 10

        def run():
            for b in blocks[1:]:
                for f in group:
                    f.push(b)
            return rounds * n_streams * 10  # frames
        return run

    def offline(fe):
        def run():
            fe.compute(x)
        return run

    def kernel10(fe):  # the frames kernel alone on 10 frames of ready float64 samples, as often as push 100ms
        mod = sys.modules[type(fe).__module__]
        data = x[:win + 9 * hop].astype(np.float64)
        out = np.empty((10, fe.n_features), np.float32)
        tb = getattr(fe, "_tables", None)  # FrameTables since issue 14; a --baseline checkout may predate it
        itab, ftab, n_scratch = (tb.itab, tb.ftab, tb.n_scratch) if tb else (fe._itab, fe._ftab, fe._n_scratch)
        kernel = tb.kernel if tb else mod._frames_kernel
        scratch = mod._scratch(n_scratch)

        def run():
            for _ in range(0, len(x), 10 * hop):
                kernel(data, 10, itab, ftab, scratch, out)
        return run

    rows = [("compute", offline, ""),
            ("push 10ms", lambda fe: stream(fe, hop), "(one 10 ms block = 1 frame per push)"),
            ("push 100ms", lambda fe: stream(fe, 10 * hop), "(100 ms blocks = 10 frames per push)"),
            ("kernel 10", kernel10, "(_frames_kernel alone, 10 frames a call: push 100ms minus this = overhead)"),
            ("push 0", fixed, "(us per push of 1 sample that completes no frame: the fixed cost)"),
            ("1000 streams", many, "(100 ms pushes round-robin over 1000 front ends: tables shared or not)")]
    from streamrnn.audio.stream import FeatureStream

    fs = FeatureStream(fes["streamrnn"], sr)
    fs.push(x[:1000])
    extra = [("FeatureStream push 100ms", lambda: stream(fs, 10 * hop)(), "(same rate: the server's per-stream path)")]
    try:
        import librosa
    except ImportError:
        librosa = None
        print("librosa not installed: no comparison")
    T_lib = 1 + (len(x) - args.n_fft) // hop  # librosa needs n_fft samples for a frame
    if librosa is not None:
        def lib():
            S = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=args.n_fft, hop_length=hop, win_length=win,
                                               center=False, n_mels=n_mels)
            np.log(S + 1e-6)
            return T_lib

        lib()
        extra.append(("librosa", lib, "(melspectrogram center=False + log)"))

    times, makers = {}, {}
    for rep in range(args.repeats):  # everything interleaved, so load changes hit every row alike
        for row, make, _note in rows:
            order = list(fes.items())
            for name, fe in (order if rep % 2 == 0 else order[::-1]):  # alternate who runs first
                fn = makers.setdefault((row, name), make(fe))
                t0 = time.perf_counter()
                n = fn() or T  # frames (or pushes, for "push 0")
                times.setdefault((row, name), []).append((time.perf_counter() - t0) / n * 1e6)
        for row, fn, _note in extra:
            t0 = time.perf_counter()
            n = fn() or T
            times.setdefault((row, "streamrnn"), []).append((time.perf_counter() - t0) / n * 1e6)

    print(f"signal {args.seconds:g} s at {sr} Hz, {T} frames, n_fft {args.n_fft}, win {win}, hop {hop}, "
          f"{n_mels} mels; us/frame (push 0: us/push), min and median of {args.repeats} repeats")
    for row, _make, note in rows:
        for name in fes:
            t = times[(row, name)]
            print(f"{name:9s} {row:12s} min {min(t):7.2f}  median {np.median(t):7.2f}  {note}")
        if args.baseline:
            ratio = min(times[(row, "baseline")]) / min(times[(row, "streamrnn")])
            print(f"{'':9s} {row:12s} speed-up (min) {ratio:.2f}x")
    for name in fes:
        over = 10 * (min(times[("push 100ms", name)]) - min(times[("kernel 10", name)]))
        print(f"{name:9s} {'overhead':12s} {over:7.2f} us per 100 ms push  (10 x (min push 100ms - min kernel 10))")
    for row, _fn, note in extra:
        t = times[(row, "streamrnn")]
        print(f"{row:22s} min {min(t):7.2f}  median {np.median(t):7.2f}  {note}")
    if librosa is not None:
        ratio = min(times[("compute", "streamrnn")]) / min(times[("librosa", "streamrnn")])
        print(f"ratio compute / librosa (min) = {ratio:.2f}")


if __name__ == "__main__":
    main()
