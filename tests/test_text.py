"""Next-token prediction: vocabulary and text data, the embedding's gradient through the TBPTT runner
(central differences), model files with a vocabulary, PyTorch character models, training a tiny
character model that completes a set phrase, `streamrnn generate` and `stream --source stdin`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import streamrnn
from streamrnn.config import TrainConfig, load_config
from streamrnn.errors import ConfigError, InputError, ModelFileError
from streamrnn.nn.cells import Architecture, PackedLayout, init_tensors
from streamrnn.nn.text import Vocab, continuation_probability, generate, next_token_probs
from streamrnn.runtime.textstream import TextTokens
from streamrnn.train.lanes import TBPTTRunner, deal, prepare
from streamrnn.train.text import build_vocab, read_texts, text_sequences, unigram_perplexity
from streamrnn.train.trainer import Trainer, load_text_data

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
CORPUS = ROOT / "tools" / "charlm_text"
PHRASE, WORD = "Every stream carries its ", "state"


def token_model(cell="gru", V=6, E=3, H=5, L=2, seed=0, dtype=np.float32, kind="char"):
    arch = Architecture(cell, E, H, L, V, "softmax", vocab_size=V)
    tokens = ["<unk>"] + [chr(ord("a") + i) for i in range(V - 1)]
    return streamrnn.Model(arch, init_tensors(arch, np.random.default_rng(seed), "glorot"), dtype=dtype,
                           extra_meta={"vocab": {"kind": kind, "tokens": tokens}}, name="tok")


# ---- vocabulary and text data ------------------------------------------------------------------

def test_vocab_keeps_the_most_frequent_tokens_and_maps_the_rest_to_unk(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("b a b c a b d  é\n", encoding="utf-8")
    v = build_vocab(read_texts(p), "char", 4)
    counts = Counter("b a b c a b d  é\n")
    ranked = sorted(counts, key=lambda t: (-counts[t], t))[:3]  # independent ranking: count, then text
    assert v.tokens == ["<unk>"] + ranked == ["<unk>", " ", "b", "a"]
    assert v.encode("bad") == [2, 3, 0]
    w = build_vocab(read_texts(p), "word", 3)
    assert w.tokens == ["<unk>", "b", "a"] and w.encode("a  c\tb") == [2, 0, 1]
    assert w.decode([1, 2]) == "b a" and w.join("x", "b a") == "x b a" and v.join("x", "ba") == "xba"


def test_text_sequences_predict_the_next_token_of_every_step(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("abcabcabca", encoding="utf-8")
    v = build_vocab(read_texts(p), "char", 10)
    seqs = text_sequences(read_texts(p), v, 4)
    ids = v.encode("abcabcabca")
    assert [len(s.x) for s in seqs] == [4, 4, 1]  # 9 (token, next token) pairs
    xs = np.concatenate([s.x[:, 0] for s in seqs]).astype(int).tolist()
    ys = np.concatenate([s.y for s in seqs]).tolist()
    assert xs == ids[:-1] and ys == ids[1:]


def test_bad_text_input_is_a_clear_error(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe")
    with pytest.raises(ConfigError, match="bad.txt: not UTF-8"):
        read_texts(tmp_path / "bad.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty: no .txt files"):
        read_texts(tmp_path / "empty")
    with pytest.raises(ConfigError, match="needs data.task = 'frame' and data.loss = 'ce'"):
        load_config(TrainConfig, overrides=["data.kind=text", "data.loss=bce"], env={})


def test_unigram_perplexity_matches_a_direct_count():
    rng = np.random.default_rng(0)
    from streamrnn.train.data import Sequence

    tr = [Sequence(np.zeros((50, 1), np.float32), rng.integers(0, 4, 50), np.ones(50, np.float32), "t")]
    va = [Sequence(np.zeros((20, 1), np.float32), rng.integers(0, 5, 20), np.ones(20, np.float32), "v")]
    c = np.bincount(tr[0].y, minlength=5) + 1.0
    ref = math.exp(-np.mean(np.log(c[va[0].y] / c.sum())))
    assert unigram_perplexity(tr, va, 5) == pytest.approx(ref, rel=1e-12)


def test_incremental_tokens_do_not_depend_on_the_chunking():
    text = "héllo wörld, a  cat\nsat "
    raw = text.encode("utf-8")
    for kind in ("char", "word"):
        whole = TextTokens(Vocab(kind, ["<unk>"])).push(raw, final=True)
        assert whole == (list(text) if kind == "char" else text.split())
        t = TextTokens(Vocab(kind, ["<unk>"]))
        bytewise = [tok for i in range(len(raw)) for tok in t.push(raw[i:i + 1])] + t.push(b"", final=True)
        assert bytewise == whole


# ---- the embedding through the trainer ---------------------------------------------------------

@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_token_model_gradient_matches_central_differences(cell):
    """Float64: the TBPTT runner's gradient of the mean next-token loss, embedding rows included
    (scattered back to the ids that used them, repeated ids summed), against central differences."""
    V, E, H, T, B = 6, 3, 4, 7, 2
    arch = Architecture(cell, E, H, 2, V, "softmax", vocab_size=V)
    layout = PackedLayout(arch)
    theta = layout.pack(init_tensors(arch, np.random.default_rng(1), "pytorch"), np.float64)
    rng = np.random.default_rng(2)
    from streamrnn.train.data import Sequence

    seqs = []
    for i in range(B):
        ids = rng.integers(0, V - 1, T + 1)  # id V-1 never appears: its embedding gradient must be 0
        seqs.append(Sequence(ids[:-1, None].astype(np.float32), ids[1:], np.ones(T, np.float32), f"s{i}"))
    prep = prepare(seqs, task="frame", loss="ce", n_outputs=V)
    X, Y, M, R, _ = deal(prep, list(range(B)), B, np.float64)

    def loss_and_grad(th):
        run = TBPTTRunner(arch, B, T, T, "ce", np.float64)
        loss, _, g = run.step(th, X, Y, M, R)
        return loss, g.copy()

    _, g = loss_and_grad(theta)
    e = 1e-6
    num = np.array([(loss_and_grad(theta + e * np.eye(1, theta.size, p)[0])[0]
                     - loss_and_grad(theta - e * np.eye(1, theta.size, p)[0])[0]) / (2 * e)
                    for p in range(theta.size)])
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8)
    emb = layout.view(g, "embedding.weight")
    assert np.all(emb[V - 1] == 0) and np.abs(emb[:V - 1]).sum() > 0


def test_token_model_file_round_trip_and_refusals(tmp_path):
    m = token_model()
    p = tmp_path / "m.safetensors"
    m.save(p)
    back = streamrnn.load_model(p)
    assert back.arch.vocab_size == 6 and back.extra_meta["vocab"]["tokens"][1] == "a"
    ids = np.array([1, 2, 0, 5, 3])
    np.testing.assert_array_equal(back.forward(back.embed(ids)), m.forward(m.embed(ids)))
    np.testing.assert_array_equal(back.embed(ids), m.tensors()["embedding.weight"][ids].astype(np.float32))
    with pytest.raises(InputError, match=r"token id out of range \[0, 6\): min 0, max 6"):
        m.embed([0, 6])

    from safetensors.numpy import save_file

    tensors = m.tensors()
    meta = {"format": 1, "cell": "gru", "input_size": 3, "hidden_size": 5, "num_layers": 2,
            "head": {"activation": "softmax"}, "vocab": {"kind": "char", "tokens": ["<unk>", "a", "b"]}}
    save_file(tensors, str(tmp_path / "bad1.safetensors"), metadata={"streamrnn": json.dumps(meta)})
    with pytest.raises(ModelFileError, match="vocab has 3 tokens but embedding.weight has 6 rows"):
        streamrnn.load_model(tmp_path / "bad1.safetensors")
    del meta["vocab"]
    save_file(tensors, str(tmp_path / "bad2.safetensors"), metadata={"streamrnn": json.dumps(meta)})
    with pytest.raises(ModelFileError, match="'vocab' must be an object"):
        streamrnn.load_model(tmp_path / "bad2.safetensors")


def test_token_models_are_never_bidirectional_or_delayed(tmp_path):
    """Next-token prediction reads the tokens so far: the config, the model and the file loader refuse
    a bidirectional or delayed token model (those are format-2 features; token models stay format 1)."""
    for override in ("model.bidirectional=true", "model.delay=2"):
        with pytest.raises(ConfigError, match="data.kind 'text' trains a next-token model.*cannot be bidirectional"):
            load_config(TrainConfig, overrides=["data.kind=text", "data.loss=ce", override], env={})
    m = token_model()
    with pytest.raises(streamrnn.ShapeError, match="token model.*delay must be 0"):
        streamrnn.Model(m.arch, m.tensors(), extra_meta=m.extra_meta, delay=1)
    p = tmp_path / "tok.safetensors"
    m.save(p)
    from safetensors import safe_open

    with safe_open(str(p), "np") as f:
        assert json.loads(f.metadata()["streamrnn"])["format"] == 1

    from safetensors.numpy import save_file

    tensors = m.tensors()
    rev = {k + "_reverse": v for k, v in tensors.items() if k.startswith("rnn.")}
    meta = {"format": 2, "cell": "gru", "input_size": 3, "hidden_size": 5, "num_layers": 2,
            "head": {"activation": "softmax", "labels": None}, "frontend": None, "bidirectional": True,
            "vocab": m.extra_meta["vocab"]}
    save_file(tensors | rev, str(tmp_path / "bi.safetensors"), metadata={"streamrnn": json.dumps(meta)})
    with pytest.raises(ModelFileError, match="token model.*cannot be bidirectional or have a delay"):
        streamrnn.load_model(tmp_path / "bi.safetensors")
    meta.pop("bidirectional")
    meta["delay"] = 3
    save_file(tensors, str(tmp_path / "delay.safetensors"), metadata={"streamrnn": json.dumps(meta)})
    with pytest.raises(ModelFileError, match="token model.*cannot be bidirectional or have a delay"):
        streamrnn.load_model(tmp_path / "delay.safetensors")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_pytorch_character_model_gives_pytorchs_probabilities(cell):
    """nn.Embedding + 2-layer nn.GRU/nn.LSTM + Linear, exported as docs/model-format.md shows
    (tools/make_torch_vectors.py): PyTorch's softmax outputs within 1e-5, token by token."""
    model = streamrnn.load_model(DATA / f"torchlm_{cell}.safetensors")
    io = load_file(str(DATA / f"torchlm_{cell}.io.safetensors"))
    ids, y_torch = io["ids"], io["y"]
    s = model.stream()
    out = np.concatenate([s.push(model.embed(ids[i:i + 7])) for i in range(0, len(ids), 7)])
    np.testing.assert_allclose(out, y_torch, rtol=0, atol=1e-5)


