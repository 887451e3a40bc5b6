#!/usr/bin/env python3
"""Build a labelled voice-activity (VAD) corpus from nothing but Debian packages.

Speech comes from ``espeak-ng`` (many voices and variants, several languages, random
rate, pitch, amplitude and word gap); noise and non-speech come from ``sox`` (white,
pink and brown noise, mains hum with harmonics, tones, sweeps, clicks, plucked and
organ-like chords, noise bursts, band-limited and reverberated versions). Each file is
a timeline of utterances separated by gaps, over a continuous (sometimes gated) noise
bed at a random SNR in [-5, 30] dB, with non-speech events in and around the gaps, at a
random overall level. Output: 16 kHz mono 16-bit WAV (or FLAC), one Audacity label file
per audio file, and one JSONL manifest per split.

Labels (``start<TAB>end<TAB>speech``, seconds) come from the CLEAN speech track, framed
exactly like the front end (25 ms window = 400 samples, 10 ms hop = 160 samples at
16 kHz; frame k covers samples [k*160, k*160+400)):

* a frame is speech when its window's mean energy is above ``THRESHOLD_DB`` (-40 dB)
  relative to the peak frame energy of the utterance it belongs to (each utterance is
  judged against its own peak, so a quiet utterance next to a loud one is still
  labelled);
* runs of non-speech frames shorter than ``MIN_GAP_S`` (100 ms = 10 frames) between two
  speech runs are merged into speech, so word gaps and stop closures do not chop the
  labels;
* speech runs shorter than ``MIN_SPEECH_S`` (30 ms = 3 frames) left after merging are
  dropped (isolated blips, e.g. the last few samples of a cut-off utterance);
* a run of speech frames [a, b) is written as the interval between the frame centres
  minus/plus half a hop: start = (a*160 + 200 - 80) / 16000, end = (b*160 + 200 - 80) /
  16000. Frame k is then speech exactly when its centre (k*160 + 200) / 16000 lies in
  [start, end) (see ``labels_to_frames``), so the labels round-trip to the same frames.
  The same frames come back from ``streamrnn.audio.files.frame_targets`` (a frame is
  speech when labels cover >= 50 % of its 25 ms window): the first and last frame of a
  run are 70 % covered, their outer neighbours 30 %; runs are >= 3 frames long and
  >= 10 frames apart, so no frame is claimed by two runs.

Splits: ``train`` and ``test`` (held out). The held-out split uses languages, voice
variants and noise settings that the training split never uses (``SPLITS`` below):

* languages: train en de fr es it nl pt pl ru; test sv fi cs hu tr;
* espeak-ng variants: disjoint lists (test: f4 m6 klatt4 Andy steph2 steph3 grandma
  victor iven3 Annie Gene Gene2 whisperf robosoft4 edward2);
* noise: bed colour white/pink (train) vs brown, optionally amplitude-modulated (test);
  hum 50 Hz vs 60 Hz; tones sine/square vs triangle/sawtooth; sweeps up vs down; click
  rates 0.5-4 Hz vs 6-15 Hz; major plucked chords (octaves 3-4) vs minor organ-like
  chords and high plucks (octave 5); band-pass white vs high-passed brown bursts;
  reverberance 10-50 % vs 60-100 %; telephone band 300-3400 Hz vs muffled low-pass
  2500 Hz for the band-limited mixes; bed filters low-pass 2-7 kHz / high-pass
  100-400 Hz vs band-reject/ low-pass 800-1500 Hz.

SNR (-5..30 dB), event level, gaps, rate/pitch/amplitude ranges and the final gain are
drawn from the same distributions in both splits.

Determinism: every file draws from its own ``numpy.random.Generator`` seeded by
``(seed, split, index)``; sox runs with ``-R`` (repeatable) and random noise excerpts
come from random offsets chosen by that generator, so the same ``--seed`` gives
byte-identical files whatever ``--jobs`` is.

Example::

    python tools/make_vad_corpus.py --out /tmp/vadc --n-train 20 --n-test 6 --seconds 10 --seed 1
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

log = logging.getLogger("make_vad_corpus")

GENERATOR_VERSION = 1
SR = 16000  # output sample rate, Hz
WIN = 400  # 25 ms analysis window at 16 kHz, same as the front end
HOP = 160  # 10 ms hop at 16 kHz, same as the front end
THRESHOLD_DB = -40.0  # frame energy relative to the utterance's peak frame energy
MIN_GAP_S = 0.10  # non-speech runs shorter than this between speech runs become speech
MIN_SPEECH_S = 0.03  # speech runs shorter than this (after gap merging) are dropped
SNR_RANGE_DB = (-5.0, 30.0)  # speech-to-noise-bed ratio
EVENT_RANGE_DB = (-12.0, 6.0)  # non-speech event level relative to the speech level
PEAK_RANGE_DBFS = (-30.0, -1.0)  # final peak level of the mix
REF_SPEECH_POWER = 0.01  # stand-in speech power for files without speech (-20 dBFS)
TEXT_DIR = Path(__file__).resolve().parent / "vad_text"

SPLITS = {
    "train": {
        "langs": ("en", "de", "fr", "es", "it", "nl", "pt", "pl", "ru"),
        "variants": (
            "", "m1", "m2", "m3", "m4", "m5", "m7", "m8", "f1", "f2", "f3", "f5",
            "klatt", "klatt2", "klatt3", "klatt5", "klatt6", "Alex", "Alicia", "Andrea",
            "adam", "anika", "aunty", "belinda", "benjamin", "boris", "caleb", "croak",
            "david", "ed", "edward", "grandpa", "iven", "iven2", "john", "linda", "max",
            "michel", "norbert", "paul", "quincy", "rob", "robert", "sandro", "shelby",
            "steph", "travis", "whisper", "zac", "Lee", "Marco", "Mario", "Michael",
            "Mike", "Storm", "Tweaky", "Jacky", "Hugo", "Denis", "Diogo", "Henrique",
            "Nguyen", "gustave", "kaukovalta", "marcelo", "miguel", "pablo", "pedro",
            "antonio", "AnxiousAndy", "robosoft", "robosoft2", "anikaRobot",
        ),
        "bed": ("white", "pink"),
        "bed_filter": ("none", "lowpass", "highpass"),
        "hum_hz": 50.0,
        "tone_waves": ("sine", "square"),
        "sweep": "up",
        "click_hz": (0.5, 4.0),
        "music": ("pluck_major",),
        "burst": "white_bandpass",
        "reverb": (10.0, 50.0),
        "bandlimit": "telephone",
    },
    "test": {
        "langs": ("sv", "fi", "cs", "hu", "tr"),
        "variants": (
            "f4", "m6", "klatt4", "Andy", "steph2", "steph3", "grandma", "victor",
            "iven3", "Annie", "Gene", "Gene2", "whisperf", "robosoft4", "edward2",
        ),
        "bed": ("brown", "brown_am"),
        "bed_filter": ("none", "bandreject", "lowpass_low"),
        "hum_hz": 60.0,
        "tone_waves": ("triangle", "sawtooth"),
        "sweep": "down",
        "click_hz": (6.0, 15.0),
        "music": ("organ_minor", "pluck_high"),
        "burst": "brown_highpass",
        "reverb": (60.0, 100.0),
        "bandlimit": "muffled",
    },
}
EVENT_KINDS = ("tone", "sweep", "clicks", "music", "burst", "hum")
MAJOR = (0, 4, 7)
MINOR = (0, 3, 7)
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


# ---------------------------------------------------------------------------- tools


def check_tools() -> None:
    """Raise RuntimeError naming the Debian package when espeak-ng or sox is missing."""
    for exe, pkg in (("espeak-ng", "espeak-ng"), ("sox", "sox")):
        if shutil.which(exe) is None:
            raise RuntimeError(f"{exe} not found on PATH; install the Debian package {pkg!r}")


def _run(cmd: list[str], data: bytes | None = None) -> bytes:
    """Run one subprocess, feeding ``data`` on stdin; return stdout or raise with stderr."""
    proc = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {' '.join(cmd)}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def sox_synth(seconds: float, synth_args: list[str], effects: list[str] = (), channels: int = 1) -> np.ndarray:
    """Synthesise ``seconds`` of 16 kHz audio with ``sox -n synth``; return float32 (N,).

    ``channels`` > 1 synthesises one signal per channel (chords) and mixes them to mono.
    """
    n = int(round(seconds * SR))
    cmd = ["sox", "-R", "-n", "-r", str(SR), "-c", str(channels), "-b", "32", "-e", "floating-point",
           "-t", "raw", "-", "synth", f"{seconds:.4f}", *synth_args, *effects]
    if channels > 1:
        cmd += ["remix", "-"]
    y = np.frombuffer(_run(cmd), dtype="<f4").astype(np.float32)
    return _fit(y, n)


def sox_effects(x: np.ndarray, effects: list[str]) -> np.ndarray:
    """Pass float32 (N,) 16 kHz audio through sox effects; output has the same length."""
    if not effects:
        return x
    cmd = ["sox", "-R", "-t", "raw", "-r", str(SR), "-c", "1", "-b", "32", "-e", "floating-point", "-",
           "-t", "raw", "-b", "32", "-e", "floating-point", "-", *effects]
    y = np.frombuffer(_run(cmd, np.ascontiguousarray(x, dtype="<f4").tobytes()), dtype="<f4")
    return _fit(y.astype(np.float32), len(x))


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) >= n:
        return y[:n].copy()
    return np.concatenate([y, np.zeros(n - len(y), np.float32)])


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Parse the 16-bit mono WAV that ``espeak-ng --stdout`` writes (its size fields are bogus)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not write a WAV stream")
    pos, rate = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"fmt ":
            rate = int.from_bytes(data[pos + 12:pos + 16], "little")
        elif cid == b"data":
            pcm = data[pos + 8:]
            pcm = pcm[: len(pcm) // 2 * 2]
            return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, rate
        pos += 8 + size
    raise RuntimeError("no data chunk in espeak-ng output")


def espeak(text: str, voice: str, rate_wpm: int, pitch: int, amplitude: int, word_gap: int) -> np.ndarray:
    """Speak ``text`` with espeak-ng; return float32 (N,) resampled to 16 kHz."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "-a", str(amplitude),
           "-g", str(word_gap), "-b", "1", "--stdin", "--stdout"]
    x, rate = _parse_wav(_run(cmd, text.encode("utf-8")))
    return soxr.resample(x, rate, SR, quality="HQ").astype(np.float32)


