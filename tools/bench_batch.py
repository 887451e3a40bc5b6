"""The "batch" section of tools/bench.py: a corpus cut into speech segments, end to end.

A generated corpus of 1 hour at 16 kHz (60 WAV files of 60 s: the demo recording tiled, each file
rotated differently) goes through

* ``streamrnn batch DIR --model vad --out OUT --workers 1`` (a subprocess: start-up, model load,
  reading, the VAD, segments written per file);
* Silero VAD's own offline entry point, ``get_speech_timestamps`` over each file (its packaged
  TorchScript model, ``load_silero_vad()``, one torch thread, one process), the loop people write.

CPU time is the child process's (and its workers') user + system time, from ``getrusage``: start-up
included for both.  Hours of audio per CPU minute = 1 h / (CPU s / 60).

The speed-up with N workers is the wall time of 1 worker over that of N, on 10 hours of audio (the
same 60 files hard-linked into 10 folders: no more disk): an hour is only a few seconds of work for
one worker, about as long as a worker takes to start (spawn, imports, the cached kernels).  Other
processes on the machine slow the wall times.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000

SILERO = r"""
import json, sys, time
from pathlib import Path
import soundfile as sf, torch
torch.set_num_threads(1)
from silero_vad import get_speech_timestamps, load_silero_vad
model = load_silero_vad()
t0 = time.process_time()
n = 0
for p in sorted(Path(sys.argv[1]).glob("*.wav")):
    x, sr = sf.read(str(p), dtype="float32")
    n += len(get_speech_timestamps(torch.from_numpy(x), model, sampling_rate=sr, return_seconds=True))
