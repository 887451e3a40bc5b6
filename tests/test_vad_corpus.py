"""tools/make_vad_corpus.py: a tiny corpus builds, is deterministic, and its labels are right.

Needs the Debian packages the generator reads (see .ci/run): espeak-ng, sox, ffmpeg, festival and
its voices, fluidsynth + fluid-soundfont-gm and the Asterisk G.722 prompts.
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
N_TRAIN, N_TEST, N_NEG, SECONDS = 14, 6, 1, 10.0


def _build(out: Path, seed: int = SEED, jobs: int = 2, fmt: str = "wav", n_train=N_TRAIN, n_test=N_TEST,
           seconds=SECONDS, n_neg=N_NEG) -> None:
    cmd = [sys.executable, str(TOOLS / "make_vad_corpus.py"), "--out", str(out), "--n-train", str(n_train),
           "--n-test", str(n_test), "--seconds", str(seconds), "--seed", str(seed), "--jobs", str(jobs),
           "--format", fmt, "--n-neg", str(n_neg)]
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
    for split, count in (("train", N_TRAIN), ("test", N_TEST), ("test_neg", N_NEG * len(mvc.NEG_KINDS))):
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
    _build(tmp_path / "other", seed=SEED + 1, n_train=2, n_test=0, n_neg=0)
    a = (corpus / "train/train_00000.wav").read_bytes()
    assert (tmp_path / "other/train/train_00000.wav").read_bytes() != a


def test_flac_output_is_deterministic_and_matches_wav(corpus, tmp_path):
    _build(tmp_path / "f1", fmt="flac", n_train=2, n_test=1, n_neg=0)
    _build(tmp_path / "f2", fmt="flac", n_train=2, n_test=1, n_neg=0)
    assert _tree(tmp_path / "f1") == _tree(tmp_path / "f2")
    x_flac, _ = sf.read(str(tmp_path / "f1/train/train_00001.flac"), dtype="int16")
    x_wav, _ = sf.read(str(corpus / "train/train_00001.wav"), dtype="int16")
    np.testing.assert_array_equal(x_flac, x_wav)  # lossless, same content as the WAV run


def test_labels_follow_the_clean_speech_energy(corpus):
    """Rebuild clips in-process (same per-file generator) to see their clean speech track."""
    ratios = []
    for split, index in (("train", 0), ("train", 3), ("test", 1), ("test", 4)):
        clip = mvc.make_clip(mvc.file_rng(SEED, split, index), split, SECONDS, SEED)
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
    for split in ("train", "test", "test_neg"):
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


def _used(rows, key):
    out = set()
    for r in rows:
        v = r.get(key)
        out.update(v if isinstance(v, list) else ([] if v is None else [v]))
    return out


def test_held_out_split_is_disjoint_in_speakers_voices_and_languages(corpus):
    train, test = _rows(corpus, "train", "_meta"), _rows(corpus, "test", "_meta")
    for key in ("speakers", "voices", "langs"):
        assert _used(train, key) and _used(test, key), key
        assert not _used(train, key) & _used(test, key), key
    # Real speech: the held-out speaker is French June only; training hears Allison (en, es) only.
    assert {s for s in _used(test, "speakers") if s.startswith("asterisk:")} <= {"asterisk:fr_CA_f_June"}
    assert {s for s in _used(train, "speakers") if s.startswith("asterisk:")} <= {
        "asterisk:en_US_f_Allison", "asterisk:es_MX_f_Allison"}
    assert "fr" not in _used(train, "langs")
    # The split definitions themselves never share a speaker, voice, language, variant or MIDI program.
    tr, te = mvc.SPLITS["train"], mvc.SPLITS["test"]
    for key in ("asterisk", "festival", "langs", "variants", "programs"):
        assert not set(tr[key]) & set(te[key]), key
    train_langs = set(tr["langs"]) | {mvc.FESTIVAL_VOICES[v][0] for v in tr["festival"]} | {a[:2] for a in tr["asterisk"]}
    test_langs = set(te["langs"]) | {mvc.FESTIVAL_VOICES[v][0] for v in te["festival"]} | {a[:2] for a in te["asterisk"]}
    assert not train_langs & test_langs
    # The text is in the language of the voice: every language has its own text file.
    for lang in train_langs | test_langs:
        assert mvc.sentences(lang)


def test_every_source_and_a_speech_free_share_are_in_the_training_split(corpus):
    train = _rows(corpus, "train", "_meta")
    assert _used(train, "sources") == {"asterisk", "festival", "espeak"}
    kinds = [r["kind"] for r in train]
    assert 0 < kinds.count("speech") < len(kinds)  # speech files and speech-free files
    for r in train:
        labels = read_labels(corpus / r["audio"].replace(".wav", ".txt"))
        assert bool(labels) == (r["kind"] == "speech"), r["audio"]
        assert r["kind"] == "speech" or (r["kind"] in mvc.NEG_KINDS and not r["speakers"])


def test_negatives_only_split_has_every_kind_with_empty_labels(corpus):
    rows, meta = _rows(corpus, "test_neg"), _rows(corpus, "test_neg", "_meta")
    assert [m["kind"] for m in meta] == [k for k in mvc.NEG_KINDS for _ in range(N_NEG)]
    for row, m in zip(rows, meta):
        assert row["audio"] == m["audio"]
        assert (corpus / row["labels"]).read_text() == ""
        assert m["speakers"] == [] and m["negatives"] == [m["kind"]]
        x, _ = sf.read(str(corpus / row["audio"]), dtype="float64")
        if m["kind"] == "silence":
            assert 10 * np.log10(np.mean(x ** 2) + 1e-20) < -55, m  # RMS
        else:
            assert 20 * np.log10(np.max(np.abs(x))) > -60, m  # peak: audible, not an empty file


def _band_share_above(x: np.ndarray, hz: float) -> float:
    """Share of the power above ``hz`` in a 16 kHz signal (NumPy periodogram)."""
    p = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(p[f > hz].sum() / p.sum())


def _power_above(x: np.ndarray, hz: float) -> float:
    """Mean-square power of ``x`` (16 kHz) above ``hz``: the signal with the lower bins zeroed (NumPy FFT)."""
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / 16000) <= hz] = 0
    return float(np.mean(np.fft.irfft(spec, len(x)) ** 2))


def test_telephone_files_have_no_energy_above_4khz(corpus):
    rows = [r for s in ("train", "test", "test_neg") for r in _rows(corpus, s, "_meta")]
    tel = [r for r in rows if r["telephone"]]
    wide = [r for r in rows if not r["telephone"] and r["kind"] in ("speech", "noise")]
    assert tel and wide
    # 16-bit rounding adds white noise of power 2**-30 / 12 over the whole band: in very quiet files that
    # floor, not the signal, is what lies above 4 kHz. Allow -45 dB of the file's power or twice the floor.
    q_floor = 2.0 ** -30 / 12
    for r in tel:
        x, _ = sf.read(str(corpus / r["audio"]), dtype="float64")
        assert _power_above(x, 4100) < max(10 ** (-45 / 10) * np.mean(x ** 2), 2 * q_floor), r
    shares = [_band_share_above(sf.read(str(corpus / r["audio"]), dtype="float64")[0], 4100) for r in wide]
    assert max(shares) > 10 ** (-30 / 10)  # the check can tell: wide-band files do have energy up there
    # The path itself, on white noise: the 300-3400 Hz band passes, nothing comes back above 4 kHz.
    x = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32)
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    band = (f > 500) & (f < 3000)
    for codec in mvc.CODECS:
        y = mvc.telephone(x, codec)
        assert len(y) == len(x) and y.dtype == np.float32
        assert _band_share_above(y, 4100) < 1e-5, codec  # white noise in: 49 % of it lies above 4.1 kHz
        p_in, p_out = np.abs(np.fft.rfft(x)) ** 2, np.abs(np.fft.rfft(y)) ** 2
        assert 0.5 < p_out[band].sum() / p_in[band].sum() < 2.0, codec
    with pytest.raises(ValueError, match="unknown codec 'g729'"):
        mvc.telephone(x, "g729")


def _peak_freqs(x: np.ndarray, k: int) -> list[float]:
    """The ``k`` strongest spectral peaks (Hz) of a 16 kHz signal, from scipy's Welch estimate."""
    from scipy.signal import find_peaks, welch
    f, p = welch(x, fs=16000, nperseg=8192)
    idx, _ = find_peaks(p)
    return sorted(float(f[i]) for i in idx[np.argsort(p[idx])[-k:]])


