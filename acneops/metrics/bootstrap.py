"""Bootstrap intervals over test images: how far a classifier's accuracy and macro-F1 could move with another draw
of the same number of test images, and whether two classifiers scored on the same images can be told apart.

Percentile bootstrap (Efron & Tibshirani 1993, ch. 13): ``n`` resamples of the N test images with replacement,
the statistic on each, the 2.5th and 97.5th percentiles. Differences between classifiers are *paired*: every
classifier is scored on the same resampled images, so what the images have in common cancels out. Macro-F1 is
computed as acneops.metrics.classification does (per-class F1 = 0 when a class has no true or predicted image),
averaged over the classifier's labels that have an image in the test split (a class with none, such as a prior-only
class, has no F1 to average: acneops.evaluation.classes leaves it out of the figures the same way). Deterministic
for a given ``seed``.

A classifier trained with several seeds is given as one prediction list per seed: its statistic is the mean over
the seeds on each resample, so the interval is that of the seed-averaged figure the report shows (test-image
noise), while the spread between seeds (training noise) is reported beside it as a standard deviation.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

LEVEL = 0.95


def _resampled_confusions(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str],
                          index: np.ndarray) -> np.ndarray:
    """(B, K, K) confusion counts (true, predicted) of each resample; ``index`` (B, N) picks the images."""
    k = len(labels)
    pos = {c: i for i, c in enumerate(labels)}
    unknown = sorted({c for c in [*y_true, *y_pred] if c not in pos})
    if unknown:
        raise ValueError(f"classes {unknown} are not among the labels {list(labels)}")
    codes = np.array([pos[t] * k + pos[p] for t, p in zip(y_true, y_pred)], dtype=np.int64)
    b = index.shape[0]
    flat = codes[index] + (np.arange(b, dtype=np.int64) * k * k)[:, None]
    return np.bincount(flat.ravel(), minlength=b * k * k).reshape(b, k, k)


def _accuracy(conf: np.ndarray, present: np.ndarray) -> np.ndarray:
    return np.trace(conf, axis1=1, axis2=2) / conf.sum(axis=(1, 2))


def _macro_f1(conf: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per-class F1 averaged over the ``present`` classes (K,) bool: those with an image in the whole test split."""
    tp = np.diagonal(conf, axis1=1, axis2=2).astype(float)
    denom = conf.sum(axis=1) + conf.sum(axis=2)  # (true count + predicted count) per class = 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1[:, present].mean(axis=1)


STATISTICS = {"accuracy": _accuracy, "macro_f1": _macro_f1}


def _interval(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def resample_index(n_images: int, n: int, seed: int) -> np.ndarray:
    """(n, n_images) image indices drawn with replacement; the same for every classifier scored on those images."""
    if n_images < 1 or n < 1:
        raise ValueError(f"bootstrap needs at least one image and one resample, got {n_images} images, n={n}")
    return np.random.default_rng(seed).integers(0, n_images, size=(n, n_images))


def _per_seed(y_pred: Sequence[Any]) -> list[Sequence[str]]:
    """``y_pred`` as one prediction list per seed (a flat list of class names is one seed)."""
    return [y_pred] if not y_pred or isinstance(y_pred[0], str) else list(y_pred)


def _seed_mean(y_true: Sequence[str], y_preds: list[Sequence[str]], labels: Sequence[str],
               index: np.ndarray) -> dict[str, np.ndarray]:
    """Each statistic on each resample of ``index``, averaged over the seeds' predictions."""
    stats = {s: np.zeros(index.shape[0]) for s in STATISTICS}
    present = np.array([c in set(y_true) for c in labels])  # (K,) classes with a test image
    for y_pred in y_preds:
        if len(y_pred) != len(y_true):
            raise ValueError(f"{len(y_pred)} predictions for {len(y_true)} test images")
        conf = _resampled_confusions(y_true, y_pred, labels, index)
        for s, f in STATISTICS.items():
            stats[s] += f(conf, present) / len(y_preds)
    return stats


def intervals(predictions: dict[str, tuple[list[str], Any, list[str]]], n: int, seed: int,
              pairs: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """95% intervals per classifier and per pair.

    ``predictions``: classifier -> (y_true, y_pred, labels), all on the same test images in the same order (a
    classifier of other classes, such as the sorter, gets its own resamples and no pairs); ``y_pred`` is a list
    of class names, or one such list per training seed (statistics are then seed means). ``pairs``: (a, b)
    compared as ``a - b`` (and ``a / b``) on the same resamples. Returns {"classifiers": {name: {stat: [lo, hi]}},
    "pairs": {"a_minus_b": {stat: {"difference", "ci95", "ratio", "ratio_ci95", "distinguishable"}}}, "n", "seed"}.
    """
    out: dict[str, Any] = {"n": n, "seed": seed, "level": LEVEL, "classifiers": {}, "pairs": {}}
    samples: dict[str, dict[str, np.ndarray]] = {}
    point: dict[str, dict[str, float]] = {}
    for name, (y_true, y_pred, labels) in predictions.items():
        y_preds = _per_seed(y_pred)
        samples[name] = _seed_mean(y_true, y_preds, labels, resample_index(len(y_true), n, seed))
        full = _seed_mean(y_true, y_preds, labels, np.arange(len(y_true))[None, :])
        point[name] = {s: float(v[0]) for s, v in full.items()}
        out["classifiers"][name] = {s: _interval(v) for s, v in samples[name].items()}
    for a, b in pairs:
        if a not in predictions or b not in predictions:
            continue
        if predictions[a][0] != predictions[b][0]:
            raise ValueError(f"{a} and {b} were not scored on the same test images: no paired comparison")
        entry = {}
        for s in STATISTICS:
            diff = samples[a][s] - samples[b][s]
            lo, hi = _interval(diff)
            ratio = np.divide(samples[a][s], samples[b][s], out=np.full_like(diff, np.nan), where=samples[b][s] > 0)
            entry[s] = {"difference": point[a][s] - point[b][s], "ci95": [lo, hi],
                        "ratio": point[a][s] / point[b][s] if point[b][s] > 0 else None,
                        "ratio_ci95": _interval(ratio[np.isfinite(ratio)]) if np.isfinite(ratio).any() else None,
                        "distinguishable": not (lo <= 0.0 <= hi)}
        out["pairs"][f"{a}_minus_{b}"] = entry
    return out
