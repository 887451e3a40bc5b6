"""The training loop: TBPTT semantics, memory task, determinism, resume, NaN guard, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

import streamrnn
from streamrnn.config import TrainConfig, load_config
from streamrnn.errors import TrainingError
from streamrnn.nn.cells import Architecture, PackedLayout, init_tensors
from streamrnn.train import trainer as trainer_mod
from streamrnn.train.bptt import loss_and_grads
from streamrnn.train.data import Sequence
from streamrnn.train.lanes import TBPTTRunner, deal, make_plan, prepare
from streamrnn.train.trainer import Trainer, evaluate, read_checkpoint


def cfg_of(*overrides):
    return load_config(TrainConfig, overrides=list(overrides), env={})


def memory_task(n, T, seed, noise=1.0):
    """The bit shown at frame 0 (channel 0) must be output at frame T-1; channel 1 is noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        bit = int(rng.integers(0, 2))
        x = np.zeros((T, 2), np.float32)
        x[0, 0] = 2 * bit - 1
        x[:, 1] = noise * rng.standard_normal(T)
        out.append(Sequence(x, np.full((T, 1), bit, np.float32), np.ones(T, np.float32), f"m{i}"))
    return out


def regression_set(n=10, seed=0, I=3):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        T = int(rng.integers(15, 40))
        x = rng.standard_normal((T, I)).astype(np.float32)
        y = np.cumsum(x[:, :1], axis=0).astype(np.float32) * 0.3  # needs memory
        out.append(Sequence(x, y, np.ones(T, np.float32), f"r{i}"))
    return out


# ---- TBPTT semantics ---------------------------------------------------------------------------

def _lanes_problem(cell="gru", seed=0, B=3):
    seqs = regression_set(7, seed)
    arch = Architecture(cell, 3, 5, 2, 1, "identity", has_norm=False)
    theta = PackedLayout(arch).pack(init_tensors(arch, np.random.default_rng(seed), "glorot"), np.float64)
    prep = prepare(seqs, task="frame", loss="mse", n_outputs=1)
    X, Y, M, R, _ = deal(prep, list(range(len(prep))), B, np.float64)
    return arch, theta, X, Y, M, R


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_one_chunk_with_k2_ge_T_is_full_bptt_bit_for_bit(cell):
    arch, theta, X, Y, M, R = _lanes_problem(cell)
    T = X.shape[0]
    run = TBPTTRunner(arch, X.shape[1], T, T + 5, "mse", np.float64)
    loss, w, g = run.step(theta, X, Y, M, R)
    loss_full, g_full, _ = loss_and_grads((arch, theta), X, Y, M, None, loss="mse", reset=R)
    assert loss == loss_full
    assert np.array_equal(g, g_full)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_chunks_with_k2_covering_the_lanes_sum_to_full_bptt(cell):
    """Fixed parameters, k1 = 7 < T <= k2: the chunk gradients add up to full BPTT over whole lanes."""
    arch, theta, X, Y, M, R = _lanes_problem(cell)
    T = X.shape[0]
    run = TBPTTRunner(arch, X.shape[1], 7, T, "mse", np.float64)
    total = np.zeros_like(theta)
    for t0 in range(0, T, 7):
        _, w, g = run.step(theta, X[t0:t0 + 7], Y[t0:t0 + 7], M[t0:t0 + 7], R[t0:t0 + 7])
        total += g * w
    _, g_full, _ = loss_and_grads((arch, theta), X, Y, M, None, loss="mse", reset=R)
    np.testing.assert_allclose(total, g_full * M.sum(), rtol=1e-10, atol=1e-12)

    # with a window shorter than the lanes the gradient is truncated: it must differ
    run = TBPTTRunner(arch, X.shape[1], 7, 14, "mse", np.float64)
    trunc = np.zeros_like(theta)
    for t0 in range(0, T, 7):
        _, w, g = run.step(theta, X[t0:t0 + 7], Y[t0:t0 + 7], M[t0:t0 + 7], R[t0:t0 + 7])
        trunc += g * w
    assert not np.allclose(trunc, g_full * M.sum(), rtol=1e-6)