# ---- training, generation, streaming ------------------------------------------------------------

@pytest.fixture(scope="module")
def charlm(tmp_path_factory):
    """configs/charlm.toml, smaller and shorter for CI (about 20 s on one core)."""
    out = tmp_path_factory.mktemp("charlm")
    cfg = load_config(TrainConfig, ROOT / "configs" / "charlm.toml",
                      ["model.hidden_size=64", "train.epochs=25", "train.patience=0"], env={})
    train, valid, vocab = load_text_data(cfg, ROOT / "configs")
    tr = Trainer(cfg, train, valid, out_dir=out, vocab=vocab, name="charlm")
    res = tr.fit()
    return tr, res, out


def test_trained_character_model_completes_the_set_phrase(charlm):
    """The corpus says "Every stream carries its state" 26 times (and "its" before other words too):
    after training, the word after the phrase is "state" with p > 0.9 (the product of its 5 characters'
    next-token probabilities), also after an unseen lead-in."""
    tr, res, _ = charlm
    final = tr.model_for(res.theta)
    assert continuation_probability(final, PHRASE, WORD) > 0.9
    assert continuation_probability(final, "The heron said that every stream carries its ", WORD) > 0.9
    p = next_token_probs(final, "The puppy chased its ")  # "its" alone is ambiguous: "s" is not certain
    assert p[final.extra_meta["vocab"]["tokens"].index("s")] < 0.9
    assert generate(final, PHRASE, 5, temperature=0) == WORD


