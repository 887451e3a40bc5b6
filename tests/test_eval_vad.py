"""tools/eval_vad.py: frame alignment, WebRTC VAD on a generated corpus, the model path."""

from __future__ import annotations

import importlib.util
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
    mvc.build_corpus(out, n_train=0, n_test=3, seconds=6.0, seed=3, jobs=2, n_neg=1)
    return out


@pytest.fixture(scope="module")
def negatives(corpus) -> Path:
    return corpus / "test_neg.jsonl"  # one negatives-only file per kind, test_neg_meta.jsonl beside it


N_FRAMES_6S = 1 + (6 * 16000 - 400) // 160  # model frames of one 6 s corpus file


class _EnergyPeer(eval_vad.Peer):
    """A synthetic peer: one output per block, 1 when the block holds any non-zero sample."""

    name = "energy"

    def __init__(self, block):
        self.block = block

    def outputs(self, x16):
        n = len(x16) // self.block
        return np.array([float(np.any(x16[j * self.block:(j + 1) * self.block])) for j in range(n)]), 0.0


@pytest.mark.parametrize("block", [160, 256, 512])
def test_map_by_centre_gives_each_frame_the_block_holding_its_centre(block):
    n_samples = 16000 + 77  # not a whole number of blocks
    grid = eval_vad.Grid()
    n = grid.n_frames(n_samples)
    assert n == 1 + (n_samples - 400) // 160
    n_blocks = n_samples // block
    got = eval_vad.map_by_centre(np.arange(n_blocks, dtype=float), block, grid, n)
    for k in range(n):  # brute force: the block j with j*block <= 160k + 200 < (j+1)*block
        centre = 160 * k + 200
        want = next(j for j in range(n_blocks + 5) if j * block <= centre < (j + 1) * block)
        assert got[k] == min(want, n_blocks - 1)


