#!/usr/bin/env python3
"""Build a labelled voice-activity (VAD) corpus from nothing but Debian packages.

Speech (about 70 % of the files) comes from three sources, chosen per utterance:

* real human speech (~45 %): the Asterisk telephone prompts of the Debian packages
  ``asterisk-core-sounds-{en,es,fr}-g722`` (16 kHz G.722, decoded once per prompt and
  process with ``ffmpeg``); the prompts keep their own leading/trailing silence;
* Festival diphone/HTS voices (~25 %), rendering the project's own sentences in
  ``tools/vad_text/LANG.txt`` once per voice and process (``festival -b``), with a random
  speed factor per utterance;
* espeak-ng (~30 %): many voices, variants, rates and pitches (breadth of languages).

Non-speech comes in labelled kinds (``NEG_KINDS``): ``music`` (General-MIDI pieces written
with ``mido`` and rendered with ``fluidsynth`` + ``fluid-soundfont-gm``, a pool per split
and process, plus sox chords), ``tone`` (steady sines/squares 100 Hz-4 kHz, 440 Hz and
1 kHz included), ``callprogress`` (dial tone, ring-back, busy, reorder, SIT), ``dtmf``,
``fan`` (low-passed brown noise, slowly modulated, sometimes with an engine harmonic),
``keyboard`` (click trains), ``hum`` (50/60 Hz and harmonics), ``noise`` (white/pink)
and ``silence`` (digital zeros or a very low hiss). About 30 % of the files hold no
speech at all: one or two negative kinds for the whole file at levels up to full scale.
Speech files have a bed (noise, fan, hum, music, silence) at an SNR of -5..30 dB and
0-3 negative events between and under the speech.

Augmentation: room reverberation of the speech (sox ``reverb``), microphone EQ of the mix
(sox ``equalizer``/``bass``/``treble``), speech levels from -45 to 0 dBFS RMS with
clipping at full scale, and (~20 % of the files) the telephone path: soxr down to 8 kHz,
300-3400 Hz band, a codec round trip (GSM, mu-law, A-law or linear) through sox, and
back to 16 kHz with soxr HQ (the runtime's resampler).

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

Splits (``SPLITS``): ``train``, ``test`` (held out) and ``test_neg`` (held out,
negatives only: ``--n-neg`` files per kind, empty label files). The held-out speech uses
speakers and languages training never sees: the French Asterisk speaker (fr_CA June),
the Festival voices Finnish ``suo_fi_lj_diphone`` and Catalan ``upc_ca_ona_hts``, and
espeak-ng languages sv fi hu tr fr with their own voice variants. Negatives in the
held-out splits use other MIDI programs and melodies, other fan/engine, keyboard and
hum settings and other random draws. ``--train-neg music=150,tone=100`` adds negatives-only
training files (split ``train_neg``: the training settings with MIDI pieces of their own, listed
in ``train.jsonl`` after the others); ``--train-end-trim-ms 30`` ends the training label runs 3
frames earlier (``trim_run_ends``). Neither changes any audio file or held-out label.

Determinism: every file draws from its own ``numpy.random.Generator`` seeded by
``(seed, split, index)``; the shared pools (Festival sentences, MIDI pieces) depend only
on the seed and the split, never on the order of work; sox runs with ``-R``, so the
same ``--seed`` gives byte-identical files whatever ``--jobs`` is.

Example::

    python tools/make_vad_corpus.py --out /tmp/vadc --n-train 20 --n-test 6 --n-neg 1 --seconds 10 --seed 1
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

log = logging.getLogger("make_vad_corpus")

GENERATOR_VERSION = 2
SR = 16000  # output sample rate, Hz
WIN = 400  # 25 ms analysis window at 16 kHz, same as the front end
HOP = 160  # 10 ms hop at 16 kHz, same as the front end
THRESHOLD_DB = -40.0  # frame energy relative to the utterance's peak frame energy
MIN_GAP_S = 0.10  # non-speech runs shorter than this between speech runs become speech
MIN_SPEECH_S = 0.03  # speech runs shorter than this (after gap merging) are dropped
SNR_RANGE_DB = (-5.0, 30.0)  # speech-to-bed ratio
EVENT_RANGE_DB = (-12.0, 6.0)  # negative event level relative to the speech level
NO_SPEECH_P = 0.30  # share of files without speech
TELEPHONE_P = 0.20  # share of files through the 8 kHz telephone path
REVERB_P = 0.30  # share of speech files whose speech is reverberated
EQ_P = 0.30  # share of files with a microphone EQ
SOURCE_P = {"asterisk": 0.45, "festival": 0.25, "espeak": 0.30}  # speech source per utterance
NEG_KINDS = ("music", "tone", "callprogress", "dtmf", "fan", "keyboard", "hum", "noise", "silence")
BED_KINDS = ("noise", "fan", "hum", "music", "silence")  # continuous beds under speech
EVENT_KINDS = ("music", "tone", "callprogress", "dtmf", "keyboard", "noise")  # events under/between speech
CODECS = ("gsm", "ul", "al", "linear")  # telephone round trips (sox file types; linear = 16-bit PCM)
TEXT_DIR = Path(__file__).resolve().parent / "vad_text"
ASTERISK_DIR = Path("/usr/share/asterisk/sounds")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
DEB_PACKAGES = (
    "espeak-ng", "espeak-ng-data", "sox", "libsox3", "ffmpeg", "festival", "festvox-kdlpc16k",
    "festvox-italp16k", "festvox-czech-ph", "festvox-suopuhe-lj", "festvox-ca-ona-hts", "festival-ca",
    "fluidsynth", "fluid-soundfont-gm", "asterisk-core-sounds-en-g722", "asterisk-core-sounds-es-g722",
    "asterisk-core-sounds-fr-g722",
)
# Festival voice -> (language of its sentences, byte encoding festival reads them in).
FESTIVAL_VOICES = {
    "ked_diphone": ("en", "latin-1"), "lp_diphone": ("it", "latin-1"), "czech_ph": ("cs", "iso-8859-2"),
    "suo_fi_lj_diphone": ("fi", "latin-1"), "upc_ca_ona_hts": ("ca", "latin-1"),
}

SPLITS = {
    "train": {
        "asterisk": ("en_US_f_Allison", "es_MX_f_Allison"),
        "festival": ("ked_diphone", "lp_diphone", "czech_ph"),
        "langs": ("en", "de", "es", "it", "nl", "pt", "pl", "ru", "cs"),
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
        # GM programs: pianos, guitars, strings, organs, bass, brass, reeds, pipes (+ drums, channel 10)
        "programs": (0, 1, 16, 19, 24, 25, 26, 33, 48, 49, 56, 61, 65, 71, 73),
        "fan_cutoff_hz": (150.0, 700.0),
        "keys_per_s": (3.0, 9.0),
        "hum_hz": (50.0, 60.0),
        "pieces": 24,
    },
    "test": {
        "asterisk": ("fr_CA_f_June",),
        "festival": ("suo_fi_lj_diphone", "upc_ca_ona_hts"),
        "langs": ("sv", "fi", "hu", "tr", "fr"),
        "variants": (
            "f4", "m6", "klatt4", "Andy", "steph2", "steph3", "grandma", "victor",
            "iven3", "Annie", "Gene", "Gene2", "whisperf", "robosoft4", "edward2",
        ),
        # other pianos, guitars, strings, organs, mallets, synth leads/pads
        "programs": (2, 4, 11, 17, 27, 29, 40, 42, 46, 57, 68, 80, 88),
        "fan_cutoff_hz": (250.0, 900.0),
        "keys_per_s": (2.0, 12.0),
        "hum_hz": (50.0, 60.0),
        "pieces": 12,
    },
}
SPLITS["test_neg"] = SPLITS["test"]  # negatives only, with the held-out settings
# extra negatives-only training files (--train-neg): the training settings, but their own MIDI pieces
# (other melodies and program pairs drawn from the training programs)
SPLITS["train_neg"] = SPLITS["train"]
SPLIT_IDS = {"train": 0, "test": 1, "test_neg": 2, "train_neg": 3}
MAJOR = (0, 4, 7)
MINOR = (0, 3, 7)
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
DTMF_LOW = (697.0, 770.0, 852.0, 941.0)
DTMF_HIGH = (1209.0, 1336.0, 1477.0, 1633.0)


# ---------------------------------------------------------------------------- tools


def check_tools() -> None:
    """Raise RuntimeError naming the Debian package when a needed program or data set is missing."""
    for exe, pkg in (("espeak-ng", "espeak-ng"), ("sox", "sox"), ("ffmpeg", "ffmpeg"), ("festival", "festival"),
                     ("fluidsynth", "fluidsynth")):
        if shutil.which(exe) is None:
            raise RuntimeError(f"{exe} not found on PATH; install the Debian package {pkg!r}")
    if not SOUNDFONT.is_file():
        raise RuntimeError(f"{SOUNDFONT} not found; install the Debian package 'fluid-soundfont-gm'")
    for split in ("train", "test"):
        for speaker in SPLITS[split]["asterisk"]:
            if not (ASTERISK_DIR / speaker).is_dir():
                lang = speaker[:2]
                raise RuntimeError(f"{ASTERISK_DIR / speaker} not found; install 'asterisk-core-sounds-{lang}-g722'")


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


def trim_run_ends(mask: np.ndarray, n: int, min_run_frames: int = 3) -> np.ndarray:
    """Move the end of every speech run ``n`` frames earlier, keeping at least ``min_run_frames`` of each run.

    The training labels' end trim (``--train-end-trim-ms``): a causal model's probability decays over a few
    frames after the speech ends, so training it to let go a little early brings its offsets closer to the
    clean track's end. The held-out labels are never trimmed.
    """
    mask = np.asarray(mask, bool).copy()
    if n <= 0:
        return mask
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
        mask[max(a + min_run_frames, b - n):b] = False
    return mask


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



# --------------------------------------------------------------- shared per-process caches


_CACHE_LOCK = threading.Lock()
_CACHE: dict = {}


def _cached(key, make):
    """``make()`` once per key and process; a second thread asking for the same key waits for it."""
    with _CACHE_LOCK:
        entry = _CACHE.setdefault(key, [threading.Lock(), None, False])
    with entry[0]:
        if not entry[2]:
            entry[1], entry[2] = make(), True
    return entry[1]


# ------------------------------------------------------------------------- speech


def asterisk_prompts(speaker: str) -> list[str]:
    """Sorted relative paths of the speaker's G.722 prompts (the ``silence/`` folder left out)."""
    def make():
        root = ASTERISK_DIR / speaker
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.g722") if p.parts[-2] != "silence")
    return _cached(("asterisk", speaker), make)


