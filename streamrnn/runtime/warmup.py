"""Cold starts: the front end's kernels compile in a helper process beside the model's.

``Processor.warm_up`` (runtime.pipeline) runs every kernel once before the source opens; on an
empty kernel cache ``compile_front_end_elsewhere`` starts a helper process that compiles the
front end's kernels (independent of the model's) into the same on-disk cache while this process
compiles the model's bank kernel, so two free cores take the longer of the two instead of their
sum (docs/bench.md, "Start-up"; docs/architecture.md, "Cold start").

>>> [len(x) for x in warm_up_blocks(16000, 0.02)][:3], sum(len(x) for x in warm_up_blocks(16000, None))
([320, 320, 320], 8000)
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def is_cached(kernel) -> bool:
    """Whether Numba's on-disk cache holds an index for ``kernel`` (a dispatcher): compiled
    before, so loading it is cheap.  True when that cannot be told (no helper is worth it)."""
    try:
        return Path(kernel._cache._cache_file._index_path).exists()
    except AttributeError:  # another Numba's internals, or no cache
        return True


# The helper process of ``compile_front_end_elsewhere``: the front end's warm-up blocks, nothing else,
# through what the pipeline runs for them: a mono stream at the front end's own rate is a row of a
# ``FeatureBank`` (one stream per tick: ``push_one``; several: ``push_rows``), any other a ``FeatureStream``.
_HELPER = """
import json, sys
import numpy as np
from streamrnn.audio.frontend import as_frontend
from streamrnn.audio.stream import FeatureBank, FeatureStream
from streamrnn.runtime.warmup import warm_up_blocks
spec = json.loads(sys.argv[1])
fe = as_frontend(spec["frontend"])
for rate in spec["rates"]:
    if float(rate) == fe.sample_rate:
        fb = FeatureBank(fe, 2)
        fb.open("a"), fb.open("b")
        for x in warm_up_blocks(rate, spec["block_seconds"]):
            x = x[:, 0]
            fb.push_one(fb.slot("a"), x)
            fb.push_rows(np.array([fb.slot("a"), fb.slot("b")], np.int64), np.concatenate([x, x]),
                         np.array([0, len(x), 2 * len(x)], np.int64))
    else:
        fs = FeatureStream(fe, rate)
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
    from streamrnn.audio.frontend import as_frontend

    own_rate = as_frontend(frontend).sample_rate
    # the kernels the warm-up of these rates runs (as the helper below runs them): a FeatureBank's at
    # the front end's own rate; a FeatureStream's at another, whose resampled blocks take the few-frame
    # or the tiled frames kernel depending on the resampler's chunking (either one cached: warmed before)
    used, frames = [], []
    if any(float(r) == own_rate for r in rates):
        used.append(kernels._push_many_kernel)
    if any(float(r) != own_rate for r in rates):
        used.append(kernels._push_kernel)
        frames = [kernels._frames1_kernel, kernels._frames_kernel]
    cached = all(is_cached(k) for k in used) and (not frames or any(is_cached(k) for k in frames))
    if os.environ.get("NUMBA_DISABLE_JIT") == "1" or cached:
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
