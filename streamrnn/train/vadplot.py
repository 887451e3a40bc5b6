"""A picture of one labelled recording through a voice-activity model (``streamrnn eval --plot``).

Four panels on one time axis (seconds): the waveform, the model's own log-mel
features, the speech probability with the decision threshold, and the labels next
to the decisions.  The probabilities come from the real-time path
(``FeatureStream`` + ``model.stream()``), so the picture shows what
``streamrnn stream`` would output for this file.  Needs matplotlib (the ``plot``
extra); ``ConfigError`` says how to install it when it is missing.

Frame k covers input samples [k*hop, k*hop + win) at the front end's rate and is
drawn at its window's centre, (k*hop + win/2) / rate seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from streamrnn.audio.files import frame_targets, read_audio, read_labels
from streamrnn.audio.stream import FeatureStream
from streamrnn.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["vad_trace", "plot_vad", "require_matplotlib"]


def require_matplotlib():
    """``matplotlib.pyplot`` with the file-only Agg backend; ConfigError naming the extra when missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'streamrnn[plot]' (or pip install matplotlib)") \
            from None
    return plt


def vad_trace(model, audio_path, labels_path=None, column: int = 0) -> dict:
    """Run ``model`` over one audio file as the live stream does and collect what the plot shows.

    Returns a dict: ``samples`` (n,) float32 at ``sample_rate``; ``features`` (T, F) float32
    (the front end's output, before the model's input normalisation); ``probs`` (T,) float64
    (output ``column``); ``labels`` (T,) float32 0/1 or None; ``times`` (T,) frame centres in
    seconds; ``frame_rate``.
    """
    if model.frontend is None:
        raise ConfigError("--plot needs a model with a front end (it takes audio, not feature frames)")
    x, rate = read_audio(audio_path)  # (n,) float32, mono
    fs = FeatureStream(model.frontend, rate)
    feats = fs.push(x)  # (T, F); trailing samples that complete no frame are dropped, as live
    # whole file at once (a bidirectional model needs it; for the others it equals the stream)
    probs = np.asarray(model.forward(feats), np.float64)[:, column]  # (T,)
    if model.delay:  # look-ahead: row t answers for frame t - D; the last D frames have no answer
        probs = np.concatenate([probs[model.delay:], np.full(min(model.delay, len(probs)), np.nan)])
    fe = fs.frontend
    T = len(feats)
    times = (np.arange(T) * fe.hop_length + fe.win_length / 2) / fe.sample_rate  # seconds, (T,)
    labels = None
    if labels_path is not None:
        n16 = int(round(len(x) * fe.sample_rate / rate))  # samples at the front end's rate
        labels = frame_targets(read_labels(labels_path), T, fe.sample_rate, fe.hop_length, fe.win_length,
                               n_samples=max(n16, T * fe.hop_length + fe.win_length - 1))
    return {"samples": x, "sample_rate": rate, "features": feats, "probs": probs, "labels": labels,
            "times": times, "frame_rate": fs.frame_rate}


def plot_vad(model, audio_path, out_path, labels_path=None, threshold: float = 0.5, column: int = 0,
             title: str | None = None) -> dict:
    """Draw waveform, log-mel features, probability and labels of one file to ``out_path`` (PNG).

    Returns the ``vad_trace`` dict.  Raises ConfigError when matplotlib is missing.

    Example (writes demo.png; skipped as a doctest because it needs matplotlib)::

        import streamrnn
        from streamrnn.nn.modelfile import MODELS_DIR
        plot_vad(streamrnn.load_model("vad"), MODELS_DIR / "demo.flac", "demo.png", MODELS_DIR / "demo.txt")
    """
    plt = require_matplotlib()
    tr = vad_trace(model, audio_path, labels_path, column)
    x, rate, t = tr["samples"], tr["sample_rate"], tr["times"]
    dur = max(len(x) / rate, float(t[-1]) if len(t) else 0.0)
    label_name = (list(model.labels or []) + ["output"])[column] if model.labels else "output"

    fig, ax = plt.subplots(4, 1, figsize=(12, 8), sharex=True,
                           gridspec_kw={"height_ratios": [1.2, 1.6, 1.2, 0.6]})
    ax[0].plot(np.arange(len(x)) / rate, x, lw=0.3, color="0.2")
    ax[0].set_ylabel("waveform")
    if tr["labels"] is not None:  # labelled speech shaded on the waveform too
        ax[0].fill_between(t, -1, 1, where=tr["labels"] > 0.5, color="tab:green", alpha=0.15, step="mid",
                           transform=ax[0].get_xaxis_transform(), label="labelled speech")
        ax[0].legend(loc="upper right", fontsize=8)
    if len(t):
        hop_s = 1.0 / tr["frame_rate"]
        ax[1].imshow(tr["features"].T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                     extent=(t[0] - hop_s / 2, t[-1] + hop_s / 2, 0, tr["features"].shape[1]))
    ax[1].set_ylabel(f"{(model.frontend or {}).get('type', 'features')} bin")
    ax[2].plot(t, tr["probs"], lw=1.0, color="tab:blue", label=f"p({label_name})")
    ax[2].axhline(threshold, color="tab:red", lw=0.8, ls="--", label=f"threshold {threshold:g}")
    if tr["labels"] is not None:
        ax[2].fill_between(t, 0, 1, where=tr["labels"] > 0.5, color="tab:green", alpha=0.15, step="mid",
                           label="labelled speech")
    ax[2].set_ylim(-0.02, 1.02)
    ax[2].set_ylabel("probability")
    ax[2].legend(loc="upper right", fontsize=8, ncol=3)
    decisions = (tr["probs"] >= threshold).astype(float)
    ax[3].step(t, decisions * 0.8 + 0.1, where="mid", color="tab:blue", lw=1.2, label="decision")
    if tr["labels"] is not None:
        ax[3].step(t, tr["labels"] * 0.8 + 1.1, where="mid", color="tab:green", lw=1.2, label="label")
        ax[3].set_yticks([0.5, 1.5], ["decision", "label"])
    else:
        ax[3].set_yticks([0.5], ["decision"])
    ax[3].set_ylim(0, 2.0)
    ax[3].set_xlabel("time (s)")
    ax[3].set_xlim(0, dur)
    fig.suptitle(title or f"{Path(audio_path).name}: {model.name or 'model'}")
    fig.tight_layout()
    fig.savefig(str(out_path), dpi=100)
    plt.close(fig)
    log.info("wrote %s", out_path)
    return tr
