"""Optional multi-threaded bank step: the streams of one call split across Numba threads.

Streams are independent, so each thread advances its own group of lanes with the
single-threaded forward kernel; a stream computes exactly (bit for bit) what it
computes alone or in a single-threaded bank.  Off by default: ``model.bank(capacity)``
and ``streamrnn stream`` stay single-threaded and never spin.  Turn it on with
``model.bank(capacity, threads=N)`` or ``streamrnn stream --threads N``.

Threads come from Numba's "workqueue" layer unless ``NUMBA_THREADING_LAYER`` names
another: its idle workers sleep on a condition variable (OpenMP's may spin between
calls), and it needs no extra library.  This module is imported only when a bank asks
for more than one thread, so a single-threaded process never compiles or starts it.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

from streamrnn.errors import ConfigError
from streamrnn.nn.kernels import MODE_APPLY_ACT, forward_kernel

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


def max_threads() -> int:
    """The most threads a bank may use: Numba's pool size (``NUMBA_NUM_THREADS``, default the CPU count)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def check_threads(threads) -> int:
    """``threads`` as an int in [1, max_threads()], or ConfigError naming the value and the limit."""
    limit = max_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= limit:
        raise ConfigError(f"threads must be an integer in [1, {limit}] (NUMBA_NUM_THREADS, the CPU count "
                          f"by default), got {threads!r}")
    return int(threads)


@njit(cache=True, parallel=True, error_model="numpy")
def bank_step_parallel_kernel(mi, theta, x, lens, slots, h_all, c_all, ws, y, n_groups):
    """``bank_step_kernel`` with the n lanes split into ``n_groups`` contiguous groups, one per thread.

    x (T, n, I), lens (n,), slots (n,), h_all/c_all (L, capacity, H), y (T, n, O) as there;
    ws: n_groups equal parts, each at least ``workspace_size(T, ceil(n / n_groups), I, H, G)``.
    Each group copies its lanes into contiguous arrays (once per call, not per frame), runs
    the forward kernel and writes states and outputs back.
    """
    T, n, I = x.shape
    L = h_all.shape[0]
    H = h_all.shape[2]
    O = y.shape[2]
    per = (n + n_groups - 1) // n_groups
    part = ws.shape[0] // n_groups
    for g in prange(n_groups):
        lo = g * per
        hi = min(n, lo + per)
        if lo >= hi:
            continue
        m = hi - lo
        xb = np.empty((T, m, I), x.dtype)
        yb = np.empty((T, m, O), y.dtype)
        hb = np.empty((L, m, H), h_all.dtype)
        cb = np.empty((L, m, H), h_all.dtype)
        lb = np.empty(m, np.int64)
        nosave = np.empty((1, 1, 1, 1), theta.dtype)
        for i in range(m):
            lb[i] = lens[lo + i]
            for t in range(T):
                xb[t, i] = x[t, lo + i]
            for l in range(L):
                hb[l, i] = h_all[l, slots[lo + i]]
                cb[l, i] = c_all[l, slots[lo + i]]
        forward_kernel(mi, MODE_APPLY_ACT, theta, xb, lb, hb, cb, ws[g * part:(g + 1) * part], yb, nosave)
        for i in range(m):
            for t in range(T):
                y[t, lo + i] = yb[t, i]
            for l in range(L):
                h_all[l, slots[lo + i]] = hb[l, i]
                c_all[l, slots[lo + i]] = cb[l, i]


def bank_step_parallel(threads, mi, theta, x, lens, slots, h_all, c_all, ws, y):
    """Run the parallel kernel on ``threads`` Numba threads (ws: one flat buffer split evenly)."""
    numba.set_num_threads(threads)
    bank_step_parallel_kernel(mi, theta, x, lens, slots, h_all, c_all, ws, y, threads)
