"""Classification report on hand-checkable examples, confusion JSON/PNG files and DVC plot rows."""

from __future__ import annotations

import collections
import json

import pytest
from PIL import Image

from acneops.core.errors import AcneopsError
from acneops.metrics.classification import (
    classification_report,
    confusion_counts,
    confusion_figure,
    confusion_plot_rows,
    save_confusion_matrix,
)


def _binary_example():
    """20 images: 10 acne (8 found: TP=8, FN=2), 10 healthy (7 right: TN=7, FP=3)."""
    y_true = ["acne"] * 10 + ["healthy"] * 10
    y_pred = ["acne"] * 8 + ["healthy"] * 2 + ["healthy"] * 7 + ["acne"] * 3
    return y_true, y_pred


def test_binary_report_by_hand():
    y_true, y_pred = _binary_example()
    rep = classification_report(y_true, y_pred, labels=["healthy", "acne"], positive="acne")
    assert rep["confusion_matrix"] == [[7, 3], [2, 8]]  # rows true (healthy, acne), columns predicted
    assert rep["accuracy"] == pytest.approx(15 / 20)
    assert rep["sensitivity"] == pytest.approx(8 / 10)  # TP / (TP + FN)
    assert rep["specificity"] == pytest.approx(7 / 10)  # TN / (TN + FP)
    acne = rep["per_class"]["acne"]
    assert acne["precision"] == pytest.approx(8 / 11) and acne["recall"] == pytest.approx(0.8)
    assert acne["f1"] == pytest.approx(16 / 21) and acne["support"] == 10
    healthy = rep["per_class"]["healthy"]
    assert healthy["precision"] == pytest.approx(7 / 9) and healthy["recall"] == pytest.approx(0.7)
    assert rep["macro"]["recall"] == pytest.approx((0.8 + 0.7) / 2)
    assert rep["macro"]["f1"] == pytest.approx((16 / 21 + 14 / 19) / 2)
    # the positive class decides which rate is which
    flipped = classification_report(y_true, y_pred, labels=["healthy", "acne"], positive="healthy")
    assert (flipped["sensitivity"], flipped["specificity"]) == pytest.approx((0.7, 0.8))
    default = classification_report(y_true, y_pred, labels=["healthy", "acne"])
    assert default["positive"] == "acne" and default["sensitivity"] == pytest.approx(0.8)


def test_multiclass_with_indices_and_missing_prediction():
    labels = ["mild", "moderate", "severe"]
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 1, 1]  # 'severe' never predicted
    rep = classification_report(y_true, y_pred, labels)
    assert rep["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 2, 0]]
    assert rep["accuracy"] == pytest.approx(3 / 6)
    assert rep["per_class"]["severe"]["precision"] == 0.0  # zero_division=0, no crash
    assert rep["per_class"]["moderate"]["precision"] == pytest.approx(2 / 5)
    assert rep["per_class"]["moderate"]["specificity"] == pytest.approx(1 / 4)  # TN=1 of 4 non-moderate
    assert rep["per_class"]["mild"]["specificity"] == pytest.approx(1.0)
    assert rep["macro"]["precision"] == pytest.approx((1.0 + 0.4 + 0.0) / 3)
    assert "sensitivity" not in rep and rep["positive"] is None
    assert classification_report([l for l in labels for _ in range(2)],
                                 [labels[i] for i in y_pred], labels)["confusion_matrix"] == rep["confusion_matrix"]


def test_bad_inputs_name_the_row_and_value():
    with pytest.raises(AcneopsError, match=r"y_pred\[1\] = 'acme'"):
        classification_report(["acne", "acne"], ["acne", "acme"], ["healthy", "acne"])
    with pytest.raises(AcneopsError, match="equally long"):
        classification_report(["acne"], [], ["healthy", "acne"])
    with pytest.raises(AcneopsError, match="positive class"):
        classification_report(["acne"], ["acne"], ["healthy", "acne"], positive="severe")
    with pytest.raises(AcneopsError, match=r"y_true\[0\] = 5"):
        classification_report([5], [0], ["healthy", "acne"])


def test_confusion_files_and_dvc_rows(tmp_path):
    rep = classification_report(*_binary_example(), labels=["healthy", "acne"], positive="acne")
    save_confusion_matrix(rep, tmp_path / "cm.json", tmp_path / "cm.png")
    saved = json.loads((tmp_path / "cm.json").read_text())
    assert saved["labels"] == ["healthy", "acne"] and saved["confusion_matrix"] == [[7, 3], [2, 8]]
    with Image.open(tmp_path / "cm.png") as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100
        assert not {"Software", "exif", "icc_profile"} & set(im.info)  # metadata stripped
    first = (tmp_path / "cm.png").read_bytes()
    save_confusion_matrix(rep, tmp_path / "cm.json", tmp_path / "cm.png")
    assert (tmp_path / "cm.png").read_bytes() == first  # same report, same bytes (stable for DVC)
    assert not list(tmp_path.glob("*.tmp"))

    rows = confusion_plot_rows(rep)
    assert len(rows) == 20 and set(rows[0]) == {"actual", "predicted"}
    counted = collections.Counter((r["actual"], r["predicted"]) for r in rows)  # what DVC's template does
    assert {(c["actual"], c["predicted"]): c["count"] for c in confusion_counts(rep)} == {
        ("healthy", "healthy"): 7, ("healthy", "acne"): 3, ("acne", "healthy"): 2, ("acne", "acne"): 8}
    assert counted == {(c["actual"], c["predicted"]): c["count"] for c in confusion_counts(rep) if c["count"]}


def test_confusion_png_shows_every_class_and_count_and_the_json_is_unchanged(tmp_path):
    """The PNG is scikit-learn's ConfusionMatrixDisplay of the report (classes on both axes, one count per
    cell); the JSON keeps the layout the dvc plots and reports read."""
    labels = ["healthy", "mild", "moderate", "severe"]
    rep = classification_report(["healthy", "mild", "mild", "moderate", "severe", "severe"],
                                ["healthy", "mild", "moderate", "moderate", "moderate", "severe"], labels)
    save_confusion_matrix(rep, tmp_path / "cm.json", tmp_path / "cm.png")
    cm = [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    assert json.loads((tmp_path / "cm.json").read_text()) == {
        "labels": labels, "confusion_matrix": cm, "rows": "true class", "columns": "predicted class",
        "counts": [{"actual": a, "predicted": p, "count": cm[i][j]}
                   for i, a in enumerate(labels) for j, p in enumerate(labels)]}
    fig = confusion_figure(rep)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == labels  # columns: predicted
    assert [t.get_text() for t in ax.get_yticklabels()] == labels  # rows: true
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(i, j): str(cm[i][j]) for i in range(4) for j in range(4)}
    width, height = fig.canvas.get_width_height()
    with Image.open(tmp_path / "cm.png") as im:
        assert im.format == "PNG" and im.size == (width, height) and im.mode == "RGB"
