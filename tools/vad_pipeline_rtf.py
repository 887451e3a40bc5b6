#!/usr/bin/env python3
"""Cost of the whole `streamrnn stream` pipeline per second of audio, pinned to one core.

Concatenates the first files of a manifest into one long 16 kHz WAV (default 60 files of
10 s = 10 min), runs

    taskset -c CORE streamrnn stream --model MODEL --source file:LONG.wav --sink null

as a subprocess (reading, resampler, front end, GRU, events, wire messages, sink: everything
but the terminal) and reads its CPU time (user + system) from ``os.wait4``'s resource usage.
The same command on a 1 s excerpt measures the fixed start-up cost (Python imports, loading
Numba's cached kernels, opening the model); the difference between the two runs divided by
the difference in audio is the steady-state cost per audio second.  CPU time, not wall
time, so other jobs on the machine do not inflate it (they can still slow it through shared
caches; repeat with --repeat and take the minimum).

    python tools/vad_pipeline_rtf.py runs/vad-corpus/test.jsonl --files 60 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def build_long(manifest: Path, n_files: int, out: Path) -> float:
    """Concatenate the first ``n_files`` audio files of ``manifest`` into ``out``; returns seconds."""
    from streamrnn.audio.files import read_audio

    parts, rate = [], None
    for line in manifest.read_text(encoding="utf-8").splitlines()[:n_files]:
        x, r = read_audio(manifest.parent / json.loads(line)["audio"])
        if rate not in (None, r):
            raise SystemExit(f"vad_pipeline_rtf: mixed rates {rate} and {r} in {manifest}")
        rate = r
        parts.append(x)
    x = np.concatenate(parts)
    sf.write(str(out), x, rate, subtype="PCM_16")
    return len(x) / rate


def run(model: str, wav: Path, core: int | None) -> dict:
    """CPU and wall seconds of one `streamrnn stream ... --sink null` subprocess."""
    exe = shutil.which("streamrnn")
    cmd = [exe] if exe else [sys.executable, "-m", "streamrnn"]
    cmd += ["stream", "--model", model, "--source", f"file:{wav}", "--sink", "null"]
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core)] + cmd
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"vad_pipeline_rtf: {' '.join(cmd)} failed:\n{err}")
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "wall_s": wall,
            "max_rss_mb": ru.ru_maxrss / 1024.0, "command": " ".join(cmd)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path, help="JSONL manifest (audio paths relative to it)")
    ap.add_argument("--model", default="vad", help="model file or bundled name (default vad)")
    ap.add_argument("--files", type=int, default=60, help="files to concatenate (default 60)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each length; the minimum counts")
    ap.add_argument("--core", type=int, default=0, help="CPU to pin to with taskset (default 0; -1: no pin)")
    ap.add_argument("--keep", type=Path, help="also keep the long WAV here")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    a = ap.parse_args(argv)
    core = None if a.core < 0 else a.core
    with tempfile.TemporaryDirectory() as d:
        long_wav, short_wav = Path(d) / "long.wav", Path(d) / "short.wav"
        long_s = build_long(a.manifest, a.files, long_wav)
        x, rate = sf.read(str(long_wav), dtype="int16")
        sf.write(str(short_wav), x[:rate], rate, subtype="PCM_16")  # 1 s: the start-up cost
        short_s = 1.0
        run(a.model, short_wav, core)  # warm the OS file cache and Numba's on-disk cache
        longs = [run(a.model, long_wav, core) for _ in range(a.repeat)]
        shorts = [run(a.model, short_wav, core) for _ in range(a.repeat)]
        if a.keep:
            shutil.copy(long_wav, a.keep)
    lo = min(longs, key=lambda r: r["cpu_s"])
    sh = min(shorts, key=lambda r: r["cpu_s"])
    res = {
        "model": a.model, "audio_s": long_s, "files": a.files, "core": core,
        "long_cpu_s": lo["cpu_s"], "long_wall_s": lo["wall_s"], "short_cpu_s": sh["cpu_s"],
        "max_rss_mb": lo["max_rss_mb"],
        "rtf_whole_process": lo["cpu_s"] / long_s,  # including start-up
        "rtf_steady": (lo["cpu_s"] - sh["cpu_s"]) / (long_s - short_s),  # per extra audio second
        "long_cpu_all": [r["cpu_s"] for r in longs], "short_cpu_all": [r["cpu_s"] for r in shorts],
        "command": lo["command"],
    }
    print(f"audio {long_s:.1f} s ({a.files} files); command: {lo['command']}")
    print(f"whole process: {lo['cpu_s']:.2f} CPU s (user {lo['user_s']:.2f}, sys {lo['sys_s']:.2f}), "
          f"wall {lo['wall_s']:.2f} s, max RSS {lo['max_rss_mb']:.0f} MB -> RTF {res['rtf_whole_process']:.2e}")
    print(f"start-up (1 s of audio): {sh['cpu_s']:.2f} CPU s")
    print(f"steady state: {res['rtf_steady']:.2e} CPU s per audio second "
          f"({1 / res['rtf_steady'] if res['rtf_steady'] > 0 else float('inf'):.0f}x real time on one core)")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
