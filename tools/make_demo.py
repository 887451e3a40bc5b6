#!/usr/bin/env python3
"""Write the bundled demo recording: streamrnn/models/demo.flac and demo.txt.

About 24 s of 16 kHz mono 16-bit FLAC: speech in three languages and voices (espeak-ng:
English, German, French) alternating with non-speech (plucked chords, a whistle-like
sweep, clicks, a noise burst, mains hum) and near-silence (0-0.8 s, 20.6-21.2 s), over a quiet pink-noise bed
(20 dB below the speech). The labels (Audacity format, ``speech``) come from the clean
speech exactly as in ``make_vad_corpus.py`` (25 ms / 10 ms frames, -40 dB below each
utterance's peak, gaps < 100 ms merged). Deterministic: run it twice, get the same bytes.

Example::

    python tools/make_demo.py            # writes streamrnn/models/demo.{flac,txt}
    python tools/make_demo.py --out /tmp/demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_vad_corpus as mvc  # noqa: E402

SR = mvc.SR
# (start_s, voice, text): espeak-ng at its default rate, pitch and amplitude.
SPEECH = [
    (1.0, "en+m3", "This is the stream R N N demo. A small recurrent network listens, and marks where people speak."),
    (9.0, "de+f3", "Jetzt spricht eine zweite Stimme auf Deutsch, zwischen Musik und Rauschen."),
    (15.5, "fr+m7", "Et voici une troisième voix, en français, avant le silence."),
    (21.3, "en+f2", "Thank you for listening."),
]
SILENCE = [(0.0, 0.8), (20.6, 21.2)]  # seconds of near-silence
SECONDS = 24.0
SNR_DB = 20.0  # speech power over the noise bed's power
PEAK_DBFS = -6.0  # also keeps the FLAC small (fewer significant bits)


def build() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """(samples float32 (N,), speech segments [(start_s, end_s)]) of the demo."""
    mvc.check_tools()
    rng = np.random.default_rng(20261127)  # only for sox noise offsets and chord choices
    n = int(SECONDS * SR)
    speech = np.zeros(n, np.float32)
    utterances = []
    for start_s, voice, text in SPEECH:
        x = mvc.espeak(text, voice, rate_wpm=165, pitch=50, amplitude=100, word_gap=0)
        a = int(start_s * SR)
        b = min(n, a + len(x))
        speech[a:b] += x[: b - a]
        utterances.append((a, x[: b - a]))
    mask = mvc.speech_frames(utterances, n)
    segments = mvc.frames_to_segments(mask)
    sample_mask = np.zeros(n, bool)
    for a, b in segments:
        sample_mask[int(a * SR):int(b * SR)] = True
    p_speech = float(np.mean(np.square(speech[sample_mask], dtype=np.float64)))

    def place(x: np.ndarray, start_s: float, rel_db: float) -> np.ndarray:
        """``x`` scaled to ``rel_db`` relative to the speech power, placed at ``start_s``."""
        out = np.zeros(n, np.float32)
        x = x * np.sqrt(p_speech * 10 ** (rel_db / 10)) / max(float(np.sqrt(np.mean(x * x))), 1e-9)
        a = int(start_s * SR)
        b = min(n, a + len(x))
        out[a:b] = x[: b - a]
        return out

    bed = mvc.sox_synth(10.0 + SECONDS, ["pinknoise"], ["trim", "10", "lowpass", "6000"])[:n]
    bed *= np.sqrt(p_speech / 10 ** (SNR_DB / 10) / np.mean(np.square(bed, dtype=np.float64)))
    hum = mvc.sox_synth(SECONDS, ["sawtooth", "50"], ["lowpass", "600"])
    # Near-silence (bed and hum 30 dB down) at the start and before the last utterance.
    gate = np.ones(n, np.float32)
    for a_s, b_s in SILENCE:
        gate[int(a_s * SR):int(b_s * SR)] = 10 ** (-30 / 20)
    k = int(0.05 * SR)  # 50 ms ramps
    gate = np.convolve(np.pad(gate, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, mode="valid")
    mix = speech + (bed + place(hum, 0.0, -SNR_DB - 6)) * gate.astype(np.float32)
    # Non-speech events between the utterances (all at the same sox settings every run).
    mix += place(mvc._fade(mvc._chords(rng, "pluck_major", 1.9), 0.05), 6.9, -4.0)  # plucked chords
    mix += place(mvc._fade(mvc.sox_synth(1.2, ["sine", "600/2400"]), 0.05), 13.6, -8.0)  # whistle-like sweep
    clicks = mvc.sox_synth(1.5, ["square", "3"], ["highpass", "2500"])
    mix += place(mvc._fade(clicks, 0.02), 19.0, -6.0)  # clicks
    burst = mvc.sox_synth(12.0, ["brownnoise"], ["trim", "11", "highpass", "300"])
    mix += place(mvc._fade(burst, 0.1), 23.0, -6.0)  # a door-like noise burst at the end
    mix *= 10 ** (PEAK_DBFS / 20) / float(np.max(np.abs(mix)))
    return mix.astype(np.float32), segments


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "streamrnn" / "models",
                   help="directory for demo.flac and demo.txt (default streamrnn/models)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    x, segments = build()
    mvc.write_audio(args.out / "demo.flac", x)
    mvc.write_labels(args.out / "demo.txt", segments)
    size = (args.out / "demo.flac").stat().st_size
    speech_s = sum(e - s for s, e in segments)
    print(f"{args.out / 'demo.flac'}: {len(x) / SR:.1f} s, {size / 1000:.0f} kB, "
          f"{len(segments)} speech segments, {speech_s:.1f} s of speech")
    return 0


if __name__ == "__main__":
    sys.exit(main())