def test_negative_kinds_sound_like_their_name():
    n = 3 * 16000
    for i in range(6):
        x, d = mvc.negative(np.random.default_rng(i), "train", "tone", n, SEED)
        if d["wave"] == "sine" and not d["beeps"]:
            assert _peak_freqs(x, 1)[0] == pytest.approx(d["freq_hz"], abs=2.0)
    seen = set()
    for i in range(40):  # 440 Hz and 1 kHz come exactly, the problem cases of the old model
        _, d = mvc.negative(np.random.default_rng(i), "train", "tone", 1600, SEED)
        seen.add(d["freq_hz"])
    assert {440.0, 1000.0} <= seen
    for i in range(3):  # mains hum: every strong partial is a multiple of its 50/60 Hz fundamental
        x, d = mvc.negative(np.random.default_rng(i), "test", "hum", n, SEED)
        assert round(d["f0_hz"] / 10) in (5, 6)
        for f in _peak_freqs(x, 3):
            assert abs(f / d["f0_hz"] - round(f / d["f0_hz"])) * d["f0_hz"] < 3.0
    x, d = mvc.negative(np.random.default_rng(2), "train", "dtmf", n, SEED)
    peaks = _peak_freqs(x, 2)
    assert min(abs(peaks[0] - f) for f in mvc.DTMF_LOW) < 4 and min(abs(peaks[1] - f) for f in mvc.DTMF_HIGH) < 4
    for name, (freqs, _) in mvc.CALL_PROGRESS.items():
        rng = np.random.default_rng(0)
        while True:  # draw until the generator picks this pattern
            x, d = mvc._callprogress(rng, n)
            if d["pattern"] == name:
                break
        assert _peak_freqs(x, len(freqs)) == pytest.approx(sorted(freqs), abs=3.0), name
    for i in range(4):  # fan/engine: low-passed, nearly all power below 2 kHz
        x, d = mvc.negative(np.random.default_rng(i), "train", "fan", n, SEED)
        assert _band_share_above(x, 2000) < 0.01, d
    x, d = mvc.negative(np.random.default_rng(4), "train", "silence", n, SEED)
    assert np.sqrt(np.mean(x ** 2)) < 10 ** (-59 / 20)
    x, d = mvc.negative(np.random.default_rng(5), "train", "music", n, SEED)
    assert np.sqrt(np.mean(x ** 2)) == pytest.approx(1.0, rel=1e-3) and d["kind"] == "music"


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