def asterisk_audio(speaker: str, rel: str) -> np.ndarray:
    """One prompt decoded by ffmpeg to float32 (N,) at 16 kHz (G.722 is 16 kHz already); cached."""
    path = ASTERISK_DIR / speaker / rel
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(SR), "-"]
    return _cached(("prompt", speaker, rel), lambda: np.frombuffer(_run(cmd), dtype="<f4").astype(np.float32))


def festival_pool(voice: str) -> list[np.ndarray]:
    """Every sentence of the voice's language rendered by one ``festival -b`` run, float32 at 16 kHz; cached."""
    lang, encoding = FESTIVAL_VOICES[voice]

    def make():
        with tempfile.TemporaryDirectory(prefix="vadc_fest_") as tmp:
            lines = [f"(voice_{voice})"]
            texts = sentences(lang)
            for i, text in enumerate(texts):
                quoted = text.replace("\\", " ").replace('"', " ")
                lines.append(f'(utt.save.wave (SynthText "{quoted}") "{tmp}/{i:03d}.wav" \'riff)')
            script = Path(tmp) / "render.scm"
            script.write_bytes(("\n".join(lines) + "\n").encode(encoding, errors="ignore"))
            _run(["festival", "-b", str(script)])
            out = []
            for i in range(len(texts)):
                x, rate = sf.read(f"{tmp}/{i:03d}.wav", dtype="float32")
                out.append(soxr.resample(x, rate, SR, quality="HQ").astype(np.float32))
        return out
    return _cached(("festival", voice), make)


