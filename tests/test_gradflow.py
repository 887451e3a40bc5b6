"""Gradient flow through time (streamrnn.train.gradflow): per-lag norms from the backward kernel
against central differences of a plain-NumPy forward, decay/horizon on known cases, spectral radii
against NumPy, growth when the recurrent weights are scaled up, and a GRU trained on the memory task."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from naive import cell_step
from naive_bptt import frame_loss

import streamrnn
from streamrnn.errors import InputError
from streamrnn.train.data import Sequence
from streamrnn.train.gradflow import fit_decay, gradient_flow, lag_norms, spectral_radii


def random_seqs(n, T, I, seed, O=1):
    rng = np.random.default_rng(seed)
    return [Sequence(rng.standard_normal((T, I)).astype(np.float32),
                     (rng.random((T, O)) < 0.5).astype(np.float32), np.ones(T, np.float32), f"s{i}")
            for i in range(n)]


def scaled_rnn(scale, H=16, seed=0, cell="rnn_tanh"):
    """An Elman network whose W_hh is ``scale`` times an orthogonal matrix (spectral norm = scale)."""
    m = streamrnn.Model.random(cell, 3, H, output_size=1, activation="sigmoid", seed=seed)
    t = m.tensors()
    q, r = np.linalg.qr(np.random.default_rng(seed + 7).standard_normal((H, H)))
    t["rnn.weight_hh_l0"] = scale * q * np.sign(np.diag(r))
    return streamrnn.Model(m.arch, t)


def loss_with_nudge(cell, t, x, y, L, at=None, d=0.0):
    """Plain-NumPy forward (tests/naive.py's cell_step) of the last frame's bce loss, with ``d`` added
    to one state variable as a node of the graph: at = (frame, layer, "h" or "c", unit).  A nudged h_t
    reaches the layer above at the same frame and the next frame; a nudged LSTM c_t also reaches
    h_t = o tanh(c_t) (done by adding d / f to c_{t-1}, since c_t = f c_{t-1} + i g)."""
    H = t["rnn.weight_hh_l0"].shape[1]
    h, c = np.zeros((L, H)), np.zeros((L, H))
    for ti, xt in enumerate(x):
        inp = xt
        for l in range(L):
            w = [t[f"rnn.{n}_l{l}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            here = at is not None and at[0] == ti and at[1] == l
            if here and at[2] == "c":
                f = 1.0 / (1.0 + np.exp(-(w[0] @ inp + w[2] + w[1] @ h[l] + w[3])[H:2 * H]))
                c[l][at[3]] += d / f[at[3]]
            h[l], c[l] = cell_step(cell, inp, h[l], c[l], *w)
            if here and at[2] == "h":
                h[l][at[3]] += d
            inp = h[l]
    return frame_loss("bce", t["head.weight"] @ h[L - 1] + t["head.bias"], y[-1])[0]


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_per_lag_norms_match_central_differences(cell):
    """Float64, 2 layers: |dL_t/ds_{t-k}| of the kernel equals the norm of the numerical gradient of the
    last frame's loss with respect to every layer's h (and c) k frames back, for every lag 0..8."""
    T, I, H, L = 9, 3, 4, 2
    m = streamrnn.Model.random(cell, I, H, num_layers=L, output_size=2, activation="sigmoid", seed=3,
                               dtype=np.float64)
    t = {k: v * 2.0 for k, v in m.tensors().items()}  # larger than PyTorch's init: gates leave their linear range
    m = streamrnn.Model(m.arch, t, dtype=np.float64, extra_meta={"training": {"loss": "bce", "task": "frame"}})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, I))
    y = (rng.random((T, 2)) < 0.5).astype(np.float64)
    norms, n = lag_norms(m, [Sequence(x, y, np.ones(T), "s")], max_lag=T - 1, n_anchors=1, warmup=0)
    assert n == 1
    e = 1e-5
    for k in range(T):
        grads = [(loss_with_nudge(cell, t, x, y, L, (T - 1 - k, l, kind, j), e)
                  - loss_with_nudge(cell, t, x, y, L, (T - 1 - k, l, kind, j), -e)) / (2 * e)
                 for l in range(L) for kind in (("h", "c") if cell == "lstm" else ("h",)) for j in range(H)]
        assert norms[k] == pytest.approx(np.linalg.norm(grads), rel=1e-6), k
    assert norms[0] > 0 and norms[T - 1] > 0


def test_small_recurrent_weights_give_a_horizon_of_a_few_steps():
    """Elman, W_hh = 0.3 x orthogonal: each step multiplies the gradient by at most 0.3 (tanh' <= 1),
    so it falls 100-fold within ln(100)/ln(1/0.3) = 3.8 steps."""
    m = scaled_rnn(0.3)
    g = gradient_flow(m, random_seqs(4, 80, 3, 1), max_lag=40, n_anchors=8, warmup=20)
    assert g.rate <= 0.3 + 1e-9
    assert 1.0 < g.horizon_frames <= math.log(100) / math.log(1 / 0.3) + 1e-9
    assert g.horizon_measured is not None and g.horizon_measured <= 5
    assert g.spectral_radius["layer0"]["W_hh"] == pytest.approx(0.3, rel=1e-6)
    assert g.frame_rate is None and g.horizon_seconds is None  # no front end: frames only


def test_scaling_the_recurrent_weights_up_shows_growth():
    """relu Elman with non-negative weights and inputs (every unit active, relu' = 1) and W_hh = s x a
    rank-1 matrix of spectral radius 1: dL/dh_{t-k} = (W_hh^T)^k dL/dh_t, so the norm changes by exactly
    s per step: s = 1.5 grows (no horizon), s = 0.5 decays."""
    H = 8
    seqs = [s._replace(x=np.abs(s.x)) for s in random_seqs(3, 60, 3, 2)]

    def positive_relu(scale):
        m = streamrnn.Model.random("rnn_relu", 3, H, output_size=1, activation="sigmoid", seed=1,
                                   dtype=np.float64)
        t = {k: np.abs(v) for k, v in m.tensors().items()}
        t["rnn.weight_hh_l0"] = np.full((H, H), scale / H)
        return streamrnn.Model(m.arch, t, dtype=np.float64)

    grow = gradient_flow(positive_relu(1.5), seqs, max_lag=30, n_anchors=6, warmup=0)
    assert grow.rate == pytest.approx(1.5, rel=1e-6)
    assert grow.horizon_frames is None and grow.horizon_measured is None
    assert grow.norms[30] / grow.norms[1] == pytest.approx(1.5 ** 29, rel=1e-6)
    assert grow.spectral_radius["layer0"]["W_hh"] == pytest.approx(1.5, rel=1e-9)
    shrink = gradient_flow(positive_relu(0.5), seqs, max_lag=30, n_anchors=6, warmup=0)
    assert shrink.rate == pytest.approx(0.5, rel=1e-6)
    assert shrink.horizon_frames == pytest.approx(math.log(100) / math.log(2), rel=1e-6)


def test_spectral_radius_per_gate_block_matches_numpy():
    m = streamrnn.Model.random("lstm", 3, 5, num_layers=2, seed=4)
    r = spectral_radii(m)
    t = m.tensors()
    for layer in range(2):
        w = t[f"rnn.weight_hh_l{layer}"].astype(np.float64)
        for k, gate in enumerate(("hi", "hf", "hg", "ho")):
            ref = max(abs(np.linalg.eigvals(w[5 * k:5 * k + 5])))
            assert r[f"layer{layer}"][f"W_{gate}"] == pytest.approx(ref, rel=1e-12)


def test_fit_decay_recovers_a_known_rate():
    norms = 3.0 * 0.9 ** np.arange(101)
    slope, horizon, measured = fit_decay(norms)
    assert slope == pytest.approx(math.log(0.9), rel=1e-9)
    assert horizon == pytest.approx(math.log(100) / -math.log(0.9), rel=1e-9)  # 43.7 steps
    assert measured == 44  # first lag with 0.9^k <= 1/100
    assert fit_decay(1.1 ** np.arange(20))[1] is None  # growth: no horizon


def test_too_short_data_is_a_clear_error():
    m = scaled_rnn(0.5)
    with pytest.raises(InputError, match="longest sequence: 20 frames"):
        lag_norms(m, random_seqs(2, 20, 3, 0), max_lag=50)


def test_bidirectional_model_is_refused_and_a_delayed_one_is_measured_on_its_delayed_targets():
    bi = streamrnn.Model.random("gru", 2, 4, output_size=1, activation="sigmoid", bidirectional=True)
    with pytest.raises(InputError, match="bidirectional"):
        lag_norms(bi, random_seqs(2, 30, 2, 0), max_lag=5)
    m = scaled_rnn(0.5)
    delayed = streamrnn.Model(m.arch, m.tensors(), delay=4)
    seqs = random_seqs(2, 30, 3, 1)
    # anchors are frames with a target: t >= max_lag (2), and t >= delay (4) for the delayed model
    assert lag_norms(m, seqs, max_lag=2, n_anchors=100)[1] == 2 * (30 - 2)
    norms, n = lag_norms(delayed, seqs, max_lag=2, n_anchors=100)
    assert n == 2 * (30 - 4) and np.all(np.isfinite(norms)) and norms[0] > 0


def test_gru_trained_on_the_memory_task_keeps_its_gradient_over_50_steps():
    """The memory task of tests/test_trainer.py (a bit at frame 0, asked for 51 frames later): the GRU
    that learns it carries the gradient across 50 steps (at most 100-fold drop: within its horizon),
    while an untrained Elman net of the same width loses it."""
    from test_trainer import cfg_of, memory_task

    from streamrnn.train.trainer import Trainer

    T = 52
    tr, va = memory_task(512, T, 0), memory_task(64, T, 1)
    cfg = cfg_of("model.cell=gru", "model.hidden_size=16", "data.task=sequence", "data.loss=bce",
                 f"tbptt.k1={T}", f"tbptt.k2={T}", "tbptt.lanes=32", "optim.lr=0.01", "train.epochs=8",
                 "train.monitor=valid_accuracy", "train.patience=0", "train.seed=1", "model.gru_update_bias=2.0")
    res = Trainer(cfg, tr, va).fit()
    assert max(r["valid_accuracy"] for r in res.history) >= 0.95
    g = gradient_flow(res.model, va, max_lag=50, n_anchors=16, task="sequence")
    assert g.norms[50] >= g.norms[0] / 100, g.norms[::10]
    assert g.horizon_frames is None or g.horizon_frames > 50
    elman = scaled_rnn(0.5, H=16)
    ge = gradient_flow(elman, [s._replace(x=np.pad(s.x, ((0, 0), (0, 1)))) for s in va], max_lag=50,
                       n_anchors=16, task="sequence", loss="bce")
    assert ge.norms[50] < ge.norms[0] / 100


def test_gradflow_cli_json_and_plot(tmp_path):
    """The real CLI as a subprocess: JSON with the documented keys, and a PNG with --plot."""
    import subprocess
    import sys

    from streamrnn.train.data import load_npz_folder  # noqa: F401  (the data the CLI reads)

    d = tmp_path / "data"
    d.mkdir()
    for i, s in enumerate(random_seqs(3, 90, 3, 5)):
        np.savez(d / f"s{i}.npz", x=s.x, y=s.y)
    mpath = tmp_path / "m.safetensors"
    scaled_rnn(0.6).save(mpath)
    png = tmp_path / "gf.png"
    out = subprocess.run([sys.executable, "-m", "streamrnn", "gradflow", str(mpath), str(d), "--max-lag", "40",
                          "--json", "--plot", str(png)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert len(r["norms"]) == 41 and r["rate"] < 0.6 + 1e-9
    assert set(r["spectral_radius"]["layer0"]) == {"W_hh"}
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trainer_logs_clipping_and_the_horizon_per_epoch():
    """Every epoch record has the pre-clip norm (mean, max) and the share of clipped updates; with
    gradflow_lags the horizon of the current weights.  A clip_norm far below every gradient clips all
    updates; clip = none clips none."""
    from test_trainer import BASE, cfg_of, regression_set

    from streamrnn.train.trainer import Trainer

    tr, va = regression_set(8), regression_set(3, seed=9)
    res = Trainer(cfg_of(*BASE, "optim.clip_norm=1e-9"), tr, va, gradflow_lags=12).fit()
    for r in res.history:
        assert r["clipped_fraction"] == 1.0 and r["grad_norm_max"] >= r["grad_norm_mean"] > 1e-9
        assert r["gradflow_max_lag"] == 12 and r["gradflow_rate"] > 0
        assert r["horizon_frames"] is None or r["horizon_frames"] > 0
    res = Trainer(cfg_of(*BASE, "optim.clip=none"), tr, va).fit()
    assert all(r["clipped_fraction"] == 0.0 and "horizon_frames" not in r for r in res.history)
