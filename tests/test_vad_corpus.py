"""tools/make_vad_corpus.py: a tiny corpus builds, is deterministic, and its labels are right.

Needs the Debian packages espeak-ng and sox (the generator's only sources of sound).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamrnn.audio.files import frame_targets, read_labels

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
sys.path.insert(0, str(TOOLS))
import make_vad_corpus as mvc  # noqa: E402

SEED = 7
N_TRAIN, N_TEST, SECONDS = 14, 6, 10.0


def _build(out: Path, seed: int = SEED, jobs: int = 2, fmt: str = "wav", n_train=N_TRAIN, n_test=N_TEST,
           seconds=SECONDS) -> None:
    cmd = [sys.executable, str(TOOLS / "make_vad_corpus.py"), "--out", str(out), "--n-train", str(n_train),
           "--n-test", str(n_test), "--seconds", str(seconds), "--seed", str(seed), "--jobs", str(jobs),
           "--format", fmt]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vadc")
    _build(out)
    return out


def _rows(out: Path, split: str, kind: str = "") -> list[dict]:
    with open(out / f"{split}{kind}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_manifest_lists_16k_mono_files_with_valid_labels(corpus):
    for split, count in (("train", N_TRAIN), ("test", N_TEST)):
        rows = _rows(corpus, split)
        assert len(rows) == count
        for row in rows:
            assert set(row) == {"audio", "labels"}
            assert not Path(row["audio"]).is_absolute() and row["audio"].endswith(".wav")
            info = sf.info(str(corpus / row["audio"]))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames == int(SECONDS * 16000)
            labels = read_labels(corpus / row["labels"])  # the project's own strict parser
            ends = [0.0]
            for start, end, name in labels:
                assert name == "speech"
                assert ends[-1] <= start < end <= SECONDS
                ends.append(end)
    # Files carry speech and non-speech: the corpus is neither all speech nor all noise.
    frac = np.mean([r["speech_fraction"] for r in _rows(corpus, "train", "_meta")])
    assert 0.2 < frac < 0.85


def test_same_seed_gives_identical_bytes_whatever_the_jobs(corpus, tmp_path):
    _build(tmp_path / "again", jobs=1)
    assert _tree(tmp_path / "again") == _tree(corpus)
    _build(tmp_path / "other", seed=SEED + 1, n_train=2, n_test=0)
    a = (corpus / "train/train_00000.wav").read_bytes()
    assert (tmp_path / "other/train/train_00000.wav").read_bytes() != a


def test_flac_output_is_deterministic_and_matches_wav(corpus, tmp_path):
    _build(tmp_path / "f1", fmt="flac", n_train=2, n_test=1)
    _build(tmp_path / "f2", fmt="flac", n_train=2, n_test=1)
    assert _tree(tmp_path / "f1") == _tree(tmp_path / "f2")
    x_flac, _ = sf.read(str(tmp_path / "f1/train/train_00001.flac"), dtype="int16")
    x_wav, _ = sf.read(str(corpus / "train/train_00001.wav"), dtype="int16")
    np.testing.assert_array_equal(x_flac, x_wav)  # lossless, same content as the WAV run


def test_labels_follow_the_clean_speech_energy(corpus):
    """Rebuild clips in-process (same per-file generator) to see their clean speech track."""
    ratios = []
    for split, index in (("train", 0), ("train", 3), ("test", 1), ("test", 4)):
        clip = mvc.make_clip(mvc.file_rng(SEED, split, index), split, SECONDS)
        # The written label file is exactly this clip's speech mask.
        labels = read_labels(corpus / f"{split}/{split}_{index:05d}.txt")
        assert [(round(s, 6), round(e, 6)) for s, e, _ in labels] == [
            (round(s, 6), round(e, 6)) for s, e in clip.segments]
        e = mvc.frame_energy(clip.speech)  # (n_frames,) clean energy per 25 ms frame
        if not clip.mask.any():
            continue
        # Nearly all clean-speech energy sits in labelled frames ...
        assert e[clip.mask].sum() / e.sum() > 0.999
        # ... and the typical speech frame is far louder than the typical non-speech frame.
        speech_med = np.median(e[clip.mask])
        nonspeech_p90 = np.percentile(e[~clip.mask], 90)
        ratios.append(speech_med / max(nonspeech_p90, 1e-12))
        # Every labelled run holds at least one frame near its utterance's level (-40 dB rule).
        edges = np.flatnonzero(np.diff(np.concatenate([[0], clip.mask.astype(int), [0]])))  # a0 b0 a1 b1 ...
        for a, b in zip(edges[0::2], edges[1::2]):
            assert e[a:b].max() > e.max() * 10 ** (-40 / 10)
    assert ratios and min(ratios) > 1e3  # > 30 dB apart


def test_labels_round_trip_to_the_same_frames(corpus):
    """Centre rule (generator) and >= 50 % window coverage rule (frame_targets) agree exactly."""
    for split in ("train", "test"):
        for row in _rows(corpus, split):
            labels = read_labels(corpus / row["labels"])
            n_samples = int(SECONDS * 16000)
            n = mvc.n_frames_for(n_samples)
            a = frame_targets(labels, n, 16000, 160, 400, n_samples=n_samples).astype(bool)
            b = mvc.labels_to_frames([(s, e) for s, e, _ in labels], n)
            np.testing.assert_array_equal(a, b)
            # Writing the frames back gives the same label file.
            assert [(round(s, 6), round(e, 6)) for s, e in mvc.frames_to_segments(b)] == [
                (round(s, 6), round(e, 6)) for s, e, _ in labels]


def test_held_out_split_is_disjoint_in_voices_languages_and_noise(corpus):
    train, test = _rows(corpus, "train", "_meta"), _rows(corpus, "test", "_meta")

    def used(rows, key):
        out = set()
        for r in rows:
            v = r.get(key)
            out.update(v if isinstance(v, list) else ([] if v is None else [v]))
        return out

    for key in ("langs", "variants", "voices", "bed", "hum"):
        assert not used(train, key) & used(test, key), key
    # Bed filters: only "none" (an unfiltered bed, of a different colour) is shared.
    assert used(train, "bed_filter") & used(test, "bed_filter") <= {"none"}
    pairs = [{(r["bed"], r["bed_filter"]) for r in rows} for rows in (train, test)]
    assert not pairs[0] & pairs[1]
    assert used(train, "langs") and used(test, "langs")
    # The split definitions themselves never share a setting.
    tr, te = mvc.SPLITS["train"], mvc.SPLITS["test"]
    for key in tr:
        a, b = tr[key], te[key]
        if key == "bed_filter":
            assert set(a) & set(b) == {"none"}
        elif isinstance(a, tuple) and key != "click_hz" and key != "reverb":
            assert not set(a) & set(b), key
        else:
            assert a != b, key
    assert tr["click_hz"][1] < te["click_hz"][0] and tr["reverb"][1] < te["reverb"][0]
    # The text is in the language of the voice: the held-out languages have their own text files.
    for lang in tr["langs"] + te["langs"]:
        assert mvc.sentences(lang)


def test_gap_merging_and_short_runs_hand_checked():
    m = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1], bool)
    assert mvc.merge_short_gaps(m, 3).astype(int).tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1]
    assert mvc.drop_short_runs(m, 2).astype(int).tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    # Frames 2..4 -> centres 0.0325..0.0525 s; segment = centres -/+ 5 ms.
    segs = mvc.frames_to_segments(np.array([0, 0, 1, 1, 1, 0], bool))
    assert segs == [(pytest.approx(0.0275), pytest.approx(0.0575))]
    # Frame energy uses the front end's framing: frame k covers samples [160k, 160k + 400).
    x = np.zeros(1000, np.float32)
    x[500] = 2.0  # inside frames 1, 2, 3 ([160, 560), [320, 720), [480, 880)), not frame 0
    e = mvc.frame_energy(x)
    assert len(e) == 1 + (1000 - 400) // 160
    np.testing.assert_allclose(e, [0, 4 / 400, 4 / 400, 4 / 400])


def test_speech_frames_judges_each_utterance_against_its_own_peak():
    loud = np.zeros(4000, np.float32)
    loud[1000:3000] = 0.5
    quiet = loud * 1e-3  # -60 dB: below a shared threshold, but labelled on its own peak
    n = 16000
    mask = mvc.speech_frames([(0, loud), (10000, quiet)], n)
    frames = mvc.labels_to_frames(mvc.frames_to_segments(mask), len(mask))
    assert frames[(1000 + 200) // 160] and frames[(10000 + 2000) // 160]
    assert not frames[(5000) // 160] and not frames[-1]


def test_cli_rejects_bad_arguments(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOLS / "make_vad_corpus.py"), "--out", str(tmp_path),
                           "--seconds", "0.5", "--n-train", "1", "--n-test", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--seconds must be >= 1.0, got 0.5" in proc.stderr
    proc = subprocess.run([sys.executable, str(TOOLS / "make_vad_corpus.py"), "--out", str(tmp_path),
                           "--n-train", "-1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--n-train must be >= 0" in proc.stderr


def test_bundled_demo_is_reproducible_and_labelled(tmp_path):
    """tools/make_demo.py regenerates the committed demo byte for byte."""
    proc = subprocess.run([sys.executable, str(TOOLS / "make_demo.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    models = ROOT / "streamrnn" / "models"
    assert (tmp_path / "demo.txt").read_bytes() == (models / "demo.txt").read_bytes()
    assert (tmp_path / "demo.flac").read_bytes() == (models / "demo.flac").read_bytes()
    info = sf.info(str(models / "demo.flac"))
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    assert 20.0 <= info.duration <= 30.0 and (models / "demo.flac").stat().st_size < 500_000
    labels = read_labels(models / "demo.txt")
    speech_s = sum(e - s for s, e, _ in labels)
    assert len(labels) >= 4 and 0.3 * info.duration < speech_s < 0.7 * info.duration