def test_overlapping_window_equals_bptt_of_its_k2_frames():
    """k2 = 2 k1: the gradient of chunk c = BPTT over chunks c-1..c from the state at the window start."""
    arch, theta, X, Y, M, R = _lanes_problem("gru", seed=1)
    B = X.shape[1]
    run = TBPTTRunner(arch, B, 6, 12, "mse", np.float64)
    run.step(theta, X[0:6], Y[0:6], M[0:6], R[0:6])
    h_mid = run.h.copy()  # state after frame 5
    run.step(theta, X[6:12], Y[6:12], M[6:12], R[6:12])
    _, _, g = run.step(theta, X[12:18], Y[12:18], M[12:18], R[12:18])  # window = frames 6..17
    Mw = M[6:18].copy()
    Mw[:6] = 0  # only the new frames are in this update's loss
    _, g_ref, _ = loss_and_grads((arch, theta), X[6:18], Y[6:18], Mw, h_mid, loss="mse", reset=R[6:18])
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-14)


def test_plan_deals_every_sequence_once_and_resets_at_boundaries():
    prep = prepare(regression_set(9), task="frame", loss="mse", n_outputs=1)
    plan = make_plan(prep, 4, 10, 0.3, np.random.default_rng(0))
    assert sorted(plan.order) == list(range(9))
    assert int(plan.R.sum()) >= 9  # one reset per sequence start (+ padding starts)
    assert plan.M.sum() == sum(p.mask.sum() for p in prep)
    lens = [b - a for a, b in plan.bounds]
    assert min(lens[:-1]) >= 7 and max(lens) <= 10 and len(set(lens)) > 1  # jitter in [ceil(10*0.7), 10]
    plan2 = make_plan(prep, 4, 10, 0.3, np.random.default_rng(1))
    assert plan2.order != plan.order  # shuffled between epochs


# ---- learning ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,extra", [("gru", ["model.gru_update_bias=2.0"]), ("lstm", [])])
def test_memory_task_needs_recurrence_and_is_learned(cell, extra):
    """A bit shown at frame 0 is output 51 frames later (loss on the last frame only); the last
    frame's input is pure noise, so no feed-forward model beats 50 %.  Bounded: 8 epochs x 16 updates."""
    T = 52
    tr, va = memory_task(512, T, 0), memory_task(256, T, 1)
    last = np.array([s.x[-1] for s in va])
    bits = np.array([s.y[-1, 0] for s in va])
    assert abs(np.corrcoef(last[:, 1], bits)[0, 1]) < 0.2 and np.all(last[:, 0] == 0)
    cfg = cfg_of(f"model.cell={cell}", "model.hidden_size=16", "data.task=sequence", "data.loss=bce",
                 f"tbptt.k1={T}", f"tbptt.k2={T}", "tbptt.lanes=32", "optim.lr=0.01", "train.epochs=8",
                 "train.monitor=valid_accuracy", "train.patience=0", "train.seed=1", *extra)
    res = Trainer(cfg, tr, va).fit()
    assert res.steps == 8 * 16
    assert max(r["valid_accuracy"] for r in res.history) >= 0.95, res.history
    assert evaluate(res.model, va)["accuracy"] >= 0.95  # the exported model, float32, through streams' kernel


# ---- determinism, resume, guard, checkpoints -----------------------------------------------------

BASE = ["model.hidden_size=6", "model.num_layers=2", "data.task=frame", "data.loss=mse", "tbptt.k1=8",
        "tbptt.k2=13", "tbptt.lanes=3", "tbptt.jitter=0.25", "train.epochs=3", "optim.lr=0.01",
        "schedule.name=cosine", "schedule.warmup_steps=3"]


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    tr, va = regression_set(8), regression_set(3, seed=9)
    a = Trainer(cfg_of(*BASE), tr, va).fit()
    b = Trainer(cfg_of(*BASE), tr, va).fit()
    c = Trainer(cfg_of(*BASE, "train.seed=1"), tr, va).fit()
    assert np.array_equal(a.theta, b.theta)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert not np.array_equal(a.theta, c.theta)


@pytest.mark.parametrize("kill_at", [5, 13])  # mid-epoch (after a mid-epoch checkpoint) / right after an epoch
def test_resume_after_kill_gives_the_same_weights(tmp_path, kill_at):
    tr, va = regression_set(8), regression_set(3, seed=9)
    cfg = cfg_of(*BASE, "train.checkpoint_every=2")
    full = Trainer(cfg, tr, va, out_dir=tmp_path / "full").fit()
    first = Trainer(cfg, tr, va, out_dir=tmp_path / "cut").fit(max_steps=kill_at)  # "killed" here
    assert first.steps == kill_at and len(first.history) < len(full.history)
    resumed = Trainer(cfg, tr, va, out_dir=tmp_path / "cut").fit(resume=True)
    assert np.array_equal(resumed.theta, full.theta)
    assert resumed.steps == full.steps
    assert [r["valid_loss"] for r in resumed.history] == [r["valid_loss"] for r in full.history]
    a = streamrnn.load_model(tmp_path / "full" / "model.safetensors")
    b = streamrnn.load_model(tmp_path / "cut" / "model.safetensors")
    assert np.array_equal(a.theta, b.theta)