def test_peer_frame_mapping_on_a_synthetic_alignment_case():
    item = eval_vad.Item("x", np.zeros(16000, np.float32), 16000, [])
    item.samples[1600:1760] = 0.5  # exactly the 10 ms block 10 = [1600, 1760)
    scores, _ = _EnergyPeer(160).scores(item, eval_vad.Grid(), item.samples)
    assert len(scores) == 1 + (16000 - 400) // 160  # one score per model frame
    # Model frame k covers [160k, 160k + 400), centre 160k + 200: only k = 9 (centre 1640) is inside.
    assert np.flatnonzero(scores).tolist() == [9]
    # A 512-sample chunk [1536, 2048) holds the centres of frames 9, 10 and 11 (1640, 1800, 1960).
    item.samples[:] = 0
    item.samples[1536:2048] = 0.5
    scores, _ = _EnergyPeer(512).scores(item, eval_vad.Grid(), item.samples)
    assert np.flatnonzero(scores).tolist() == [9, 10, 11]


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
    proc = subprocess.run([sys.executable, str(TOOLS / "eval_vad.py"), str(corpus / "test.jsonl"), "--peers", "webrtc",
                           "--json", str(out_json), "--markdown", str(out_md)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out_json.read_text())
    res = doc["results"]
    assert [r["detector"] for r in res] == [f"webrtcvad mode {m}" for m in range(4)]
    assert doc["n_files"] == 3
    for r in res:
        assert r["n_frames"] == 3 * N_FRAMES_6S
        for k in ("roc_auc", "f1", "precision", "recall", "accuracy"):
            assert 0.0 <= r[k] <= 1.0
        assert r["false_alarms_per_hour"] >= 0 and r["cpu_per_audio_s"] > 0
        # A binary detector's ROC-AUC is (TPR + TNR) / 2; rebuild TNR from the reported counts.
        n_pos = r["speech_fraction"] * r["n_frames"]
        n_neg = r["n_frames"] - n_pos
        tp = r["recall"] * n_pos
        fp = tp * (1 - r["precision"]) / r["precision"] if r["precision"] > 0 else 0.0
        assert r["roc_auc"] == pytest.approx((r["recall"] + 1 - fp / n_neg) / 2, abs=1e-9)
    # WebRTC VAD finds the espeak speech clearly better than chance in at least one mode.
    assert max(r["roc_auc"] for r in res) > 0.65
    table = out_md.read_text()
    assert table.startswith("Command: `python tools/eval_vad.py ") and table.count("| webrtcvad mode") == 4
    assert "| detector | ROC-AUC | F1 |" in table
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
    assert res[0]["n_frames"] == 3 * N_FRAMES_6S
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
    proc = subprocess.run([sys.executable, str(TOOLS / "eval_vad.py"), str(corpus / "test.jsonl"), "--peers", "",
                           "--model", str(path), "--json", str(out_json)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "frames, the labels give" not in proc.stderr  # the stream's frames line up with the labels
    (r,) = json.loads(out_json.read_text())["results"]
    assert r["detector"] == f"streamrnn {path}"
    assert r["n_frames"] == 3 * N_FRAMES_6S
    # The tool's scores are the stream's outputs for the whole file.
    items = eval_vad.read_manifest(corpus / "test.jsonl", limit=1)
    det = eval_vad.ModelDetector(str(path))
    p, _ = det.scores(items[0].samples, 16000)
    ref = streamrnn.load_model(path).audio_stream(16000).push(items[0].samples)[:, 0]
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)


def test_breakdown_groups_files_by_snr_and_events(corpus, tmp_path):
    out_json = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "eval_vad.py"), str(corpus / "test.jsonl"), "--peers",
                           "webrtc", "--modes", "2", "--breakdown", "--json", str(out_json)], capture_output=True, text=True, timeout=120)
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
    # Wideband and telephone-path files partition the files with speech; every speech file is in the
    # group of each of its sources and languages, speech-free files in no group at all.
    speech = [i for i, m in enumerate(meta) if m["kind"] == "speech"]
    tel = [i for i in speech if meta[i]["bandlimited"]]
    assert groups.get("band-limited", {"n_files": 0})["n_files"] == len(tel)
    assert groups.get("wideband", {"n_files": 0})["n_files"] == len(speech) - len(tel)
    for src in {s for i in speech for s in meta[i]["sources"]}:
        assert groups[f"with {src} speech"]["n_files"] == sum(src in meta[i]["sources"] for i in speech)
    for lang in {g for i in speech for g in meta[i]["langs"]}:
        assert groups[f"language {lang}"]["n_files"] == sum(lang in meta[i]["langs"] for i in speech)
    assert eval_vad.file_groups([{"kind": "music", "snr_db": None, "events": ["tone"], "bandlimited": False}]) == {}
    assert "| SNR" in proc.stdout
    # A group holding every file reproduces the overall numbers.
    items = eval_vad.read_manifest(corpus / "test.jsonl")
    scored = eval_vad.score_all(items, [eval_vad.WebRTCPeer(2)])
    rows = eval_vad.breakdown(items, scored, [{"snr_db": 20.0}] * len(items))
    assert [(r["group"], r["n_files"]) for r in rows] == [("SNR >= 15 dB", 3), ("no events", 3)]
    assert rows[0]["detectors"]["webrtcvad mode 2"]["f1"] == pytest.approx(doc["results"][0]["f1"])


# ------------------------------------------------------------- metric definitions


def _centres(n):
    return (np.arange(n) * 160 + 200) / 16000  # 12.5 ms, 22.5 ms, ...: frame k at 10k + 12.5 ms


