"""Seeing the future: bounded look-ahead (model.delay) and bidirectional training.

The task needs the future: the target of frame t is the sign of the input k frames later,
x[t + k] (inputs are independent coin flips, so nothing before t + k predicts it).  A
unidirectional model without delay stays at chance; with delay D >= k it answers for frame
t at frame t + D, when x[t + k] has been seen; a bidirectional model sees it through its
reverse direction.
"""

from __future__ import annotations

import numpy as np
import pytest

import streamrnn
from streamrnn.config import TrainConfig, load_config
from streamrnn.errors import ConfigError
from streamrnn.train.bidir import bidir_loss_and_grads
from streamrnn.train.data import Sequence
from streamrnn.train.lanes import make_sequence_plan, prepare
from streamrnn.train.trainer import Trainer, evaluate

K = 3  # the target of frame t is x[t + K]


def future_task(n, T=40, seed=0, k=K):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        n_t = int(rng.integers(T - 10, T + 1))  # different lengths: padded lanes
        x = np.sign(rng.standard_normal((n_t, 1))).astype(np.float32)
        y = np.zeros((n_t, 1), np.float32)
        y[:n_t - k, 0] = x[k:, 0] > 0
        mask = np.ones(n_t, np.float32)
        mask[n_t - k:] = 0.0  # the last k frames' future is past the end: no target
        out.append(Sequence(x, y, mask, f"f{i}"))
    return out


def train(*overrides, seed=0):
    cfg = load_config(TrainConfig, overrides=["model.cell=gru", "model.hidden_size=12", "data.task=frame",
                                              "data.loss=bce", "tbptt.k1=40", "tbptt.k2=40", "tbptt.lanes=16",
                                              "optim.lr=0.02", "train.epochs=24", "train.patience=0",
                                              "train.monitor=valid_accuracy", *overrides], env={})
    tr, va = future_task(96, seed=seed), future_task(32, seed=seed + 100)
    res = Trainer(cfg, tr, va).fit()
    return res, va


@pytest.fixture(scope="module")
def trained():
    return {name: train(*ov) for name, ov in {
        "delay0": [], "delay2": ["model.delay=2"], "delay3": [f"model.delay={K}"], "delay5": ["model.delay=5"],
        "bidirectional": ["model.bidirectional=true"]}.items()}


def test_delay_D_learns_a_task_that_needs_D_future_frames_and_delay_0_cannot(trained):
    acc = {k: evaluate(res.model, va)["accuracy"] for k, (res, va) in trained.items()}
    assert acc["delay0"] < 0.6, acc  # the future is unknowable: chance
    assert acc["delay2"] < 0.6, acc  # two frames of look-ahead are not enough for x[t + 3]
    assert acc["delay3"] > 0.95, acc  # D = K: x[t + K] is the newest frame at t + D
    assert acc["delay5"] > 0.95, acc  # D > K: x[t + K] was seen D - K frames ago
    assert acc["bidirectional"] > 0.95, acc


def test_delay_and_bidirectional_are_stored_in_the_model_file(trained, tmp_path):
    m = trained["delay3"][0].model
    m.save(tmp_path / "d.safetensors")
    m2 = streamrnn.load_model(tmp_path / "d.safetensors")
    assert m2.delay == K and not m2.bidirectional
    # the stored delay is what eval uses: output row t is scored against the label of frame t - D
    va = trained["delay3"][1]
    assert evaluate(m2, va)["accuracy"] > 0.95
    shifted = streamrnn.Model(m2.arch, m2.tensors(), delay=0)
    assert evaluate(shifted, va)["accuracy"] < 0.6
    b = trained["bidirectional"][0].model
    b.save(tmp_path / "b.safetensors")
    b2 = streamrnn.load_model(tmp_path / "b.safetensors")
    assert b2.bidirectional and b2.extra_meta["training"]["windows"] == "sequence"
    # offline output of the exported model is the trainer's own evaluation
    s = va[0]
    p = b2.forward(s.x)[:, 0]
    sel = s.mask > 0
    assert np.mean((p[sel] > 0.5) == (s.y[sel, 0] > 0.5)) > 0.9


def test_delay_shifts_targets_and_masks():
    s = Sequence(np.arange(6, dtype=np.float32)[:, None], np.arange(6, dtype=np.float32)[:, None],
                 np.ones(6, np.float32), "s")
    p = prepare([s], task="frame", loss="mse", n_outputs=1, delay=2)[0]
    np.testing.assert_array_equal(p.target[:, 0], [0, 0, 0, 1, 2, 3])
    np.testing.assert_array_equal(p.mask, [0, 0, 1, 1, 1, 1])