@dataclass(frozen=True)
class Utterance:
    voice: str  # espeak-ng voice, e.g. "de+m3"
    text: str
    rate_wpm: int
    pitch: int
    amplitude: int
    word_gap: int  # 10 ms units


def random_utterance(rng: np.random.Generator, split: str) -> Utterance:
    """An espeak-ng utterance: voice, text and prosody from the split's languages and variants."""
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


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def random_speech(rng: np.random.Generator, split: str) -> tuple[np.ndarray, str, str, str]:
    """One utterance from a source drawn by ``SOURCE_P``: (samples, source, speaker, language)."""
    spec = SPLITS[split]
    u = rng.random()
    if u < SOURCE_P["asterisk"]:
        speaker = _pick(rng, spec["asterisk"])
        rel = _pick(rng, asterisk_prompts(speaker))
        return asterisk_audio(speaker, rel), "asterisk", f"asterisk:{speaker}", speaker[:2]
    if u < SOURCE_P["asterisk"] + SOURCE_P["festival"]:
        voice = _pick(rng, spec["festival"])
        x = _pick(rng, festival_pool(voice))
        speed = float(rng.uniform(0.85, 1.2))  # tempo and pitch together, like a different speaker
        x = soxr.resample(x, SR * speed, SR, quality="HQ").astype(np.float32)
        return x, "festival", f"festival:{voice}", FESTIVAL_VOICES[voice][0]
    utt = random_utterance(rng, split)
    return speak(utt), "espeak", f"espeak:{utt.voice}", utt.voice.split("+")[0]


# ----------------------------------------------------------------------- negatives


def _note(semitone: int) -> str:
    """Scientific note name of MIDI-like semitone number (60 = C4)."""
    return f"{NOTE_NAMES[semitone % 12]}{semitone // 12 - 1}"


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _unit(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to RMS 1 (zeros stay zeros), float32."""
    r = _rms(x)
    return (np.asarray(x) / r if r > 0 else np.asarray(x)).astype(np.float32)


def _fade(x: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    n = min(len(x) // 2, int(seconds * SR))
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x = x.copy()
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _white(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """1/f noise: white noise shaped in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SR)
    f[0] = f[1] if n > 1 else 1.0
    return _unit(np.fft.irfft(spec / np.sqrt(f), n))


def _brown(rng: np.random.Generator, n: int) -> np.ndarray:
    """1/f^2 noise: leaky-integrated white noise, DC and drift removed by a 20 Hz high-pass."""
    x = signal.lfilter([1.0], [1.0, -0.998], rng.standard_normal(n))
    return _unit(signal.sosfilt(signal.butter(2, 20.0, "highpass", fs=SR, output="sos"), x))


def _filter(x: np.ndarray, kind: str, hz, order: int = 4) -> np.ndarray:
    return signal.sosfilt(signal.butter(order, hz, kind, fs=SR, output="sos"), x).astype(np.float32)


def _harmonics(f0, n: int, amps, phases) -> np.ndarray:
    """sum_k amps[k] sin(2 pi (k+1) phase(t)) with ``f0`` a scalar or an (n,) track; partials above 7.8 kHz dropped."""
    t = np.arange(n) / SR
    f0_arr = np.broadcast_to(np.asarray(f0, np.float64), (n,))
    phase = np.cumsum(f0_arr) / SR if np.ndim(f0) else f0 * t
    x = np.zeros(n, np.float64)
    for k, (a, p) in enumerate(zip(amps, phases), start=1):
        if k * float(np.max(f0_arr)) < 7800.0:
            x += a * np.sin(2 * np.pi * k * phase + p)
    return x.astype(np.float32)


def _cadence(n: int, pattern: tuple[float, ...], offset_s: float) -> np.ndarray:
    """On/off gate (n,) float32 from alternating on/off durations, started ``offset_s`` into the cycle."""
    period = sum(pattern)
    t = (np.arange(n) / SR + offset_s) % period
    gate = np.zeros(n, np.float32)
    edge = 0.0
    for i, d in enumerate(pattern):
        if i % 2 == 0:
            gate[(t >= edge) & (t < edge + d)] = 1.0
        edge += d
    # 5 ms ramps instead of clicks
    k = int(0.005 * SR)
    return np.convolve(gate, np.ones(k, np.float32) / k, mode="same").astype(np.float32)


