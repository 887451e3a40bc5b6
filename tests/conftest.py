"""Shared fixtures: every registered cell, small models, a temp model file."""

from __future__ import annotations

import numpy as np
import pytest

import streamrnn
from streamrnn.nn.cells import CELL_CODES
from streamrnn.transport.sinks import Sink

CELLS = list(CELL_CODES)


@pytest.fixture(params=CELLS)
def cell(request):
    return request.param


def small_model(cell, layers=2, head=True, activation="sigmoid", norm=False, dtype=np.float32, seed=0):
    m = streamrnn.Model.random(cell, input_size=5, hidden_size=7, num_layers=layers,
                               output_size=3 if head else None, activation=activation, seed=seed,
                               dtype=dtype, has_norm=norm)
    if norm:  # non-trivial normalisation statistics
        t = m.tensors()
        rng = np.random.default_rng(seed + 1)
        t["norm.mean"] = rng.standard_normal(5)
        t["norm.std"] = rng.uniform(0.5, 2.0, 5)
        m = streamrnn.Model(m.arch, t, dtype=dtype)
    return m


def frames(T, I=5, seed=0, scale=1.5):
    return (np.random.default_rng(seed).standard_normal((T, I)) * scale).astype(np.float32)


class Keep(Sink):
    """A sink that keeps every message, for in-process pipeline tests."""

    def __init__(self):
        super().__init__()
        self.msgs = []

    def write(self, m):
        self.msgs.append(m)

    def kind(self, name, stream=None):
        return [m for m in self.msgs if m.kind_name == name and (stream is None or m.stream == stream)]