def test_resume_refuses_other_data(tmp_path):
    cfg = cfg_of(*BASE)
    Trainer(cfg, regression_set(8), out_dir=tmp_path).fit(max_steps=100)
    with pytest.raises(TrainingError, match="different data"):
        Trainer(cfg, regression_set(9), out_dir=tmp_path).fit(resume=True)


def test_nan_in_data_skips_the_update_restores_params_and_halves_lr():
    tr = regression_set(8)
    bad = tr[3].x.copy()
    bad[5, 1] = np.nan
    tr[3] = Sequence(bad, tr[3].y, tr[3].mask, "poisoned")
    steps = []
    t = Trainer(cfg_of(*BASE, "model.norm=false"), tr, on_step=steps.append)
    res = t.fit()
    assert res.bad_steps >= 1
    assert np.isfinite(res.theta).all()
    skipped = [s for s in steps if not s["ok"]]
    assert skipped and all(not np.isfinite(s["loss"]) for s in skipped)
    assert res.history[-1]["lr_scale"] == 0.5 ** res.bad_steps


def test_injected_nan_gradient_restores_last_good_parameters():
    t = Trainer(cfg_of(*BASE), regression_set(8))
    seen = {}

    def hook(step, grad):
        seen[step] = t.theta.copy()  # parameters before this update
        if step == 4:
            grad[7] = np.nan

    t.grad_hook = hook
    after = {}
    t.on_step = lambda i: after.__setitem__(i["step"], (i["ok"], t.theta.copy(), i["lr"]))
    t.fit()
    assert after[5][0] is False  # the 5th update (step index 4) was skipped
    assert np.array_equal(after[5][1], seen[4])  # parameters are the last good ones
    assert after[6][0] is True
    assert t.s["lr_scale"] == 0.5