def test_onset_and_offset_delays_on_hand_made_tracks():
    c = _centres(100)  # last centre 1.0025 s
    segs = [(0.10, 0.30), (0.50, 0.60), (0.80, 0.95)]
    p = np.zeros(100)
    p[12:34] = 0.9  # segment 1: on from 132.5 ms (first frame at/after 0.10 s is 9), off from frame 34 (352.5 ms)
    p[56] = 0.49  # segment 2: never reaches 0.5 (just below), so its onset is missed
    p[70:96] = 0.5  # segment 3: on before it starts (inclusive threshold), off from frame 96 (972.5 ms)
    on, off = eval_vad.boundary_delays(p, c, segs, 0.5)
    # onsets: 132.5 - 100; missed; first frame at/after 0.80 s is 79 (802.5 ms), already on: 2.5 ms.
    np.testing.assert_allclose([d if d is not None else -1 for d in on], [0.0325, -1, 0.0025], atol=1e-12)
    assert on[1] is None
    # offsets: 352.5 - 300; first frame at/after 0.60 s (602.5 ms) is off: 2.5 ms; 972.5 - 950.
    np.testing.assert_allclose(off, [0.0525, 0.0025, 0.0225], atol=1e-12)

    # The offset window ends at the next segment's start: on through the whole gap = a missed offset.
    p2 = np.zeros(100)
    p2[9:60] = 1.0  # on from frame 9 (102.5 ms) through the gap [0.30, 0.50) to frame 59 (602.5 ms)
    on, off = eval_vad.boundary_delays(p2, c, segs[:2], 0.5)
    assert on == [pytest.approx(0.0025), pytest.approx(0.0025)]  # frames 9 and 49 (502.5 ms)
    assert off[0] is None and off[1] == pytest.approx(0.0125)  # frame 60 (612.5 ms) is the first off
    # A boundary with no frame in its window is not counted: the offset of a label ending after the last frame.
    on, off = eval_vad.boundary_delays(np.ones(100), c, [(0.99, 1.2)], 0.5)
    assert on == [pytest.approx(0.0025)] and off == []


def test_delay_summary_and_merged_labels():
    d = eval_vad.delay_summary([0.01 * i for i in range(1, 11)] + [None])
    # 10..100 ms: median 55 ms; p90 by linear interpolation at rank 0.9 * 9 = 8.1: 90 + 0.1 * 10 = 91 ms.
    assert d["n"] == 11 and d["missed"] == 1
    assert d["median_ms"] == pytest.approx(55.0) and d["p90_ms"] == pytest.approx(91.0)
    assert eval_vad.delay_summary([None])["missed"] == 1
    labels = [(0.5, 0.7, "speech"), (0.1, 0.3, "speech"), (0.25, 0.4, "speech"), (0.4, 0.45, "speech"),
              (0.9, 1.0, "noise")]
    assert eval_vad.merged_segments(labels) == [(0.1, 0.45), (0.5, 0.7)]


def test_false_alarm_share_per_kind():
    scores = [np.array([1, 1, 0, 0.]), np.array([0.2, 0.3, 0.5, 0.49]), np.array([0, 0, 0.]),
              np.array([0.9, 0, 0, 0, 0, 0.])]
    kinds = ["tone", "fan", "silence", "tone"]
    # tone: (2 + 1) of (4 + 6) frames; fan: 0.5 counts (>= threshold), 0.49 does not; silence none.
    assert eval_vad.false_alarm_shares(scores, kinds, 0.5) == {"fan": 0.25, "silence": 0.0, "tone": 0.3}


def test_segment_counts_use_the_cli_event_settings():
    # 100 frames/s: on 0.5, off 0.35, min_on 10 frames, min_off 20 frames (StreamConfig defaults).
    t = np.zeros(300, np.int8)
    t[20:60] = 1  # labelled segment 1: detected
    t[150:170] = 1  # segment 2: missed (no detection there)
    t[250:260] = 1  # segment 3: missed (a 5-frame blip is shorter than min_on)
    p = np.zeros(300)
    p[25:70] = 0.9  # -> detected segment [25, 70): overlaps segment 1
    p[200:230] = 0.9  # -> detected segment [200, 230): no labelled frame: a false start
    p[252:257] = 0.9
    assert eval_vad.segment_counts(p, t, 100.0) == {"segments": 3, "missed": 2, "detected": 2, "false_starts": 1}


# ------------------------------------------------------------- the command line