def _tone(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    u = rng.random()
    f = 440.0 if u < 0.2 else 1000.0 if u < 0.4 else float(np.exp(rng.uniform(np.log(100), np.log(4000))))
    wave = "sine" if rng.random() < 0.65 else "square"
    if wave == "sine":
        x = _harmonics(f, n, [1.0], [rng.uniform(0, 2 * np.pi)])
    else:  # band-limited square: odd partials 1/k
        amps = [1.0 / k if k % 2 else 0.0 for k in range(1, 40)]
        x = _harmonics(f, n, amps, np.zeros(len(amps)))
    beeps = rng.random() < 0.3
    if beeps:
        x *= _cadence(n, (rng.uniform(0.1, 1.0), rng.uniform(0.1, 2.0)), rng.uniform(0, 3))
    return x, {"freq_hz": round(f, 1), "wave": wave, "beeps": beeps}


CALL_PROGRESS = {  # name: (frequencies Hz, on/off cadence s or None for continuous)
    "dial_na": ((350.0, 440.0), None), "dial_eu": ((425.0,), None), "dial_uk": ((350.0, 450.0), None),
    "ringback_na": ((440.0, 480.0), (2.0, 4.0)), "ringback_eu": ((425.0,), (1.0, 4.0)),
    "ringback_uk": ((400.0, 450.0), (0.4, 0.2, 0.4, 2.0)), "busy_na": ((480.0, 620.0), (0.5, 0.5)),
    "busy_eu": ((425.0,), (0.5, 0.5)), "reorder_na": ((480.0, 620.0), (0.25, 0.25)),
    "sit": ((913.8, 1370.6, 1776.7), (0.99, 2.0)),  # the three tones one after another, 0.33 s each
}


def _callprogress(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    name = _pick(rng, sorted(CALL_PROGRESS))
    freqs, pattern = CALL_PROGRESS[name]
    offset = float(rng.uniform(0, 6))
    if name == "sit":  # three tones one after the other, then a pause
        x = np.zeros(n, np.float32)
        for i, f in enumerate(freqs):  # tone i sounds in [0.33 i, 0.33 (i + 1)) of each 2.99 s cycle
            x += _harmonics(f, n, [1.0], [0.0]) * _cadence(n, (0.33, 2.66), offset - i * 0.33)
    else:
        x = sum(_harmonics(f, n, [1.0], [rng.uniform(0, 2 * np.pi)]) for f in freqs).astype(np.float32)
        if pattern is not None:
            x *= _cadence(n, pattern, offset)
    return x, {"pattern": name}


def _dtmf(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    x = np.zeros(n, np.float32)
    t = int(rng.uniform(0, 0.5) * SR)
    digits = 0
    while t < n:
        for _ in range(int(rng.integers(3, 16))):
            dur = rng.uniform(0.5, 1.5) if rng.random() < 0.05 else rng.uniform(0.04, 0.25)
            m = min(int(dur * SR), n - t)
            if m <= 0:
                break
            lo, hi = _pick(rng, DTMF_LOW), _pick(rng, DTMF_HIGH)
            twist = 10 ** (rng.uniform(0, 3) / 20)
            x[t:t + m] = _fade(_harmonics(lo, m, [1.0], [0.0]) + twist * _harmonics(hi, m, [1.0], [0.0]), 0.003)
            digits += 1
            t += m + int(rng.uniform(0.04, 0.4) * SR)
        t += int(rng.uniform(0.5, 3.0) * SR)
    return x, {"digits": digits}


def _fan(rng: np.random.Generator, split: str, n: int) -> tuple[np.ndarray, dict]:
    lo, hi = SPLITS[split]["fan_cutoff_hz"]
    cutoff = float(rng.uniform(lo, hi))
    x = _filter(_brown(rng, n), "lowpass", cutoff, order=int(rng.integers(2, 5)))
    t = np.arange(n) / SR
    rate, depth = float(rng.uniform(0.05, 2.0)), float(rng.uniform(0.0, 0.5))
    x = _unit(x) * (1.0 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))).astype(np.float32)
    engine = rng.random() < 0.4
    if engine:  # a motor/engine harmonic series with a slow speed wobble
        f0 = float(rng.uniform(20, 90)) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t))
        k = np.arange(1, 13)
        h = _harmonics(f0, n, rng.uniform(0.2, 1.0, 12) / k, rng.uniform(0, 2 * np.pi, 12))
        x = x + _unit(h) * 10 ** (rng.uniform(-12, 0) / 20)
    return x.astype(np.float32), {"cutoff_hz": round(cutoff), "engine": engine}


def _keyboard(rng: np.random.Generator, split: str, n: int) -> tuple[np.ndarray, dict]:
    """Key clicks: short decaying resonant noise bursts (press, then a softer release), in typing rhythm."""
    shapes = []
    for _ in range(6):
        m = int(rng.uniform(0.004, 0.02) * SR)
        burst = rng.standard_normal(m) * np.exp(-np.arange(m) / (rng.uniform(0.001, 0.005) * SR))
        f = float(rng.uniform(1000, 6000))
        shapes.append(_unit(_filter(burst, "bandpass", (f / 1.5, min(f * 1.5, 7900.0)), order=2)))
    x = np.zeros(n, np.float32)
    lo, hi = SPLITS[split]["keys_per_s"]
    rate = float(rng.uniform(lo, hi))
    t, keys = rng.uniform(0, 0.5), 0
    while t < n / SR:
        for delay, gain in ((0.0, 1.0), (rng.uniform(0.05, 0.15), 10 ** (rng.uniform(-14, -4) / 20))):
            a = int((t + delay) * SR)
            s = _pick(rng, shapes)[: max(0, n - a)] * gain * 10 ** (rng.uniform(-6, 0) / 20)
            x[a:a + len(s)] += s
        keys += 1
        t += rng.gamma(4.0, 1.0 / (4.0 * rate)) + (rng.uniform(0.5, 2.5) if rng.random() < 0.05 else 0.0)
    return x, {"keys_per_s": round(rate, 2), "keys": keys}


def _hum(rng: np.random.Generator, split: str, n: int) -> tuple[np.ndarray, dict]:
    f0 = _pick(rng, SPLITS[split]["hum_hz"]) * (1 + rng.uniform(-0.002, 0.002))
    n_harm = int(rng.integers(3, 40))
    amps = rng.uniform(0.1, 1.0, n_harm) / np.arange(1, n_harm + 1) ** rng.uniform(0.5, 2.0)
    return _harmonics(f0, n, amps, rng.uniform(0, 2 * np.pi, n_harm)), {"f0_hz": round(f0, 2), "harmonics": n_harm}


