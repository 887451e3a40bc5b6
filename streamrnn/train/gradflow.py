"""Gradient flow through time, measured on a model and its data (``streamrnn gradflow``).

Vanishing gradients keep a recurrent network from learning long dependencies;
exploding ones turn its weights into NaN.  This module makes both measurable:

* **per-lag norms**: for anchor frames t of the data, the norm of the loss
  gradient at frame t with respect to the state k frames back,
  ``|dL_t / ds_{t-k}|`` for k = 0..K, averaged over the anchors.  The state
  ``s`` is every layer's h (and c for LSTM), so the norm is over the whole
  carried state.  The numbers come from the backward kernel itself
  (``backward.backward_kernel`` with its ``dh_sq`` output): one backward pass per
  batch of anchors, with dL/dlogits non-zero only at the anchor frame.
* **decay rate and horizon**: a least-squares line through log(norm) over
  lags 1..K gives the factor per step ``rate = exp(slope)``; where it is
  below 1, the horizon is the lag at which the fitted gradient has fallen
  100-fold, ``ln(100) / -slope`` frames (and seconds at the front end's frame
  rate).  ``horizon_measured`` is the first lag whose mean norm is at most
  1/100 of lag 0's (None if it never falls that far within K).
* **spectral radius** of each layer's recurrent weights, per gate block
  (``W_hr, W_hz, W_hn`` for GRU; ``W_hi, W_hf, W_hg, W_ho`` for LSTM; ``W_hh``
  for the Elman cells): each block is square (H, H), the whole ``W_hh``
  (G*H, H) is not.  For a tanh RNN, a radius below 1 bounds the per-step
  factor from above (tanh' <= 1).
* **training history**: the pre-clip gradient norm and the fraction of
  clipped updates per epoch, from a run's ``metrics.jsonl``.

Everything runs in float64 (``model.astype``), so no norm underflows before
about 1e-300.  Each anchor's window starts from zero state ``warmup`` frames
before its farthest lag (or at its sequence start, if nearer), so the states
along the window are those of the stream, not of a cold start.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from streamrnn.config import json_lines
from streamrnn.errors import ConfigError, InputError
from streamrnn.nn.model import Model
from streamrnn.train.bptt import BPTT
from streamrnn.train.losses import frame_losses

GATE_NAMES = {"rnn_tanh": ("hh",), "rnn_relu": ("hh",), "gru": ("hr", "hz", "hn"), "lstm": ("hi", "hf", "hg", "ho")}
DROP = 100.0  # the horizon is where the gradient has fallen by this factor


@dataclass
class GradFlow:
    """What ``gradient_flow`` measured; ``to_dict()`` is the ``--json`` output."""

    lags: list  # 0..K
    norms: list  # mean |dL_t / ds_{t-k}| per lag
    n_anchors: int
    slope: float  # fitted d ln(norm) / d lag over lags 1..K
    rate: float  # exp(slope): factor per step (< 1 decay, > 1 growth)
    horizon_frames: float | None  # ln(100) / -slope where rate < 1, else None
    horizon_measured: int | None  # first lag with norm <= norm[0] / 100 (None: not within K)
    frame_rate: float | None  # frames per second of the model's front end (None: no front end)
    spectral_radius: dict = field(default_factory=dict)  # {"layer0": {"W_hr": r, ...}, ...}
    history: list = field(default_factory=list)  # per epoch of a training run

    @property
    def horizon_seconds(self) -> float | None:
        if self.horizon_frames is None or not self.frame_rate:
            return None
        return self.horizon_frames / self.frame_rate

    def to_dict(self) -> dict:
        d = asdict(self)
        d["horizon_seconds"] = self.horizon_seconds
        return d


def spectral_radii(model: Model) -> dict:
    """{"layer<l>": {"W_<gate>": max |eigenvalue|}} of each (H, H) gate block of each layer's W_hh.

    >>> import streamrnn
    >>> r = spectral_radii(streamrnn.Model.random("gru", 2, 4, num_layers=2))
    >>> sorted(r), sorted(r["layer0"])
    (['layer0', 'layer1'], ['W_hn', 'W_hr', 'W_hz'])
    """
    t = model.tensors()
    H = model.hidden_size
    out = {}
    for layer in range(model.num_layers):
        w = np.asarray(t[f"rnn.weight_hh_l{layer}"], np.float64)  # (G*H, H)
        out[f"layer{layer}"] = {f"W_{g}": float(np.abs(np.linalg.eigvals(w[k * H:(k + 1) * H])).max())
                                for k, g in enumerate(GATE_NAMES[model.cell])}
    return out


def fit_decay(norms) -> tuple[float, float | None, int | None]:
    """(slope, horizon_frames, horizon_measured) of mean norms per lag (index = lag).

    The slope is the least-squares fit of ln(norm) on the lag over lags 1..K with a
    positive norm; the fitted horizon is ``ln(100) / -slope`` for a negative slope.

    >>> s, h, m = fit_decay([1.0] + [0.5 ** k for k in range(1, 20)])
    >>> round(s, 6), round(h, 3), m
    (-0.693147, 6.644, 7)
    """
    g = np.asarray(norms, np.float64)
    k = np.arange(len(g))
    sel = (k >= 1) & (g > 0) & np.isfinite(g)
    if sel.sum() < 2:
        raise InputError(f"cannot fit a decay rate: {int(sel.sum())} lag(s) with a positive gradient norm "
                         f"(need at least 2; use a larger max_lag)")
    slope = float(np.polyfit(k[sel], np.log(g[sel]), 1)[0])
    horizon = math.log(DROP) / -slope if slope < 0 else None
    below = np.flatnonzero(g <= g[0] / DROP)
    return slope, horizon, (int(below[0]) if below.size else None)


def lag_norms(model: Model, seqs, *, max_lag: int = 200, n_anchors: int = 32, warmup: int = 200,
              lanes: int = 8, seed: int = 0, loss: str | None = None, task: str | None = None):
    """Mean |dL_t / ds_{t-k}| for k = 0..max_lag over anchor frames of ``seqs``: (norms (K+1,), n_anchors).

    ``seqs``: ``data.Sequence`` objects (targets as for training: the loss and task default
    to what the model was trained with).  Anchors are frames t >= max_lag with mask > 0,
    drawn evenly over the data (at most ``n_anchors``, chosen with ``seed``).  Raises
    ``InputError`` if no sequence is longer than ``max_lag`` frames.
    """
    from streamrnn.train.lanes import model_input, prepare_for_model

    if max_lag < 1:
        raise ConfigError(f"max_lag must be >= 1, got {max_lag}")
    if model.arch.bidirectional:
        raise InputError("gradient flow is measured on a unidirectional model's carried state; a bidirectional "
                         "model's reverse direction carries its gradient forward in time, so its lags are "
                         "not defined here")
    m = model.astype(np.float64)
    prep, loss, _ = prepare_for_model(m, seqs, loss=loss, task=task)
    cand = [(i, t) for i, p in enumerate(prep) for t in np.flatnonzero(p.mask > 0) if t >= max_lag]
    if not cand:
        longest = max((p.x.shape[0] for p in prep), default=0)
        raise InputError(f"no frame with {max_lag} frames before it in the data (longest sequence: {longest} "
                         f"frames); lower max_lag below {longest}")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(cand), size=min(n_anchors, len(cand)), replace=False).tolist())
    anchors = [cand[j] for j in pick]
    K = max_lag
    total = np.zeros(K + 1)
    arch, theta = m.arch, np.asarray(m.theta)
    for a0 in range(0, len(anchors), lanes):
        batch = anchors[a0:a0 + lanes]
        B = len(batch)
        starts = [max(0, t - K - warmup) for _, t in batch]
        T = max(t + 1 - s for (_, t), s in zip(batch, starts))
        X = np.zeros((T, B, prep[0].x.shape[1]))
        ends = []
        for b, ((i, t), s) in enumerate(zip(batch, starts)):
            X[:t + 1 - s, b] = prep[i].x[s:t + 1]
            ends.append(t - s)  # the anchor's row in the block
        eng = BPTT(arch, B, np.float64)
        y, save, xn = eng.alloc(T)
        L, H = arch.num_layers, arch.hidden_size
        h, c = np.zeros((L, B, H)), np.zeros((L, B, H))
        reset = np.zeros((T, B), np.uint8)
        eng.forward(theta, model_input(arch, theta, X), h, c, reset, y, save, xn)
        dy = np.zeros_like(y)
        for b, ((i, t), e) in enumerate(zip(batch, ends)):
            tg = prep[i].target[t]
            _, d = frame_losses(loss, y[e:e + 1, b:b + 1], tg[None, None, 0] if loss == "ce" else tg[None, None])
            dy[e, b] = d[0, 0]  # dL_t/dlogits at the anchor frame only
        dh_sq = np.zeros((T, B))
        eng.backward(theta, xn, np.zeros((L, B, H)), np.zeros((L, B, H)), reset, save, dy, np.zeros_like(theta),
                     np.zeros((L, B, H)), np.zeros((L, B, H)), dh_sq)
        for b, e in enumerate(ends):
            total += np.sqrt(dh_sq[e - K:e + 1, b])[::-1]  # lag k = row e - k
    return total / len(anchors), len(anchors)


def read_history(run_dir) -> list[dict]:
    """Per-epoch pre-clip gradient norms and clipped fractions from ``<run_dir>/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path}: no metrics.jsonl (give the --out folder of a `streamrnn train` run)")
    keys = ("epoch", "grad_norm_mean", "grad_norm_max", "clipped_fraction", "horizon_frames")
    out = []
    for _, rec in json_lines(path.read_text(encoding="utf-8"), path):
        out.append({k: rec.get(k) for k in keys})
    return out


