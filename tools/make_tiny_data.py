"""Write tests/data/tiny_npz: the small frame-classification set configs/tiny.toml trains on.

y[t] = 1 when x[t-2, 0] > 0, so a model needs two frames of memory; the first
two frames of each sequence are masked out.  Run from the repository root:
``python tools/make_tiny_data.py``.
"""

import numpy as np

rng = np.random.default_rng(42)
for i in range(12):
    T = int(rng.integers(30, 60))
    x = rng.standard_normal((T, 4)).astype(np.float32)
    y = np.zeros((T, 1), np.float32)
    y[2:, 0] = x[:-2, 0] > 0
    mask = np.ones(T, np.float32)
    mask[:2] = 0
    np.savez(f"tests/data/tiny_npz/seq{i:02d}.npz", x=x, y=y, mask=mask)
