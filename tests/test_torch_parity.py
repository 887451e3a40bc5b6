"""Models saved from PyTorch (tools/make_torch_vectors.py) stream like PyTorch does.

The files under tests/data/ were written by PyTorch with the export code shown
in docs/model-format.md; the expected outputs are PyTorch's own, so this test
needs no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import streamrnn

DATA = Path(__file__).parent / "data"
ALL = sorted(p.name.removesuffix(".io.safetensors") for p in DATA.glob("torch_*.io.safetensors"))
CASES = [n for n in ALL if not n.startswith("torch_bi_")]
BI_CASES = [n for n in ALL if n.startswith("torch_bi_")]


def test_every_cell_and_depth_has_vectors():
    assert len(CASES) == 12, CASES  # 4 cells x 1-3 layers
    # bidirectional: GRU and LSTM x 1-3 layers, and a 2-layer Elman RNN
    assert BI_CASES == sorted([f"torch_bi_{c}_l{n}" for c in ("gru", "lstm") for n in (1, 2, 3)]
                              + ["torch_bi_rnn_tanh_l2"]), BI_CASES


@pytest.mark.parametrize("name", CASES)
def test_pytorch_model_streams_like_pytorch(name):
    model = streamrnn.load_model(DATA / f"{name}.safetensors")
    io = load_file(str(DATA / f"{name}.io.safetensors"))
    x, y_torch = io["x"], io["y"]
    assert len(x) == 1000
    rng = np.random.default_rng(len(name))
    s, pos, out = model.stream(), 0, []
    while pos < len(x):  # random chunk sizes, 1..64 frames
        n = int(rng.integers(1, 65))
        out.append(s.push(x[pos:pos + n]))
        pos += n
    np.testing.assert_allclose(np.concatenate(out), y_torch, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", BI_CASES)
def test_pytorch_bidirectional_model_gives_pytorchs_outputs(name):
    """PyTorch bidirectional=True (``*_reverse`` tensors, head of input 2H), whole sequence offline."""
    model = streamrnn.load_model(DATA / f"{name}.safetensors")
    assert model.bidirectional and model.arch.top_size == 2 * model.hidden_size
    io = load_file(str(DATA / f"{name}.io.safetensors"))
    x, y_torch = io["x"], io["y"]
    assert len(x) == 300
    np.testing.assert_allclose(model.forward(x), y_torch, rtol=0, atol=1e-5)
    with pytest.raises(streamrnn.StreamingError, match="delay"):
        model.stream()