# --------------------------------------------------------------------------- labels


def frame_energy(x: np.ndarray) -> np.ndarray:
    """Mean energy of each front-end frame: frame k covers samples [k*HOP, k*HOP+WIN). Returns (n_frames,)."""
    n_frames = 0 if len(x) < WIN else 1 + (len(x) - WIN) // HOP
    cs = np.concatenate([[0.0], np.cumsum(np.asarray(x, np.float64) ** 2)])
    starts = np.arange(n_frames) * HOP
    return (cs[starts + WIN] - cs[starts]) / WIN


def n_frames_for(n_samples: int) -> int:
    """Number of complete front-end frames in ``n_samples`` samples."""
    return 0 if n_samples < WIN else 1 + (n_samples - WIN) // HOP


def merge_short_gaps(mask: np.ndarray, min_gap_frames: int) -> np.ndarray:
    """Fill non-speech runs shorter than ``min_gap_frames`` that lie between two speech runs."""
    mask = np.asarray(mask, bool).copy()
    idx = np.flatnonzero(mask)
    if len(idx) < 2:
        return mask
    gaps = np.flatnonzero(np.diff(idx) > 1)
    for g in gaps:
        a, b = idx[g] + 1, idx[g + 1]  # non-speech run [a, b)
        if b - a < min_gap_frames:
            mask[a:b] = True
    return mask


