"""Benchmark the log-mel front end: microseconds per frame, and the ratio to librosa.

Settings: 16 kHz, 25 ms window (400), 10 ms hop (160), n_fft 512, 40 mels.
Reports the best of several repeats (the machine is shared) for

* ``compute``  offline, one call on the whole signal;
* ``push``     streaming in 10 ms blocks (one frame per push: includes the Python
  overhead of a push, the cost a live stream pays);
* ``librosa``  ``librosa.feature.melspectrogram(center=False)`` + ``np.log`` on the same signal.

Run:  python tools/bench_frontend.py [--seconds 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from streamrnn.audio import LogMel


def best_of(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="signal length (s)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-fft", type=int, default=512)
    args = ap.parse_args(argv)

    sr, win, hop, n_mels = 16000, 400, 160, 40
    x = np.random.default_rng(0).standard_normal(int(args.seconds * sr)).astype(np.float32) * 0.1
    fe = LogMel(sample_rate=sr, n_fft=args.n_fft, win_length=win, hop_length=hop, n_mels=n_mels)
    T = fe.n_frames_for(len(x))
    fe.compute(x[:1000])  # compile / load the cached kernel outside the timing

    t_compute = best_of(lambda: fe.compute(x), args.repeats)

    def stream():
        fe.reset()
        for i in range(0, len(x), hop):
            fe.push(x[i:i + hop])

    t_push = best_of(stream, max(1, args.repeats // 2))

    print(f"signal {args.seconds:g} s at {sr} Hz, {T} frames, n_fft {args.n_fft}, win {win}, hop {hop}, {n_mels} mels")
    print(f"streamrnn compute  {t_compute / T * 1e6:8.2f} us/frame")
    print(f"streamrnn push     {t_push / T * 1e6:8.2f} us/frame (one 10 ms block per push)")
    try:
        import librosa
    except ImportError:
        print("librosa not installed: no comparison")
        return

    def lib():
        S = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=args.n_fft, hop_length=hop, win_length=win,
                                           center=False, n_mels=n_mels)
        np.log(S + 1e-6)

    lib()
    t_lib = best_of(lib, args.repeats)
    T_lib = 1 + (len(x) - args.n_fft) // hop
    print(f"librosa            {t_lib / T_lib * 1e6:8.2f} us/frame (melspectrogram center=False + log)")
    print(f"ratio compute / librosa = {t_compute / T / (t_lib / T_lib):.2f}")


if __name__ == "__main__":
    main()
