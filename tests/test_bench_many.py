"""tools/bench_many.py (the "many" section of tools/bench.py): it runs and reports what it measured."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

import streamrnn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import bench_many  # noqa: E402


def test_multiply_adds_per_frame_are_the_weight_count():
    """One stream-frame multiplies every weight once: the count equals the weight matrices' sizes."""
    for m in bench_many.vad_models((48, 64)).values():
        weights = sum(v.size for k, v in m.tensors().items() if "weight" in k)
        assert bench_many.macs_per_frame(m) == weights
    # the bundled VAD, GRU 2 x 64 over 40 features + 1 output: W_ih, W_hh (3H rows each), then the head
    assert bench_many.macs_per_frame(streamrnn.load_model("vad")) == 3 * 64 * 40 + 3 * 3 * 64 * 64 + 64  # 44,608


def test_section_reports_its_own_numbers():
    """With PyTorch (the bench extra) the row has both sides and their ratio; without it (CI) the bank
    side is still measured and the note says how to get the PyTorch column."""
    has_torch = importlib.util.find_spec("torch") is not None
    rep = bench_many.bench_many(1, ns=(3,), hiddens=(48,), threads=[1])
    assert rep["peak_gflops"] > 0
    (row,) = rep["rows"]
    assert (row["hidden"], row["n"], row["threads"]) == (48, 3, 1)
    assert row["bank_us"] > 0 and row["block_us"] > 0
    md = rep["markdown"]
    assert f"{rep['peak_gflops']:.1f} GFLOP/s" in md
    if has_torch:
        assert row["torch_us"] > 0 and np.isclose(row["ratio"], row["torch_us"] / row["bank_us"])
        assert (f"| 48 | 3 | 1 | {row['bank_us']:.3f} | {row['block_us']:.3f} | {row['torch_us']:.3f} | "
                f"{row['ratio']:.2f}x") in md
    else:
        assert row["torch_us"] is None and row["ratio"] is None
        assert f"| 48 | 3 | 1 | {row['bank_us']:.3f} | {row['block_us']:.3f} | - | -x" in md
        assert "PyTorch not installed" in md and "pip install torch" in md
