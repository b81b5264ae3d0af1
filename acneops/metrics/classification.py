"""Classification metrics: one report function for every classifier and scenario (real, synthetic, augmented).

The report holds accuracy, per-class and macro precision / recall / F1 (scikit-learn,
``zero_division=0``, macro over *all* listed classes), per-class specificity (one-vs-rest),
sensitivity and specificity of a positive class (binary tasks: default the second label, as
scikit-learn's ``pos_label``), support counts and the confusion matrix (rows = true, columns =
predicted). The DCGAN acne paper reports accuracy, sensitivity and specificity; the hierarchical
StyleGAN2 paper reports accuracy — both are read off this one report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from acneops.core.errors import AcneopsError
from acneops.core.io import save_png, write_json


def _as_indices(values: Sequence[Any], labels: list[str], what: str) -> np.ndarray:
    """Class names (or integer indices into ``labels``) -> int indices; unknown values are an error."""
    index = {name: i for i, name in enumerate(labels)}
    out = np.empty(len(values), dtype=np.int64)
    for row, v in enumerate(values):
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            if not 0 <= int(v) < len(labels):
                raise AcneopsError(f"{what}[{row}] = {v}: class index out of range 0..{len(labels) - 1}")
            out[row] = int(v)
        elif str(v) in index:
            out[row] = index[str(v)]
        else:
            raise AcneopsError(f"{what}[{row}] = {v!r}: not one of the labels {labels}")
    return out


def _binary_rates(cm: np.ndarray, pos: int) -> tuple[float, float]:
    """(sensitivity, specificity) of class ``pos`` against the rest; 0 when undefined."""
    tp = cm[pos, pos]
    fn = cm[pos].sum() - tp
    fp = cm[:, pos].sum() - tp
    tn = cm.sum() - tp - fn - fp
    sens = tp / (tp + fn) if tp + fn else 0.0
    spec = tn / (tn + fp) if tn + fp else 0.0
    return float(sens), float(spec)


def classification_report(y_true: Sequence[Any], y_pred: Sequence[Any], labels: list[str],
                          positive: str | None = None) -> dict[str, Any]:
    """Metrics of predictions ``y_pred`` against ``y_true`` (class names or indices into ``labels``)."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    labels = [str(x) for x in labels]
    if not labels or len(set(labels)) != len(labels):
        raise AcneopsError(f"labels must be a non-empty list of distinct class names, got {labels}")
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise AcneopsError(f"y_true and y_pred must be non-empty and equally long, got {len(y_true)} and {len(y_pred)}")
    if positive is None and len(labels) == 2:
        positive = labels[1]
    if positive is not None and positive not in labels:
        raise AcneopsError(f"positive class {positive!r} is not one of the labels {labels}")
    t, p = _as_indices(y_true, labels, "y_true"), _as_indices(y_pred, labels, "y_pred")
    ks = list(range(len(labels)))
    cm = confusion_matrix(t, p, labels=ks)
    prec, rec, f1, support = precision_recall_fscore_support(t, p, labels=ks, zero_division=0)
    macro = precision_recall_fscore_support(t, p, labels=ks, average="macro", zero_division=0)
    per_class = {
        name: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
               "specificity": _binary_rates(cm, i)[1], "support": int(support[i])}
        for i, name in enumerate(labels)
    }
    report: dict[str, Any] = {
        "labels": labels,
        "n": int(len(t)),
        "accuracy": float(accuracy_score(t, p)),
        "macro": {"precision": float(macro[0]), "recall": float(macro[1]), "f1": float(macro[2])},
        "per_class": per_class,
        "confusion_matrix": cm.astype(int).tolist(),
        "positive": positive,
    }
    if positive is not None:
        report["sensitivity"], report["specificity"] = _binary_rates(cm, labels.index(positive))
    return report


def confusion_counts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (actual, predicted) cell: ``{actual, predicted, count}`` (tables, MLflow)."""
    labels = report["labels"]
    return [{"actual": a, "predicted": labels[j], "count": int(c)}
            for i, a in enumerate(labels) for j, c in enumerate(report["confusion_matrix"][i])]


def confusion_plot_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One ``{actual, predicted}`` row per sample, the input of DVC's ``confusion`` plot template.

    DVC's template aggregates rows with ``count`` itself (a ``count`` field would be ignored), so
    the matrix is expanded back into rows, ordered by actual then predicted class.
    """
    return [{"actual": cell["actual"], "predicted": cell["predicted"]}
            for cell in confusion_counts(report) for _ in range(cell["count"])]


def save_confusion_matrix(report: dict[str, Any], json_path: str | Path, png_path: str | Path) -> None:
    """Write the confusion matrix as JSON (labels, matrix rows = true, cell counts) and as a PNG heat map."""
    write_json(json_path, {
        "labels": report["labels"],
        "confusion_matrix": report["confusion_matrix"],
        "rows": "true class",
        "columns": "predicted class",
        "counts": confusion_counts(report),
    })
    save_png(png_path, _render(confusion_figure(report)))


def confusion_figure(report: dict[str, Any]) -> Any:
    """The confusion heat map of ``report``: scikit-learn's ``ConfusionMatrixDisplay`` on a matplotlib
    ``Figure`` with its own Agg canvas (no pyplot figure, no global state), rows = true class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    labels = report["labels"]
    size = 1.2 + 0.9 * len(labels)
    fig = Figure(figsize=(size + 1.2, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cm = np.asarray(report["confusion_matrix"], dtype=np.int64)
    ConfusionMatrixDisplay(cm, display_labels=labels).plot(ax=ax, cmap="Blues", xticks_rotation=45,
                                                           values_format="d")
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    fig.tight_layout()
    return fig


def _render(fig: Any) -> Any:
    """A matplotlib figure drawn on its Agg canvas, as an RGB PIL image."""
    from PIL import Image

    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
