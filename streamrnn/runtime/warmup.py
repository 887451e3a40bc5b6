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


# The helper process of ``compile_front_end_elsewhere``: the front end's warm-up blocks, nothing else.
_HELPER = """
import json, sys
from streamrnn.audio.stream import FeatureStream
from streamrnn.runtime.warmup import warm_up_blocks
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
