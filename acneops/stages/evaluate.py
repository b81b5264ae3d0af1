"""`evaluate` stage: every number of the report, measured against the frozen real test split.

This is the only stage that reads the real test split (data role ``evaluate``). It measures

1. every classifier (scenarios ``synthetic`` = train-synthetic-test-real, ``real``, ``augmented``)
   on the real test split with one function (:func:`evaluate_classifier`): accuracy, macro and
   per-class precision / recall / F1, sensitivity / specificity of the positive class for binary
   tasks, confusion matrix (JSON + PNG + DVC confusion-plot rows);
2. the severity sorter on the real test split (its acne classes);
3. every generator against the real train images of its class (:mod:`acneops.evaluation.generators`):
   Fréchet distance named by the feature space (``fd_domain``, ``fid`` only with the Inception
   weights), KID, precision / recall / density / coverage, and class fidelity (the share of its
   images the sorter assigns to its own class);
4. the anonymity audit of the exported synthetic set per class, with the test split for C_T and
   membership inference (``reports/audit_evaluate/<class>.json`` + PNG), and, where the real images are photos of
   faces dlib finds and tells apart, the identity audit of the whole set (:mod:`acneops.audit.identity`:
   identity-match rate against every real train person, nearest-identity distances, identity membership AUC of
   train vs test faces with a bootstrap interval; ``identity: {applicable: false}`` and the reason otherwise);

and writes ``reports/metrics.json`` (DVC metrics: numbers only, nothing wall-clock),
``reports/evaluation.json`` (the same plus labels, checkpoints, provenance) and ``reports/report.md``
(:mod:`acneops.report.markdown`), the page a person reads first.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from acneops.core.config import ConfigError, build, numeric_leaves, section
from acneops.core.io import write_json, write_text
from acneops.evaluation.scoring import (
    DETAILS_FILE,
    REPORT_FILE,
    ROLE,
    SECTION,
    EvaluateConfig,
    add_intervals,
    build_extractor,
    check_inputs,
    evaluate_classifier,
    load_judge,
    metrics_from,
    provenance,
)
from acneops.stages.params import audit_config, with_prior_classes


def config_from_params(params: dict[str, Any], name: str | None = None) -> EvaluateConfig:
    """The evaluate config from sections ``evaluate`` and ``audit`` (the audit thresholds synthesize uses too)."""

    if name:
        raise ConfigError(f"evaluate has no named runs; drop --name {name}")
    values = dict(section(params, SECTION))
    if "audit" in values:
        raise ConfigError(f"params.yaml [{SECTION}.audit]: audit thresholds live in the top-level `audit` section")
    cfg = build(EvaluateConfig, with_prior_classes(params, values, SECTION), SECTION)
    return dataclasses.replace(cfg, audit=audit_config(params))


@dataclasses.dataclass(frozen=True)
class EvaluateResult:
    """What evaluate measured and where it wrote it."""

    nested: dict[str, Any]  # the content of metrics.json (numbers only)
    details: dict[str, Any]  # the content of evaluation.json (labels, checkpoints, provenance too)
    metrics_path: Path  # DVC metrics file
    report_path: Path  # reports/report.md

    def artifacts(self) -> list[Path]:
        """Files worth keeping with the MLflow run: the report, the numbers, every figure it embeds."""
        reports = self.report_path.parent
        rel = [self.report_path.name, "evaluation.json"]
        for entry in [*self.details.get("classifiers", {}).values(), self.details.get("sorter") or {}]:
            rel += [entry["confusion_png"]] if entry else []
        rel += [v for a in self.details.get("anonymity", {}).values() for v in (a["json"], a["png"])]
        rel += list(self.details.get("grids", {}).values())
        rel += [g["curve"]["png"] for g in self.details.get("generators", {}).values() if g["curve"].get("png")]
        return [self.metrics_path] + [reports / r for r in rel if (reports / r).is_file()]

    def metrics(self) -> dict[str, float]:
        """metrics.json flattened to ``{'classifiers.real.accuracy': 0.9, ...}`` (MLflow metric names)."""
        return numeric_leaves(self.nested)

    def summary(self) -> str:
        parts = [f"{s} acc {c['accuracy']:.3f}" for s, c in self.nested.get("classifiers", {}).items()]
        if "sorter" in self.nested:
            parts.append(f"sorter acc {self.nested['sorter']['accuracy']:.3f}")
        fd = self.details.get("feature", {}).get("metric_prefix", "fd")
        parts += [f"{g} {fd} {m[fd]:.3g}" for g, m in self.nested.get("generators", {}).items() if fd in m]
        parts += [f"{c} flagged {a['flagged']}/{a['n_synthetic']}" for c, a in self.nested.get("anonymity", {}).items()]
        identity = self.nested.get("identity", {})
        if identity.get("applicable"):
            parts.append(f"identity matches {identity['flagged']}/{identity['synthetic_faces']} faces")
        elif identity:
            parts.append(f"identity audit not applicable ({self.details['identity'].get('reason')})")
        return f"evaluate: {'; '.join(parts)} -> {self.report_path}, {self.metrics_path}"


def run(cfg: EvaluateConfig) -> EvaluateResult:
    """Measure classifiers, sorter, generators and anonymity; write metrics.json, evaluation.json, report.md."""
    from acneops.audit.identity import not_applicable
    from acneops.evaluation import generators as evaluate_gen
    from acneops.report.markdown import render_report
    from acneops.tracking.model_uri import local_checkpoints, resolve_checkpoint

    # registered models (models:/acneops-classifier-real@champion) work wherever a checkpoint path does
    cfg = dataclasses.replace(cfg, classifiers=local_checkpoints(cfg.classifiers),
                              generators=local_checkpoints(cfg.generators),
                              sorter=str(resolve_checkpoint(cfg.sorter)) if cfg.sorter else "")
    check_inputs(cfg)
    reports = Path(cfg.reports_dir)
    details: dict[str, Any] = {"provenance": provenance(cfg), "role": ROLE}
    details["classifiers"] = {s: evaluate_classifier(s, Path(p), cfg) for s, p in cfg.classifiers.items()}
    details["sorter"] = evaluate_classifier("sorter", Path(cfg.sorter), cfg, strict_positive=False) if cfg.sorter else None
    add_intervals(details, cfg)
    extractor, domain_ckpt = build_extractor(cfg)
    details["feature"] = evaluate_gen.feature_space(extractor, domain_ckpt)
    judge = load_judge(cfg)
    details["generators"] = {
        name: evaluate_gen.generator_quality(name, Path(path), cfg, extractor, judge)
        for name, path in cfg.generators.items()
    }
    details["anonymity"], details["grids"] = {}, {}
    details["identity"] = not_applicable("no exported synthetic set (evaluate.synthetic_dir is '')")
    if cfg.synthetic_dir:
        by_class = evaluate_gen.synthetic_by_class(Path(cfg.synthetic_dir))
        details["anonymity"] = {c: evaluate_gen.anonymity(c, files, cfg, extractor) for c, files in by_class.items()}
        details["identity"] = evaluate_gen.identity_anonymity(by_class, cfg)
        details["grids"] = evaluate_gen.sample_grids(by_class, cfg)
    identity, identity_by_class = evaluate_gen.identity_numbers(details["identity"])
    for cls, entry in details["anonymity"].items():  # the registry's generator gates read these per class
        entry["headline"].update(identity_applicable=identity["applicable"], **identity_by_class.get(cls, {}))
    nested = {**metrics_from(details), "identity": identity}
    write_json(cfg.metrics_path, nested)
    write_json(reports / DETAILS_FILE, details)
    report_path = reports / REPORT_FILE
    write_text(report_path, render_report(details, nested, reports))
    return EvaluateResult(nested=nested, details=details, metrics_path=Path(cfg.metrics_path), report_path=report_path)

