"""Audio files (real WAV/FLAC/OGG through libsndfile), Audacity label files, labels -> frame targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamrnn.audio.files import frame_targets, read_audio, read_labels, write_labels
from streamrnn.errors import AudioError

DATA = Path(__file__).parent / "data"


def signal(n=8000, ch=1, seed=0):
    t = np.arange(n) / 8000
    x = 0.5 * np.sin(2 * np.pi * 440 * t)[:, None] * np.linspace(1, 0.5, ch)[None, :]
    return (x + 0.01 * np.random.default_rng(seed).standard_normal((n, ch))).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype,ext,tol", [
    ("WAV", "PCM_16", "wav", 1 / 32768), ("WAV", "PCM_24", "wav", 1 / 2**23), ("WAV", "FLOAT", "wav", 0),
    ("FLAC", "PCM_16", "flac", 1 / 32768), ("FLAC", "PCM_24", "flac", 1 / 2**23), ("OGG", "VORBIS", "ogg", None),
])
def test_read_formats(tmp_path, fmt, subtype, ext, tol):
    x = signal(8000, 2)
    p = tmp_path / f"a.{ext}"
    sf.write(p, x, 44100, format=fmt, subtype=subtype)
    y, sr = read_audio(p)
    assert sr == 44100 and y.dtype == np.float32 and y.shape == (8000,)
    y2, _ = read_audio(p, mono=False)
    assert y2.shape == (8000, 2)
    np.testing.assert_allclose(y, y2.mean(axis=1), atol=1e-7)  # mono = mean of the channels
    if tol is None:  # lossy Vorbis: the waveform comes back within a 20 dB SNR
        assert np.sqrt(np.mean((y2 - x) ** 2)) < 0.1 * np.sqrt(np.mean(x**2))
    else:
        np.testing.assert_allclose(y2, x, atol=tol + 1e-7)


def test_read_committed_recording():
    x, sr = read_audio(DATA / "speech.flac")
    assert sr == 22050 and x.ndim == 1 and 0.3 < np.abs(x).max() <= 1.0


def test_int16_scaling(tmp_path):
    p = tmp_path / "i.wav"
    sf.write(p, np.array([0, 16384, -32768, 32767], np.int16), 16000, subtype="PCM_16")
    x, _ = read_audio(p)
    np.testing.assert_array_equal(x, np.array([0, 0.5, -1.0, 32767 / 32768], np.float32))


def test_truncated_files_are_read_up_to_the_cut_with_one_warning(tmp_path, caplog):
    """One rule for every format: the audio before the cut is used, one warning says how much."""
    x = signal(16000)
    for ext, sub in [("wav", "PCM_16"), ("wav", "PCM_24"), ("flac", "PCM_16")]:
        good = tmp_path / f"g.{ext}"
        sf.write(good, x, 16000, subtype=sub)
        data = good.read_bytes()
        bad = tmp_path / f"t.{ext}"
        bad.write_bytes(data[: len(data) // 2])
        caplog.clear()
        y, rate = read_audio(bad)
        ref, _ = sf.read(good, dtype="float32")  # the intact file, decoded by libsndfile itself
        assert 0.1 * len(x) < len(y) < 0.6 * len(x)  # FLAC: the decoder loses its last partial frame
        np.testing.assert_array_equal(y, ref[:len(y)])
        warns = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warns) == 1 and str(bad) in warns[0]
        assert f"read {len(y) / 16000:.2f} s of the 1.00 s" in warns[0], warns
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    with pytest.raises(AudioError, match="cannot read audio"):
        read_audio(junk)
    with pytest.raises(AudioError, match="no such audio file"):
        read_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        read_audio(empty)
    text = tmp_path / "notes.ogg"
    text.write_text("hello")
    with pytest.raises(AudioError, match="cannot read audio"):
        read_audio(text)


def test_read_labels(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("0.100000\t0.200000\tspeech\n\\\t200.0\t3000.0\n\n1.5\t2.25\tdog bark\n0.3\t0.3\tclick\n")
    assert read_labels(p) == [(0.1, 0.2, "speech"), (1.5, 2.25, "dog bark"), (0.3, 0.3, "click")]
    q = tmp_path / "w.txt"
    write_labels(q, read_labels(p))
    assert read_labels(q) == read_labels(p)


@pytest.mark.parametrize("line,match", [
    ("0.1 0.2 speech", "expected 'start<TAB>end<TAB>label'"),
    ("0.1\tabc\tspeech", "must be numbers"),
    ("0.5\t0.2\tspeech", "end 0.2 s is before start 0.5 s"),
    ("-1\t0.2\tspeech", ">= 0"),
    ("0.1\tinf\tspeech", "finite"),
    ("0.1\t0.2\t  ", "empty label"),
])
def test_bad_label_lines_name_file_and_line(tmp_path, line, match):
    p = tmp_path / "bad.txt"
    p.write_text(f"0.0\t0.1\tok\n\n{line}\n")
    with pytest.raises(AudioError, match=match) as e:
        read_labels(p)
    assert f"{p}:3:" in str(e.value)
    with pytest.raises(AudioError, match="no such label file"):
        read_labels(tmp_path / "none.txt")


def test_frame_targets_hand_checked():
    """16 kHz, 25 ms window, 10 ms hop; label 0.10-0.20 s.  Frame t covers [10t, 10t + 25) ms:
    frame 8  (80-105 ms):   5 ms covered = 0.2 -> 0
    frame 9  (90-115 ms):  15 ms         = 0.6 -> 1
    frame 18 (180-205 ms): 20 ms         = 0.8 -> 1
    frame 19 (190-215 ms): 10 ms         = 0.4 -> 0"""
    y = frame_targets([(0.10, 0.20, "speech")], 30, 16000, 160, 400)
    assert y.shape == (30,) and y.dtype == np.float32
    assert np.flatnonzero(y).tolist() == list(range(9, 19))
    # threshold: 0.4 coverage counts at 0.4 (inclusive), not at 0.5
    assert np.flatnonzero(frame_targets([(0.10, 0.20, "s")], 30, 16000, 160, 400, threshold=0.4)).tolist() \
        == list(range(9, 20))
    # a 10 ms label never covers half of a 25 ms window
    assert not frame_targets([(0.10, 0.11, "s")], 30, 16000, 160, 400).any()


def test_frame_targets_classes_and_union():
    labels = [(0.10, 0.15, "a"), (0.14, 0.20, "a"), (0.0, 0.05, "b")]
    y = frame_targets(labels, 30, 16000, 160, 400, classes=["a", "b"])
    assert y.shape == (30, 2)
    # overlapping 'a' labels count once: the same as a single 0.10-0.20 label
    np.testing.assert_array_equal(y[:, 0], frame_targets([(0.1, 0.2, "a")], 30, 16000, 160, 400))
    # b: 0-50 ms; frame 0 (0-25) 1.0, frame 2 (20-45) 1.0, frame 3 (30-55) 0.8, frame 4 (40-65) 0.4
    assert np.flatnonzero(y[:, 1]).tolist() == [0, 1, 2, 3]
    with pytest.raises(AudioError, match=r"labels \['b'\] are not among the classes \['a'\]"):
        frame_targets(labels, 30, 16000, 160, 400, classes=["a"])


def test_labels_past_the_end_are_an_error():
    with pytest.raises(AudioError, match=r"ends after the audio, which lasts 1 s \(16000 samples"):
        frame_targets([(0.5, 1.2, "x")], 98, 16000, 160, 400, n_samples=16000)
    frame_targets([(0.5, 1.0, "x")], 98, 16000, 160, 400, n_samples=16000)  # up to the end is fine
    with pytest.raises(AudioError, match="ends after the audio"):  # n_samples inferred from n_frames
        frame_targets([(0.5, 5.0, "x")], 98, 16000, 160, 400)
    with pytest.raises(AudioError, match="threshold"):
        frame_targets([], 10, 16000, 160, 400, threshold=0)
