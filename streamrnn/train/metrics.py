"""Plain NumPy metrics for classifiers and voice-activity detectors.

Used by the trainer (validation), by ``streamrnn eval`` and by ``tools/eval_vad.py``.
Conventions (all chosen to match ``sklearn.metrics``, which the tests compare against):

* a score counts as positive when ``score >= threshold``;
* precision, recall and F1 are 0.0 when their denominator is 0 (sklearn's
  ``zero_division`` default, without the warning);
* ROC-AUC is the Mann-Whitney statistic with average ranks for ties, which equals the
  trapezoidal area under the ROC curve that ``sklearn.metrics.roc_auc_score`` computes
  (tied scores get half credit). For a binary detector (scores in {0, 1}) this is the
  area under the one-point ROC curve: ``(TPR + TNR) / 2``.

False alarms (VAD): the predicted speech segments are the runs of consecutive frames
where the decision (threshold, or hysteresis with an on/off pair) is speech; a segment
is a false alarm when none of its frames is labelled speech. The rate is the number of
false alarms divided by the hours of labelled non-speech (number of non-speech frames /
frame rate / 3600). Segments never span two files: pass per-file arrays as lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from streamrnn.errors import InputError, ShapeError

__all__ = [
    "accuracy",
    "binary_counts",
    "precision_recall_f1",
    "best_f1",
    "macro_precision_recall_f1",
    "roc_auc",
    "hysteresis",
    "segments",
    "count_false_alarms",
    "false_alarms_per_hour",
    "vad_metrics",
]


def _as_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ShapeError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _as_binary(y, name: str) -> np.ndarray:
    """0/1 (or bool) labels as a bool array; anything else is an InputError."""
    a = _as_1d(y, name)
    if a.dtype == bool:
        return a
    if a.size and not np.all((a == 0) | (a == 1)):
        bad = a[(a != 0) & (a != 1)][0]
        raise InputError(f"{name} must contain only 0 and 1, found {bad.item()!r}")
    return a.astype(bool)


def _as_scores(s, name: str) -> np.ndarray:
    a = _as_1d(s, name).astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} must be finite, found {a[~np.isfinite(a)][0].item()!r}")
    return a


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if len(a) != len(b):
        raise ShapeError(f"{na} has {len(a)} elements but {nb} has {len(b)}")


def accuracy(y_true, y_pred) -> float:
    """Fraction of equal entries (any labels). 0.0 for empty input.

    >>> accuracy([0, 1, 1, 2], [0, 1, 0, 2])
    0.75
    """
    t, p = _as_1d(y_true, "y_true"), _as_1d(y_pred, "y_pred")
    _same_length(t, p, "y_true", "y_pred")
    return float(np.mean(t == p)) if len(t) else 0.0


def binary_counts(y_true, y_pred) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) of 0/1 labels and 0/1 predictions.

    >>> binary_counts([1, 1, 0, 0], [1, 0, 1, 0])
    (1, 1, 1, 1)
    """
    t, p = _as_binary(y_true, "y_true"), _as_binary(y_pred, "y_pred")
    _same_length(t, p, "y_true", "y_pred")
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    return tp, fp, fn, len(t) - tp - fp - fn


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def precision_recall_f1(y_true, y_score, threshold: float = 0.5) -> tuple[float, float, float]:
    """Binary precision, recall and F1 with ``y_score >= threshold`` as positive.

    >>> precision_recall_f1([1, 1, 0, 0], [0.9, 0.2, 0.6, 0.1])
    (0.5, 0.5, 0.5)
    """
    t = _as_binary(y_true, "y_true")
    s = _as_scores(y_score, "y_score")
    _same_length(t, s, "y_true", "y_score")
    tp, fp, fn, _ = binary_counts(t, s >= threshold)
    return _prf(tp, fp, fn)


def best_f1(y_true, y_score) -> tuple[float, float]:
    """The highest F1 over all thresholds and the threshold that gives it: ``(f1, threshold)``.

    Every distinct score is tried as the threshold (``y_score >= threshold`` is positive),
    as ``sklearn.metrics.precision_recall_curve`` does; ties in F1 go to the highest
    threshold. Raises InputError when ``y_true`` holds no positive (F1 is 0 everywhere).

    >>> best_f1([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    (0.8, 0.35)
    """
    t = _as_binary(y_true, "y_true")
    s = _as_scores(y_score, "y_score")
    _same_length(t, s, "y_true", "y_score")
    n_pos = int(np.count_nonzero(t))
    if n_pos == 0:
        raise InputError(f"best F1 needs at least one positive label, got 0 of {len(t)}")
    order = np.argsort(-s, kind="mergesort")  # highest score first
    s_sorted, t_sorted = s[order], t[order]
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])  # end of each tie group
    tp = np.cumsum(t_sorted, dtype=np.int64)[last]  # positives at threshold s_sorted[last]
    n_pred = last + 1
    f1 = 2.0 * tp / (n_pred + n_pos)  # 2 tp / (2 tp + fp + fn) = 2 tp / (predicted + actual)
    i = int(np.argmax(f1))  # first maximum = highest threshold
    return float(f1[i]), float(s_sorted[last[i]])


