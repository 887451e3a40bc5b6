"""The pipeline advances all its streams through one bank and frees slots when streams end."""

from __future__ import annotations

import numpy as np

import streamrnn
from streamrnn.audio import LogMel
from conftest import Keep
from streamrnn.runtime.pipeline import Pipeline, StreamConfig
from streamrnn.transport.sources import Chunk


def preds(keep, sid):
    return np.concatenate([m.data for m in keep.msgs if m.kind_name == "pred" and m.stream == sid])


def test_interleaved_streams_through_the_bank_equal_offline():
    fe = LogMel(sample_rate=16000, n_mels=12)
    m = streamrnn.Model.random("gru", 12, 16, num_layers=2, output_size=1, activation="sigmoid",
                               frontend=fe.to_dict())
    keep = Keep()
    p = Pipeline(None, [keep], model=m, config=StreamConfig(max_streams=40, events=False))
    rng = np.random.default_rng(0)
    n_streams, n_blocks = 30, 6
    audio = {f"s{i}": rng.standard_normal((n_blocks * 800, 1)).astype(np.float32) * 0.1 for i in range(n_streams)}
    for b in range(n_blocks):  # each read delivers one 50 ms block of every stream, in random order
        order = rng.permutation(n_streams)
        chunks = [Chunk(f"s{i}", 7, "audio", audio[f"s{i}"][b * 800:(b + 1) * 800], 16000.0, b * 800, 0.0,
                        seq=b) for i in order]
        p.process_many(chunks)
        assert len(p.bank) == n_streams
    for sid, x in audio.items():
        offline = m.forward(fe.compute(x[:, 0]))
        np.testing.assert_allclose(preds(keep, sid), offline, rtol=0, atol=1e-6)
    # streams ending free their bank slots; a stream twice in one read keeps its order
    p.process_many([Chunk(f"s{i}", 7, "audio", np.zeros((0, 1), np.float32), 16000.0, 0, 0.0, end=True)
                    for i in range(n_streams)])
    assert len(p.bank) == 0 and not p.slots
    x = audio["s0"]
    p.process_many([Chunk("again", 9, "audio", x[:1600], 16000.0, 0, 0.0),
                    Chunk("again", 9, "audio", x[1600:4000], 16000.0, 1600, 0.0)])
    np.testing.assert_allclose(preds(keep, "again"), m.forward(fe.compute(x[:4000, 0])), rtol=0, atol=1e-6)