def test_whole_sequence_plan_uses_every_sequence_once_padded():
    prep = prepare(future_task(10), task="frame", loss="bce", n_outputs=1)
    plan = make_sequence_plan(prep, 4, np.random.default_rng(0))
    assert sorted(plan.order) == list(range(10)) and [len(g) for g in plan.groups] == [4, 4, 2]
    X, Y, M, lens = plan.chunk(2)
    assert X.shape[1] == 4 and list(lens[2:]) == [0, 0] and M.sum() == lens.sum() - 2 * K
    for b, i in enumerate(plan.groups[2]):
        np.testing.assert_array_equal(X[:lens[b], b], prep[i].x)


def test_bidirectional_update_is_the_gradient_of_its_sequences():
    """One trainer update of a bidirectional model = bidir_loss_and_grads on the group (float64)."""
    cfg = load_config(TrainConfig, overrides=["model.bidirectional=true", "model.hidden_size=5", "data.loss=bce",
                                              "tbptt.lanes=4", "train.dtype=float64", "model.norm=false"], env={})
    tr = future_task(4)
    t = Trainer(cfg, tr)
    t._fresh()
    plan = make_sequence_plan(t.train_p, 4, np.random.default_rng(0), np.float64)
    X, Y, M, lens = plan.chunk(0)
    loss, w, g = t.runner.step(t.theta, X, Y, M, lens)
    loss2, g2 = bidir_loss_and_grads(t.arch, t.theta, X, Y, M, lens, loss="bce")
    assert loss == loss2 and w == M.sum()
    np.testing.assert_array_equal(g, g2)


def test_config_refuses_delay_with_bidirectional_and_non_frame_tasks():
    with pytest.raises(ConfigError, match="model.delay"):
        load_config(TrainConfig, overrides=["model.bidirectional=true", "model.delay=3"], env={})
    with pytest.raises(ConfigError, match=r"model.delay must be in \[0, 65536\]"):
        load_config(TrainConfig, overrides=["model.delay=-1"], env={})
    cfg = load_config(TrainConfig, overrides=["model.delay=2", "data.task=sequence"], env={})
    with pytest.raises(ConfigError, match="needs data.task = 'frame'"):
        Trainer(cfg, future_task(3))


def test_vad_plot_trace_of_bidirectional_and_delayed_models():
    """`eval --plot` draws a bidirectional model from its whole-file output and a delayed one on its frames."""
    from streamrnn.audio.files import read_audio
    from streamrnn.audio.stream import FeatureStream
    from streamrnn.train.vadplot import vad_trace

    demo = streamrnn.nn.modelfile.MODELS_DIR / "demo.flac"
    fe = streamrnn.load_model("vad").frontend
    bi = streamrnn.Model.random("gru", 40, 6, output_size=1, activation="sigmoid", bidirectional=True, frontend=fe)
    x, rate = read_audio(demo)
    feats = FeatureStream(fe, rate).push(x)
    np.testing.assert_allclose(vad_trace(bi, demo)["probs"], bi.forward(feats)[:, 0], atol=1e-7)
    uni = streamrnn.Model.random("gru", 40, 6, output_size=1, activation="sigmoid", frontend=fe)
    d = streamrnn.Model(uni.arch, uni.tensors(), frontend=fe, delay=4)
    p = vad_trace(d, demo)["probs"]
    np.testing.assert_allclose(p[:-4], uni.forward(feats)[4:, 0], atol=1e-7)
    assert np.isnan(p[-4:]).all()


def test_bidirectional_resume_after_kill_gives_the_same_weights(tmp_path):
    cfg = load_config(TrainConfig, overrides=["model.bidirectional=true", "model.hidden_size=5", "data.loss=bce",
                                              "tbptt.lanes=4", "train.epochs=3", "train.checkpoint_every=2"],
                      env={})
    tr, va = future_task(10), future_task(4, seed=7)
    full = Trainer(cfg, tr, va, out_dir=tmp_path / "full").fit()
    assert full.steps == 3 * 3  # 10 sequences in groups of 4: 3 updates per epoch
    Trainer(cfg, tr, va, out_dir=tmp_path / "cut").fit(max_steps=5)
    resumed = Trainer(cfg, tr, va, out_dir=tmp_path / "cut").fit(resume=True)
    assert np.array_equal(resumed.theta, full.theta)
