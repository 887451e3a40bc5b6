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