def gradient_flow(model: Model, seqs, *, max_lag: int = 200, n_anchors: int = 32, warmup: int = 200,
                  seed: int = 0, run_dir=None, loss: str | None = None, task: str | None = None) -> GradFlow:
    """Measure the gradient flow of ``model`` on ``seqs`` (see the module doc).

    >>> import numpy as np, streamrnn
    >>> from streamrnn.train.data import Sequence
    >>> m = streamrnn.Model.random("rnn_tanh", 2, 8, output_size=1, activation="sigmoid", seed=0)
    >>> rng = np.random.default_rng(0)
    >>> seqs = [Sequence(rng.standard_normal((60, 2)).astype(np.float32), np.ones((60, 1), np.float32),
    ...                  np.ones(60, np.float32), "s")]
    >>> g = gradient_flow(m, seqs, max_lag=30, n_anchors=4)
    >>> len(g.norms), g.rate < 1.0
    (31, True)
    """
    norms, n = lag_norms(model, seqs, max_lag=max_lag, n_anchors=n_anchors, warmup=warmup, seed=seed,
                         loss=loss, task=task)
    slope, horizon, measured = fit_decay(norms)
    fe = model.frontend
    rate = float(fe.get("sample_rate", 16000)) / float(fe.get("hop_length", 160)) if fe else None
    return GradFlow(list(range(max_lag + 1)), [float(v) for v in norms], n, slope, math.exp(slope), horizon,
                    measured, rate, spectral_radii(model), read_history(run_dir) if run_dir else [])


