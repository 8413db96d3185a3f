"""Our implementation of NAB's scoring rules, on cases small enough to compute by hand."""

import math

import numpy as np
import pytest

from metrics_pipeline.lib.anomalies import nab

STD = nab.PROFILES["standard"]


def _stamps(n: int) -> list[str]:
    return [f"2024-01-01 {i // 60:02d}:{i % 60:02d}:00" for i in range(n)]


def test_the_scaled_sigmoid_and_the_probationary_period():
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # 0.98661
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(3.0) == -1.0 and nab.scaled_sigmoid(10) == -1.0
    assert nab.probationary_length(100) == 15 and nab.probationary_length(4032) == 604
    assert nab.probationary_length(22695) == 750


def test_a_hand_computed_file():
    # 100 rows, probation 15 rows; one window on rows 40..49 (width 10).
    ts = _stamps(100)
    windows = [[ts[40] + ".000000", ts[49] + ".000000"]]
    scores = np.zeros(100)
    scores[10] = 0.9  # probationary: counts neither way
    scores[20] = 0.8  # before any window: -fp
    scores[42] = 0.7  # in the window, x = -(49 - 42 + 1) / 10 = -0.8
    scores[45] = 0.95  # later in the window: worth less, only the best counts
    scores[52] = 0.6  # 3 rows after the window: x = 3 / 9
    f = nab.prepare_file("f", ts, scores, windows, STD)
    s = nab.scaled_sigmoid
    tp_42 = s(-0.8) / s(-1.0)
    fp_52 = 0.11 * s(3 / 9)
    raw, detected, fps, _ = nab.score_at([f], STD, 0.6)
    assert raw == pytest.approx(-0.11 + tp_42 + fp_52)
    assert (detected, fps) == (1, 2)
    # At 0.9 only row 45 (in the window) is detected: x = -(49 - 45 + 1) / 10 = -0.5.
    assert nab.score_at([f], STD, 0.9)[0] == pytest.approx(s(-0.5) / s(-1.0))
    # Above every score: the window is missed.
    assert nab.score_at([f], STD, 0.99)[0] == pytest.approx(-1.0)


def test_the_sweep_equals_direct_scoring_at_every_threshold():
    rng = np.random.default_rng(3)
    files = []
    for k in range(4):
        n = 400
        ts = _stamps(n)
        a = int(rng.integers(80, 300))
        windows = [[ts[a], ts[a + 40]]] if k else []
        scores = np.round(rng.random(n) ** 8, 2)  # many ties
        for profile in nab.PROFILES.values():
            files.append((profile, nab.prepare_file(f"f{k}", ts, scores, windows, profile)))
    for profile in nab.PROFILES.values():
        prepared = [f for p, f in files if p is profile]
        thresholds, totals = nab.sweep(prepared, profile)
        assert thresholds[0] == math.inf
        for threshold, total in zip(thresholds, totals):
            assert total == pytest.approx(nab.score_at(prepared, profile, threshold)[0])


def test_null_scores_zero_and_perfect_scores_one_hundred_in_every_profile():
    ts = _stamps(300)
    labels = {"a": [[ts[100], ts[129]]], "b": [[ts[60], ts[69]], [ts[200], ts[219]]], "c": []}
    null = {k: (ts, np.zeros(300)) for k in labels}
    perfect = {k: (ts, np.isin(ts, [w[0] for w in v]).astype(float)) for k, v in labels.items()}
    for profile in nab.PROFILES.values():
        assert nab.score_corpus(null, labels, profile).normalised == 0.0
        assert nab.score_corpus(perfect, labels, profile).normalised == pytest.approx(100.0)


def test_the_threshold_is_the_corpus_best_and_a_late_detection_is_worth_less():
    ts = _stamps(300)
    labels = {"a": [[ts[100], ts[139]]]}
    early = np.zeros(300)
    early[105] = 0.5
    late = np.zeros(300)
    late[135] = 0.5
    e = nab.score_corpus({"a": (ts, early)}, labels, STD)
    lt = nab.score_corpus({"a": (ts, late)}, labels, STD)
    assert e.threshold == 0.5 and e.detected == 1
    assert 0 < lt.normalised < e.normalised < 100


def test_a_window_must_start_and_end_on_rows_of_the_file():
    with pytest.raises(ValueError, match="does not start and end"):
        nab.prepare_file("f", _stamps(50), np.zeros(50), [["2030-01-01 00:00:00", "2030-01-02 00:00:00"]], STD)