def test_trim_run_ends_hand_checked():
    m = np.array([0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0], bool)
    # Each run loses its last 2 frames, but keeps at least 3 frames (the second run has 4: keeps 3).
    assert mvc.trim_run_ends(m, 2).astype(int).tolist() == [0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert mvc.trim_run_ends(m, 0).tolist() == m.tolist()
    assert mvc.trim_run_ends(np.ones(5, bool), 9).astype(int).tolist() == [1, 1, 1, 0, 0]


def test_extra_training_negatives_and_trimmed_training_labels(corpus, tmp_path):
    # Same seed plus --train-neg and --train-end-trim-ms: the audio of every file and the held-out labels
    # stay byte for byte; the training labels end 3 frames (30 ms) earlier; extra negatives-only training
    # files of the asked kinds follow in train.jsonl.
    out = tmp_path / "extra"
    proc = subprocess.run([sys.executable, str(TOOLS / "make_vad_corpus.py"), "--out", str(out), "--n-train",
                           str(N_TRAIN), "--n-test", str(N_TEST), "--n-neg", str(N_NEG), "--seconds", str(SECONDS),
                           "--seed", str(SEED), "--train-neg", "music=2,tone=1", "--train-end-trim-ms", "30"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    a, b = _tree(corpus), _tree(out)
    for name, data in a.items():
        if name.endswith(".wav") or name.startswith(("test/", "test_neg/", "test.", "test_neg.")):
            assert b[name] == data, name
    rows = _rows(out, "train")
    assert rows[:N_TRAIN] == _rows(corpus, "train")
    assert [r["audio"] for r in rows[N_TRAIN:]] == [f"train_neg/train_neg_{i:05d}.wav" for i in range(3)]
    meta = _rows(out, "train", "_meta")
    assert [m["kind"] for m in meta[N_TRAIN:]] == ["music", "music", "tone"]
    for r in rows[N_TRAIN:]:
        assert (out / r["labels"]).read_text() == ""
        assert sf.info(str(out / r["audio"])).frames == int(SECONDS * 16000)
    # The extra music comes from the training programs, in pieces of its own.
    progs = [tuple(m["event_settings"][0]["programs"]) for m in meta[N_TRAIN:N_TRAIN + 2]
             if m["event_settings"][0].get("source") == "midi"]
    assert all(set(p) <= set(mvc.SPLITS["train"]["programs"]) for p in progs)
    n_trimmed = 0
    for r in rows[:N_TRAIN]:
        full = [(s, e) for s, e, _ in read_labels(corpus / r["labels"])]
        cut = [(s, e) for s, e, _ in read_labels(out / r["labels"])]
        assert len(full) == len(cut)
        for (s0, e0), (s1, e1) in zip(full, cut):
            assert s1 == s0 and (e1 == pytest.approx(e0 - 0.03) or e1 == pytest.approx(s0 + 0.03))
            n_trimmed += 1
    assert n_trimmed > 5
    assert json.loads((out / "corpus.json").read_text())["train_end_trim_ms"] == 30.0
    proc = subprocess.run([sys.executable, str(TOOLS / "make_vad_corpus.py"), "--out", str(tmp_path / "bad"),
                           "--n-train", "0", "--n-test", "0", "--train-end-trim-ms", "25"], capture_output=True, text=True)
    assert proc.returncode == 2 and "multiple of 10 ms" in proc.stderr and "25" in proc.stderr
    proc = subprocess.run([sys.executable, str(TOOLS / "make_vad_corpus.py"), "--out", str(tmp_path / "bad"),
                           "--n-train", "0", "--n-test", "0", "--train-neg", "speech=3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "speech" in proc.stderr


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
