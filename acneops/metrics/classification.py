"""Classification metrics: one report function for every classifier and scenario (real, synthetic, augmented).

The report holds accuracy, per-class and macro precision / recall / F1 (scikit-learn,
``zero_division=0``, macro over *all* listed classes), per-class specificity (one-vs-rest),
sensitivity and specificity of a positive class (binary tasks: default the second label, as
scikit-learn's ``pos_label``), support counts and the confusion matrix (rows = true, columns =
predicted). The DCGAN acne paper reports accuracy, sensitivity and specificity; the hierarchical
StyleGAN2 paper reports accuracy — both are read off this one report.
"""

from __future__ import annotations

import io
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
    cm = np.asarray(report["confusion_matrix"], dtype=np.int64)
    try:
        image = _render_matplotlib(cm, report["labels"])
    except ImportError:  # matplotlib is optional (it comes with mlflow); Pillow is always there
        image = _render_pillow(cm, report["labels"])
    save_png(png_path, image)


def _render_matplotlib(cm: np.ndarray, labels: list[str]) -> Any:
    """The confusion heat map drawn with matplotlib's Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    size = 1.2 + 0.9 * len(labels)
    fig = Figure(figsize=(size + 1.2, size), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax)
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title="confusion matrix")
    ax.tick_params(axis="x", labelrotation=45)
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), c in np.ndenumerate(cm):
        ax.text(j, i, str(c), ha="center", va="center", color="white" if c > threshold else "black")
    fig.tight_layout()
    canvas.draw()
    buf = io.BytesIO(bytes(canvas.buffer_rgba()))
    w, h = canvas.get_width_height()
    return Image.frombuffer("RGBA", (w, h), buf.getvalue(), "raw", "RGBA", 0, 1).convert("RGB")


def _render_pillow(cm: np.ndarray, labels: list[str]) -> Any:
    """A plain grid with counts (shade = count / max) for machines without matplotlib."""
    from PIL import Image, ImageDraw

    cell, margin = 60, 110
    k = len(labels)
    img = Image.new("RGB", (margin + cell * k + 10, margin + cell * k + 10), "white")
    draw = ImageDraw.Draw(img)
    top = max(int(cm.max()), 1)
    for (i, j), c in np.ndenumerate(cm):
        shade = int(255 - 200 * c / top)
        x0, y0 = margin + j * cell, margin + i * cell
        draw.rectangle([x0, y0, x0 + cell, y0 + cell], fill=(shade, shade, 255), outline="black")
        draw.text((x0 + cell // 3, y0 + cell // 3), str(c), fill="black")
    for n, name in enumerate(labels):
        draw.text((4, margin + n * cell + cell // 3), name[:16], fill="black")  # rows: true
        draw.text((margin + n * cell + 4, margin - 20), name[:9], fill="black")  # columns: predicted
    draw.text((4, 4), "rows: true, columns: predicted", fill="black")
    return img
