"""Issue 6: the bundled voice-activity model (streamrnn/models/vad.safetensors).

End to end through the real CLI as subprocesses: ``streamrnn stream --model vad --source demo``
judged against the demo's own labels, ``streamrnn info vad``, ``streamrnn eval --model vad`` with
its VAD metrics and ``--plot``.  Reference numbers are computed here in plain NumPy from the
label files (``frame_targets``) and the model's real-time path (``audio_stream``), not taken
from the code under test.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import streamrnn
from streamrnn.cli import cli
from streamrnn.audio.files import frame_targets, read_audio, read_labels
from streamrnn.nn.modelfile import MODELS_DIR

ROOT = Path(__file__).resolve().parents[1]
MODEL = MODELS_DIR / "vad.safetensors"
DEMO, DEMO_LABELS = MODELS_DIR / "demo.flac", MODELS_DIR / "demo.txt"
SR, HOP, WIN = 16000, 160, 400  # the model's front end: 16 kHz, 10 ms hop, 25 ms window

# F1 of the bundled model on the bundled demo at p >= 0.5, frame by frame: measured 0.943 for the
# 2 x 64 model of issue 12 (precision 0.952, recall 0.935; its predecessor 0.915, the earlier
# espeak-only model, whose voices the demo shares, 0.952).  The floor leaves room for a retrained model (seed, BLAS) without letting a
# broken pipeline through.
DEMO_F1_FLOOR = 0.85


def _cli(*args, timeout=240):
    """Run ``python -m streamrnn ARGS`` and return the CompletedProcess (stdout, stderr as text)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "streamrnn", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def _f1(truth: np.ndarray, decision: np.ndarray) -> float:
    """Binary F1 straight from the counts (independent of streamrnn.train.metrics)."""
    tp = int(np.sum(truth & decision))
    fp = int(np.sum(~truth & decision))
    fn = int(np.sum(truth & ~decision))
    return 2 * tp / (2 * tp + fp + fn)


def _false_alarms(truth: np.ndarray, decision: np.ndarray) -> int:
    """Runs of positive decisions that touch no labelled frame (a plain loop over frames)."""
    n, k = 0, 0
    while k < len(decision):
        if decision[k]:
            j = k
            while j < len(decision) and decision[j]:
                j += 1
            n += not truth[k:j].any()
            k = j
        else:
            k += 1
    return n


def _demo_truth(n_frames: int) -> np.ndarray:
    return frame_targets(read_labels(DEMO_LABELS), n_frames, SR, HOP, WIN) > 0.5


# ------------------------------------------------------------------ the file and its metadata


def test_bundled_model_resolves_and_describes_itself():
    assert MODEL.is_file(), "streamrnn/models/vad.safetensors is not installed"
    assert stat.S_IMODE(MODEL.stat().st_mode) & 0o644 == 0o644  # readable by everyone once installed
    assert MODEL.stat().st_size < 400_000  # "a few hundred kB at most"
    m = streamrnn.load_model("vad")
    assert (m.cell, m.num_layers, m.hidden_size, m.input_size, m.output_size) == ("gru", 2, 64, 40, 1)
    assert m.activation == "sigmoid" and m.labels == ["speech"] and m.name == "vad"
    fe = m.frontend
    assert (fe["type"], fe["sample_rate"], fe["hop_length"], fe["win_length"], fe["n_mels"]) == \
        ("logmel", SR, HOP, WIN, 40)
    # Input normalisation from the training set: log-mel (natural log of power) has finite
    # means far below 0 for quiet bins and clearly positive spreads.
    t = m.tensors()
    mean, std = t["norm.mean"], t["norm.std"]
    assert mean.shape == std.shape == (40,)
    assert np.all(np.isfinite(mean)) and np.all(std > 0.1)
    assert not np.allclose(mean, 0.0) and not np.allclose(std, 1.0)  # really learnt from data
    assert m.extra_meta["training"]["loss"] == "bce" and m.extra_meta["training"]["task"] == "frame"


