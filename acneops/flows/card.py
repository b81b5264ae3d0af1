"""The dataset card of a regenerated dataset (the model card's fields, for data: what it is, where it comes from,
how it was filtered, how good it is, what it may be used for) and the markdown a Prefect artifact shows."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

from acneops.flows.datasets import Champion

INTENDED_USE = ("Research: training and testing classifiers on synthetic faces of each class, and sharing a dataset "
                "without sharing patients' photographs. Not for diagnosing a patient.")
LIMITS = ("Drawn from generators trained at low resolution on a small dataset: images carry generator artefacts and "
          "the labels are the generators' classes (class fidelity below says how often an independent classifier "
          "agrees). Anonymity is audited against every real train image by pixel and feature distance; it is not a "
          "face-identity audit.")


def dataset_card(name: str, seed: int, champions: dict[str, Champion], result: Any, measured: dict[str, Any],
                 checks: dict[str, Any], params: dict[str, Any], rows: list[dict[str, str]], run_id: str) -> dict:
    """Everything a user of the dataset needs to trust or reject it, as JSON."""
    from acneops.tracking.lineage import data_md5, git_commit

    root = Path.cwd()
    synth = params.get("synthesize") or {}
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    return {
        "dataset": name,
        "what": (f"{sum(counts.values())} synthetic face images (PNG, no metadata) of classes {sorted(counts)}, "
                 "each drawn by its class's registered generator from a recorded seed."),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "psi": synth.get("psi"),
        "counts": counts,
        "models": {c: {"model": ch.model, "version": ch.version, "uri": ch.uri, "sha256": ch.sha256,
                       "training_run": ch.run_id} for c, ch in champions.items()},
        "anonymity": {c: {k: r[k] for k in ("requested", "exported", "generated", "flagged", "flag_rate",
                                            "flagged_exact_pixels", "rejected_class_filter", "rounds", "shortfall")}
                      | {"summary": r["audit"]["summary"], "feature_space": r["audit"]["feature_space"]}
                      for c, r in result.classes.items()},
        "anonymity_filter": "every image audited against every real train image (pixel and feature nearest neighbours, "
                            "thresholds of params `audit`); flagged images were never written",
        "quality": {c: {**measured[c], "checks": checks.get(c, {})} for c in measured},
        "real_reference": {"split": "train (the frozen test split is never read)",
                           "restored_dir": str(synth.get("restored_dir", "datasets/restored"))},
        "lineage": {"git_commit": git_commit(root), "data_md5": data_md5(root), "mlflow_run": run_id},
        "intended_use": INTENDED_USE,
        "limits": LIMITS,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _table(card: dict[str, Any]) -> list[str]:
    header = ("| class | images | model | generated | flagged | class filter rejected | FD | champion FD | FD limit "
              "| model-card FD | class fidelity | champion fidelity |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c, n in card["counts"].items():
        a, q, m = card["anonymity"][c], card["quality"][c], card["models"][c]
        fd = q["checks"].get("fd", {})
        lines.append(f"| {c} | {n} | {m['model']} v{m['version']} | {a['generated']} | {a['flagged']} | "
                     f"{a['rejected_class_filter']} | {_fmt(q['fd'])} | {_fmt(q['champion_fd'])} | "
                     f"{_fmt(fd.get('limit')) or '-'} | {_fmt(q['card_fd']) or '-'} | {_fmt(q['class_fidelity']) or '-'} "
                     f"| {_fmt(q['champion_class_fidelity']) or '-'} |")
    return lines


NOTE = ("FD and class fidelity: in evaluate's feature space against the real train images of the class. 'champion' is "
        "the same generator measured now on as many unfiltered images at evaluate's seeds, the worst of its draws (FD "
        "grows as the count shrinks and varies with the seeds, so only equal counts compare); 'model-card FD' is the figure registered with the version, over "
        "its own count. When the class filter is the fidelity judge, the exported set's fidelity is 1 by construction and is not checked.")


def card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Dataset card: {card['dataset']}", "", card["what"], "",
             f"Created {card['created_utc']} from seed {card['seed']} (psi {_fmt(card['psi'])}).", "",
             "## Classes, models, anonymity filter and quality", "", *_table(card), "", NOTE, "",
             f"Anonymity filter: {card['anonymity_filter']}.", "",
             "## Real reference", "", f"- {card['real_reference']['split']}, {card['real_reference']['restored_dir']}",
             "", "## Lineage", ""]
    lines += [f"- {k}: {v}" for k, v in card["lineage"].items()]
    lines += ["", "## Intended use", "", card["intended_use"], "", "## Known limits", "", card["limits"], ""]
    return "\n".join(lines)


def artifact_markdown(folder: Path, card: dict[str, Any]) -> str:
    """What the Prefect UI shows for a run: where the dataset is, its table, and a grid of its first images."""
    lines = [f"# Regenerated dataset `{folder.name}`", "", f"Folder: `{folder}`  ", f"Seed: {card['seed']}  ",
             f"MLflow run: `{card['lineage']['mlflow_run']}`", "", *_table(card), ""]
    grid = folder / "samples.png"
    if grid.is_file():
        data = base64.b64encode(grid.read_bytes()).decode()
        lines += ["Samples (first images of each class, one row per class):", "",
                  f"![samples](data:image/png;base64,{data})", ""]
    return "\n".join(lines)
