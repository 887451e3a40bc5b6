"""streamrnn.train.metrics against sklearn.metrics, hand-checked examples and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from streamrnn.errors import InputError, ShapeError
from streamrnn.train import metrics as M

# Scores from a small grid so ties are common (the tie handling is what differs most often).
scores_and_labels = st.integers(2, 200).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5000001, 0.75, 0.9, 1.0]), min_size=n, max_size=n),
    )
)


@settings(max_examples=200, deadline=None)
@given(scores_and_labels)
def test_roc_auc_matches_sklearn_with_ties(data):
    y, s = np.array(data[0]), np.array(data[1])
    if y.min() == y.max():
        with pytest.raises(InputError, match="both classes"):
            M.roc_auc(y, s)
        return
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 500))
def test_roc_auc_matches_sklearn_continuous(seed, n):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = rng.normal(size=n) + y * rng.uniform(0, 2)
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(scores_and_labels)
def test_roc_auc_properties(data):
    y, s = np.array(data[0]), np.array(data[1])
    if y.min() == y.max():
        return
    auc = M.roc_auc(y, s)
    assert 0.0 <= auc <= 1.0
    # Strictly increasing transforms keep the ranks; negating the scores mirrors the curve.
    assert M.roc_auc(y, np.exp(3 * s) + 7) == pytest.approx(auc, abs=1e-12)
    assert M.roc_auc(y, -s) == pytest.approx(1.0 - auc, abs=1e-12)
    assert M.roc_auc(1 - y, s) == pytest.approx(1.0 - auc, abs=1e-12)


def test_roc_auc_hand_checked():
    # Pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) -> 3 of 4.
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # Positives {1.0, 0.5}, negatives {0.5, 0.0}: three pairs won, the tie 0.5 = 0.5 counts half
    # -> 3.5 / 4.
    assert M.roc_auc([0, 1, 0, 1], [0.5, 1.0, 0.0, 0.5]) == 0.875
    # A binary detector: TPR = 2/2, TNR = 1/2 -> (1 + 0.5) / 2.
    assert M.roc_auc([0, 1, 0, 1], [0, 1, 1, 1]) == 0.75
    assert M.roc_auc([0, 0, 1, 1], [1, 1, 1, 1]) == 0.5


@settings(max_examples=200, deadline=None)
@given(scores_and_labels, st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))
def test_binary_prf_matches_sklearn(data, threshold):
    y, s = np.array(data[0]), np.array(data[1])
    pred = (s >= threshold).astype(int)
    p, r, f = skm.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)[:3]
    assert M.precision_recall_f1(y, s, threshold) == pytest.approx((p, r, f), abs=1e-12)
    assert M.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)


def test_binary_prf_hand_checked():
    # tp=1 (0.9), fp=1 (0.6), fn=1 (0.2): P = R = F1 = 1/2.
    assert M.precision_recall_f1([1, 1, 0, 0], [0.9, 0.2, 0.6, 0.1]) == (0.5, 0.5, 0.5)
    # Threshold is inclusive: 0.5 counts as positive.
    assert M.precision_recall_f1([1, 0], [0.5, 0.49]) == (1.0, 1.0, 1.0)
    # Nothing predicted and nothing labelled: all zero-division cases give 0.
    assert M.precision_recall_f1([0, 0], [0.1, 0.2]) == (0.0, 0.0, 0.0)
    # tp=2, fp=0, fn=2: P = 1, R = 1/2, F1 = 2/3.
    p, r, f = M.precision_recall_f1([1, 1, 1, 1, 0], [0.9, 0.8, 0.1, 0.1, 0.1])
    assert (p, r) == (1.0, 0.5) and f == pytest.approx(2 / 3)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 150).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 4), min_size=n, max_size=n), st.lists(st.integers(0, 4), min_size=n, max_size=n))))
def test_macro_prf_matches_sklearn(data):
    y, p = np.array(data[0]), np.array(data[1])
    ref = skm.precision_recall_fscore_support(y, p, average="macro", zero_division=0)[:3]
    assert M.macro_precision_recall_f1(y, p) == pytest.approx(ref, abs=1e-12)
    labels = [0, 1, 2, 3, 4, 5]  # class 5 never occurs: it scores 0 and lowers the mean
    ref = skm.precision_recall_fscore_support(y, p, labels=labels, average="macro", zero_division=0)[:3]
    assert M.macro_precision_recall_f1(y, p, labels=labels) == pytest.approx(ref, abs=1e-12)
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)


def test_macro_prf_hand_checked():
    # Class 0: P=R=F=1. Class 1: tp=0 -> 0,0,0. Class 2: P=2/3, R=1, F=0.8.
    p, r, f = M.macro_precision_recall_f1([0, 1, 2, 2], [0, 2, 2, 2])
    assert p == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert r == pytest.approx((1 + 0 + 1) / 3)
    assert f == pytest.approx((1 + 0 + 0.8) / 3)


def _hysteresis_ref(p, on, off):
    state, out = False, []
    for v in p:
        if v >= on:
            state = True
        elif v < off:
            state = False
        out.append(state)
    return np.array(out, bool)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), max_size=80), st.floats(0, 1), st.floats(0, 1))
def test_hysteresis_matches_loop(p, a, b):
    on, off = max(a, b), min(a, b)
    np.testing.assert_array_equal(M.hysteresis(p, on, off), _hysteresis_ref(p, on, off))
    np.testing.assert_array_equal(M.hysteresis(p, on), np.asarray(p, float) >= on)


def test_hysteresis_hand_checked_and_bad_thresholds():
    assert M.hysteresis([0.1, 0.6, 0.4, 0.2, 0.7, 0.35], on=0.5, off=0.3).tolist() == [
        False, True, True, False, True, True]
    with pytest.raises(InputError, match="off threshold 0.6 must be <= on threshold 0.5"):
        M.hysteresis([0.1], on=0.5, off=0.6)
    with pytest.raises(InputError, match="finite"):
        M.hysteresis([0.1, float("nan")])


def _false_alarms_ref(pred, labels):
    n, i = 0, 0
    while i < len(pred):
        if pred[i]:
            j = i
            while j < len(pred) and pred[j]:
                j += 1
            n += not any(labels[i:j])
            i = j
        else:
            i += 1
    return n


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 120).flatmap(lambda n: st.tuples(
    st.lists(st.booleans(), min_size=n, max_size=n), st.lists(st.booleans(), min_size=n, max_size=n))))
def test_false_alarms_match_loop(data):
    pred, labels = data
    assert M.count_false_alarms(pred, labels) == _false_alarms_ref(pred, labels)
    # A perfect detector never false-alarms; an all-speech file cannot false-alarm.
    assert M.count_false_alarms(labels, labels) == 0
    assert M.count_false_alarms(pred, [True] * len(pred)) == 0


def test_segments_and_false_alarms_hand_checked():
    starts, ends = M.segments([0, 1, 1, 0, 1])
    assert starts.tolist() == [1, 4] and ends.tolist() == [3, 5]
    # Predicted runs [0,2) overlaps speech at 1; [4,5) and [6,7) overlap nothing -> 2 false alarms.
    assert M.count_false_alarms([1, 1, 0, 0, 1, 0, 1], [0, 1, 0, 0, 0, 0, 0]) == 2


def test_false_alarms_per_hour_counts_per_file_and_hours_of_nonspeech():
    fr = 100.0  # frames per second
    # File A: 1 h of non-speech at 100 frames/s with 3 isolated false-alarm blips.
    a_lab = np.zeros(360_000, bool)
    a_pred = np.zeros_like(a_lab)
    a_pred[[10, 5000, 200_000]] = True
    # File B: speech in the middle; a prediction that overlaps it is no false alarm, even
    # though it spills into non-speech; a second prediction in non-speech is one.
    b_lab = np.zeros(1000, bool)
    b_lab[400:600] = True
    b_pred = np.zeros_like(b_lab)
    b_pred[350:650] = True
    b_pred[900:950] = True
    hours = (360_000 + 800) / fr / 3600
    assert M.false_alarms_per_hour([a_pred, b_pred], [a_lab, b_lab], fr) == pytest.approx(4 / hours)
    # Joined end to end, B's first run would merge with... nothing here, but runs must not
    # span files: a run at the end of one file and the start of the next counts twice.
    c_pred, c_lab = np.array([0, 1, 1]), np.array([0, 0, 0])
    d_pred, d_lab = np.array([1, 0, 0]), np.array([0, 0, 0])
    assert M.false_alarms_per_hour([c_pred, d_pred], [c_lab, d_lab], 6 / 3600) == pytest.approx(2.0)
    assert math.isnan(M.false_alarms_per_hour([np.ones(5)], [np.ones(5)], fr))


def test_vad_metrics_hand_checked():
    fr = 100.0
    p1 = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.1])  # decisions 0 1 1 0 1 0
    t1 = np.array([0, 1, 1, 0, 0, 0])
    p2 = np.array([0.6, 0.3, 0.3])  # decisions 1 0 0
    t2 = np.array([1, 1, 0])
    m = M.vad_metrics([p1, p2], [t1, t2], frame_rate=fr, threshold=0.5)
    # tp = 3, fp = 1 (p1[4]), fn = 1 (p2[1]), tn = 4.
    assert (m["precision"], m["recall"], m["f1"]) == (0.75, 0.75, 0.75)
    assert m["accuracy"] == pytest.approx(7 / 9)
    assert m["false_alarms"] == 1
    assert m["nonspeech_hours"] == pytest.approx(5 / fr / 3600)
    assert m["false_alarms_per_hour"] == pytest.approx(1 / (5 / fr / 3600))
    pooled_t, pooled_p = np.concatenate([t1, t2]), np.concatenate([p1, p2])
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(pooled_t, pooled_p))
    assert m["n_files"] == 2 and m["n_frames"] == 9 and m["speech_fraction"] == pytest.approx(4 / 9)
    # With hysteresis (on 0.5, off 0.25) p2 stays on through its 0.3s: tp 4, fp 2.
    h = M.vad_metrics([p1, p2], [t1, t2], frame_rate=fr, threshold=0.5, off_threshold=0.25)
    assert (h["precision"], h["recall"]) == (pytest.approx(4 / 6), 1.0)
    assert h["roc_auc"] == m["roc_auc"]
    # A single array works like a one-file list; one class only gives NaN ROC-AUC.
    s = M.vad_metrics(p1, t1, frame_rate=fr)
    assert s["f1"] == pytest.approx(0.8)
    assert math.isnan(M.vad_metrics([p1], [np.zeros(6)], frame_rate=fr)["roc_auc"])


def test_bad_inputs_are_typed_errors():
    with pytest.raises(ShapeError, match="y_true has 2 elements but y_score has 3"):
        M.roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="only 0 and 1, found 2"):
        M.precision_recall_f1([0, 2], [0.1, 0.2])
    with pytest.raises(InputError, match="finite"):
        M.roc_auc([0, 1], [0.1, float("inf")])
    with pytest.raises(ShapeError, match="probs\\[0\\] has 3 elements but labels\\[0\\] has 2"):
        M.vad_metrics([np.zeros(3)], [np.zeros(2)])
    with pytest.raises(ShapeError, match="2 probability arrays but 1 label arrays"):
        M.vad_metrics([np.zeros(3), np.zeros(3)], [np.zeros(3)])
    with pytest.raises(InputError, match="frame_rate must be > 0"):
        M.vad_metrics([np.zeros(3)], [np.zeros(3)], frame_rate=0)
    with pytest.raises(ShapeError, match="1-D"):
        M.accuracy(np.zeros((2, 2)), np.zeros((2, 2)))


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(M, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


@settings(max_examples=200, deadline=None)
@given(scores_and_labels)
def test_best_f1_matches_sklearn_precision_recall_curve(data):
    y, s = np.array(data[0]), np.array(data[1], dtype=np.float64)
    if not y.any():
        with pytest.raises(InputError):
            M.best_f1(y, s)
        return
    p, r, thr = skm.precision_recall_curve(y, s)
    f = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)[:-1]  # last point has no threshold
    f1, t = M.best_f1(y, s)
    assert f1 == pytest.approx(f.max(), abs=1e-12)
    # The threshold reproduces that F1 through sklearn's own f1_score.
    assert skm.f1_score(y, (s >= t).astype(int)) == pytest.approx(f1, abs=1e-12)
    assert t == max(thr[np.isclose(f, f.max(), rtol=0, atol=1e-12)])  # ties: the highest threshold


def test_best_f1_hand_checked():
    # Thresholds 0.8: tp 1, F1 2/3; 0.4: tp 1, fp 1, F1 1/2; 0.35: tp 2, fp 1, F1 4/5; 0.1: F1 2/3.
    assert M.best_f1([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == (0.8, 0.35)
