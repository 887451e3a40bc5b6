"""train.data: manifests, the feature cache (and its invalidation), precomputed .npz folders, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamrnn.audio import MFCC, LogMel, Resampler
from streamrnn.audio.files import frame_targets
from streamrnn.errors import AudioError, ConfigError, TrainingError
from streamrnn.train.data import (FeatureCache, Sequence, emphasise_offsets, load_dataset, manifest_classes,
                                  read_manifest)

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def corpus(tmp_path):
    """Two real recordings (the committed speech at 22.05 kHz, and a part of it at 8 kHz stereo) with
    Audacity labels, in a sub-folder, and manifests one level up (paths relative to the manifest)."""
    x, sr = sf.read(DATA / "speech.flac", dtype="float32")
    d = tmp_path / "audio"
    d.mkdir()
    sf.write(d / "a.flac", x, sr, subtype="PCM_16")
    r = Resampler(sr, 8000)
    y8 = np.concatenate([r.push(x[: sr * 2]), r.flush()])  # exactly 2 s
    sf.write(d / "b.wav", np.stack([y8, y8 * 0.5], axis=1), 8000, subtype="PCM_16")
    (d / "a.txt").write_text("0.30\t1.10\tspeech\n2.00\t2.50\tspeech\n")
    (d / "b.txt").write_text("0.25\t0.75\tspeech\n")
    lines = [{"audio": "audio/a.flac", "labels": "audio/a.txt"}, {"audio": "audio/b.wav", "labels": "audio/b.txt"}]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    cls = [{"audio": "audio/a.flac", "class": "fox"}, {"audio": "audio/b.wav", "class": "dog"}]
    (tmp_path / "class.jsonl").write_text("\n".join(json.dumps(e) for e in cls))
    (tmp_path / "plain.jsonl").write_text(json.dumps({"audio": "audio/b.wav"}) + "\n")
    return tmp_path


def offline_features(fe, path):
    """Independent path: read, downmix, resample (push + flush), compute."""
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != fe.sample_rate:
        r = Resampler(sr, fe.sample_rate)
        x = np.concatenate([r.push(x), r.flush()])
    return fe.compute(x), len(x)


def test_labels_manifest(corpus):
    fe = LogMel()
    seqs = load_dataset(corpus / "labels.jsonl", frontend=fe)
    assert [Path(s.name).name for s in seqs] == ["a.flac", "b.wav"]
    for s, lab in zip(seqs, [[(0.30, 1.10, "speech"), (2.00, 2.50, "speech")], [(0.25, 0.75, "speech")]]):
        assert isinstance(s, Sequence)
        x, n = offline_features(fe, s.name)
        np.testing.assert_allclose(s.x, x, rtol=1e-5, atol=1e-5)
        assert s.x.dtype == np.float32 and s.mask.dtype == np.float32 and (s.mask == 1).all()
        assert s.y.shape == (len(x), 1) and s.y.dtype == np.float32
        np.testing.assert_array_equal(s.y[:, 0], frame_targets(lab, len(x), 16000, 160, 400, n_samples=n))
    # b: 0.25-0.75 s -> frames 24 (240-265 ms, 60 %) .. 73 (730-755 ms, 80 %)
    assert np.flatnonzero(seqs[1].y[:, 0]).tolist() == list(range(24, 74))
    multi = load_dataset(corpus / "labels.jsonl", frontend=fe, classes=["noise", "speech"])
    assert multi[0].y.shape[1] == 2 and not multi[0].y[:, 0].any()
    np.testing.assert_array_equal(multi[0].y[:, 1], seqs[0].y[:, 0])


def test_class_and_plain_manifests(corpus):
    seqs = load_dataset(corpus / "class.jsonl", frontend=MFCC().to_dict())
    assert manifest_classes(corpus / "class.jsonl") == ["dog", "fox"]
    assert seqs[0].y.dtype == np.int64 and set(seqs[0].y) == {1} and set(seqs[1].y) == {0}
    assert seqs[0].x.shape[1] == 13 and seqs[0].y.shape == (len(seqs[0].x),)
    seqs = load_dataset(corpus / "class.jsonl", frontend=LogMel(), classes=["fox", "dog", "cat"])
    assert set(seqs[0].y) == {0} and set(seqs[1].y) == {1}
    with pytest.raises(ConfigError, match=r"class 'dog' is not among"):
        load_dataset(corpus / "class.jsonl", frontend=LogMel(), classes=["fox"])
    plain = load_dataset(corpus / "plain.jsonl", frontend=LogMel())
    assert plain[0].y is None and plain[0].x.shape[1] == 40
    assert manifest_classes(corpus / "labels.jsonl") == ["speech"]


def test_cache_hits_and_invalidation(corpus, tmp_path):
    cache_dir = tmp_path / "cache"
    c = FeatureCache(cache_dir)
    fe = LogMel()
    first = load_dataset(corpus / "labels.jsonl", frontend=fe, cache=c)
    assert (c.hits, c.misses) == (0, 2) and len(list(cache_dir.glob("*.npz"))) == 2
    for f in cache_dir.glob("*.npz"):  # plain arrays: readable without pickle
        with np.load(f, allow_pickle=False) as z:
            assert set(z.files) == {"x", "n_samples"}
    again = load_dataset(corpus / "labels.jsonl", frontend=fe, cache=c)
    assert (c.hits, c.misses) == (2, 2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.x, b.x)
    # the cached values are the ones used: plant a marker in a cache file
    f = sorted(cache_dir.glob("a-*.npz"))[0]
    with np.load(f) as z:
        x, n = z["x"], z["n_samples"]
    np.savez(f, x=np.full_like(x, 7.0), n_samples=n)
    assert (load_dataset(corpus / "labels.jsonl", frontend=fe, cache=c)[0].x == 7.0).all()
    # settings change -> new key, recomputed (the planted values are not read)
    fe2 = LogMel(n_mels=40, preemphasis=0.97)
    changed = load_dataset(corpus / "labels.jsonl", frontend=fe2, cache=c)
    assert c.misses == 4 and not (changed[0].x == 7.0).all()
    np.testing.assert_allclose(changed[0].x, offline_features(fe2, changed[0].name)[0], rtol=1e-5, atol=1e-5)
    # the audio file changes (mtime) -> recomputed
    a = corpus / "audio" / "a.flac"
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh = load_dataset(corpus / "labels.jsonl", frontend=fe, cache=c)
    assert c.misses == 5 and not (fresh[0].x == 7.0).all()
    np.testing.assert_array_equal(fresh[0].x, first[0].x)
    # cache_dir= works the same way
    load_dataset(corpus / "labels.jsonl", frontend=fe, cache_dir=tmp_path / "c2")
    assert len(list((tmp_path / "c2").glob("*.npz"))) == 2


def test_cache_key_depends_on_settings_and_file(corpus):
    a = corpus / "audio" / "a.flac"
    k = FeatureCache.key(LogMel(), a)
    assert k == FeatureCache.key(LogMel(), a)
    assert k != FeatureCache.key(LogMel(htk=True), a)
    assert k != FeatureCache.key(LogMel(), a, nonfinite="zero")
    assert k != FeatureCache.key(LogMel(), corpus / "audio" / "b.wav")


def test_npz_folder(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s1.npz", x=rng.standard_normal((50, 8)).astype(np.float32),
             y=rng.integers(0, 3, 50), mask=np.ones(50))
    np.savez(tmp_path / "s2.npz", x=rng.standard_normal((20, 8)), y=rng.random((20, 2)))
    np.savez(tmp_path / "s3.npz", x=rng.standard_normal((10, 8)).astype(np.float32))
    seqs = load_dataset(tmp_path)
    assert [Path(s.name).name for s in seqs] == ["s1.npz", "s2.npz", "s3.npz"]
    assert seqs[0].y.dtype == np.int64 and seqs[0].y.shape == (50,)
    assert seqs[1].x.dtype == np.float32 and seqs[1].y.dtype == np.float32 and seqs[1].y.shape == (20, 2)
    assert seqs[2].y is None and (seqs[2].mask == 1).all() and seqs[2].mask.shape == (10,)


def _offset_weights_reference(on, frames, weight):
    """Frame by frame: a non-target frame weighs ``weight`` when a target frame lies 1..frames frames before it
    with only non-target frames in between."""
    w = np.ones(len(on))
    for t in range(len(on)):
        if on[t]:
            continue
        k = t - 1
        while k >= 0 and not on[k]:
            k -= 1
        if k >= 0 and t - k <= frames:
            w[t] = weight
    return w


def test_emphasise_offsets_weighs_the_frames_after_each_end(tmp_path):
    rng = np.random.default_rng(3)
    on = np.repeat(rng.random(60) < 0.4, rng.integers(1, 9, 60))  # runs of 1-8 frames
    y = np.stack([on * 0.9, np.zeros(len(on))], axis=1).astype(np.float32)  # (T, 2): any output >= 0.5
    s = Sequence(np.zeros((len(on), 4), np.float32), y, np.full(len(on), 0.5, np.float32), "a")
    cls = Sequence(np.zeros((5, 4), np.float32), np.zeros(5, np.int64), np.ones(5, np.float32), "b")
    out = emphasise_offsets([s, cls], 5, 4.0)
    np.testing.assert_array_equal(out[0].mask, 0.5 * _offset_weights_reference(on, 5, 4.0))
    assert (s.mask == 0.5).all()  # the input is not modified
    assert out[1] is cls  # class targets: unchanged
    assert emphasise_offsets([s], 0, 4.0)[0] is s and emphasise_offsets([s], 5, 1.0)[0] is s
    # Through the trainer's data loading: the training sequences are weighted, the validation ones not.
    from streamrnn.config import TrainConfig, load_config
    from streamrnn.train.trainer import load_data

    for i in range(4):
        np.savez(tmp_path / f"s{i}.npz", x=np.zeros((len(on), 4), np.float32), y=y)
    cfg = load_config(TrainConfig, overrides=[f"data.train={tmp_path}", "data.valid_fraction=0.5",
                                              "data.offset_frames=5", "data.offset_weight=4"], env={})
    train, valid, _, _ = load_data(cfg)
    ref = _offset_weights_reference(on, 5, 4.0)
    assert len(train) == len(valid) == 2
    assert all((t.mask == ref).all() for t in train) and all((v.mask == 1).all() for v in valid)


@pytest.mark.parametrize("arrays,match", [
    (dict(x=np.zeros((5, 8)), z=np.zeros(5)), "needs 'x'"),
    (dict(y=np.zeros(5, int)), "needs 'x'"),
    (dict(x=np.zeros(5)), r"x must be a non-empty \(T, F\) float"),
    (dict(x=np.zeros((5, 8)), y=np.zeros(4, int)), r"y must be \(5,\) integer classes or \(5, O\) float"),
    (dict(x=np.zeros((5, 8)), y=-np.ones(5, int)), ">= 0"),
    (dict(x=np.zeros((5, 8)), mask=np.ones(6)), r"mask must have shape \(5,\)"),
    (dict(x=np.full((5, 8), np.nan)), "NaN"),
    (dict(x=np.array([[object()]], dtype=object)), "pickle"),
])
def test_bad_npz(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(TrainingError, match=match) as e:
        load_dataset(tmp_path)
    assert "bad.npz" in str(e.value)


def test_npz_feature_count_mismatch(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((5, 8)))
    np.savez(tmp_path / "b.npz", x=np.zeros((5, 9)))
    with pytest.raises(TrainingError, match="9 features per frame, the first file has 8"):
        load_dataset(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no .npz files"):
        load_dataset(empty)


@pytest.mark.parametrize("text,match", [
    ('{"audio": "a.wav"}\nnot json\n', r"m.jsonl:2: not JSON"),
    ('{"audio": "a.wav", "label": "a.txt"}\n', r"m.jsonl:1: unknown key\(s\) \['label'\]"),
    ('{"labels": "a.txt"}\n', "m.jsonl:1: each line must be an object with an 'audio' path"),
    ('{"audio": "a.wav", "labels": "a.txt", "class": "x"}\n', "not both"),
    ('{"audio": 3}\n', "'audio' must be a non-empty string"),
    ('{"audio": "a.wav", "class": "x"}\n{"audio": "b.wav"}\n', "mixes entry kinds"),
    ("\n\n", "no entries"),
])
def test_bad_manifests(tmp_path, text, match):
    (tmp_path / "m.jsonl").write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_manifest(tmp_path / "m.jsonl")


def test_manifest_file_errors(corpus, tmp_path):
    (tmp_path / "m.jsonl").write_text('{"audio": "missing.wav"}\n')
    with pytest.raises(AudioError, match="missing.wav: no such audio file"):
        load_dataset(tmp_path / "m.jsonl", frontend=LogMel())
    with pytest.raises(ConfigError, match="needs a front end"):
        load_dataset(corpus / "labels.jsonl")
    with pytest.raises(ConfigError, match="no such manifest"):
        load_dataset(tmp_path / "nope.jsonl", frontend=LogMel())
    # labels past the end of the audio (b.wav lasts 2 s)
    (corpus / "audio" / "b.txt").write_text("1.5\t2.6\tspeech\n")
    with pytest.raises(AudioError, match="ends after the audio, which lasts 2 s"):
        load_dataset(corpus / "labels.jsonl", frontend=LogMel())
    (corpus / "audio" / "b.txt").write_text("1.5\toops\tspeech\n")
    with pytest.raises(AudioError, match=r"b.txt:1: start and end must be numbers"):
        load_dataset(corpus / "labels.jsonl", frontend=LogMel())
    # too short for one frame
    sf.write(corpus / "audio" / "short.wav", np.zeros(100, np.float32), 16000)
    (tmp_path / "s.jsonl").write_text(json.dumps({"audio": str(corpus / "audio" / "short.wav")}))
    with pytest.raises(AudioError, match="shorter than one frame"):
        load_dataset(tmp_path / "s.jsonl", frontend=LogMel())


def test_nonfinite_audio_file(tmp_path):
    x = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    x[100] = np.nan
    sf.write(tmp_path / "n.wav", x, 16000, subtype="FLOAT")
    (tmp_path / "m.jsonl").write_text('{"audio": "n.wav"}\n')
    with pytest.raises(AudioError, match="1 NaN/Inf"):
        load_dataset(tmp_path / "m.jsonl", frontend=LogMel())
    seqs = load_dataset(tmp_path / "m.jsonl", frontend=LogMel(), nonfinite="zero")
    x[100] = 0
    np.testing.assert_array_equal(seqs[0].x, LogMel().compute(x))