def _noise(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    colour = "white" if rng.random() < 0.5 else "pink"
    x = _white(rng, n) if colour == "white" else _pink(rng, n)
    filt = _pick(rng, ("none", "none", "lowpass", "highpass"))
    if filt == "lowpass":
        x = _filter(x, "lowpass", float(rng.uniform(1000, 7000)))
    elif filt == "highpass":
        x = _filter(x, "highpass", float(rng.uniform(100, 2000)))
    return x, {"colour": colour, "filter": filt}


def _silence(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    """Digital zeros or a very low hiss (-90..-60 dBFS RMS): absolute level, not rescaled by the mixer."""
    if rng.random() < 0.4:
        return np.zeros(n, np.float32), {"zeros": True}
    level = float(rng.uniform(-90, -60))
    x = _white(rng, n) if rng.random() < 0.5 else _pink(rng, n)
    return _unit(x) * 10 ** (level / 20), {"zeros": False, "rms_dbfs": round(level, 1)}


def negative(rng: np.random.Generator, split: str, kind: str, n: int, seed: int) -> tuple[np.ndarray, dict]:
    """``n`` samples of one negative ``kind`` (see NEG_KINDS), float32 (n,), and its settings.

    All kinds but ``silence`` come at RMS 1 (the caller sets the level); silence has its own level.
    """
    if kind == "music":
        x, desc = _music(rng, split, n, seed)
    elif kind == "tone":
        x, desc = _tone(rng, n)
    elif kind == "callprogress":
        x, desc = _callprogress(rng, n)
    elif kind == "dtmf":
        x, desc = _dtmf(rng, n)
    elif kind == "fan":
        x, desc = _fan(rng, split, n)
    elif kind == "keyboard":
        x, desc = _keyboard(rng, split, n)
    elif kind == "hum":
        x, desc = _hum(rng, split, n)
    elif kind == "noise":
        x, desc = _noise(rng, n)
    elif kind == "silence":
        x, desc = _silence(rng, n)
        return x.astype(np.float32), {"kind": kind, **desc}
    else:
        raise ValueError(f"unknown negative kind {kind!r}; expected one of {NEG_KINDS}")
    return _unit(x), {"kind": kind, **desc}


# --------------------------------------------------------------------------- music


def _compose(rng: np.random.Generator, programs: tuple[int, ...], seconds: float):
    """A General-MIDI piece (mido.MidiFile): melody, chords, optional bass and drums."""
    import mido  # the corpus extra; only the music pool needs it

    bpm = float(rng.uniform(60, 160))
    beats = int(seconds * bpm / 60)
    key = int(rng.integers(55, 67))
    scale = (0, 2, 4, 5, 7, 9, 11) if rng.random() < 0.6 else (0, 2, 3, 5, 7, 8, 10)
    notes = []  # (start_beat, dur_beats, channel, note, velocity)
    prog_melody, prog_chords = _pick(rng, programs), _pick(rng, programs)
    degree, b = 0, 0.0
    while b < beats:  # melody: a random walk on the scale
        d = float(_pick(rng, (0.25, 0.5, 0.5, 1.0, 1.0, 2.0)))
        degree = int(np.clip(degree + rng.integers(-2, 3), -5, 10))
        pitch = key + 12 * (degree // 7) + scale[degree % 7]
        if rng.random() > 0.1:
            notes.append((b, d * 0.95, 0, pitch, int(rng.integers(60, 110))))
        b += d
    bar = int(_pick(rng, (2, 4)))
    for start in range(0, beats, bar):  # chords on I, IV, V, vi
        root = key - 12 + scale[_pick(rng, (0, 3, 4, 5))]
        for s in (MAJOR if rng.random() < 0.6 else MINOR):
            notes.append((float(start), bar * 0.98, 1, root + s, int(rng.integers(40, 90))))
        if rng.random() < 0.5:
            notes.append((float(start), bar * 0.9, 2, root - 12, int(rng.integers(60, 100))))
    if rng.random() < 0.5:  # drums: kick, snare, hi-hat
        for beat in range(beats):
            notes.append((float(beat), 0.25, 9, 36 if beat % 2 == 0 else 38, int(rng.integers(70, 120))))
            notes.append((beat + 0.5, 0.1, 9, 42, int(rng.integers(40, 90))))
    tpb = 480
    events = []
    for start, dur, ch, note, vel in notes:
        events.append((int(start * tpb), 1, ch, note, vel))
        events.append((int((start + dur) * tpb), 0, ch, note, 0))
    events.sort()
    mid = mido.MidiFile(ticks_per_beat=tpb)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=int(60e6 / bpm), time=0))
    for ch, prog in ((0, prog_melody), (1, prog_chords), (2, 33)):
        track.append(mido.Message("program_change", channel=ch, program=prog, time=0))
    now = 0
    for tick, on, ch, note, vel in events:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, channel=ch, note=note, velocity=vel, time=tick - now))
        now = tick
    return mid, (prog_melody, prog_chords)


def music_pool(seed: int, split: str) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """The split's MIDI pieces rendered by fluidsynth once per process: [(float32 (N,), programs)]."""
    pool_split = "test" if split == "test_neg" else split

    def make():
        spec = SPLITS[pool_split]
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[pool_split], 1000]))
        out = []
        with tempfile.TemporaryDirectory(prefix="vadc_midi_") as tmp:
            for i in range(spec["pieces"]):
                mid, progs = _compose(rng, spec["programs"], 16.0)
                mid_path, wav_path = f"{tmp}/{i}.mid", f"{tmp}/{i}.wav"
                mid.save(mid_path)
                _run(["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(SR), "-F", wav_path, "-T", "wav",
                      "-O", "float", str(SOUNDFONT), mid_path])
                x, _ = sf.read(wav_path, dtype="float32", always_2d=True)
                out.append((x.mean(axis=1).astype(np.float32), progs))
        return out
    return _cached(("music", seed, pool_split), make)


def _music(rng: np.random.Generator, split: str, n: int, seed: int) -> tuple[np.ndarray, dict]:
    """A rendered MIDI excerpt (75 %) or sox-synthesised chords (25 %), n samples."""
    if rng.random() < 0.75:
        pool = music_pool(seed, split)
        i = int(rng.integers(len(pool)))
        x, progs = pool[i]
        reps = int(np.ceil(n / max(1, len(x)))) + 1
        x = np.tile(x, reps)
        a = int(rng.integers(0, max(1, len(x) - n)))
        return x[a:a + n], {"source": "midi", "piece": i, "programs": list(progs)}
    style = _pick(rng, ("pluck_major", "organ_minor", "pluck_high"))
    return _chords(rng, style, n / SR), {"source": "sox_chords", "style": style}