def plot_gradflow(g: GradFlow, path, title: str = "") -> None:
    """PNG: mean gradient norm per lag (log scale) with the fit and horizon; the run's history if any."""
    from streamrnn.train.vadplot import require_matplotlib

    plt = require_matplotlib()
    n_panels = 2 if g.history else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(6.5 * n_panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    k = np.asarray(g.lags)
    norms = np.asarray(g.norms)
    ax.semilogy(k, norms, label=f"mean |dL_t/ds_(t-k)| ({g.n_anchors} anchors)")
    sel = k >= 1
    fit = np.exp(np.polyfit(k[sel & (norms > 0)], np.log(norms[sel & (norms > 0)]), 1)[1] + g.slope * k)
    ax.semilogy(k, fit, "--", label=f"fit: x{g.rate:.4f} per step")
    ax.axhline(norms[0] / DROP, color="gray", lw=0.8, ls=":", label="1/100 of lag 0")
    if g.horizon_frames is not None and g.horizon_frames <= k[-1]:
        sec = f" = {g.horizon_seconds:.2f} s" if g.horizon_seconds is not None else ""
        ax.axvline(g.horizon_frames, color="C3", lw=1, label=f"horizon {g.horizon_frames:.0f} frames{sec}")
    ax.set_xlabel("lag k (frames)")
    ax.set_ylabel("gradient norm")
    ax.set_title(title or "gradient flow through time")
    ax.legend(fontsize=8)
    if g.history:
        ax2 = axes[0, 1]
        ep = [r["epoch"] for r in g.history]
        ax2.plot(ep, [r["grad_norm_mean"] or np.nan for r in g.history], marker="o", label="mean pre-clip norm")
        if any(r.get("grad_norm_max") is not None for r in g.history):
            ax2.plot(ep, [r["grad_norm_max"] or np.nan for r in g.history], marker=".", label="max pre-clip norm")
        ax2.set_yscale("log")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("gradient norm")
        ax3 = ax2.twinx()
        ax3.plot(ep, [np.nan if r["clipped_fraction"] is None else r["clipped_fraction"] for r in g.history],
                 color="C2", marker="s", label="clipped fraction")
        ax3.set_ylim(0, 1)
        ax3.set_ylabel("fraction of updates clipped")
        ax2.legend(loc="upper left", fontsize=8)
        ax3.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_gradflow(g: GradFlow) -> list[str]:
    """The text report of ``streamrnn gradflow``: one line per finding."""
    unit = lambda f: "-" if f is None else f"{f:.1f} frames" + (  # noqa: E731
        f" ({f / g.frame_rate:.3f} s)" if g.frame_rate else "")
    K = g.lags[-1]
    picks = sorted({k for k in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, K) if k <= K})
    lines = [f"anchors           {g.n_anchors}, lags 0..{K}",
             "mean |dL_t/ds_(t-k)|  " + "  ".join(f"k={k}: {g.norms[k]:.3g}" for k in picks),
             f"rate per step     {g.rate:.4f} ({'decay' if g.rate < 1 else 'growth'}; fit of ln norm over lags 1..{K})",
             f"horizon (fit)     {unit(g.horizon_frames) if g.horizon_frames is not None else 'none: no decay'}",
             f"horizon (seen)    {unit(g.horizon_measured) if g.horizon_measured is not None else f'> {K} frames'}"]
    for layer, radii in g.spectral_radius.items():
        lines.append(f"spectral radius   {layer}: " + ", ".join(f"{k} {v:.3f}" for k, v in radii.items()))
    for r in g.history:
        lines.append(f"epoch {r['epoch']:<4} pre-clip norm mean {_fmt(r['grad_norm_mean'])} max "
                     f"{_fmt(r['grad_norm_max'])}  clipped {_fmt(r['clipped_fraction'])}")
    return lines


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3g}"