def drop_short_runs(mask: np.ndarray, min_run_frames: int) -> np.ndarray:
    """Clear speech runs shorter than ``min_run_frames``."""
    mask = np.asarray(mask, bool).copy()
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
        if b - a < min_run_frames:
            mask[a:b] = False
    return mask


def speech_frames(utterances: list[tuple[int, np.ndarray]], n_samples: int,
                  threshold_db: float = THRESHOLD_DB, min_gap_s: float = MIN_GAP_S,
                  min_speech_s: float = MIN_SPEECH_S) -> np.ndarray:
    """Frame mask (n_frames,) bool of the clean speech: each utterance against its own peak.

    ``utterances`` is a list of (start_sample, clean_samples) as placed in the file.
    """
    n_frames = n_frames_for(n_samples)
    mask = np.zeros(n_frames, bool)
    for start, utt in utterances:
        track = np.zeros(n_samples, np.float32)
        end = min(n_samples, start + len(utt))
        track[start:end] = utt[: end - start]
        e = frame_energy(track)  # (n_frames,)
        peak = e.max(initial=0.0)
        if peak <= 0.0:
            continue
        mask |= e > peak * 10.0 ** (threshold_db / 10.0)
    mask = merge_short_gaps(mask, int(round(min_gap_s * SR / HOP)))
    return drop_short_runs(mask, int(round(min_speech_s * SR / HOP)))