def _chords(rng: np.random.Generator, style: str, seconds: float) -> np.ndarray:
    """A short chord progression: 2-6 chords of 3 notes, concatenated to ``seconds``."""
    n_chords = int(rng.integers(2, 7))
    dur = seconds / n_chords
    root0 = int(rng.integers(48, 60)) if style != "pluck_high" else int(rng.integers(72, 84))
    parts = []
    for _ in range(n_chords):
        root = root0 + int(rng.choice([0, 5, 7, 9, -3, 2]))
        notes = MAJOR if style == "pluck_major" else MINOR
        wave = "triangle" if style == "organ_minor" else "pluck"
        synth = [a for s in notes for a in (wave, _note(root + s))]
        parts.append(_fade(sox_synth(dur, synth, channels=len(notes)), 0.01))
    return _fit(np.concatenate(parts), int(round(seconds * SR)))


# ---------------------------------------------------------------------- augmentation


def telephone(x: np.ndarray, codec: str) -> np.ndarray:
    """The 8 kHz telephone path: soxr HQ to 8 kHz, 300-3400 Hz, ``codec`` round trip, soxr HQ back to 16 kHz.

    ``x``: float32 (N,) at 16 kHz; ``codec`` one of CODECS. Returns float32 (N,) at 16 kHz.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")
    y8 = soxr.resample(np.asarray(x, np.float32), SR, 8000, quality="HQ").astype("<f4")
    raw = ["-t", "raw", "-r", "8000", "-c", "1", "-b", "32", "-e", "floating-point"]
    enc = {"gsm": ["-t", "gsm"], "ul": ["-t", "ul"], "al": ["-t", "al"],
           "linear": ["-t", "raw", "-b", "16", "-e", "signed-integer"]}[codec]
    coded = _run(["sox", "-R", *raw, "-", "-r", "8000", "-c", "1", *enc, "-", "sinc", "300-3400"], y8.tobytes())
    dec = _run(["sox", "-R", "-r", "8000", "-c", "1", *enc, "-", *raw, "-"], coded)
    y = np.frombuffer(dec, dtype="<f4").astype(np.float32)
    return _fit(soxr.resample(y, 8000, SR, quality="HQ").astype(np.float32), len(x))


def mic_eq(rng: np.random.Generator) -> list[str]:
    """sox effects of a random microphone colouring: a peaking band plus bass or treble shelving."""
    eff = ["equalizer", f"{np.exp(rng.uniform(np.log(200), np.log(6000))):.0f}", f"{rng.uniform(0.5, 3):.2f}q",
           f"{rng.uniform(-10, 10):.1f}"]
    eff += [_pick(rng, ("bass", "treble")), f"{rng.uniform(-10, 10):.1f}"]
    return eff


def reverb(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Room reverberation (sox reverb, wet and dry), same length."""
    return sox_effects(x, ["reverb", f"{rng.uniform(20, 90):.0f}", f"{rng.uniform(20, 80):.0f}",
                           f"{rng.uniform(20, 100):.0f}"])


# ---------------------------------------------------------------------------- files


@dataclass
class Clip:
    audio: np.ndarray  # float32 (N,), the final mix
    speech: np.ndarray  # float32 (N,), the clean speech track (unscaled)
    mask: np.ndarray  # bool (n_frames,), speech frames
    segments: list  # [(start_s, end_s)]
    meta: dict


def _speech_track(rng: np.random.Generator, split: str, n: int) -> tuple[np.ndarray, list, dict]:
    """Utterances separated by gaps, each at its own level (peak frame energy 1, then -6..+6 dB)."""
    speech = np.zeros(n, np.float32)
    utterances: list[tuple[int, np.ndarray]] = []
    speakers, sources, langs = [], [], []
    t = int(rng.uniform(0.0, 1.5) * SR)
    while t < n - int(0.3 * SR):
        x, source, speaker, lang = random_speech(rng, split)
        peak = float(np.sqrt(frame_energy(x).max(initial=0.0)))
        x = x / peak * 10 ** (rng.uniform(-6, 6) / 20) if peak > 0 else x
        end = min(n, t + len(x))
        speech[t:end] += x[: end - t]
        utterances.append((t, x[: end - t]))
        speakers.append(speaker)
        sources.append(source)
        langs.append(lang)
        gap = rng.uniform(0.2, 2.5) if rng.random() < 0.8 else rng.uniform(2.5, 5.0)
        t = end + int(gap * SR)
    meta = {"speakers": speakers, "sources": sources, "langs": sorted(set(langs)),
            "voices": sorted({s.split(":", 1)[1] for s in speakers})}
    return speech, utterances, meta


def _finish(rng: np.random.Generator, mix: np.ndarray, telephone_p: float = TELEPHONE_P) -> tuple[np.ndarray, dict]:
    """Microphone EQ, clipping at full scale, then maybe the telephone path; returns (mix, meta)."""
    eq = rng.random() < EQ_P
    if eq:
        mix = sox_effects(mix, mic_eq(rng))
    clipped = bool(np.max(np.abs(mix), initial=0.0) > 1.0)
    mix = np.clip(mix, -1.0, 1.0).astype(np.float32)
    tel = rng.random() < telephone_p
    codec = None
    if tel:
        codec = _pick(rng, CODECS)
        mix = telephone(mix, codec)
        peak = float(np.max(np.abs(mix), initial=0.0))
        if peak > 0.999:  # a codec overshoot: scale, do not clip (clipping would put energy above 4 kHz back)
            mix = mix * (0.999 / peak)
    # "bandlimited": the name tools/eval_vad.py --breakdown reads (generator version 1)
    return mix.astype(np.float32), {"eq": eq, "clipped": clipped, "telephone": tel, "bandlimited": tel, "codec": codec}


