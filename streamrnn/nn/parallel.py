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

from streamrnn.compiling import announce_compiles
from streamrnn.errors import ConfigError
from streamrnn.nn.kernels import _bank_group, count_nonfinite

announce_compiles()  # the first compile of a kernel says so on stderr (cold cache)

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
def bank_step_parallel_kernel(mi, theta, x, offs, slots, h_all, c_all, ws, y, group, part):
    """``bank_step_kernel`` with its groups of lanes spread over Numba's threads.

    ws holds one scratch part of ``part`` elements (``bank_part_size``) per group.
    Returns the number of NaN/Inf values in x (nothing computed if not 0).
    """
    n_bad = count_nonfinite(x)
    if n_bad:
        return n_bad
    n = slots.shape[0]
    n_groups = (n + group - 1) // group
    for g in prange(n_groups):
        lf = np.empty(group, np.int64)
        lo = g * group
        _bank_group(mi, theta, x, offs, slots, h_all, c_all, y, lo, min(n, lo + group),
                    ws[g * part:(g + 1) * part], lf)
    return 0


def bank_step_parallel(threads, mi, theta, x, offs, slots, h_all, c_all, ws, y, group, part):
    """Run the parallel kernel on ``threads`` Numba threads; returns its NaN/Inf count."""
    numba.set_num_threads(threads)
    return bank_step_parallel_kernel(mi, theta, x, offs, slots, h_all, c_all, ws, y, group, part)
