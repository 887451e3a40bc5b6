"""Say so when Numba compiles streamrnn's kernels (a cold cache), once per process.

Every kernel module calls ``announce_compiles()`` when it is imported: it registers one listener
for Numba's ``numba:compile`` event, which fires only when a kernel is really compiled (not when
it is loaded from the on-disk cache).  The first compile of a streamrnn kernel logs one warning,
``COMPILE_NOTICE``, so every command that compiles (``stream``, ``features``, ``train``,
``gradcheck``, ``eval`` ...) says it on stderr instead of waiting in silence.

>>> announce_compiles() is announce_compiles()  # one listener per process, however often called
True
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from numba.core import event

log = logging.getLogger("streamrnn")

# Measured (tools/bench.py --only startup, docs/bench.md "Start-up"): the kernels of the first
# command of the README compile in about this many CPU seconds on an empty cache; training and
# the gradient check compile more (the backward kernels).
COMPILE_SECONDS = 10
COMPILE_NOTICE = (f"compiling the Numba kernels (first run on this machine or after an upgrade: about "
                  f"{COMPILE_SECONDS} CPU seconds, more for training); they are cached on disk and later starts "
                  f"take under a second")

_lock = threading.Lock()
_listener = None


def announce_compiles():
    """Register the compile listener (once); returns it."""
    global _listener
    with _lock:
        if _listener is None:
            _listener = _CompileNotice()
            event.register("numba:compile", _listener)
        return _listener


class _CompileNotice(event.Listener):
    """A Numba event listener that logs ``COMPILE_NOTICE`` at the first compile of a
    streamrnn kernel; ``compiled`` counts those compiles (nested ones included)."""

    def __init__(self):
        self.compiled = 0
        self.told = False

    def on_end(self, ev):
        pass

    def on_start(self, ev):
        fn = getattr(ev.data.get("dispatcher"), "py_func", None)
        if not getattr(fn, "__module__", "").startswith("streamrnn"):
            return
        self.compiled += 1
        if not self.told:
            self.told = True
            log.warning("%s", COMPILE_NOTICE)


def is_cached(kernel) -> bool:
    """Whether Numba's on-disk cache holds an index for ``kernel`` (a dispatcher): compiled
    before, so loading it is cheap.  True when that cannot be told (no helper is worth it)."""
    try:
        return Path(kernel._cache._cache_file._index_path).exists()
    except AttributeError:  # another Numba's internals, or no cache
        return True


# The helper process of ``compile_front_end_elsewhere``: the front end's warm-up blocks, nothing else.
_HELPER = """
import json, sys
from streamrnn.audio.stream import FeatureStream
from streamrnn.compiling import warm_up_blocks
spec = json.loads(sys.argv[1])
for rate in spec["rates"]:
    fs = FeatureStream(spec["frontend"], rate)
    for x in warm_up_blocks(rate, spec["block_seconds"]):
        fs.push(x)
"""


def compile_front_end_elsewhere(frontend: dict, rates, block_seconds) -> subprocess.Popen | None:
    """On a cold cache, compile the front end's kernels in a helper process (they are independent
    of the model's) while this one compiles the model's: on two free cores the cold start takes
    the longer of the two instead of their sum (docs/bench.md, "Start-up").  Returns the helper
    (``wait`` for it before warming the front end here, which then loads the cache), or None when
    the kernels are cached or the cache cannot be shared (``NUMBA_DISABLE_JIT``, no cache)."""
    from streamrnn.audio import kernels

    used = (kernels._push_kernel, kernels._frames1_kernel) + (() if block_seconds else (kernels._frames_kernel,))
    if os.environ.get("NUMBA_DISABLE_JIT") == "1" or all(is_cached(k) for k in used):
        return None
    spec = json.dumps({"frontend": frontend, "rates": list(rates), "block_seconds": block_seconds})
    try:
        return subprocess.Popen([sys.executable, "-c", _HELPER, spec], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # this process says it
    except OSError as e:
        log.info("no helper process for the front end's compile (%s): compiling here", e)
        return None


def warm_up_blocks(rate: float, block_seconds: float | None):
    """The warm-up input: 0.5 s of quiet noise (several frames through every kernel), as (n, 1)
    float32 blocks of ``block_seconds`` (a paced source's block) or, None, one block."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal((int(rate // 2), 1)).astype(np.float32) * 1e-3
    n = max(1, int(rate * block_seconds)) if block_seconds else len(x)
    for i in range(0, len(x), n):
        yield x[i:i + n]