def frames_to_segments(mask: np.ndarray) -> list[tuple[float, float]]:
    """Speech runs [a, b) of a frame mask as (start_s, end_s) between frame centres -/+ half a hop."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    off = (WIN / 2 - HOP / 2) / SR  # 7.5 ms: frame centre minus half a hop
    return [(a * HOP / SR + off, b * HOP / SR + off) for a, b in zip(starts, ends)]


def labels_to_frames(segments: list[tuple[float, float]], n_frames: int) -> np.ndarray:
    """Frame mask (n_frames,) bool: frame k is speech when its centre (k*HOP + WIN/2)/SR is in a segment."""
    centres = (np.arange(n_frames) * HOP + WIN / 2) / SR
    mask = np.zeros(n_frames, bool)
    for start, end in segments:
        mask |= (centres >= start) & (centres < end)
    return mask


def write_labels(path: Path, segments: list[tuple[float, float]]) -> None:
    """Audacity label file: ``start<TAB>end<TAB>speech`` per line, seconds with 6 decimals."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for start, end in segments:
            f.write(f"{start:.6f}\t{end:.6f}\tspeech\n")


def read_labels(path: Path) -> list[tuple[float, float, str]]:
    """Read an Audacity label file into (start_s, end_s, label) tuples."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or parts[0].startswith("\\"):
                continue  # Audacity's spectral-selection lines start with a backslash
            out.append((float(parts[0]), float(parts[1]), parts[2] if len(parts) > 2 else ""))
    return out


# ------------------------------------------------------------------------- speech


_TEXT_CACHE: dict[str, list[str]] = {}


def sentences(lang: str) -> list[str]:
    """The sentences shipped for ``lang`` in tools/vad_text/LANG.txt."""
    if lang not in _TEXT_CACHE:
        path = TEXT_DIR / f"{lang}.txt"
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        _TEXT_CACHE[lang] = [ln for ln in lines if ln]
    return _TEXT_CACHE[lang]


def random_text(rng: np.random.Generator, lang: str) -> str:
    """One utterance's text: 1-2 sentences (60 %), a shuffled word list (30 %) or a number (10 %)."""
    sents = sentences(lang)
    u = rng.random()
    if u < 0.6:
        k = 1 if rng.random() < 0.7 else 2
        return " ".join(sents[i] for i in rng.choice(len(sents), size=k, replace=False))
    if u < 0.9:
        words = [w.strip(".,;:!?¿¡\"'") for s in sents for w in s.split()]
        words = [w for w in words if w]
        k = int(rng.integers(2, 9))
        return " ".join(words[i] for i in rng.choice(len(words), size=k, replace=False))
    return str(int(rng.integers(1, 100000)))


