"""The promotion gates of `register`: what is measured for a candidate version and its champion, and the decision.

Generators: absolute gates on the anonymity audit of the candidate's exported images (evaluate's per-class figures:
flagged near copies, membership-inference AUCs, C_T, and faces of a real train person where the identity audit
applies), then relative gates against the champion: class fidelity and
Fréchet distance of both, measured in this run by :func:`acneops.evaluation.generators.quality_figures` with the
same real reference, the same feature extractor, the same judge and the same seeds.

Classifiers: macro-F1 of the candidate and of the champion on the frozen real test split, scored now on the same
images, with a 95% paired bootstrap interval of the difference (:func:`acneops.metrics.bootstrap.intervals`). The
first version of a model (no champion) passes when it clears the absolute gates: for a classifier, macro-F1 above
that of always answering the majority class (which is 1/K of that class's F1, i.e. well under chance accuracy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acneops.registry.config import RegisterConfig


def anonymity_gates(cfg: RegisterConfig, audit: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Gate -> {value, limit, passed} for one class's audit figures (missing figures fail: unaudited is not safe)."""
    if not audit:
        return {"audited": {"value": None, "limit": "evaluate's anonymity audit of this class", "passed": False}}
    gates = {"flagged": {"value": audit.get("flagged"), "limit": f"<= {cfg.max_flagged}",
                         "passed": audit.get("flagged") is not None and audit["flagged"] <= cfg.max_flagged}}
    for key in ("mia_auc_feature", "mia_auc_pixel"):
        value = audit.get(key)
        gates[key] = {"value": value, "limit": f"<= {cfg.max_membership_auc}",
                      "passed": value is not None and value <= cfg.max_membership_auc}
    for key in ("ct", "ct_pixel"):
        value = audit.get(key)  # None when too few samples per cell: not a copying signal, not gated
        gates[key] = {"value": value, "limit": f">= {cfg.min_ct}", "passed": value is None or value >= cfg.min_ct}
    if audit.get("identity_applicable"):  # the identity audit ran: its flags are gated like the copy audit's
        value = audit.get("identity_flagged")
        gates["identity_flagged"] = {"value": value, "limit": f"<= {cfg.max_identity_flagged}",
                                     "passed": value is not None and value <= cfg.max_identity_flagged}
    elif "identity_applicable" in audit:  # no face dlib tells apart in the real train images: recorded, not gated
        gates["identity_flagged"] = {"value": None, "limit": "not applicable (see evaluation.json identity)",
                                     "passed": True}
    return gates


def generator_figures(quality: dict[str, Any], fd_key: str) -> dict[str, Any]:
    """The compared figures of one quality_figures() result: FD (and SD), class fidelity, KID, precision/recall."""
    dist, fid = quality["distribution"], quality.get("fidelity") or {}
    out = {k: v for k, v in dist.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out["fd"] = dist.get(fd_key)
    out["class_fidelity"] = fid.get("own")
    return out


def relative_generator_gates(cfg: RegisterConfig, cand: dict[str, Any], champ: dict[str, Any]) -> dict[str, Any]:
    """Class fidelity not below the champion's minus the tolerance; FD not above the champion's times 1 + tolerance.
    A figure neither side has (a judge that does not know the class) is not gated."""
    gates: dict[str, Any] = {}
    if cand.get("class_fidelity") is not None and champ.get("class_fidelity") is not None:
        limit = champ["class_fidelity"] - cfg.fidelity_tolerance
        gates["class_fidelity"] = {"value": cand["class_fidelity"], "champion": champ["class_fidelity"],
                                   "limit": f">= {limit:.4g}", "passed": cand["class_fidelity"] >= limit}
    if cand.get("fd") is not None and champ.get("fd") is not None:
        limit = champ["fd"] * (1 + cfg.fd_tolerance)
        gates["fd"] = {"value": cand["fd"], "champion": champ["fd"], "limit": f"<= {limit:.4g}",
                       "passed": cand["fd"] <= limit}
    return gates


def classifier_gates(cfg: RegisterConfig, scores: dict[str, Any]) -> dict[str, Any]:
    """Gates of a classifier from :func:`score_classifiers`' result."""
    cand = scores["candidate"]["macro_f1"]
    gates = {"above_majority": {"value": cand, "limit": f"> {scores['majority_macro_f1']:.4g} (always the majority "
                                f"class)", "passed": cand > scores["majority_macro_f1"]}}
    if "champion" in scores:
        diff = scores["difference"]
        gates["beats_champion"] = {"value": cand, "champion": scores["champion"]["macro_f1"],
                                   "difference": diff["difference"], "ci95": diff["ci95"],
                                   "limit": f"difference > {cfg.min_macro_f1_gain}",
                                   "passed": diff["difference"] > cfg.min_macro_f1_gain}
        if cfg.require_significant:
            gates["beyond_noise"] = {"ci95": diff["ci95"], "limit": "95% interval of the difference above 0",
                                     "passed": diff["ci95"][0] > 0}
    return gates


def passed(gates: dict[str, Any]) -> bool:
    return all(g["passed"] for g in gates.values())


def score_classifiers(cfg: RegisterConfig, ev: Any, candidate: Path, champion: Path | None) -> dict[str, Any]:
    """Candidate (and champion) on the real test split now: accuracy, macro-F1, and the paired interval of the
    macro-F1 difference. ``ev``: evaluate's config (restored_dir, batch)."""
    from acneops.classify.backbones import load_classifier, predict
    from acneops.classify.data import real_items
    from acneops.evaluation.classes import left_out_classes, present_only
    from acneops.metrics.bootstrap import intervals
    from acneops.metrics.classification import classification_report

    preds: dict[str, tuple[list[str], list[str], list[str]]] = {}
    labels: list[str] = []
    for role, path in (("candidate", candidate), ("champion", champion)):
        if path is None:
            continue
        model, args = load_classifier(path)
        these = [str(x) for x in args.get("labels") or []]
        if labels and these != labels:
            raise ValueError(f"the champion predicts {these}, the candidate {labels}: not the same task")
        labels = these
        # as evaluate: a class with no real test image (a prior-only class) is left out of the macro figures
        items = real_items(Path(ev.restored_dir), "test", "evaluate", labels, absent_ok=labels)
        probs = predict(model, args, [it.path for it in items], batch=ev.batch, desc=f"register: {role} on real test")
        preds[role] = ([it.label for it in items], [labels[i] for i in probs.argmax(axis=1)], labels)
    y_true = preds["candidate"][0]
    left_out = left_out_classes("the candidate", labels, y_true, ev)
    out: dict[str, Any] = {"left_out": left_out} if left_out else {}
    for role, (y_true, y_pred, _) in preds.items():
        report = present_only(classification_report(y_true, y_pred, labels), left_out)
        out[role] = {"accuracy": report["accuracy"], "macro_f1": report["macro"]["f1"], "n_test": len(y_true)}
    majority = max(labels, key=y_true.count)
    out["majority_macro_f1"] = present_only(classification_report(y_true, [majority] * len(y_true), labels),
                                            left_out)["macro"]["f1"]
    if "champion" in preds:
        ci = intervals(preds, cfg.bootstrap, cfg.seed, [("candidate", "champion")])
        pair = ci["pairs"]["candidate_minus_champion"]["macro_f1"]
        out["difference"] = {"difference": pair["difference"], "ci95": pair["ci95"],
                             "distinguishable": pair["distinguishable"]}
    return out
