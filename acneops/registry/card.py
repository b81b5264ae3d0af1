"""Model cards of registered versions (Mitchell et al. 2019, "Model Cards for Model Reporting"; the fields medical
model zoos ship): what the model does, what it was trained on (digest and per-class counts), its params, lineage,
quality and anonymity figures, the registry decision, intended use and known limits. The JSON goes to MLflow as an
artifact of the `register` run and into reports/registry.json; the markdown is the version's description."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from acneops.core.io import sha256_file

INTENDED_USE = {
    "generator": ("Research: drawing synthetic training images of one class for classifiers that are then tested "
                  "on real images; sharing a dataset without sharing patients' photographs."),
    "classifier": ("Research: measuring how useful a synthetic dataset is (train on synthetic or real + synthetic, "
                   "test on real). Not a medical device; not for diagnosing a patient."),
}
LIMITS = {
    "generator": ("Trained at low resolution on a small dataset; images can carry generator artefacts a classifier "
                  "may learn. Anonymity is audited against the training images by pixel and feature distance and "
                  "membership inference, and by face identity (dlib embeddings) only where dlib finds faces in the "
                  "real train images: see the identity_flagged gate. Check the class fidelity before relying on "
                  "labels."),
    "classifier": ("Scored on a small frozen test split from the same source as its training data: the 95% "
                   "intervals are wide, and performance on other cameras, skin types or clinics is unmeasured."),
}


def _class_counts(restored_dir: Path, labels: list[str]) -> tuple[dict[str, int], str]:
    """Per-class counts of the real train split restricted to ``labels``, and its manifest's sha256."""
    from acneops.data.access import MANIFEST, load_split

    counts = Counter(s.label for s in load_split(restored_dir, "train", role="evaluate") if s.label in labels)
    return dict(sorted(counts.items())), sha256_file(restored_dir / "train" / MANIFEST)


def training_data(kind: str, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint was trained on, from its own stored config: sources, per-class counts, digests."""
    config = ckpt.get("config") or {}
    restored = Path(str(config.get("restored_dir", "datasets/restored")))
    out: dict[str, Any] = {}
    try:
        if kind == "generator" and config.get("image_dir"):
            manifest = Path(str(config["image_dir"])) / "manifest.csv"
            out = {"source": str(config["image_dir"]), "digest": sha256_file(manifest) if manifest.is_file() else None,
                   "images": ckpt.get("num_images")}
        elif kind == "generator":
            counts, digest = _class_counts(restored, [str(c) for c in config.get("labels") or []])
            out = {"source": f"{restored}/train (real)", "digest": digest, "per_class": counts,
                   "images": ckpt.get("num_images")}
        else:
            labels = [str(c) for c in ckpt["model_args"].get("labels") or []]
            if config.get("real_train", True):
                counts, digest = _class_counts(restored, labels)
                fraction = float(config.get("real_fraction", 1.0))
                out["real"] = {"source": f"{restored}/train", "digest": digest, "per_class": counts,
                               "fraction_used": fraction}
            if config.get("synthetic_dir"):
                manifest = Path(str(config["synthetic_dir"])) / "manifest.csv"
                out["synthetic"] = {"source": str(config["synthetic_dir"]),
                                    "digest": sha256_file(manifest) if manifest.is_file() else None,
                                    "per_class_cap": config.get("synthetic_per_class")}
    except Exception as exc:  # a moved dataset must not block a card: say what is unknown
        out["unknown"] = f"{type(exc).__name__}: {exc}"
    return out


def model_card(kind: str, key: str, model: str, version: str, checkpoint: Path, ckpt: dict[str, Any],
               lineage: dict[str, Any], figures: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    """The card of one registered version as plain data."""
    args = ckpt.get("model_args") or {}
    if kind == "generator":
        res = (args.get("G") or {}).get("img_resolution")
        what = f"Generates {res}x{res} RGB synthetic face images of class '{key}' from an integer seed ({ckpt.get('family')})."
    else:
        what = (f"Predicts one of {list(args.get('labels') or [])} from an RGB face image (resized to "
                f"{args.get('img_size')} px; {args.get('arch')}), scenario '{key}'.")
    config = ckpt.get("config") or {}
    return {
        "model": model, "version": version, "kind": kind, "what": what,
        "training_data": training_data(kind, ckpt),
        "params": {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool)) or v is None},
        "lineage": {**lineage, "checkpoint_sha256": sha256_file(checkpoint), "parent_checkpoint": config.get("resume_from")},
        "figures": figures, "decision": decision,
        "intended_use": INTENDED_USE[kind], "limits": LIMITS[kind],
    }


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def card_markdown(card: dict[str, Any]) -> str:
    """The card as the markdown a registry page shows."""
    d = card["decision"]
    lines = [f"# {card['model']} v{card['version']}", "", card["what"], "",
             f"**Decision: {d['alias']}**: " + ("passed every gate." if d["passed"] else
                                               "failed: " + ", ".join(d["failed"]) + "."), "", "## Gates", "",
             "| gate | value | champion | limit | passed |", "|---|---|---|---|---|"]
    for name, g in d["gates"].items():
        lines.append(f"| {name} | {_fmt(g.get('value', g.get('ci95')))} | {_fmt(g.get('champion', ''))} | "
                     f"{g['limit']} | {'yes' if g['passed'] else 'no'} |")
    lines += ["", "## Figures", ""] + [f"- {k}: {_fmt(v)}" for k, v in card["figures"].items()]
    lines += ["", "## Training data", ""] + [f"- {k}: {_fmt(v)}" for k, v in card["training_data"].items()]
    lines += ["", "## Lineage", ""] + [f"- {k}: {_fmt(v)}" for k, v in card["lineage"].items()]
    lines += ["", "## Intended use", "", card["intended_use"], "", "## Known limits", "", card["limits"], ""]
    return "\n".join(lines)
