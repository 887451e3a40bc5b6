"""The optional multi-threaded bank: the same numbers as one thread and as single streams, bit for bit."""

import numpy as np
import pytest

import streamrnn
from streamrnn.errors import ConfigError
from streamrnn.nn import parallel


def _frames(rng, ids, t_max, input_size):
    return {i: rng.standard_normal((int(rng.integers(0, t_max + 1)), input_size)).astype(np.float32) for i in ids}


@pytest.mark.parametrize("cell,layers", [("gru", 2), ("lstm", 1), ("rnn_tanh", 1)])
def test_two_threads_equal_one_thread_and_single_streams(cell, layers):
    m = streamrnn.Model.random(cell, 6, 16, num_layers=layers, output_size=2, activation="sigmoid", seed=4)
    rng = np.random.default_rng(1)
    serial, threaded = m.bank(64), m.bank(64, threads=2)
    serial._group, threaded._group = 5, 4  # several lane groups, the last one short, in both paths
    ids = [f"s{i}" for i in range(23)]  # not a multiple of the group sizes: unequal groups
    singles = {}
    for i in ids:
        serial.open(i)
        threaded.open(i)
        singles[i] = m.stream()
    for step in range(4):
        if step == 2:  # streams leave and join between calls: slots are reused out of order
            for i in ids[3:9]:
                serial.close(i)
                threaded.close(i)
            for i in ids[3:6]:
                serial.open(i)
                threaded.open(i)
                singles[i] = m.stream()
            live = [i for i in ids if i in serial]
        else:
            live = [i for i in ids if i in serial]
        fr = _frames(rng, live, 9, 6)
        a, b = serial.push_many(fr), threaded.push_many(fr)
        for i in live:
            want = singles[i].push(fr[i])
            assert np.array_equal(b[i], a[i]), i
            assert np.array_equal(b[i], want), i
    assert np.array_equal(threaded.h, serial.h)
    assert np.array_equal(threaded.c, serial.c)
    assert parallel.bank_step_parallel_kernel.signatures  # the threaded path did run


def test_nan_in_one_stream_of_a_threaded_call_changes_nothing_and_names_it():
    from streamrnn.errors import InputError

    m = streamrnn.Model.random("gru", 3, 8, output_size=1, seed=0)
    b = m.bank(16, threads=2)
    b._group = 2
    for i in range(6):
        b.open(f"s{i}")
    fr = {f"s{i}": np.ones((4, 3), np.float32) for i in range(6)}
    fr["s4"] = fr["s4"].copy()
    fr["s4"][2, 1] = np.nan
    before = b.h.copy()
    with pytest.raises(InputError, match=r"stream 's4': x contains 1 NaN/Inf"):
        b.push_many(fr)
    assert np.array_equal(b.h, before) and not b.n_frames.any()


def test_few_streams_fall_back_to_one_thread_and_still_agree():
    m = streamrnn.Model.random("gru", 3, 8, output_size=1, seed=0)
    b = m.bank(8, threads=2)
    b.open("a")
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    assert np.array_equal(b.push("a", x), m.stream().push(x))


@pytest.mark.parametrize("bad", [0, -1, parallel.max_threads() + 1, "2", 1.5, True])
def test_thread_count_outside_the_pool_is_a_clear_error(bad):
    m = streamrnn.Model.random("gru", 3, 8, seed=0)
    with pytest.raises(ConfigError, match=r"threads must be an integer in \[1, \d+\]"):
        m.bank(4, threads=bad)


def test_a_single_threaded_bank_never_imports_the_parallel_module():
    import subprocess
    import sys

    code = ("import sys, numpy as np, streamrnn\n"
            "m = streamrnn.Model.random('gru', 3, 8, seed=0)\n"
            "b = m.bank(4); b.open('a'); b.push('a', np.zeros((2, 3), np.float32))\n"
            "print('streamrnn.nn.parallel' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