def make_clip(rng: np.random.Generator, split: str, seconds: float, seed: int = 0,
              neg_kind: str | None = None) -> Clip:
    """Build one mixed clip and its labels. Everything random comes from ``rng``.

    ``neg_kind`` forces a negatives-only clip of that single kind (the ``test_neg`` split).
    """
    n = int(round(seconds * SR))
    if neg_kind is not None:
        has_speech = False
    else:
        has_speech = rng.random() >= NO_SPEECH_P
    if not has_speech:
        return _negative_clip(rng, split, n, seed, neg_kind)
    speech, utterances, smeta = _speech_track(rng, split, n)
    mask = speech_frames(utterances, n)
    segments = frames_to_segments(mask)
    sample_mask = np.zeros(n, bool)
    for a, b in segments:
        sample_mask[int(a * SR):int(b * SR)] = True
    p_speech = float(np.mean(np.square(speech[sample_mask], dtype=np.float64))) if sample_mask.any() else 0.0
    level = float(rng.uniform(-45, -10)) if rng.random() < 0.85 else float(rng.uniform(-10, 0))
    gain = np.sqrt(10 ** (level / 10) / p_speech) if p_speech > 0 else 0.0
    wet = reverb(rng, speech) if rng.random() < REVERB_P else None
    track = (wet if wet is not None else speech) * gain
    p_target = 10 ** (level / 10)

    bed_kind = str(rng.choice(BED_KINDS, p=(0.3, 0.25, 0.15, 0.15, 0.15)))
    bed, bed_desc = negative(rng, split, bed_kind, n, seed)
    snr = float(rng.uniform(*SNR_RANGE_DB))
    if bed_kind != "silence":
        bed = bed * np.sqrt(p_target / 10 ** (snr / 10))
    events = np.zeros(n, np.float32)
    event_descs = []
    for _ in range(int(rng.integers(0, 4))):
        kind = _pick(rng, EVENT_KINDS)
        m = int(rng.uniform(0.3, 4.0) * SR)
        start = int(rng.integers(0, max(1, n - m)))
        x, desc = negative(rng, split, kind, m, seed)
        x = _fade(x, 0.02) * np.sqrt(p_target * 10 ** (rng.uniform(*EVENT_RANGE_DB) / 10))
        end = min(n, start + m)
        events[start:end] += x[: end - start]
        event_descs.append(desc)
    mix, fmeta = _finish(rng, track + bed + events)
    meta = {"kind": "speech", **smeta, "negatives": sorted({bed_kind} | {d["kind"] for d in event_descs}),
            "bed": bed_desc, "events": [d["kind"] for d in event_descs], "event_settings": event_descs,
            "speech_level_dbfs": round(level, 2), "snr_db": round(snr, 2),
            "reverb": wet is not None, **fmeta, "speech_fraction": round(float(mask.mean()) if len(mask) else 0.0, 4)}
    return Clip(mix, speech, mask, segments, meta)


def _negative_clip(rng: np.random.Generator, split: str, n: int, seed: int, kind: str | None) -> Clip:
    """A clip without speech: one negative kind for the whole file (plus a second one in half the files)."""
    single = kind is not None
    kind = kind if single else _pick(rng, NEG_KINDS)
    x, desc = negative(rng, split, kind, n, seed)
    descs = [desc]
    peak_dbfs = float(rng.uniform(-50, 0)) + (float(rng.uniform(0, 6)) if rng.random() < 0.15 else 0.0)
    if kind != "silence":
        x = x * 10 ** (peak_dbfs / 20) / max(float(np.max(np.abs(x), initial=0.0)), 1e-9)
    if not single and rng.random() < 0.5:
        second = _pick(rng, tuple(k for k in NEG_KINDS if k not in (kind, "silence")))
        whole = rng.random() < 0.5
        m = n if whole else int(rng.uniform(0.5, 0.8) * n)
        y, d2 = negative(rng, split, second, m, seed)
        # under silence the second kind stays quiet (-60..-30 dBFS RMS): a near-silent room, not a loud file
        ref = _rms(x) if kind != "silence" else 10 ** (rng.uniform(-60, -30) / 20)
        y = _fade(y, 0.02) * ref * 10 ** (rng.uniform(-20, 0) / 20)
        start = int(rng.integers(0, n - m + 1))
        x = x.copy()
        x[start:start + m] += y
        descs.append({**d2, "whole_file": whole})
    mix, fmeta = _finish(rng, x)
    mask = np.zeros(n_frames_for(n), bool)
    meta = {"kind": kind, "speakers": [], "sources": [], "langs": [], "voices": [],
            "negatives": sorted({d["kind"] for d in descs}), "events": [d["kind"] for d in descs[1:]],
            "event_settings": descs, "snr_db": None,
            "peak_dbfs": round(peak_dbfs, 2) if kind != "silence" else None, **fmeta, "speech_fraction": 0.0}
    return Clip(mix, np.zeros(n, np.float32), mask, [], meta)


def file_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one file: independent of the order and the number of jobs."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split], index]))