print(json.dumps({"loop_cpu_s": time.process_time() - t0, "segments": n}))
"""


def make_corpus(d: Path, n_files: int, seconds: int = 60) -> float:
    """``n_files`` WAV files of ``seconds`` s at 16 kHz in ``d``; returns the total seconds."""
    import soundfile as sf

    from streamrnn.transport.sources import demo_path

    x, sr = sf.read(str(demo_path()), dtype="float32")
    assert sr == RATE
    x = np.tile(x, seconds * sr // len(x) + 1)[: seconds * sr]
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        sf.write(str(d / f"f{i:03d}.wav"), np.roll(x, 7919 * i), sr, subtype="PCM_16")
    return float(n_files * seconds)


def link_copies(src: Path, d: Path, n: int) -> None:
    """``n`` folders of hard links to the files of ``src`` (copies where links are refused)."""
    import shutil

    for k in range(n):
        (d / f"copy{k}").mkdir(parents=True)
        for f in sorted(src.iterdir()):
            try:
                os.link(f, d / f"copy{k}" / f.name)
            except OSError:
                shutil.copyfile(f, d / f"copy{k}" / f.name)


def _child_cpu(cmd, env) -> tuple[float, float, str]:
    """(CPU s of the child and its children, wall s, stdout) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr[-2000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall, r.stdout


def _ours(corpus: Path, out: Path, workers: int, env) -> dict:
    cpu, wall, _ = _child_cpu([sys.executable, "-m", "streamrnn", "batch", str(corpus), "--model", "vad", "--out",
                               str(out), "--workers", str(workers), "--write", "segments"], env)
    s = json.loads((out / "summary.json").read_text())
    assert s["done"] == s["files"], s
    return {"cpu_s": cpu, "wall_s": wall, "files_cpu_s": s["cpu_seconds"], "segments_h": s["speech_hours"]}


def bench_batch(a) -> dict:
    n_files = 6 if a.quick else 60
    repeats = 1 if a.quick else 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    counts = sorted({1, 2, cores})
    n_copies = 2 if a.quick else 10
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        seconds = make_corpus(d / "corpus", n_files)
        hours = seconds / 3600
        link_copies(d / "corpus", d / "scale", n_copies)
        ones, runs, silero = [], {w: [] for w in counts}, []
        note = "Silero VAD: get_speech_timestamps with load_silero_vad() (TorchScript), 1 torch thread"
        for k in range(repeats):
            ones.append(_ours(d / "corpus", d / f"out_{k}", 1, env))
            for w in counts:
                runs[w].append(_ours(d / "scale", d / f"scale{w}_{k}", w, env))
            try:
                cpu, wall, out = _child_cpu([sys.executable, "-c", SILERO, str(d / "corpus")], env)
                silero.append({"cpu_s": cpu, "wall_s": wall, **json.loads(out.strip().splitlines()[-1])})
            except RuntimeError as e:
                note = f"Silero VAD not measured: {str(e).splitlines()[-1][:200]}"
    med = lambda rs, k: float(np.median([r[k] for r in rs]))  # noqa: E731
    one = ones
    r = {"audio_hours": hours, "files": n_files, "rate": RATE, "cores": cores, "repeats": repeats,
         "streamrnn_cpu_s": med(one, "cpu_s"), "streamrnn_files_cpu_s": med(one, "files_cpu_s"),
         "streamrnn_h_per_cpu_min": hours / (med(one, "cpu_s") / 60),
         "scale_audio_hours": hours * n_copies, "wall_s": {w: med(runs[w], "wall_s") for w in counts},
         "scale_cpu_s": {w: med(runs[w], "cpu_s") for w in counts},
         "speedup": {w: med(runs[1], "wall_s") / med(runs[w], "wall_s") for w in counts},
         "silero": note, "silero_cpu_s": med(silero, "cpu_s") if silero else None,
         "silero_loop_cpu_s": med(silero, "loop_cpu_s") if silero else None}
    r["silero_h_per_cpu_min"] = hours / (r["silero_cpu_s"] / 60) if silero else None
    r["vs_silero"] = r["streamrnn_h_per_cpu_min"] / r["silero_h_per_cpu_min"] if silero else None
    rows = [f"| streamrnn batch, 1 worker | {r['streamrnn_cpu_s']:.1f} | {r['streamrnn_h_per_cpu_min']:.2f} | 1x |"]
    if silero:
        rows.append(f"| {note} | {r['silero_cpu_s']:.1f} | {r['silero_h_per_cpu_min']:.3f} | "
                    f"{1 / r['vs_silero']:.3f}x (streamrnn {r['vs_silero']:.1f}x) |")
    else:
        rows.append(f"| {note} | - | - | - |")
    r["markdown"] = "\n".join([
        "## Batch: a corpus into speech segments", "",
        f"{hours:.2f} h of audio at 16 kHz ({n_files} WAV files of 60 s, the demo recording tiled) cut into speech "
        "segments. CPU seconds of the whole command (start-up, model load, reading, the model, writing), user + "
        f"system of the process and its workers, median of {repeats}; hours of audio per CPU minute = "
        "audio hours / CPU minutes. Silero VAD runs its own offline loop (`get_speech_timestamps` per file) in "
        "one process, in the same run.", "",
        "| | CPU s | hours of audio per CPU minute | vs streamrnn |", "|---|---:|---:|---:|", *rows, "",
        f"Of streamrnn's CPU, {r['streamrnn_files_cpu_s']:.1f} s went to the files themselves (summary.json's "
        "`cpu_seconds`); the rest is the start-up of Python, NumPy, Numba's cached kernels and the model.", "",
        f"Wall time with more worker processes (`--workers N`, spawn, each loading the model once) on "
        f"{hours * n_copies:.0f} h of audio (the same files hard-linked into {n_copies} folders; one hour is a "
        "few seconds of work, about as long as a worker takes to start):", "",
        "| workers | wall s | CPU s | cores busy (CPU / wall) | speed-up over 1 |", "|---:|---:|---:|---:|---:|",
        *[f"| {w} | {r['wall_s'][w]:.2f} | {r['scale_cpu_s'][w]:.1f} | {r['scale_cpu_s'][w] / r['wall_s'][w]:.2f} | "
          f"{r['speedup'][w]:.2f}x |" for w in counts],
        "", f"The machine has {cores} core(s). Cores busy well below the worker count means other processes held "
        "the cores (or the disk) meanwhile: the speed-up then measures the machine's load, not the workers.",
    ])
    print("batch", {k: v for k, v in r.items() if k != "markdown"}, flush=True)
    return r