@dataclass(frozen=True)
class Utterance:
    voice: str  # espeak-ng voice, e.g. "de+m3"
    text: str
    rate_wpm: int
    pitch: int
    amplitude: int
    word_gap: int  # 10 ms units


def random_utterance(rng: np.random.Generator, split: str) -> Utterance:
    spec = SPLITS[split]
    lang = spec["langs"][int(rng.integers(len(spec["langs"])))]
    variant = spec["variants"][int(rng.integers(len(spec["variants"])))]
    return Utterance(
        voice=lang + ("+" + variant if variant else ""),
        text=random_text(rng, lang),
        rate_wpm=int(rng.integers(110, 261)),
        pitch=int(rng.integers(15, 86)),
        amplitude=int(rng.integers(50, 181)),
        word_gap=int(rng.integers(0, 4)),
    )


def speak(u: Utterance) -> np.ndarray:
    return espeak(u.text, u.voice, u.rate_wpm, u.pitch, u.amplitude, u.word_gap)


# -------------------------------------------------------------------------- noise


def _note(semitone: int) -> str:
    """Scientific note name of MIDI-like semitone number (60 = C4)."""
    return f"{NOTE_NAMES[semitone % 12]}{semitone // 12 - 1}"


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _fade(x: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    n = min(len(x) // 2, int(seconds * SR))
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x = x.copy()
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def noise_bed(rng: np.random.Generator, split: str, seconds: float) -> tuple[np.ndarray, dict]:
    """Continuous background noise for the whole file; returns (samples, description)."""
    spec = SPLITS[split]
    kind = spec["bed"][int(rng.integers(len(spec["bed"])))]
    colour = {"white": "whitenoise", "pink": "pinknoise", "brown": "brownnoise", "brown_am": "brownnoise"}[kind]
    offset = float(rng.uniform(0.0, 30.0))  # sox -R repeats its noise; a random excerpt varies it
    effects: list[str] = ["trim", f"{offset:.4f}"]
    filt = spec["bed_filter"][int(rng.integers(len(spec["bed_filter"])))]
    if filt == "lowpass":
        effects += ["lowpass", f"{rng.uniform(2000, 7000):.0f}"]
    elif filt == "highpass":
        effects += ["highpass", f"{rng.uniform(100, 400):.0f}"]
    elif filt == "bandreject":
        effects += ["bandreject", f"{rng.uniform(500, 3000):.0f}", "1q"]
    elif filt == "lowpass_low":
        effects += ["lowpass", f"{rng.uniform(800, 1500):.0f}"]
    if kind == "brown_am":  # fan/engine-like slow amplitude modulation
        effects += ["tremolo", f"{rng.uniform(0.5, 6.0):.2f}", f"{rng.uniform(30, 80):.0f}"]
    bed = sox_synth(offset + seconds, [colour], effects)[: int(round(seconds * SR))]
    desc = {"bed": kind, "bed_filter": filt}
    if rng.random() < 0.3:  # mains hum under the bed, 6-20 dB below it
        hum = _hum(rng, split, seconds)
        bed = bed / max(_rms(bed), 1e-9) + hum / max(_rms(hum), 1e-9) * 10 ** (-rng.uniform(6, 20) / 20)
        desc["hum"] = spec["hum_hz"]
    return bed.astype(np.float32), desc


def _hum(rng: np.random.Generator, split: str, seconds: float) -> np.ndarray:
    """Mains hum: a sawtooth at 50 or 60 Hz low-passed so a few harmonics remain."""
    f0 = SPLITS[split]["hum_hz"]
    return sox_synth(seconds, ["sawtooth", f"{f0:g}"], ["lowpass", f"{rng.uniform(300, 1200):.0f}"])


def event(rng: np.random.Generator, split: str, kind: str, seconds: float) -> np.ndarray:
    """One non-speech event of ``kind`` (see EVENT_KINDS), float32 (N,), faded in and out."""
    spec = SPLITS[split]
    if kind == "tone":
        wave = spec["tone_waves"][int(rng.integers(len(spec["tone_waves"])))]
        x = sox_synth(seconds, [wave, f"{np.exp(rng.uniform(np.log(150), np.log(3000))):.1f}"])
    elif kind == "sweep":
        lo = float(np.exp(rng.uniform(np.log(100), np.log(2000))))
        hi = lo * float(np.exp(rng.uniform(np.log(1.5), np.log(6.0))))  # at least half an octave
        a, b = (lo, hi) if spec["sweep"] == "up" else (hi, lo)
        x = sox_synth(seconds, ["sine", f"{a:.1f}/{b:.1f}"])
    elif kind == "clicks":
        lo, hi = spec["click_hz"]
        x = sox_synth(seconds, ["square", f"{rng.uniform(lo, hi):.2f}"], ["highpass", f"{rng.uniform(1500, 4000):.0f}"])
    elif kind == "music":
        x = _music(rng, spec["music"][int(rng.integers(len(spec["music"])))], seconds)
    elif kind == "burst":
        offset = float(rng.uniform(0.0, 20.0))
        if spec["burst"] == "white_bandpass":
            eff = ["bandpass", f"{rng.uniform(300, 5000):.0f}", f"{rng.uniform(0.3, 3):.2f}q"]
            x = sox_synth(offset + seconds, ["whitenoise"], ["trim", f"{offset:.4f}", *eff])
        else:
            eff = ["highpass", f"{rng.uniform(200, 2000):.0f}"]
            x = sox_synth(offset + seconds, ["brownnoise"], ["trim", f"{offset:.4f}", *eff])
    elif kind == "hum":
        x = _hum(rng, split, seconds)
    else:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {EVENT_KINDS}")
    if kind in ("music", "clicks", "burst", "tone") and rng.random() < 0.4:
        lo, hi = spec["reverb"]
        x = sox_effects(x, ["reverb", f"{rng.uniform(lo, hi):.0f}", "50", f"{rng.uniform(20, 100):.0f}"])
    return _fade(x, 0.02)


def _music(rng: np.random.Generator, style: str, seconds: float) -> np.ndarray:
    """A short chord progression: 2-6 chords of 3 notes, concatenated to ``seconds``."""
    n_chords = int(rng.integers(2, 7))
    dur = seconds / n_chords
    root0 = int(rng.integers(48, 60)) if style != "pluck_high" else int(rng.integers(72, 84))
    parts = []
    for _ in range(n_chords):
        root = root0 + int(rng.choice([0, 5, 7, 9, -3, 2]))
        if style == "pluck_major":
            notes, args = MAJOR, lambda s: ["pluck", _note(s)]
        elif style == "pluck_high":
            notes, args = MINOR, lambda s: ["pluck", _note(s)]
        else:  # organ_minor: sustained triangle waves
            notes, args = MINOR, lambda s: ["triangle", _note(s)]
        synth = [a for s in notes for a in args(root + s)]
        parts.append(_fade(sox_synth(dur, synth, channels=len(notes)), 0.01))
    return _fit(np.concatenate(parts), int(round(seconds * SR)))


def bandlimit_effects(split: str) -> list[str]:
    if SPLITS[split]["bandlimit"] == "telephone":
        return ["sinc", "300-3400"]
    return ["lowpass", "2500"]


# ---------------------------------------------------------------------------- files


@dataclass
class Clip:
    audio: np.ndarray  # float32 (N,), the final mix
    speech: np.ndarray  # float32 (N,), the clean speech track (unscaled)
    mask: np.ndarray  # bool (n_frames,), speech frames
    segments: list  # [(start_s, end_s)]
    meta: dict


def make_clip(rng: np.random.Generator, split: str, seconds: float, no_speech_p: float = 0.05) -> Clip:
    """Build one mixed clip and its labels. Everything random comes from ``rng``."""
    n = int(round(seconds * SR))
    speech = np.zeros(n, np.float32)
    utterances: list[tuple[int, np.ndarray]] = []
    voices: list[str] = []
    has_speech = rng.random() >= no_speech_p
    t = int(rng.uniform(0.0, 1.5) * SR)
    while has_speech and t < n - int(0.3 * SR):
        u = random_utterance(rng, split)
        x = speak(u)
        end = min(n, t + len(x))
        speech[t:end] += x[: end - t]
        utterances.append((t, x[: end - t]))
        voices.append(u.voice)
        gap = rng.uniform(0.2, 2.5) if rng.random() < 0.8 else rng.uniform(2.5, 5.0)
        t = end + int(gap * SR)
    mask = speech_frames(utterances, n)
    segments = frames_to_segments(mask)

    # Speech level: mean power over the labelled speech samples.
    sample_mask = np.zeros(n, bool)
    for a, b in segments:
        sample_mask[int(a * SR):int(b * SR)] = True
    p_speech = float(np.mean(np.square(speech[sample_mask], dtype=np.float64))) if sample_mask.any() else 0.0
    if p_speech <= 0.0:
        p_speech = REF_SPEECH_POWER

    bed, bed_desc = noise_bed(rng, split, seconds)
    snr = float(rng.uniform(*SNR_RANGE_DB))
    bed *= np.sqrt(p_speech / 10 ** (snr / 10) / max(np.mean(np.square(bed, dtype=np.float64)), 1e-20))
    gated = rng.random() < 0.25
    if gated:  # near-silent stretches: switch the bed off for 1-3 windows with 50 ms ramps
        gate = np.ones(n, np.float32)
        for _ in range(int(rng.integers(1, 4))):
            a = int(rng.uniform(0, seconds - 0.5) * SR)
            b = min(n, a + int(rng.uniform(0.5, 2.0) * SR))
            gate[a:b] = 0.0
        k = int(0.05 * SR)
        gate = np.convolve(gate, np.ones(k, np.float32) / k, mode="same").astype(np.float32)
        bed *= gate

    events = np.zeros(n, np.float32)
    event_kinds = []
    for _ in range(int(rng.integers(0, 4))):
        kind = EVENT_KINDS[int(rng.integers(len(EVENT_KINDS)))]
        dur = float(rng.uniform(0.3, 2.5))
        start = int(rng.uniform(0, max(0.01, seconds - dur)) * SR)
        x = event(rng, split, kind, dur)
        x *= np.sqrt(p_speech * 10 ** (rng.uniform(*EVENT_RANGE_DB) / 10)) / max(_rms(x), 1e-9)
        end = min(n, start + len(x))
        events[start:end] += x[: end - start]
        event_kinds.append(kind)

    mix = speech + bed + events
    bandlimited = rng.random() < 0.15
    if bandlimited:
        mix = sox_effects(mix, bandlimit_effects(split))
    peak_db = float(rng.uniform(*PEAK_RANGE_DBFS))
    peak = float(np.max(np.abs(mix))) if n else 0.0
    gain = 10 ** (peak_db / 20) / peak if peak > 0 else 1.0
    mix = (mix * gain).astype(np.float32)
    meta = {
        "voices": voices, "langs": sorted({v.split("+")[0] for v in voices}),
        "variants": sorted({v.split("+")[1] if "+" in v else "" for v in voices}),
        "snr_db": round(snr, 2), "peak_dbfs": round(peak_db, 2), "events": event_kinds,
        "gated": gated, "bandlimited": bandlimited, **bed_desc,
        "speech_fraction": round(float(mask.mean()) if len(mask) else 0.0, 4),
    }
    return Clip(mix, speech, mask, segments, meta)


def file_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one file: independent of the order and the number of jobs."""
    return np.random.default_rng(np.random.SeedSequence([seed, list(SPLITS).index(split), index]))


def write_audio(path: Path, x: np.ndarray) -> None:
    """16-bit PCM, 16 kHz mono; WAV or FLAC by suffix."""
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    # Quantise here (round to nearest, full scale 32768) so WAV and FLAC hold the same samples:
    # libsndfile scales floats differently per format.
    pcm = np.clip(np.round(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, SR, subtype="PCM_16", format=fmt)


def build_file(out: Path, split: str, index: int, seed: int, seconds: float, ext: str) -> dict:
    rng = file_rng(seed, split, index)
    clip = make_clip(rng, split, seconds)
    stem = f"{split}/{split}_{index:05d}"
    write_audio(out / f"{stem}.{ext}", clip.audio)
    write_labels(out / f"{stem}.txt", clip.segments)
    return {"audio": f"{stem}.{ext}", "labels": f"{stem}.txt", "meta": clip.meta}


def build_corpus(out: Path, n_train: int, n_test: int, seconds: float, seed: int,
                 jobs: int = 2, ext: str = "wav") -> dict[str, list[dict]]:
    """Write the corpus under ``out``; returns {split: [manifest rows with "meta"]}.

    Files: out/SPLIT/SPLIT_NNNNN.{wav,flac,txt}, out/SPLIT.jsonl (manifest: audio, labels
    relative to ``out``), out/SPLIT_meta.jsonl (voices, languages, noise settings per file)
    and out/corpus.json (settings).
    """
    check_tools()
    if seconds < 1.0:
        raise ValueError(f"--seconds must be >= 1.0, got {seconds}")
    out.mkdir(parents=True, exist_ok=True)
    tasks = []
    for split, count in (("train", n_train), ("test", n_test)):
        (out / split).mkdir(exist_ok=True)
        tasks += [(split, i) for i in range(count)]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(pool.map(lambda t: build_file(out, t[0], t[1], seed, seconds, ext), tasks))
    result: dict[str, list[dict]] = {"train": [], "test": []}
    for (split, _), row in zip(tasks, rows):
        result[split].append(row)
    for split, split_rows in result.items():
        with open(out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for r in split_rows:
                f.write(json.dumps({"audio": r["audio"], "labels": r["labels"]}) + "\n")
        with open(out / f"{split}_meta.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for r in split_rows:
                f.write(json.dumps({"audio": r["audio"], **r["meta"]}, sort_keys=True) + "\n")
    settings = {
        "generator_version": GENERATOR_VERSION, "seed": seed, "seconds": seconds,
        "n_train": n_train, "n_test": n_test, "sample_rate": SR, "win": WIN, "hop": HOP,
        "threshold_db": THRESHOLD_DB, "min_gap_s": MIN_GAP_S, "min_speech_s": MIN_SPEECH_S, "snr_range_db": SNR_RANGE_DB,
        "splits": SPLITS,
    }
    (out / "corpus.json").write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring (and docs/models/vad.md) for labels and splits.")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--n-train", type=int, default=200, help="training files (default 200)")
    p.add_argument("--n-test", type=int, default=60, help="held-out files (default 60)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per file (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="files generated in parallel (default 2)")
    p.add_argument("--format", choices=("wav", "flac"), default="wav", help="audio format (default wav)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    for name in ("n_train", "n_test"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    try:
        result = build_corpus(args.out, args.n_train, args.n_test, args.seconds, args.seed, args.jobs, args.format)
    except (RuntimeError, ValueError) as e:
        print(f"make_vad_corpus: error: {e}", file=sys.stderr)
        return 2
    for split, rows in result.items():
        frac = np.mean([r["meta"]["speech_fraction"] for r in rows]) if rows else 0.0
        print(f"{split}: {len(rows)} files, speech fraction {frac:.3f}, manifest {args.out / (split + '.jsonl')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
