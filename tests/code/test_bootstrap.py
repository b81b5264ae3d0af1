"""Bootstrap intervals of the classifier figures (acneops.metrics.bootstrap): the point figures are the report's,
intervals are deterministic and shrink with more test images, and paired scenario differences say "not
distinguishable" exactly when their interval contains 0."""

from __future__ import annotations

import numpy as np
import pytest

from acneops.metrics.bootstrap import intervals
from acneops.metrics.classification import classification_report

LABELS = ["healthy", "mild", "moderate", "severe"]


def _draw(n: int, accuracy: float, seed: int) -> tuple[list[str], list[str]]:
    """n test images, a classifier right with probability ``accuracy``, otherwise a uniformly wrong class."""
    rng = np.random.default_rng(seed)
    y_true = [LABELS[i % 4] for i in range(n)]
    y_pred = [t if rng.random() < accuracy else rng.choice([c for c in LABELS if c != t]) for t in y_true]
    return y_true, [str(p) for p in y_pred]


def test_intervals_hold_the_report_figures_and_shrink_with_more_images():
    y_true, y_pred = _draw(120, 0.7, 0)
    out = intervals({"real": (y_true, y_pred, LABELS)}, n=2000, seed=0)
    report = classification_report(y_true, y_pred, LABELS)
    acc, f1 = out["classifiers"]["real"]["accuracy"], out["classifiers"]["real"]["macro_f1"]
    assert acc[0] < report["accuracy"] < acc[1] and f1[0] < report["macro"]["f1"] < f1[1]
    assert 0.1 < acc[1] - acc[0] < 0.25  # about 4 binomial SDs of 0.042 at n = 120
    big_true, big_pred = _draw(1200, 0.7, 0)
    big = intervals({"real": (big_true, big_pred, LABELS)}, n=2000, seed=0)["classifiers"]["real"]["accuracy"]
    assert big[1] - big[0] < (acc[1] - acc[0]) / 2.5  # sqrt(10) narrower, give or take
    assert intervals({"real": (y_true, y_pred, LABELS)}, n=2000, seed=0) == out  # same seed, same intervals
    assert intervals({"real": (y_true, y_pred, LABELS)}, n=2000, seed=1) != out


def test_paired_differences_are_read_as_the_interval_says():
    y_true, y_pred = _draw(120, 0.7, 0)
    _, better = _draw(120, 0.98, 1)
    _, same_ish = _draw(120, 0.7, 2)  # another classifier of the same skill
    out = intervals({"real": (y_true, y_pred, LABELS), "augmented": (y_true, better, LABELS),
                     "synthetic": (y_true, same_ish, LABELS), "copy": (y_true, y_pred, LABELS)}, n=2000, seed=0,
                    pairs=[("augmented", "real"), ("synthetic", "real"), ("copy", "real")])
    pairs = out["pairs"]
    assert pairs["augmented_minus_real"]["accuracy"]["distinguishable"]
    assert pairs["augmented_minus_real"]["accuracy"]["ci95"][0] > 0
    assert not pairs["synthetic_minus_real"]["macro_f1"]["distinguishable"]
    lo, hi = pairs["synthetic_minus_real"]["macro_f1"]["ci95"]
    assert lo < 0 < hi
    # a classifier compared with itself: paired resamples cancel exactly
    assert pairs["copy_minus_real"]["accuracy"]["ci95"] == [0.0, 0.0]
    assert pairs["copy_minus_real"]["accuracy"]["ratio"] == 1.0
    assert not pairs["copy_minus_real"]["accuracy"]["distinguishable"]


def test_unpaired_or_unknown_inputs_are_refused():
    y_true, y_pred = _draw(20, 0.7, 0)
    other_true, other_pred = _draw(21, 0.7, 0)
    with pytest.raises(ValueError, match="not scored on the same test images"):
        intervals({"a": (y_true, y_pred, LABELS), "b": (other_true, other_pred, LABELS)}, 100, 0, [("a", "b")])
    with pytest.raises(ValueError, match=r"classes \['acne'\] are not among the labels"):
        intervals({"a": (y_true, ["acne"] * 20, LABELS)}, 100, 0)


def test_interval_of_a_seed_mean_covers_the_true_value_at_its_nominal_rate():
    """Classifiers of known skill (0.6 and 0.8, so the true seed-mean accuracy is 0.7): over 60 fresh test sets the
    95% interval of the seed mean covers 0.7 about 95% of the time, and its point figure is the mean of the seeds'."""
    covered = 0
    for rep in range(60):
        y_true, weak = _draw(200, 0.6, 1000 + rep)
        _, strong = _draw(200, 0.8, 2000 + rep)
        out = intervals({"two_seeds": (y_true, [weak, strong], LABELS)}, n=500, seed=rep)
        lo, hi = out["classifiers"]["two_seeds"]["accuracy"]
        covered += lo <= 0.7 <= hi
        if rep == 0:
            mean = (classification_report(y_true, weak, LABELS)["accuracy"]
                    + classification_report(y_true, strong, LABELS)["accuracy"]) / 2
            assert lo < mean < hi
    assert covered >= 51  # 95% nominal: 57 of 60 expected, 51 is ~3 binomial SDs below


def test_seed_lists_pair_like_single_predictions_and_identical_ones_give_zero():
    y_true, a0 = _draw(120, 0.7, 0)
    _, a1 = _draw(120, 0.7, 1)
    _, b0 = _draw(120, 0.9, 2)
    out = intervals({"a": (y_true, [a0, a1], LABELS), "same": (y_true, [a0, a1], LABELS),
                     "b": (y_true, [b0], LABELS), "b_flat": (y_true, b0, LABELS)}, n=1000, seed=0,
                    pairs=[("same", "a"), ("b", "a"), ("b_flat", "b")])
    assert out["pairs"]["same_minus_a"]["accuracy"]["ci95"] == [0.0, 0.0]
    assert out["pairs"]["b_flat_minus_b"]["macro_f1"]["ci95"] == [0.0, 0.0]  # one seed as a list = a flat list
    assert out["pairs"]["b_minus_a"]["accuracy"]["distinguishable"]
    with pytest.raises(ValueError, match="120 test images"):
        intervals({"a": (y_true, [a0, a1[:-1]], LABELS)}, 10, 0)
