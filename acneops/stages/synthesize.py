"""`synthesize` stage: the exported synthetic dataset, one folder per class, with the anonymity filter applied.

For each class the stage samples its generator at recorded seeds, audits every image against **all**
real train images (every class: a copy of any real face is a leak, whatever its label) and against the
real train images of its own class (the reference `evaluate` audits each generator against: its sparser
neighbourhoods give looser relative thresholds), drops the images flagged by either, tops up with
fresh seeds for up to ``max_rounds`` extra rounds and reports any shortfall. With ``class_filter`` (a
classifier checkpoint, e.g. the severity sorter) an image that classifier assigns to another class is also
replaced (the hierarchical method's sorting step applied to the export; counted as ``rejected_class_filter``).
Where the real train images are photos of faces dlib finds and tells apart, the identity audit
(:mod:`acneops.audit.identity`, params ``audit.identity*``) also replaces every candidate whose face is a real train
person (``flagged_identity``; candidates without a detectable face are kept and counted as ``no_face``); elsewhere
(the phantom) the report says ``identity: {applicable: false, reason}`` and gives no number. Flagged images are never
written; an image whose pixels equal a real train image (or its mirror) is dropped even if the audit
thresholds were loosened. The real *test* split is never read:
the real images come from :func:`acneops.data.access.load_split` with role ``synthesize``.

Seeds. Class ``k`` (its position in ``generators``) owns seeds ``seed * 10**7 + k * 10**6 + i``:
``i < count`` for the first round and ``i = 500_000 + j`` for top-ups, so changing ``seed`` changes
every image, and changing one class's count changes only that class's files (its first images keep
their seeds). The exported set is the first ``count`` passing images in that seed order.

Outputs: ``out_dir/<class>/<class>_seed<seed>.png`` (metadata-free) + ``out_dir/manifest.csv``, built
in a temporary folder and swapped in whole; ``report_path`` (per class requested / exported /
flagged / rounds / shortfall, generator sha256, audit summary); ``audit_synthesize/<class>.json`` +
``.png`` (closest synthetic|real pairs) in the report's folder (one folder, so dvc.yaml declares it whatever the
classes are; a DVC-cached out, never committed to git: the PNG shows real train faces).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

from acneops.core.config import ConfigError, build, section, to_dict
from acneops.core.errors import StageError
from acneops.audit.identity import reference
from acneops.stages.params import audit_config, with_prior_classes
from acneops.synthetic.class_filter import filter_rule, load_class_filter, rejection_hint
from acneops.synthetic.export import (
    ShortfallWarning,
    SynthesizeConfig,
    check_generators,
    class_report,
    load_real_train,
    make_extractor,
    synthesize_class,
    write_dataset,
)

AUDIT_DIR = "audit_synthesize"  # beside report_path: <class>.json + <class>.png per class (dvc.yaml: an out)


def config_from_params(params: dict[str, Any], name: str | None = None) -> SynthesizeConfig:
    """The stage config from the ``synthesize`` section, with the ``audit`` section as its audit thresholds."""

    values = section(params, "synthesize")
    if "audit" in values:
        raise ConfigError("params.yaml [synthesize]: 'audit' is not a key here; the near-copy thresholds live "
                          "in the top-level 'audit' section (shared with evaluate)")
    cfg = build(SynthesizeConfig, with_prior_classes(params, values, "synthesize"), "synthesize")
    return dataclasses.replace(cfg, audit=audit_config(params))


@dataclasses.dataclass(frozen=True)
class SynthesizeResult:
    classes: dict[str, dict[str, Any]]  # per-class entries of the report
    out_dir: Path
    report_path: Path

    @property
    def shortfall(self) -> dict[str, int]:
        """Missing images per class (only classes that fell short)."""
        return {c: r["shortfall"] for c, r in self.classes.items() if r["shortfall"] > 0}

    def metrics(self) -> dict[str, float]:
        """Numbers for the tracking wrapper: per-class counts and flag rates, and totals."""
        out: dict[str, float] = {}
        for cls, r in self.classes.items():
            for key in ("requested", "exported", "generated", "flagged", "flag_rate", "rejected_class_filter",
                        "shortfall", "rounds"):
                out[f"{cls}/{key}"] = float(r[key])
            if r["identity"]["applicable"]:  # not applicable: no number at all
                out[f"{cls}/flagged_identity"] = float(r["identity"]["flagged"])
                out[f"{cls}/no_face"] = float(r["identity"]["no_face"])
        for key in ("requested", "exported", "generated", "flagged", "shortfall"):
            out[f"total/{key}"] = float(sum(r[key] for r in self.classes.values()))
        out["total/flag_rate"] = out["total/flagged"] / max(out["total/generated"], 1.0)
        return out

    def artifacts(self) -> list[Path]:
        """Files for the tracking run: the stage report and each class's audit report and pairs PNG."""
        audits = [Path(r["audit"]["report"]) for r in self.classes.values()]
        return [self.report_path] + [p for a in audits for p in (a, a.with_suffix(".png"))]

    def summary(self) -> str:
        parts = ", ".join(f"{c}={r['exported']}/{r['requested']} ({r['flagged']} flagged)"
                          for c, r in self.classes.items())
        short = f"; SHORTFALL {self.shortfall}" if self.shortfall else ""
        return f"synthesize: exported {parts}{short} -> {self.out_dir} (report {self.report_path})"