def write_audio(path: Path, x: np.ndarray) -> None:
    """16-bit PCM, 16 kHz mono; WAV or FLAC by suffix."""
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    # Quantise here (round to nearest, full scale 32768) so WAV and FLAC hold the same samples:
    # libsndfile scales floats differently per format.
    pcm = np.clip(np.round(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, SR, subtype="PCM_16", format=fmt)


def build_file(out: Path, split: str, index: int, seed: int, seconds: float, ext: str, n_neg: int = 0,
               neg_kind: str | None = None, end_trim_frames: int = 0) -> dict:
    """Write one file and its labels; ``neg_kind`` forces a negatives-only file of that kind (``test_neg``:
    NEG_KINDS[index // n_neg]); ``end_trim_frames`` trims the label runs' ends (``trim_run_ends``)."""
    rng = file_rng(seed, split, index)
    if split == "test_neg":
        neg_kind = NEG_KINDS[index // n_neg]
    clip = make_clip(rng, split, seconds, seed, neg_kind)
    stem = f"{split}/{split}_{index:05d}"
    write_audio(out / f"{stem}.{ext}", clip.audio)
    segments = frames_to_segments(trim_run_ends(clip.mask, end_trim_frames)) if end_trim_frames else clip.segments
    write_labels(out / f"{stem}.txt", segments)
    return {"audio": f"{stem}.{ext}", "labels": f"{stem}.txt", "meta": clip.meta}


def package_versions() -> dict[str, str]:
    """Exact versions of the Debian (dpkg-query -W) and Python packages the generator uses."""
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\n", *DEB_PACKAGES],
                          capture_output=True, text=True, check=False)
    versions = dict(line.split("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)
    from importlib import metadata
    for name in ("numpy", "scipy", "soxr", "soundfile", "mido"):
        try:
            versions[f"python:{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[f"python:{name}"] = "missing"
    return dict(sorted(versions.items()))


def build_corpus(out: Path, n_train: int, n_test: int, seconds: float, seed: int,
                 jobs: int = 2, ext: str = "wav", n_neg: int = 0, train_neg: dict[str, int] | None = None,
                 train_end_trim_ms: float = 0.0) -> dict[str, list[dict]]:
    """Write the corpus under ``out``; returns {split: [manifest rows with "meta"]}.

    Files: out/SPLIT/SPLIT_NNNNN.{wav,flac,txt} for SPLIT in train, test, test_neg (and train_neg);
    out/SPLIT.jsonl (manifest: audio, labels relative to ``out``), out/SPLIT_meta.jsonl
    (kind, speakers, sources, settings per file, same order) and out/corpus.json (settings
    and package versions). ``test_neg`` holds ``n_neg`` files per kind in NEG_KINDS order.
    ``train_neg`` ({kind: count}, NEG_KINDS order) adds negatives-only training files with the
    training settings and their own MIDI pieces (out/train_neg/); they are listed in train.jsonl
    after the ``n_train`` files, whose bytes they leave unchanged. ``train_end_trim_ms`` (a multiple
    of the 10 ms hop) ends every training label run that much earlier (``trim_run_ends``); the audio
    and the held-out labels stay as they are.
    """
    check_tools()
    if seconds < 1.0:
        raise ValueError(f"--seconds must be >= 1.0, got {seconds}")
    train_neg = dict(train_neg or {})
    bad = sorted(set(train_neg) - set(NEG_KINDS))
    if bad or any(v < 0 for v in train_neg.values()):
        raise ValueError(f"--train-neg: kinds must be among {NEG_KINDS} with counts >= 0, got {train_neg}")
    trim = train_end_trim_ms * SR / 1000.0 / HOP
    if trim < 0 or abs(trim - round(trim)) > 1e-9:
        raise ValueError(f"--train-end-trim-ms must be a multiple of {HOP * 1000 // SR} ms and >= 0, "
                         f"got {train_end_trim_ms}")
    trim = int(round(trim))
    out.mkdir(parents=True, exist_ok=True)
    neg_kinds = [k for k in NEG_KINDS for _ in range(train_neg.get(k, 0))]
    tasks = []
    for split, count in (("train", n_train), ("test", n_test), ("test_neg", n_neg * len(NEG_KINDS)),
                         ("train_neg", len(neg_kinds))):
        if count or split != "train_neg":
            (out / split).mkdir(exist_ok=True)
        tasks += [(split, i) for i in range(count)]

    def build(t):
        split, i = t
        return build_file(out, split, i, seed, seconds, ext, n_neg, neg_kinds[i] if split == "train_neg" else None,
                          trim if split in ("train", "train_neg") else 0)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(pool.map(build, tasks))
    result: dict[str, list[dict]] = {"train": [], "test": [], "test_neg": []}
    for (split, _), row in zip(tasks, rows):
        result["train" if split == "train_neg" else split].append(row)
    for split, split_rows in result.items():
        with open(out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for r in split_rows:
                f.write(json.dumps({"audio": r["audio"], "labels": r["labels"]}) + "\n")
        with open(out / f"{split}_meta.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for r in split_rows:
                f.write(json.dumps({"audio": r["audio"], **r["meta"]}, sort_keys=True) + "\n")
    settings = {
        "generator_version": GENERATOR_VERSION, "seed": seed, "seconds": seconds,
        "n_train": n_train, "n_test": n_test, "n_neg_per_kind": n_neg, "train_neg": train_neg,
        "train_end_trim_ms": train_end_trim_ms, "sample_rate": SR, "win": WIN, "hop": HOP,
        "threshold_db": THRESHOLD_DB, "min_gap_s": MIN_GAP_S, "min_speech_s": MIN_SPEECH_S,
        "snr_range_db": SNR_RANGE_DB, "event_range_db": EVENT_RANGE_DB, "no_speech_p": NO_SPEECH_P,
        "telephone_p": TELEPHONE_P, "reverb_p": REVERB_P, "eq_p": EQ_P, "source_p": SOURCE_P,
        "neg_kinds": NEG_KINDS, "bed_kinds": BED_KINDS, "event_kinds": EVENT_KINDS, "codecs": CODECS,
        "festival_voices": FESTIVAL_VOICES, "call_progress": CALL_PROGRESS,
        "splits": {k: v for k, v in SPLITS.items() if k not in ("test_neg", "train_neg")}, "packages": package_versions(),
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
    p.add_argument("--n-neg", type=int, default=10, help="held-out negatives-only files per kind (default 10)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per file (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="files generated in parallel (default 2)")
    p.add_argument("--format", choices=("wav", "flac"), default="wav", help="audio format (default wav)")
    p.add_argument("--train-neg", default="", metavar="KIND=N,...",
                   help="extra negatives-only training files per kind, e.g. music=150,tone=100 (default none)")
    p.add_argument("--train-end-trim-ms", type=float, default=0.0,
                   help="end every training label run this much earlier, a multiple of 10 ms (default 0)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    try:
        train_neg = {k.strip(): int(v) for k, v in (item.split("=") for item in args.train_neg.split(",") if item)}
    except ValueError:
        p.error(f"--train-neg must look like music=150,tone=100, got {args.train_neg!r}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    for name in ("n_train", "n_test", "n_neg"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    try:
        result = build_corpus(args.out, args.n_train, args.n_test, args.seconds, args.seed, args.jobs, args.format,
                              args.n_neg, train_neg, args.train_end_trim_ms)
    except (RuntimeError, ValueError) as e:
        print(f"make_vad_corpus: error: {e}", file=sys.stderr)
        return 2
    for split, rows in result.items():
        frac = np.mean([r["meta"]["speech_fraction"] for r in rows]) if rows else 0.0
        print(f"{split}: {len(rows)} files, speech fraction {frac:.3f}, manifest {args.out / (split + '.jsonl')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