def test_info_vad_text_and_json():
    r = CliRunner().invoke(cli, ["info", "vad"])
    assert r.exit_code == 0, r.output
    assert "gru, 2 layer(s), input 40, hidden 64" in r.output
    assert "sigmoid, labels ['speech']" in r.output and '"sample_rate": 16000' in r.output
    r = CliRunner().invoke(cli, ["info", "vad", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["path"] == str(MODEL) and d["file_bytes"] == MODEL.stat().st_size
    assert d["n_params"] == streamrnn.load_model("vad").n_params
    assert d["head"] == {"activation": "sigmoid", "labels": ["speech"]}


# ------------------------------------------------------------------ the main job, end to end


def test_stream_demo_through_the_cli_matches_the_demo_labels(tmp_path):
    out = tmp_path / "demo.jsonl"
    r = _cli("stream", "--model", "vad", "--source", "demo", "--sink", f"jsonl:{out}", "--no-realtime")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    preds = [x for x in recs if x["type"] == "pred"]
    x, rate = read_audio(DEMO)
    n_frames = 1 + (len(x) - WIN) // HOP
    assert rate == SR and [p["frame"] for p in preds] == list(range(n_frames))  # every frame, in order
    p = np.array([q["y"][0] for q in preds])
    # The CLI's numbers are the model's real-time path's numbers.
    np.testing.assert_allclose(p, streamrnn.load_model("vad").audio_stream(rate).push(x)[:, 0], atol=1e-5)
    truth = _demo_truth(n_frames)
    f1 = _f1(truth, p >= 0.5)
    assert f1 > DEMO_F1_FLOOR, f"F1 {f1:.3f} on the demo"
    # Events: every labelled utterance is inside some start..end segment the pipeline reported.
    ev = [e for e in recs if e["type"] == "event"]
    assert ev and all(e["label"] == "speech" for e in ev)
    seg = [(e["start_frame"], e["frame"]) for e in ev if e["event"] == "end"]
    assert len(seg) == sum(e["event"] == "start" for e in ev)
    runs = np.flatnonzero(np.diff(np.r_[0, truth.astype(int), 0]))
    for a, b in zip(runs[::2], runs[1::2]):  # labelled speech frames [a, b)
        assert any(s < b and e > a for s, e in seg), f"labelled speech at {a / 100:.2f}-{b / 100:.2f} s missed"
    assert recs[-1]["type"] == "eos" and recs[-1]["frames"] == n_frames


# ------------------------------------------------------------------ streamrnn eval --model vad


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """A tiny labelled manifest: two generated held-out files (espeak-ng + sox) and the demo."""
    sys.path.insert(0, str(ROOT / "tools"))
    import make_vad_corpus as mvc

    d = tmp_path_factory.mktemp("vad_eval")
    mvc.build_corpus(d, n_train=0, n_test=2, seconds=5.0, seed=3, jobs=1)
    lines = (d / "test.jsonl").read_text().splitlines()
    lines.append(json.dumps({"audio": str(DEMO), "labels": str(DEMO_LABELS)}))
    path = d / "eval.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _reference(manifest: Path) -> dict:
    """F1, ROC-AUC inputs and false alarms per hour from the real-time path, in plain NumPy."""
    m = streamrnn.load_model("vad")
    tp = fp = fn = n_fa = n_non = 0
    for line in manifest.read_text().splitlines():
        e = json.loads(line)
        audio = Path(e["audio"]) if Path(e["audio"]).is_absolute() else manifest.parent / e["audio"]
        labels = Path(e["labels"]) if Path(e["labels"]).is_absolute() else manifest.parent / e["labels"]
        x, rate = read_audio(audio)
        p = m.audio_stream(rate).push(x)[:, 0]
        t = frame_targets(read_labels(labels), len(p), SR, HOP, WIN) > 0.5
        d = p >= 0.5
        tp, fp, fn = tp + int(np.sum(t & d)), fp + int(np.sum(~t & d)), fn + int(np.sum(t & ~d))
        n_fa += _false_alarms(t, d)
        n_non += int(np.sum(~t))
    return {"f1": 2 * tp / (2 * tp + fp + fn), "false_alarms": n_fa, "nonspeech_hours": n_non / 100 / 3600}


def test_eval_prints_vad_metrics_with_false_alarms_and_plots(manifest, tmp_path):
    import matplotlib.image as mpimg  # matplotlib is in the test extra: no skip

    ref = _reference(manifest)
    png = tmp_path / "demo.png"
    r = _cli("eval", "--model", "vad", manifest, "--json", "--plot", png, "--plot-file", 2)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["sequences"] == 3 and res["task"] == "frame"
    assert res["f1"] == pytest.approx(ref["f1"], abs=0.005)
    assert res["nonspeech_hours"] == pytest.approx(ref["nonspeech_hours"], rel=1e-9)
    # The offline path (whole-file features) and the live path may differ by float rounding on a
    # frame that sits right at p = 0.5; allow one false alarm either way.
    assert abs(res["false_alarms"] - ref["false_alarms"]) <= 1
    assert res["false_alarms_per_hour"] == pytest.approx(res["false_alarms"] / res["nonspeech_hours"])
    assert 0.5 < res["auc"] <= 1.0
    # --plot: a PNG of the demo (entry 2) with four readable panels.
    assert res["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(str(png))
    assert img.shape[0] >= 600 and img.shape[1] >= 1000  # not a thumbnail
    # Not blank: the panels hold many distinct colours (spectrogram, traces).
    assert len(np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200

    # The human-readable form names the same numbers.
    r = CliRunner().invoke(cli, ["eval", "--model", "vad", str(manifest)])
    assert r.exit_code == 0, r.output
    rows = dict(line.split(None, 1) for line in r.output.splitlines())
    assert int(rows["false_alarms"]) == res["false_alarms"]
    assert float(rows["false_alarms_per_hour"]) == pytest.approx(res["false_alarms_per_hour"], rel=1e-5)
    assert float(rows["f1"]) == pytest.approx(res["f1"], rel=1e-5)


def test_eval_plot_rejects_bad_entries(manifest, tmp_path):
    r = CliRunner().invoke(cli, ["eval", "--model", "vad", str(manifest), "--plot", str(tmp_path / "x.png"),
                                 "--plot-file", "3"])
    assert r.exit_code == 2 and "--plot-file 3: the manifest has 3 entries (0-2)" in r.output
    assert not (tmp_path / "x.png").exists()


def test_eval_plot_without_matplotlib_names_the_extra(manifest, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    r = CliRunner().invoke(cli, ["eval", "--model", "vad", str(manifest), "--plot", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "--plot needs matplotlib: pip install 'streamrnn[plot]'" in r.output
    assert not (tmp_path / "x.png").exists()


def test_plot_trace_is_the_live_path():
    from streamrnn.train.vadplot import vad_trace

    m = streamrnn.load_model("vad")
    tr = vad_trace(m, DEMO, DEMO_LABELS)
    x, rate = read_audio(DEMO)
    np.testing.assert_allclose(tr["probs"], m.audio_stream(rate).push(x)[:, 0], atol=1e-6)
    n = len(tr["probs"])
    np.testing.assert_array_equal(tr["labels"] > 0.5, _demo_truth(n))
    np.testing.assert_allclose(tr["times"][:2], [0.0125, 0.0225])  # window centres: 200 and 360 samples
    assert tr["features"].shape == (n, 40)