def _shortfall_message(short: dict[str, int], cfg: SynthesizeConfig) -> str:
    checks = "the anonymity audit" + (" and the class filter" if cfg.class_filter else "")
    return (f"synthesize: too few images passed {checks} "
            f"after {cfg.max_rounds} top-up rounds, "
            f"missing {short} of {dict(cfg.counts)}; the generators emit near copies of real train images "
            f"(see {cfg.report_path.parent / AUDIT_DIR}/<class>.json). Train them longer or with more "
            "augmentation, or raise synthesize.max_rounds")


def run(cfg: SynthesizeConfig) -> SynthesizeResult:
    """Generate, audit against all real train images, drop copies, top up, write dataset + reports."""
    from acneops.audit import write_audit_report
    from acneops.core.io import sha256_file, write_json
    from acneops.tracking.model_uri import local_checkpoints, resolve_checkpoint

    start = time.perf_counter()
    # registered models (models:/acneops-generator-mild@champion) work wherever a checkpoint path does
    cfg = dataclasses.replace(cfg, generators=local_checkpoints(cfg.generators),
                              class_filter=str(resolve_checkpoint(cfg.class_filter)) if cfg.class_filter else "")
    infos = check_generators(cfg)
    extractor = make_extractor(cfg)
    real = load_real_train(cfg.restored_dir)
    judge = load_class_filter(cfg)
    identity = reference(real.images, real.names, cfg.audit, "synthesize: identity")
    ref = None if isinstance(identity, dict) else identity
    outcomes = {cls: synthesize_class(cfg, cls, infos[cls], real, extractor, judge, ref) for cls in cfg.classes}
    classes = {}
    for cls, o in outcomes.items():
        audit_json = cfg.report_path.parent / AUDIT_DIR / f"{cls}.json"
        write_audit_report(o.audit, audit_json, audit_json.with_suffix(".png"))
        classes[cls] = class_report(o, infos[cls], audit_json, ref)
        if cls in cfg.prior_classes:  # ingest.prior_classes: from the base generator, the class filter's prior rule
            classes[cls]["class_filter_rule"] = filter_rule(judge, cls, cfg.class_filter_margin, cfg.prior_filter_max)
            if judge is None:
                warnings.warn(f"synthesize: prior class '{cls}': {classes[cls]['class_filter_rule']}", stacklevel=2)
    short = {c: r["shortfall"] for c, r in classes.items() if r["shortfall"] > 0}
    failed = {c: n for c, n in short.items() if n > cfg.max_shortfall * classes[c]["requested"]}
    report = {"status": "ok", "classes": classes, "config": to_dict(cfg), "shortfall": short,
              "real_train": {"images": len(real.names), "audited_against": "every class of the real train split"},
              "audit_feature_space": extractor.identity, "identity": identity if ref is None else {
                  **ref.report(), "no_face": "kept and counted: dlib cannot match a face it does not find; the copy "
                  "audit still covers these images"}}
    if failed:
        write_json(cfg.report_path, {**report, "status": "failed: shortfall above max_shortfall",
                                     "seconds": round(time.perf_counter() - start, 2)})
        raise StageError(_shortfall_message(failed, cfg) + rejection_hint(classes, failed, cfg.prior_filter_max)
                         + f"; the previous {cfg.out_dir} was left unchanged")
    n_rows = write_dataset(cfg, outcomes, infos)
    if short:
        warnings.warn(_shortfall_message(short, cfg) + f"; exported anyway (within max_shortfall="
                      f"{cfg.max_shortfall})", ShortfallWarning, stacklevel=2)
    report.update(exported=n_rows, manifest_sha256=sha256_file(cfg.out_dir / "manifest.csv"),
                  seconds=round(time.perf_counter() - start, 2))
    write_json(cfg.report_path, report)
    return SynthesizeResult(classes=classes, out_dir=cfg.out_dir, report_path=cfg.report_path)

