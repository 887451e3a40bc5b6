"""tools/eval_vad.py: frame alignment, WebRTC VAD on a generated corpus, the model path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
sys.path.insert(0, str(TOOLS))
import eval_vad  # noqa: E402
import make_vad_corpus as mvc  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vadc_eval")
    mvc.build_corpus(out, n_train=0, n_test=5, seconds=6.0, seed=3, jobs=2)
    return out


class _EnergyVad:
    """Stands in for webrtcvad.Vad: 'speech' when the 10 ms frame holds any non-zero sample."""

    def __init__(self, mode):
        self.mode = mode

    def is_speech(self, frame: bytes, rate: int) -> bool:
        assert rate == 16000 and len(frame) == 320  # 160 int16 samples
        return bool(np.any(np.frombuffer(frame, "<i2")))


def test_webrtc_frame_holding_the_model_frame_centre_is_used(monkeypatch):
    import webrtcvad

    monkeypatch.setattr(webrtcvad, "Vad", _EnergyVad)
    x = np.zeros(16000, np.float32)
    x[1600:1760] = 0.5  # exactly WebRTC frame 10 = [1600, 1760)
    scores, _ = eval_vad.webrtc_scores(x, 2)
    assert len(scores) == 1 + (16000 - 400) // 160  # one score per model frame
    # Model frame k covers [160k, 160k + 400), centre 160k + 200: only k = 9 (centre 1640) is inside.
    assert np.flatnonzero(scores).tolist() == [9]


def test_event_decisions_follow_the_pipeline_hysteresis():
    # 100 frames/s: on 0.5, off 0.35, min_on 0.1 s = 10 frames, min_off 0.2 s = 20 frames.
    p = np.r_[[0.1] * 10, [0.9] * 30, [0.4] * 5, [0.9] * 10, [0.1] * 40, [0.9] * 5, [0.1] * 30]
    d = eval_vad.event_decisions(p, 100.0)
    # Worked by hand: a segment starts at frame 10 and rides over the 0.4 dip (>= off); the
    # 40-frame run below off (>= min_off) ends it at frame 55; the 5-frame blip at 95 is
    # shorter than min_on and never becomes a segment.
    expected = np.zeros(len(p))
    expected[10:55] = 1.0
    np.testing.assert_array_equal(d, expected)
    # A segment still open at the end of the file is closed there (flush).
    np.testing.assert_array_equal(eval_vad.event_decisions(np.r_[[0.1] * 5, [0.9] * 20], 100.0),
                                  np.r_[[0.0] * 5, [1.0] * 20])


def test_cli_reports_all_webrtc_modes(corpus, tmp_path):
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    proc = subprocess.run([sys.executable, str(TOOLS / "eval_vad.py"), str(corpus / "test.jsonl"),
                           "--json", str(out_json), "--markdown", str(out_md)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out_json.read_text())
    res = doc["results"]
    assert [r["detector"] for r in res] == [f"webrtcvad mode {m}" for m in range(4)]
    assert doc["n_files"] == 5
    for r in res:
        assert r["n_frames"] == 5 * (1 + (6 * 16000 - 400) // 160)
        for k in ("roc_auc", "f1", "precision", "recall", "accuracy"):
            assert 0.0 <= r[k] <= 1.0
        assert r["false_alarms_per_hour"] >= 0 and r["rtf"] > 0
        # A binary detector's ROC-AUC is (TPR + TNR) / 2; rebuild TNR from the reported counts.
        n_pos = r["speech_fraction"] * r["n_frames"]
        n_neg = r["n_frames"] - n_pos
        tp = r["recall"] * n_pos
        fp = tp * (1 - r["precision"]) / r["precision"] if r["precision"] > 0 else 0.0
        assert r["roc_auc"] == pytest.approx((r["recall"] + 1 - fp / n_neg) / 2, abs=1e-9)
    # WebRTC VAD finds the espeak speech clearly better than chance in at least one mode.
    assert max(r["roc_auc"] for r in res) > 0.65
    table = out_md.read_text()
    assert table.startswith("| detector | ROC-AUC | F1 |") and table.count("webrtcvad mode") == 4
    assert "webrtcvad mode 3" in proc.stdout


class _FakeAudioStream:
    """The AudioStream contract: push(samples) -> one row per completed 10 ms frame,
    frame k covering samples [160k, 160k + 400). Output: 1 if the window's energy is high."""

    def __init__(self, rate):
        assert rate == 16000
        self.buf = np.zeros(0, np.float32)
        self.next = 0  # start sample of the next frame, in buffer coordinates

    def push(self, x):
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float32)])
        rows = []
        while self.next + 400 <= len(self.buf):
            w = self.buf[self.next:self.next + 400]
            rows.append([0.25, float(np.mean(w * w) > 1e-6)])  # (noise, speech)
            self.next += 160
        return np.asarray(rows, np.float32).reshape(-1, 2)