def test_validation_perplexity_beats_the_unigram_baseline(charlm):
    _, res, out = charlm
    best = min(res.history, key=lambda r: r["valid_loss"])
    assert best["unigram_perplexity"] > 10
    assert best["valid_perplexity"] == pytest.approx(math.exp(best["valid_loss"]))
    assert best["valid_perplexity"] < 0.5 * best["unigram_perplexity"]
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"valid_perplexity", "unigram_perplexity", "grad_norm_max", "clipped_fraction"} <= set(rec)


def test_generate_cli_is_repeatable_with_a_seed(charlm):
    _, _, out = charlm
    cmd = [sys.executable, "-m", "streamrnn", "generate", "--model", str(out / "model.safetensors"),
           "--prompt", PHRASE, "--tokens", "30", "--seed", "3"]
    a = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    b = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith(PHRASE) and len(a.stdout) == len(PHRASE) + 30 + 1
    bad = subprocess.run(cmd[:-2] + ["--seed", "3", "--temperature", "-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "-1" in bad.stderr


def test_stream_stdin_publishes_top_k_next_tokens_over_zeromq(charlm, tmp_path):
    """The real CLI: UTF-8 text on stdin, a PUB sink on 127.0.0.1; a SUB socket receives one
    next_token event per character with the top 5 and their probabilities (equal to the model's),
    then end-of-stream."""
    import socket

    import zmq

    from streamrnn.transport import wire

    tr, _, out = charlm
    mpath = out / "model.safetensors"
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.connect(f"tcp://127.0.0.1:{port}")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    proc = subprocess.Popen([sys.executable, "-m", "streamrnn", "stream", "--model", str(mpath), "--source", "stdin",
                             "--sink", f"zmq+pub://127.0.0.1:{port}"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    import time

    time.sleep(3.0)  # the PUB socket binds and the SUB connects before any text is sent
    text = "Every stream carries it"
    proc.stdin.write(text.encode("utf-8"))
    proc.stdin.close()
    msgs = []
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end:
        if poller.poll(200):
            m = wire.decode(sub.recv_multipart())
            msgs.append(m)
            if m.kind == wire.EOS:
                break
    assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()
    sub.close(0)
    ev = [m.meta for m in msgs if m.kind == wire.EVENT]
    assert [e["token"] for e in ev] == list(text)
    assert msgs[-1].kind == wire.EOS and msgs[-1].sample_index == len(text)
    # docs/protocol.md: every message's epoch is 1..2^53-1 and seq counts per stream, kind and epoch
    assert {m.epoch for m in msgs} == {1}
    assert [m.seq for m in msgs if m.kind == wire.EVENT] == list(range(len(text))) and msgs[-1].seq == 0
    model = streamrnn.load_model(mpath)
    p = next_token_probs(model, text)
    tokens = model.extra_meta["vocab"]["tokens"]
    assert ev[-1]["top"][0][0] == tokens[int(np.argmax(p))] == "s"
    assert [round(q, 6) for _, q in ev[-1]["top"]] == [round(float(q), 6) for q in np.sort(p)[::-1][:5]]
