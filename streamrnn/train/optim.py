"""Optimisers, gradient clipping and learning-rate schedules on the flat parameter vector.

Parameters and gradients are single flat vectors (``cells.PackedLayout``), so
every operation here is a few vectorised NumPy lines.  Equations follow
PyTorch's ``torch.optim`` (Adam, AdamW, SGD with momentum).

>>> import numpy as np
>>> opt = Optimizer("sgd", 3, momentum=0.0)
>>> theta = np.ones(3); opt.step(theta, np.array([1.0, 0.0, -1.0]), lr=0.5); theta.tolist()
[0.5, 1.0, 1.5]
"""

from __future__ import annotations

import math

import numpy as np

from streamrnn.errors import ConfigError, TrainingError


def clip_gradients(grad: np.ndarray, mode: str = "norm", max_norm: float = 1.0, max_value: float = 1.0) -> float:
    """Clip ``grad`` in place; return its global L2 norm *before* clipping.

    ``mode="norm"``: scale the whole vector so its L2 norm is at most ``max_norm``
    (the direction is kept).  ``"value"``: clamp each element to
    [-max_value, max_value].  ``"none"``: leave it.  A NaN/Inf gradient is
    left untouched (the norm is then NaN/Inf) for the caller's guard to see.

    >>> import numpy as np
    >>> g = np.array([3.0, 4.0]); clip_gradients(g, "norm", 1.0), np.round(g, 6).tolist()
    (5.0, [0.6, 0.8])
    """
    norm = float(np.sqrt(np.dot(grad.astype(np.float64), grad.astype(np.float64))))
    if not math.isfinite(norm):
        return norm
    if mode == "norm":
        if norm > max_norm:
            grad *= grad.dtype.type(max_norm / norm)
    elif mode == "value":
        np.clip(grad, -max_value, max_value, out=grad)
    elif mode != "none":
        raise ConfigError(f"clip mode must be 'norm', 'value' or 'none', got {mode!r}")
    return norm


class Optimizer:
    """Adam, AdamW or SGD with momentum over a flat parameter vector.

    ``trainable`` (P,) bool: entries that move (frozen ones, like the input
    normalisation, get no update and no decay).  ``decay`` (P,) bool: entries
    that receive weight decay (the weight matrices; biases are not decayed).
    """

    def __init__(self, name: str, n_params: int, *, beta1=0.9, beta2=0.999, eps=1e-8, momentum=0.9,
                 weight_decay=0.0, trainable=None, decay=None, dtype=np.float64):
        if name not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"optimiser must be 'adam', 'adamw' or 'sgd', got {name!r}")
        self.name = name
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.trainable = np.ones(n_params, bool) if trainable is None else np.asarray(trainable, bool)
        self.decay = np.zeros(n_params, bool) if decay is None else np.asarray(decay, bool) & self.trainable
        self.m = np.zeros(n_params, dtype)  # Adam first moment / SGD momentum buffer
        self.v = np.zeros(n_params, dtype)  # Adam second moment
        self.t = 0  # updates taken

    def step(self, theta: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """One update of ``theta`` in place (``grad`` is not modified)."""
        self.t += 1
        g = np.where(self.trainable, grad, 0.0).astype(self.m.dtype)
        wd = self.weight_decay
        if wd and self.name in ("adam", "sgd"):  # L2 penalty through the gradient
            g = g + wd * np.where(self.decay, theta, 0.0)
        if self.name == "sgd":
            # buf = mu * buf + g ; theta -= lr * buf (PyTorch's SGD, dampening 0)
            self.m *= self.momentum
            self.m += g
            upd = lr * self.m
        else:
            b1, b2 = self.beta1, self.beta2
            self.m *= b1
            self.m += (1 - b1) * g  # m = b1 m + (1 - b1) g
            self.v *= b2
            self.v += (1 - b2) * g * g  # v = b2 v + (1 - b2) g^2
            step = lr / (1 - b1 ** self.t)  # bias corrections as in torch.optim.Adam
            denom = np.sqrt(self.v) / math.sqrt(1 - b2 ** self.t) + self.eps
            upd = step * self.m / denom
            if self.name == "adamw" and wd:  # decoupled decay: theta *= 1 - lr * wd
                upd = upd + lr * wd * np.where(self.decay, theta, 0.0)
        theta -= np.where(self.trainable, upd, 0.0).astype(theta.dtype)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"optim.m": self.m, "optim.v": self.v}

    def state_meta(self) -> dict:
        return {"name": self.name, "t": self.t}

    def load_state(self, arrays: dict, meta: dict) -> None:
        if meta.get("name") != self.name:
            raise TrainingError(f"checkpoint optimiser {meta.get('name')!r} differs from the configured {self.name!r}")
        if arrays["optim.m"].shape != self.m.shape:
            raise TrainingError(f"checkpoint optimiser state has {arrays['optim.m'].shape[0]} entries, "
                                f"the model {self.m.shape[0]}")
        self.m[...] = arrays["optim.m"]
        self.v[...] = arrays["optim.v"]
        self.t = int(meta["t"])


def scheduled_lr(base_lr: float, step: int, epoch: int, total_steps: int, *, name: str = "constant",
                 warmup_steps: int = 0, min_lr: float = 0.0, step_epochs: int = 10, gamma: float = 0.5) -> float:
    """Learning rate of update ``step`` (0-based) in ``epoch`` (0-based).

    Warm-up: linear from base_lr/warmup_steps to base_lr over the first
    ``warmup_steps`` updates, then the schedule: ``constant``; ``cosine`` from
    base_lr to min_lr at ``total_steps``; ``step``: base_lr * gamma^(epoch // step_epochs).

    >>> [round(scheduled_lr(1.0, s, 0, 10, name="cosine", warmup_steps=2), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if name == "constant":
        return base_lr
    if name == "cosine":
        span = max(total_steps - warmup_steps, 1)
        frac = min(max(step - warmup_steps, 0) / span, 1.0)
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * frac))
    if name == "step":
        return base_lr * gamma ** (epoch // step_epochs)
    raise ConfigError(f"schedule must be 'constant', 'cosine' or 'step', got {name!r}")
