#!/usr/bin/env python3
"""Write a small negatives-only set (no speech anywhere) for ``tools/eval_vad.py --neg``.

The inputs users reported as "speech" from the bundled VAD, plus common non-speech:
16 kHz mono 16-bit WAV, ``--seconds`` each, ``--per-kind`` files per kind:

* ``fan``: ``sox -n fan.wav synth S brownnoise lowpass 400 gain -6`` (sox -R: repeatable;
  file i is the stretch [i*S, (i+1)*S) of one longer run, so the files differ);
* ``tone``: sines at 440 Hz and 1 kHz (then 250 Hz, 3 kHz, ...), peak -1 dBFS;
* ``dtmf``: random keypad digits, 100 ms tone pairs with 100 ms gaps, -6 dBFS;
* ``callprogress``: ringback 440 + 480 Hz (2 s on, 4 s off) and busy 480 + 620 Hz (0.5 s
  on / off), -10 dBFS;
* ``music``: three-note chords of harmonic tones, 0.5 s each with attack and decay, -3 dBFS;
* ``keyboard``: 5 ms decaying noise clicks at random times, about 8 per second;
* ``hum``: 50 Hz mains hum with harmonics, -20 dBFS;
* ``noise``: ``sox ... synth S pinknoise gain -20``;
* ``silence``: digital zeros.

Output: ``OUT/neg.jsonl`` (``{"audio": ...}`` per line) and ``OUT/neg_meta.jsonl``
(``{"kind": ..., "desc": ...}``, same order). NumPy parts draw from
``numpy.random.default_rng(seed)``, so the same ``--seed`` gives the same files.

Example::

    python tools/make_vad_negatives.py --out /tmp/vadneg --per-kind 2 --seconds 10
    python tools/eval_vad.py /tmp/vadc/test.jsonl --neg /tmp/vadneg/neg.jsonl --model vad
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
DTMF = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336),
        "6": (770, 1477), "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209),
        "0": (941, 1336), "#": (941, 1477)}


def _db(x: np.ndarray, peak_dbfs: float) -> np.ndarray:
    peak = np.max(np.abs(x))
    return x * (10 ** (peak_dbfs / 20) / peak) if peak > 0 else x


def _sines(freqs, t) -> np.ndarray:
    return sum(np.sin(2 * np.pi * f * t) for f in freqs)


def _gated(freqs, t, on_s: float, period_s: float) -> np.ndarray:
    return _sines(freqs, t) * ((t % period_s) < on_s)


def make(kind: str, i: int, seconds: float, rng: np.random.Generator, path: Path) -> str:
    """Write one file of ``kind`` (the i-th of its kind) to ``path``; returns a description."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    if kind in ("fan", "noise"):
        effect = ["brownnoise", "lowpass", "400", "gain", "-6"] if kind == "fan" else ["pinknoise", "gain", "-20"]
        # sox -R repeats the same noise every run: file i is the (i+1)-th stretch of one longer run.
        subprocess.run(["sox", "-R", "-n", "-r", str(SR), "-b", "16", "-c", "1", str(path), "synth",
                        str(seconds * (i + 1)), *effect, "trim", str(seconds * i)], check=True, capture_output=True)
        return "sox synth " + " ".join(effect)
    if kind == "tone":
        f = [440.0, 1000.0, 250.0, 3000.0][i % 4]
        x, desc = _db(np.sin(2 * np.pi * f * t), -1.0), f"sine {f:g} Hz, peak -1 dBFS"
    elif kind == "dtmf":
        digits = "".join(rng.choice(list(DTMF), size=int(seconds / 0.2)))
        x = np.zeros(n)
        for k, d in enumerate(digits):  # 100 ms tone, 100 ms gap
            a, b = int(k * 0.2 * SR), min(n, int((k * 0.2 + 0.1) * SR))
            x[a:b] = _sines(DTMF[d], t[a:b])
        x, desc = _db(x, -6.0), f"DTMF {digits}"
    elif kind == "callprogress":
        if i % 2 == 0:
            x, desc = _gated((440, 480), t, 2.0, 6.0), "ringback 440+480 Hz, 2 s on / 4 s off"
        else:
            x, desc = _gated((480, 620), t, 0.5, 1.0), "busy 480+620 Hz, 0.5 s on / off"
        x = _db(x, -10.0)
    elif kind == "music":
        x = np.zeros(n)
        for a in range(0, n, SR // 2):  # a chord every 0.5 s
            seg = t[: min(SR // 2, n - a)]
            env = np.minimum(seg / 0.01, 1.0) * np.exp(-seg * 4)  # 10 ms attack, decay
            root = 48 + int(rng.integers(0, 24))  # MIDI note
            for note in (root, root + 4 + int(rng.integers(0, 2)), root + 7):
                f0 = 440.0 * 2 ** ((note - 69) / 12)
                x[a:a + len(seg)] += env * sum(np.sin(2 * np.pi * h * f0 * seg) / h for h in range(1, 6))
        x, desc = _db(x, -3.0), "three-note chords, 5 harmonics"
    elif kind == "keyboard":
        x = np.zeros(n)
        click = rng.standard_normal(SR // 200) * np.exp(-np.arange(SR // 200) / 15)  # 5 ms
        for a in np.sort(rng.integers(0, n - len(click), size=int(8 * seconds))):
            x[a:a + len(click)] += click
        x, desc = _db(x, -12.0), "5 ms noise clicks, 8 per second"
    elif kind == "hum":
        x, desc = _db(sum(np.sin(2 * np.pi * 50 * h * t) / h for h in range(1, 8)), -20.0), "50 Hz hum, 7 harmonics"
    elif kind == "silence":
        x, desc = np.zeros(n), "digital silence"
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    sf.write(str(path), x.astype(np.float32), SR, subtype="PCM_16")
    return desc


KINDS = ("music", "tone", "callprogress", "dtmf", "fan", "keyboard", "hum", "noise", "silence")


def build(out: Path, per_kind: int = 2, seconds: float = 10.0, seed: int = 0, kinds=KINDS) -> Path:
    """Write the files, neg.jsonl and neg_meta.jsonl under ``out``; returns the manifest's path."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, meta = [], []
    for kind in kinds:
        for i in range(per_kind):
            name = f"{kind}_{i}.wav"
            desc = make(kind, i, seconds, rng, out / name)
            rows.append({"audio": name})
            meta.append({"kind": kind, "desc": desc, "seconds": seconds})
    (out / "neg.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (out / "neg_meta.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta), encoding="utf-8")
    return out / "neg.jsonl"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--per-kind", type=int, default=2, help="files per kind (default 2)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per file (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated kinds (default {','.join(KINDS)})")
    args = p.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad or args.per_kind < 1 or not 0 < args.seconds <= 3600:
        p.error(f"need kinds out of {','.join(KINDS)} (got {','.join(bad) or 'ok'}), --per-kind >= 1 "
                f"(got {args.per_kind}), 0 < --seconds <= 3600 (got {args.seconds})")
    path = build(args.out, args.per_kind, args.seconds, args.seed, kinds)
    print(f"{len(kinds) * args.per_kind} files, manifest {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