def macro_precision_recall_f1(y_true, y_pred, labels: Sequence[int] | None = None) -> tuple[float, float, float]:
    """Macro-averaged precision, recall and F1 over classes (sklearn ``average="macro"``).

    The classes are ``labels`` or, by default, every value present in ``y_true`` or
    ``y_pred``. Each class's F1 is computed from its own counts and then averaged (not
    the F1 of the averaged precision and recall).

    >>> p, r, f = macro_precision_recall_f1([0, 1, 2, 2], [0, 2, 2, 2])
    >>> round(p, 4), round(r, 4), round(f, 4)
    (0.5556, 0.6667, 0.6)
    """
    t, p = _as_1d(y_true, "y_true"), _as_1d(y_pred, "y_pred")
    _same_length(t, p, "y_true", "y_pred")
    classes = np.unique(np.concatenate([t, p])) if labels is None else np.asarray(labels)
    if classes.size == 0:
        raise InputError("no classes: y_true and y_pred are empty and no labels were given")
    rows = [_prf(int(np.count_nonzero((t == c) & (p == c))), int(np.count_nonzero((t != c) & (p == c))),
                 int(np.count_nonzero((t == c) & (p != c)))) for c in classes]
    return tuple(float(v) for v in np.mean(np.asarray(rows), axis=0))


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s`` with ties sharing the mean of their ranks (like scipy's rankdata)."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # Tie groups: [first[i], first[i+1]) in sorted order.
    first = np.flatnonzero(np.concatenate([[True], sorted_s[1:] != sorted_s[:-1]]))
    bounds = np.append(first, len(s))
    mean_rank = (bounds[:-1] + 1 + bounds[1:]) / 2.0  # mean of ranks first+1 .. next
    ranks = np.empty(len(s), np.float64)
    ranks[order] = np.repeat(mean_rank, np.diff(bounds))
    return ranks


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve of 0/1 labels and real scores; ties count half.

    Raises InputError when only one class is present (the area is undefined), like
    sklearn's ValueError.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([0, 1, 0, 1], [0, 1, 1, 1])  # binary detector: (TPR + TNR) / 2
    0.75
    """
    t = _as_binary(y_true, "y_true")
    s = _as_scores(y_score, "y_score")
    _same_length(t, s, "y_true", "y_score")
    n_pos = int(np.count_nonzero(t))
    n_neg = len(t) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"ROC-AUC needs both classes, got {n_pos} positives and {n_neg} negatives")
    ranks = _average_ranks(s)
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2.0  # Mann-Whitney U of the positives
    return float(u / (n_pos * n_neg))


def hysteresis(probs, on: float = 0.5, off: float | None = None) -> np.ndarray:
    """Speech decisions (bool, same length) from probabilities with an on/off threshold pair.

    The state turns on at a frame with ``p >= on`` and turns off at a frame with
    ``p < off``; in between it keeps its value. It starts off. ``off=None`` means
    ``off = on``, a plain threshold. Needs ``off <= on``.

    >>> hysteresis([0.1, 0.6, 0.4, 0.2, 0.7], on=0.5, off=0.3).astype(int).tolist()
    [0, 1, 1, 0, 1]
    """
    p = _as_scores(probs, "probs")
    off = on if off is None else off
    if off > on:
        raise InputError(f"off threshold {off} must be <= on threshold {on}")
    # Each frame either decides (1 on, 0 off) or carries the last decision (-1).
    decide = np.where(p >= on, 1, np.where(p < off, 0, -1))
    idx = np.where(decide >= 0, np.arange(len(p)), -1)
    last = np.maximum.accumulate(idx) if len(p) else idx  # index of the last deciding frame
    return np.where(last >= 0, decide[np.maximum(last, 0)], 0).astype(bool)


def segments(mask) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of True in a bool mask; run i covers [starts[i], ends[i]).

    >>> [a.tolist() for a in segments([0, 1, 1, 0, 1])]
    [[1, 4], [3, 5]]
    """
    m = _as_binary(mask, "mask").astype(np.int8)
    d = np.diff(np.concatenate([[0], m, [0]]))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def count_false_alarms(pred, labels) -> int:
    """Predicted speech segments of one file that overlap no labelled speech frame.

    >>> count_false_alarms([1, 1, 0, 0, 1, 0, 1], [0, 1, 0, 0, 0, 0, 0])
    2
    """
    p, t = _as_binary(pred, "pred"), _as_binary(labels, "labels")
    _same_length(p, t, "pred", "labels")
    starts, ends = segments(p)
    cs = np.concatenate([[0], np.cumsum(t, dtype=np.int64)])  # speech frames before index
    return int(np.count_nonzero(cs[ends] - cs[starts] == 0))


def _per_file(x, name: str) -> list[np.ndarray]:
    """A single 1-D array or a sequence of them, as a list of 1-D arrays."""
    if isinstance(x, np.ndarray) and x.ndim == 1:
        return [x]
    if isinstance(x, (list, tuple)) and (len(x) == 0 or np.ndim(x[0]) == 1):
        return [_as_1d(a, f"{name}[{i}]") for i, a in enumerate(x)]
    return [_as_1d(x, name)]


def false_alarms_per_hour(preds, labels, frame_rate: float) -> float:
    """False alarms per hour of labelled non-speech over one or many files.

    ``preds``/``labels``: one bool/0-1 array per file (or a single array).
    Returns NaN when there is no labelled non-speech at all.

    >>> false_alarms_per_hour([np.array([1, 0, 0, 0])], [np.array([0, 0, 0, 0])], frame_rate=4 / 3600)
    1.0
    """
    p, t = _per_file(preds, "preds"), _per_file(labels, "labels")
    if len(p) != len(t):
        raise ShapeError(f"{len(p)} prediction arrays but {len(t)} label arrays")
    n_fa = sum(count_false_alarms(a, b) for a, b in zip(p, t))
    n_nonspeech = sum(int(np.count_nonzero(~_as_binary(b, "labels"))) for b in t)
    hours = n_nonspeech / float(frame_rate) / 3600.0
    return n_fa / hours if hours > 0 else math.nan


def vad_metrics(probs, labels, frame_rate: float = 100.0, threshold: float = 0.5,
                off_threshold: float | None = None) -> dict:
    """All VAD metrics from frame probabilities and 0/1 frame labels.

    ``probs``/``labels``: one array per file (lists) or single arrays, equal lengths per
    file. The decisions are ``hysteresis(p, threshold, off_threshold)`` per file (a
    plain ``p >= threshold`` when ``off_threshold`` is None); accuracy, precision, recall,
    F1 and false alarms use them; ROC-AUC uses the raw probabilities of all files pooled
    (NaN when the labels hold only one class).

    Returns a dict: n_files, n_frames, hours, speech_fraction, roc_auc, accuracy,
    precision, recall, f1, false_alarms, nonspeech_hours, false_alarms_per_hour,
    threshold, off_threshold.

    >>> m = vad_metrics([np.array([0.1, 0.9, 0.8, 0.2])], [np.array([0, 1, 1, 0])])
    >>> m["f1"], m["roc_auc"], m["false_alarms"]
    (1.0, 1.0, 0)
    """
    if frame_rate <= 0:
        raise InputError(f"frame_rate must be > 0, got {frame_rate}")
    p_files, t_files = _per_file(probs, "probs"), _per_file(labels, "labels")
    if len(p_files) != len(t_files):
        raise ShapeError(f"{len(p_files)} probability arrays but {len(t_files)} label arrays")
    ps, ts, ds = [], [], []
    for i, (p, t) in enumerate(zip(p_files, t_files)):
        p, t = _as_scores(p, f"probs[{i}]"), _as_binary(t, f"labels[{i}]")
        _same_length(p, t, f"probs[{i}]", f"labels[{i}]")
        ps.append(p)
        ts.append(t)
        ds.append(hysteresis(p, threshold, off_threshold))
    p_all = np.concatenate(ps) if ps else np.zeros(0)
    t_all = np.concatenate(ts) if ts else np.zeros(0, bool)
    d_all = np.concatenate(ds) if ds else np.zeros(0, bool)
    tp, fp, fn, tn = binary_counts(t_all, d_all)
    precision, recall, f1 = _prf(tp, fp, fn)
    try:
        auc = roc_auc(t_all, p_all)
    except InputError:
        auc = math.nan
    n_fa = sum(count_false_alarms(d, t) for d, t in zip(ds, ts))
    nonspeech_hours = (len(t_all) - int(np.count_nonzero(t_all))) / frame_rate / 3600.0
    return {
        "n_files": len(ps),
        "n_frames": int(len(t_all)),
        "hours": len(t_all) / frame_rate / 3600.0,
        "speech_fraction": float(np.mean(t_all)) if len(t_all) else math.nan,
        "roc_auc": auc,
        "accuracy": (tp + tn) / len(t_all) if len(t_all) else math.nan,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarms": int(n_fa),
        "nonspeech_hours": nonspeech_hours,
        "false_alarms_per_hour": n_fa / nonspeech_hours if nonspeech_hours > 0 else math.nan,
        "threshold": float(threshold),
        "off_threshold": None if off_threshold is None else float(off_threshold),
    }
