"""What a new user meets (issue 18): file modes, stdin headers, model/source mismatch, training talk."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.toml"


def cli(*args, umask=None, input=None, timeout=300, **kw):
    """The real CLI as a subprocess (with ``umask`` set in the child before anything is written)."""
    pre = None if umask is None else (lambda: os.umask(umask))
    return subprocess.run([sys.executable, "-m", "streamrnn", *args], capture_output=True, timeout=timeout,
                          cwd=ROOT, preexec_fn=pre, input=input, text=input is None or isinstance(input, str),
                          **kw)


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# --- item 3: model files and checkpoints honour the umask ------------------------------------------

def test_trained_model_and_checkpoint_are_0644_under_umask_022(tmp_path):
    out = tmp_path / "run"
    p = cli("train", str(TINY), "--out", str(out), "--set", "train.epochs=1", umask=0o022)
    assert p.returncode == 0, p.stderr
    assert mode(out / "model.safetensors") == 0o644
    assert mode(out / "checkpoint.safetensors") == 0o644
    assert mode(out / "metrics.jsonl") == 0o644  # the same as a file written with open()


def test_save_model_follows_a_stricter_umask(tmp_path):
    code = ("import os, sys, streamrnn; from streamrnn.nn.modelfile import save_model; os.umask(0o027); "
            "save_model(streamrnn.load_model('vad'), sys.argv[1])")
    target = tmp_path / "vad.safetensors"
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, cwd=ROOT, timeout=120)
    assert mode(target) == 0o640


# --- item 10: training docs point at the formats; divergence advice fits the config ----------------

def test_training_docs_link_to_the_documented_data_formats():
    import re

    text = (ROOT / "docs" / "training.md").read_text()
    data = text.split("## Data", 1)[1].split("\n## ", 1)[0]
    assert "See that module" not in data
    links = re.findall(r"\]\((frontend\.md)#([a-z0-9-]+)\)", data)
    assert {a for _, a in links} >= {"datasets-for-the-trainer", "audio-and-label-files"}
    # every anchor is a real heading of docs/frontend.md (GitHub's slug: lower case, spaces -> '-')
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / "frontend.md").read_text(), re.M)
    slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    assert {a for _, a in links} <= slugs
    frontend = (ROOT / "docs" / "frontend.md").read_text()
    assert '{"audio": "clips/a.wav", "labels": "clips/a.txt"}' in frontend  # the manifest format is there
    assert "start<TAB>end<TAB>label" in frontend  # and the label format


def _diverge(*overrides):
    import numpy as np
    import pytest

    from streamrnn.config import TrainConfig, load_config
    from streamrnn.errors import TrainingError
    from streamrnn.train.data import Sequence
    from streamrnn.train.trainer import Trainer

    rng = np.random.default_rng(0)
    seqs = [Sequence(rng.standard_normal((40, 3)).astype(np.float32), None, np.ones(40, np.float32), f"s{i}")
            for i in range(6)]
    cfg = load_config(TrainConfig, overrides=["data.task=next_frame", "data.loss=mse", "model.hidden_size=4",
                                              "tbptt.k1=8", "tbptt.k2=8", "tbptt.lanes=2", *overrides], env={})
    t = Trainer(cfg, seqs)
    t.grad_hook = lambda step, grad: grad.__setitem__(slice(None), np.inf)
    with pytest.raises(TrainingError) as e:
        t.fit()
    return str(e.value)


def test_divergence_advice_does_not_suggest_clipping_to_a_config_that_clips():
    msg = _diverge("optim.clip=norm", "optim.clip_norm=5")
    assert "training diverged" in msg
    assert "optim.clip = 'norm'" not in msg
    assert "optim.clip_norm (now 5)" in msg


def test_divergence_advice_suggests_clipping_when_it_is_off():
    msg = _diverge("optim.clip=none")
    assert "optim.clip = 'norm'" in msg


# --- item 8: a feature-frame model on an audio source is refused at start-up -----------------------

FEATURE_MODEL = ROOT / "tests" / "data" / "torch_gru_l1.safetensors"  # exported from PyTorch: no front end


def test_feature_frame_model_on_an_audio_source_exits_2_with_one_line(tmp_path):
    import streamrnn

    assert streamrnn.load_model(FEATURE_MODEL).frontend is None
    out = tmp_path / "out.jsonl"
    for source in (f"file:{ROOT / 'tests' / 'data' / 'speech.flac'}", "demo", "stdin"):
        p = cli("stream", "--model", str(FEATURE_MODEL), "--source", source, "--sink", f"jsonl:{out}",
                "--no-realtime" if source == "demo" else "--sink=stdout", input=b"\0" * 640, timeout=120)
        err = p.stderr.decode().strip()
        assert p.returncode == 2, (source, err)
        assert len(err.splitlines()) == 1 and "takes feature frames" in err and "carries audio" in err, err
        assert not out.exists()  # refused before any sink was opened


def test_run_stream_refuses_the_mismatch_before_opening_anything():
    import pytest

    import streamrnn
    from streamrnn.errors import ConfigError

    cfg = streamrnn.StreamConfig(model=str(FEATURE_MODEL), source="demo", sink=("stdout",), realtime=False)
    with pytest.raises(ConfigError, match="takes feature frames"):
        streamrnn.run_stream(cfg)