def test_missing_peer_is_one_line_and_the_others_run(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(eval_vad.PEERS, "ghost", eval_vad.PeerSpec(
        "streamrnn_no_such_vad_module", "pip install ghost-vad", lambda modes: [], ("ghost-vad",)))
    out_json = tmp_path / "g.json"
    rc = eval_vad.main([str(corpus / "test.jsonl"), "--peers", "ghost,webrtc", "--modes", "3",
                        "--json", str(out_json)])
    err = capsys.readouterr().err
    assert rc == 0
    lines = [line for line in err.splitlines() if "ghost" in line]
    assert len(lines) == 1 and "streamrnn_no_such_vad_module" in lines[0] and "pip install ghost-vad" in lines[0]
    assert "Traceback" not in err
    doc = json.loads(out_json.read_text())
    assert [r["detector"] for r in doc["results"]] == ["webrtcvad mode 3"]
    assert doc["versions"]["ghost-vad"] is None
    # An unknown peer name is a usage error naming the choices.
    with pytest.raises(SystemExit) as e:
        eval_vad.main([str(corpus / "test.jsonl"), "--peers", "nosuch"])
    assert e.value.code == 2 and "silero, ten, webrtc" in capsys.readouterr().err


PEER_ROWS = {"silero": ["silero-vad"], "ten": ["ten-vad"], "webrtc": ["webrtcvad mode 0", "webrtcvad mode 3"]}


def test_cli_compares_every_installed_detector_on_the_same_frames(corpus, negatives, tmp_path):
    from sklearn import metrics as skm

    import streamrnn

    out_json, out_md = tmp_path / "all.json", tmp_path / "all.md"
    proc = subprocess.run([sys.executable, str(TOOLS / "eval_vad.py"), str(corpus / "test.jsonl"), "--neg",
                           str(negatives), "--model", "vad", "--peers", "silero,ten,webrtc", "--modes", "0", "3",
                           "--json", str(out_json), "--markdown", str(out_md)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(out_json.read_text())
    names = [r["detector"] for r in doc["results"]]
    want = ["streamrnn vad"]
    for peer, rows in PEER_ROWS.items():
        if importlib.util.find_spec(eval_vad.PEERS[peer].module) is not None:
            want += rows
        else:  # not installed here: one line naming the install, and the others still run
            assert f"peer {peer!r} skipped" in proc.stderr and eval_vad.PEERS[peer].install in proc.stderr
    assert names == want
    assert doc["n_files"] == 3 and doc["n_neg_files"] == len(mvc.NEG_KINDS)
    assert doc["command"].startswith("python tools/eval_vad.py ") and "--neg" in doc["command"]
    assert doc["versions"]["numpy"] == np.__version__ and doc["versions"]["streamrnn"]
    for r in doc["results"]:
        assert r["n_frames"] == 3 * N_FRAMES_6S  # every detector on the same frames
        for k in ("roc_auc", "f1", "precision", "recall", "best_f1"):
            assert 0.0 <= r[k] <= 1.0, (r["detector"], k)
        assert r["best_f1"] >= r["f1"] - 1e-12  # the best threshold is at least as good as 0.5
        assert set(r["neg_false_alarm_share"]) == set(mvc.NEG_KINDS)
        assert r["cpu_per_audio_s"] > 0 and r["missed_segments"] <= r["speech_segments"]
        for d in (r["onset_delay"], r["offset_delay"]):
            assert 0 <= d["missed"] <= d["n"] and d["n"] > 0
        if r["detector"].startswith("webrtcvad"):
            assert r["best_threshold"] in (0.0, 1.0)  # binary decisions: all speech, or its decisions
    # The model's row from an independent computation: the whole file through one push, sklearn's metrics.
    model = streamrnn.load_model("vad")
    items = eval_vad.read_manifest(corpus / "test.jsonl")
    ps = np.concatenate([model.audio_stream(16000).push(it.samples)[:, 0] for it in items])
    ys = np.concatenate([eval_vad.Grid().targets(it, "speech") for it in items])
    row = doc["results"][0]
    assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(ys, ps), abs=1e-6)
    assert row["f1"] == pytest.approx(skm.f1_score(ys, ps >= 0.5), abs=1e-6)
    md = out_md.read_text()
    assert md.startswith("Command: `python tools/eval_vad.py ") and "Versions: python " in md
    assert "| detector | ROC-AUC | F1 |" in md and "| tone time called speech |" in md
    assert md.count("\n| ") == 1 + len(want)  # the header and one row per detector
