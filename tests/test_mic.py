"""The microphone path with a real PortAudio device and no hardware: a PulseAudio null sink
("virt", started by tools/start_pulse.sh) whose monitor is the default source. A WAV played into
the sink with paplay is recorded through sounddevice's "pulse" device by `streamrnn stream`.

Skips where that set-up is absent, unless STREAMRNN_REQUIRE_AUDIO=1 (CI), where it fails."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

import streamrnn
from streamrnn.audio import LogMel

pytestmark = pytest.mark.audio_device
SR = 16000


def _audio_ready() -> str | None:
    """None if PulseAudio + PortAudio's pulse device are usable, else why not."""
    if not (shutil.which("pactl") and shutil.which("paplay")):
        return "pactl/paplay not installed (apt-get install pulseaudio-utils)"
    if subprocess.run(["pactl", "info"], capture_output=True).returncode != 0:
        return "no PulseAudio server (run tools/start_pulse.sh)"
    if b"virt" not in subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True).stdout:
        return "no 'virt' null sink (run tools/start_pulse.sh)"
    try:
        import sounddevice as sd

        sd.query_devices("pulse", "input")
    except Exception as e:  # OSError (no PortAudio) or ValueError (no pulse device)
        return f"PortAudio has no 'pulse' input device ({e}; apt-get install libportaudio2 libasound2-plugins)"
    return None


@pytest.fixture(scope="module")
def pulse():
    why = _audio_ready()
    if why:
        if os.environ.get("STREAMRNN_REQUIRE_AUDIO") == "1":
            pytest.fail(f"STREAMRNN_REQUIRE_AUDIO=1 but the audio device set-up is missing: {why}")
        pytest.skip(why)


def energy_model(wav_signal):
    """An 'energy detector': y = sigmoid(20 tanh(k (mean log-mel - mid))), mid halfway between the
    mean log-mel of the silence and of the tone, so y is ~1 while the tone plays and ~0 otherwise."""
    fe = LogMel()
    f = fe.compute(wav_signal)                       # (T, 40)
    m = f.mean(axis=1)
    mid = 0.5 * (np.percentile(m, 5) + np.percentile(m, 95))
    base = streamrnn.Model.random("rnn_tanh", input_size=fe.n_features, hidden_size=1, output_size=1,
                                  activation="sigmoid")
    k = 1.0
    t = {n: np.zeros_like(v) for n, v in base.tensors().items()}
    t["rnn.weight_ih_l0"][...] = k / fe.n_features
    t["rnn.bias_ih_l0"][...] = -k * mid
    t["head.weight"][...] = 20.0
    return streamrnn.Model(base.arch, t, labels=["tone"], frontend=fe.to_dict(), name="energy")


def test_devices_lists_the_pulse_input(pulse):
    r = subprocess.run([sys.executable, "-m", "streamrnn", "devices", "--json"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    names = [json.loads(line)["name"] for line in r.stdout.splitlines()]
    assert "pulse" in names


def test_microphone_predictions_follow_the_played_audio(pulse, tmp_path):
    t = np.arange(int(3.0 * SR)) / SR
    x = (0.5 * np.sin(2 * np.pi * 1000 * t) * ((t >= 0.8) & (t < 1.8))).astype(np.float32)  # 1 s tone
    sf.write(tmp_path / "tone.wav", x, SR, subtype="PCM_16")
    energy_model(x).save(tmp_path / "energy.safetensors")
    err = open(tmp_path / "err.txt", "w")
    p = subprocess.Popen([sys.executable, "-m", "streamrnn", "stream", "--model", "energy.safetensors",
                          "--source", "mic:pulse", "--sink", "jsonl:o.jsonl", "--duration", "30",
                          "--min-on", "0.1", "--min-off", "0.2"], cwd=tmp_path, stderr=err)
    try:
        t_end = time.monotonic() + 60
        while "streamrnn: streaming" not in (tmp_path / "err.txt").read_text():
            assert p.poll() is None and time.monotonic() < t_end, (tmp_path / "err.txt").read_text()
            time.sleep(0.05)
        time.sleep(0.3)
        subprocess.run(["paplay", "--device=virt", str(tmp_path / "tone.wav")], check=True, timeout=30)
        time.sleep(0.5)  # the last played samples travel through PulseAudio
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0, (tmp_path / "err.txt").read_text()
    finally:
        if p.poll() is None:
            p.kill()
    recs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    y = np.array([r["y"][0] for r in recs if r["type"] == "pred"])
    ev = [r for r in recs if r["type"] == "event"]
    assert [e["event"] for e in ev] == ["start", "end"], ev
    # the segment is the tone: about 1 s of audio (frames at 100/s, not wall-clock time)
    dur = ev[1]["duration"]
    assert 0.8 <= dur <= 1.25, dur
    s, e = ev[0]["frame"], ev[1]["frame"]
    assert (y[s + 5:e - 5] > 0.9).all() and (y[:s - 5] < 0.1).all() and (y[e + 5:] < 0.1).all()
    assert s >= 50  # silence was recorded before the tone began
    stats = (tmp_path / "err.txt").read_text()
    assert "overflows" not in stats  # nothing dropped on the way