def test_five_consecutive_bad_steps_stop_with_a_clear_error():
    t = Trainer(cfg_of(*BASE), regression_set(8))
    calls = []

    def hook(step, grad):
        calls.append(step)
        if step >= 2:
            grad[:] = np.inf

    t.grad_hook = hook
    with pytest.raises(TrainingError, match="5 consecutive updates with NaN/Inf"):
        t.fit()
    assert calls[-1] == 6  # steps 2..6 were bad


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    cfg = cfg_of(*BASE, "train.epochs=1")
    Trainer(cfg, regression_set(8), out_dir=tmp_path).fit()
    good_arrays, good_meta = read_checkpoint(tmp_path / "checkpoint.safetensors")

    import safetensors.numpy

    real = safetensors.numpy.save_file

    def crash(tensors, filename, metadata=None):  # the process dies half-way through the checkpoint write
        if not str(filename).endswith("checkpoint.safetensors.tmp"):
            return real(tensors, filename, metadata=metadata)
        with open(filename, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    t = Trainer(cfg_of(*BASE, "train.epochs=2"), regression_set(8), out_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        t.fit(resume=True)
    assert (tmp_path / "checkpoint.safetensors.tmp").exists()  # the torn temp file
    arrays, meta = read_checkpoint(tmp_path / "checkpoint.safetensors")  # old one intact
    assert meta["state"] == good_meta["state"]
    assert np.array_equal(arrays["theta"], good_arrays["theta"])
    monkeypatch.undo()
    # and resuming ignores the torn temp file
    res = Trainer(cfg_of(*BASE, "train.epochs=2"), regression_set(8), out_dir=tmp_path).fit(resume=True)
    assert len(res.history) == 2


def test_truncated_checkpoint_is_refused(tmp_path):
    Trainer(cfg_of(*BASE, "train.epochs=1"), regression_set(8), out_dir=tmp_path).fit()
    p = tmp_path / "checkpoint.safetensors"
    p.write_bytes(p.read_bytes()[:-50])
    with pytest.raises(TrainingError, match="unreadable checkpoint|truncated"):
        read_checkpoint(p)


def test_checkpoint_holds_no_pickle_and_all_state(tmp_path):
    Trainer(cfg_of(*BASE, "train.checkpoint_every=3"), regression_set(8), out_dir=tmp_path).fit(max_steps=4)
    arrays, meta = read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert {"theta", "best_theta", "optim.m", "optim.v", "lanes.h", "lanes.c", "lanes.xn", "lanes.save",
            "lanes.reset"} <= set(arrays)
    assert meta["state"]["chunk"] == 3 and meta["state"]["step"] == 3
    assert "bit_generator" in meta["state"]["epoch_rng_state"]
    assert arrays["lanes.xn"].shape[0] > 0  # the TBPTT window (k2 > k1) is saved too


# ---- export, validation, early stopping --------------------------------------------------------

def test_export_has_training_norm_and_reproduces_validation(tmp_path):
    tr, va = regression_set(8), regression_set(3, seed=9)
    res = Trainer(cfg_of(*BASE), tr, va, out_dir=tmp_path).fit()
    m = streamrnn.load_model(tmp_path / "model.safetensors")
    assert m.arch.has_norm
    allx = np.concatenate([s.x for s in tr]).astype(np.float64)
    t = m.tensors()
    np.testing.assert_allclose(t["norm.mean"], allx.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t["norm.std"], allx.std(axis=0), rtol=1e-5)
    best = next(r for r in res.history if r["epoch"] == res.history[-1]["best_epoch"])
    assert evaluate(m, va)["loss"] == pytest.approx(best["valid_loss"], rel=1e-9)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(res.history)


def test_classification_metrics_and_early_stopping():
    rng = np.random.default_rng(0)
    seqs = []
    for i in range(12):
        x = rng.standard_normal((30, 2)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)  # 3 classes
        seqs.append(Sequence(x, y, np.ones(30, np.float32), f"c{i}"))
    cfg = cfg_of("data.loss=ce", "model.hidden_size=8", "tbptt.k1=10", "tbptt.k2=10", "tbptt.lanes=4",
                 "train.epochs=30", "optim.lr=1e-9", "train.patience=2", "train.monitor=valid_accuracy")
    res = Trainer(cfg, seqs[:9], seqs[9:]).fit()
    assert res.stopped_early and len(res.history) == 3  # lr ~ 0: no improvement after epoch 1
    r = res.history[0]
    assert 0 <= r["valid_accuracy"] <= 1 and 0 <= r["valid_f1"] <= 1 and 0 <= r["valid_auc"] <= 1
    assert res.model.activation == "softmax" and res.model.output_size == 3


def test_manifest_of_audio_trains_a_model_with_its_front_end(tmp_path):
    """The audio path: JSONL manifest -> front end (cached) -> lanes -> model file with frontend metadata."""
    import json

    import soundfile as sf

    from streamrnn.train.trainer import train_from_config

    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(sr // 2) / sr
    with open(tmp_path / "m.jsonl", "w") as f:
        for i in range(6):
            cls = "tone" if i % 2 else "noise"
            sig = 0.3 * np.sin(2 * np.pi * 440 * t) if cls == "tone" else 0.1 * rng.standard_normal(t.size)
            sf.write(tmp_path / f"a{i}.wav", sig.astype(np.float32), sr)
            f.write(json.dumps({"audio": f"a{i}.wav", "class": cls}) + "\n")
    (tmp_path / "c.toml").write_text('[data]\ntrain = "m.jsonl"\ntask = "sequence"\nloss = "ce"\n'
                                     'valid_fraction = 0.0\n[model]\nhidden_size = 8\n'
                                     '[tbptt]\nk1 = 20\nk2 = 20\nlanes = 2\n[train]\nepochs = 2\n')
    cfg = load_config(TrainConfig, tmp_path / "c.toml", env={})
    out = tmp_path / "out"
    res = train_from_config(cfg, base_dir=tmp_path, out_dir=out)
    assert len(res.history) == 2
    m = streamrnn.load_model(out / "model.safetensors")  # validates frontend vs input_size
    assert m.frontend is not None and m.frontend["type"] == "logmel"
    assert m.labels == ["noise", "tone"] and m.activation == "softmax"
    assert len(list((out / "cache").glob("*.npz"))) == 6  # features cached for the next run


def test_monitor_must_exist_for_the_loss():
    from streamrnn.errors import ConfigError

    with pytest.raises(ConfigError, match="valid_accuracy.*not computed for loss 'mse'"):
        Trainer(cfg_of(*BASE, "train.monitor=valid_accuracy", "train.epochs=1"), regression_set(8),
                regression_set(2, seed=5)).fit()


def test_curves_png(tmp_path):
    pytest.importorskip("matplotlib")  # the optional `plot` extra
    from streamrnn.train.trainer import plot_curves

    res = Trainer(cfg_of(*BASE, "train.epochs=2"), regression_set(8), regression_set(2, seed=5)).fit()
    assert plot_curves(res.history, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