class _FakeModel:
    name = "fake"
    labels = ["noise", "speech"]
    frontend = {"sample_rate": 16000, "hop_length": 160, "win_length": 400}

    def audio_stream(self, rate):
        return _FakeAudioStream(rate)


def test_model_path_collects_frames_from_audio_stream(corpus):
    items = eval_vad.read_manifest(corpus / "test.jsonl")
    det = eval_vad.ModelDetector(_FakeModel(), label="speech", chunk=1600)
    assert det.column == 1  # the "speech" output is chosen by name
    p1, _ = det.scores(items[0].samples, 16000)
    assert len(p1) == 1 + (len(items[0].samples) - 400) // 160
    assert set(np.unique(p1)) <= {0.0, 1.0}  # the speech column, not the constant noise one
    res = eval_vad.evaluate(items, modes=(), model=det)
    assert len(res) == 1 and res[0]["detector"] == "streamrnn fake"
    assert res[0]["n_frames"] == 5 * (1 + (6 * 16000 - 400) // 160)
    # The energy "model" sees every labelled frame of the mixture (noise included): high recall.
    assert res[0]["recall"] > 0.95
    # Chunking does not change what the model sees.
    det.chunk = 999
    p2, _ = det.scores(items[1].samples, 16000)
    det.chunk = 16000
    p3, _ = det.scores(items[1].samples, 16000)
    np.testing.assert_array_equal(p2, p3)


def test_cli_evaluates_a_real_model_file_through_audio_stream(corpus, tmp_path):
    import streamrnn
    from streamrnn.audio import LogMel

    model = streamrnn.Model.random("gru", 40, 8, 1, output_size=1, activation="sigmoid", labels=["speech"],
                                   frontend=LogMel().to_dict(), name="tinyvad", seed=1)
    path = tmp_path / "tinyvad.safetensors"
    streamrnn.save_model(model, path)
    out_json = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "eval_vad.py"), str(corpus / "test.jsonl"), "--modes",
                           "--model", str(path), "--json", str(out_json)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "frames, the labels give" not in proc.stderr  # the stream's frames line up with the labels
    (r,) = json.loads(out_json.read_text())["results"]
    assert r["detector"] == f"streamrnn {path}"
    assert r["n_frames"] == 5 * (1 + (6 * 16000 - 400) // 160)
    # The tool's scores are the stream's outputs for the whole file.
    items = eval_vad.read_manifest(corpus / "test.jsonl", limit=1)
    det = eval_vad.ModelDetector(str(path))
    p, _ = det.scores(items[0].samples, 16000)
    ref = streamrnn.load_model(path).audio_stream(16000).push(items[0].samples)[:, 0]
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)


def test_breakdown_groups_files_by_snr_and_events(corpus, tmp_path):
    out_json = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "eval_vad.py"), str(corpus / "test.jsonl"), "--modes", "2",
                           "--breakdown", "--json", str(out_json)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out_json.read_text())
    groups = {g["group"]: g for g in doc["breakdown"]}
    snr = [g for name, g in groups.items() if name.startswith("SNR")]
    meta = [json.loads(line) for line in (corpus / "test_meta.jsonl").read_text().splitlines()]
    # The SNR bands partition the files with speech (speech-free files have snr_db null).
    assert sum(g["n_files"] for g in snr) == sum(m["snr_db"] is not None for m in meta)
    n_low = sum(m["snr_db"] is not None and m["snr_db"] < 5 for m in meta)
    assert groups.get("SNR < 5 dB", {"n_files": 0})["n_files"] == n_low
    for g in doc["breakdown"]:
        assert set(g["detectors"]) == {"webrtcvad mode 2"}
    assert "| SNR" in proc.stdout
    # A group holding every file reproduces the overall numbers.
    items = eval_vad.read_manifest(corpus / "test.jsonl")
    scored = eval_vad.score_all(items, modes=(2,))
    rows = eval_vad.breakdown(items, scored, [{"snr_db": 20.0}] * len(items))
    assert [(r["group"], r["n_files"]) for r in rows] == [("SNR >= 15 dB", 5), ("no events", 5)]
    assert rows[0]["detectors"]["webrtcvad mode 2"]["f1"] == pytest.approx(doc["results"][0]["f1"])
