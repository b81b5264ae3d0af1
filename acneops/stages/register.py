"""Stage `register`: every generator and classifier of the pipeline becomes a version of its registered MLflow model,
promoted to ``champion`` only through measured gates (acneops.registry.gates); otherwise it gets ``challenger``.

For each checkpoint of params ``register.generators`` (class -> checkpoint) and ``register.classifiers``
(scenario -> checkpoint):

1. a version whose tag ``acneops.sha256`` is the checkpoint's already exists: nothing changes (re-running
   `register` with nothing new is a no-op);
2. the pyfunc model its training stage logged (found by sha256; logged now, into this run, if the training
   predates model logging) becomes a new version;
3. the gates are measured now: a generator's anonymity audit (evaluate's per-class figures in
   ``reports/metrics.json``, which must be of this very checkpoint) and its class fidelity and FD against the
   champion's, both re-measured here with evaluate's settings on the same real reference; a classifier's
   macro-F1 against the champion's on the frozen real test split, with the paired 95% bootstrap interval;
4. the alias moves: ``champion`` only when every gate passed and the champion measured is still the champion
   (a concurrent `register` that promoted another version meanwhile makes this run measure against that one
   before moving the alias); ``challenger`` otherwise. An alias never points at a version that failed its gates.

Every decision with its figures goes to ``reports/registry.json``, onto the version (tags; its model card as
description) and to this stage's MLflow run (cards as artifacts ``cards/<model>-v<version>.json``).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from acneops.core.config import ConfigError, build, section, to_dict
from acneops.core.errors import StageError
from acneops.core.io import sha256_file, write_json
from acneops.registry.config import CHALLENGER, CHAMPION, SECTION, RegisterConfig
from acneops.stages.params import audit_config, with_prior_classes

Config = RegisterConfig
TRACKS_ITSELF = True  # run() opens its MLflow run itself: it logs cards (and untracked models) into it
MEASURE_ATTEMPTS = 3  # re-measurements when another `register` moved the champion while this one measured


def config_from_params(params: dict[str, Any], name: str | None = None) -> RegisterConfig:
    """``register`` section; the measurement settings come from ``evaluate`` (and ``audit``)."""
    from acneops.evaluation.scoring import SECTION as EVALUATE
    from acneops.evaluation.scoring import EvaluateConfig

    if name:
        raise ConfigError(f"register has no named runs; drop --name {name}")
    cfg = build(RegisterConfig, dict(section(params, SECTION)), SECTION)
    measure = build(EvaluateConfig, with_prior_classes(params, dict(section(params, EVALUATE)), EVALUATE), EVALUATE)
    return dataclasses.replace(cfg, measure=dataclasses.replace(measure, audit=audit_config(params)))


@dataclasses.dataclass(frozen=True)
class RegisterResult:
    decisions: dict[str, dict[str, Any]]  # registered model name -> decision record
    report_path: Path

    def summary(self) -> str:
        parts = [f"{name} v{d['version']} {d['alias'] or d['outcome']}" for name, d in self.decisions.items()]
        return f"register: {'; '.join(parts)} -> {self.report_path}"


class _Registrar:
    """One `register` run: the MLflow client, evaluate's figures, the measuring tools (built on first use)."""

    def __init__(self, cfg: RegisterConfig, client: Any, run: Any, metrics: dict[str, Any], details: dict[str, Any]):
        self.cfg, self.client, self.run, self.metrics, self.details = cfg, client, run, metrics, details
        self._tools: tuple[Any, Any, str] | None = None
        experiment = client.get_experiment_by_name("acneops")
        self.experiments = [experiment.experiment_id] if experiment else []

    # ------------------------------------------------------------------ registry plumbing
    def ensure_model(self, name: str, kind: str, key: str, backbone: str) -> None:
        from mlflow.exceptions import MlflowException

        tags = {"task": self.cfg.task, "kind": kind, ("class" if kind == "generator" else "scenario"): key}
        if backbone:
            tags["backbone"] = backbone
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name, tags=tags, description=(
                    f"acneops {kind} '{key}' (task {self.cfg.task}). Load the promoted version with "
                    f"mlflow.pyfunc.load_model('models:/{name}@{CHAMPION}'); every version's card is its description."))
            except MlflowException:  # created by a concurrent register meanwhile
                self.client.get_registered_model(name)

    def champion(self, name: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            return None

    def existing(self, name: str, sha: str) -> Any | None:
        found = self.client.search_model_versions(f"name = '{name}' and tags.`acneops.sha256` = '{sha}'")
        if not found:
            return None
        first = min(found, key=lambda v: int(v.version))
        return self.client.get_model_version(name, first.version)  # search results carry no aliases

    def logged_model(self, path: Path, sha: str, kind: str, key: str) -> tuple[str, str, str]:
        """(model uri, source run id, model id) of the checkpoint's pyfunc model; logged into this run if missing."""
        from acneops.registry import classifier_model, generator_model
        from acneops.registry.models import find_logged_model, log_model

        model = find_logged_model(self.client, self.experiments, sha) if self.experiments else None
        if model is None:
            spec = (generator_model if kind == "generator" else classifier_model).spec(path)
            info = log_model(self.run.run_id, path, spec, kind, key, tags={"acneops.logged_by": "register"})
            return info.model_uri, self.run.run_id, info.model_id
        return model.model_uri, model.source_run_id, model.model_id

    # ------------------------------------------------------------------ measurements
    def tools(self) -> tuple[Any, Any, str]:
        from acneops.evaluation.scoring import build_extractor, load_judge

        if self._tools is None:
            extractor, _ = build_extractor(self.cfg.measure)
            self._tools = (extractor, load_judge(self.cfg.measure), extractor.metric_prefix)
        return self._tools

    def generator_gates(self, key: str, path: Path, sha: str, champion: Path | None) -> tuple[dict, dict]:
        from acneops.evaluation.generators import quality_figures
        from acneops.registry import gates

        audit = (self.metrics.get("anonymity") or {}).get(key)
        audited = ((self.details.get("generators") or {}).get(key) or {}).get("sha256")
        if audited != sha:
            audit = None  # evaluate's audit is of another checkpoint (or none): unaudited is not anonymous
        result = gates.anonymity_gates(self.cfg, audit)
        extractor, judge, fd_key = self.tools()
        cand = gates.generator_figures(quality_figures(key, path, self.cfg.measure, extractor, judge), fd_key)
        figures: dict[str, Any] = {"candidate": cand, "anonymity": audit, "fd_name": fd_key}
        if champion is not None:
            champ = gates.generator_figures(quality_figures(key, champion, self.cfg.measure, extractor, judge), fd_key)
            figures["champion"] = champ
            result.update(gates.relative_generator_gates(self.cfg, cand, champ))
        figures["tstr"] = {k: v for k, v in (self.metrics.get("classifiers") or {}).get("synthetic", {}).items()
                           if k in ("accuracy", "macro_f1", "accuracy_ci95_low", "accuracy_ci95_high")}
        return result, figures

    def classifier_gates(self, path: Path, champion: Path | None) -> tuple[dict, dict]:
        from acneops.registry import gates

        scores = gates.score_classifiers(self.cfg, self.cfg.measure, path, champion)
        return gates.classifier_gates(self.cfg, scores), scores

    # ------------------------------------------------------------------ one model
    def register(self, kind: str, key: str, ref: str) -> tuple[str, dict[str, Any]]:
        from acneops.registry import gates
        from acneops.registry.card import card_markdown, model_card
        from acneops.tracking.model_uri import resolve_checkpoint

        name = self.cfg.model_name(kind, key)
        path = resolve_checkpoint(ref)
        ckpt = _read(kind, path)
        sha = sha256_file(path)
        backbone = str(ckpt["model_args"].get("arch", "")) if kind == "classifier" else str(ckpt.get("family", ""))
        self.ensure_model(name, kind, key, backbone)
        old = self.existing(name, sha)
        if old is not None:  # nothing new: report the decision this version got when it was registered
            return name, {"outcome": "unchanged", "version": old.version, "alias": _alias_of(old),
                          "checkpoint": str(ref), "sha256": sha,
                          "passed": old.tags.get("acneops.gates_passed") == "true",
                          "failed": [g for g in old.tags.get("acneops.failed_gates", "").split(",") if g not in ("", "none")],
                          "gates": {k[len("acneops.gate."):]: v for k, v in old.tags.items()
                                    if k.startswith("acneops.gate.")}}
        uri, source_run, model_id = self.logged_model(path, sha, kind, key)
        for _ in range(MEASURE_ATTEMPTS):
            champ = self.champion(name)
            champ_path = resolve_checkpoint(f"models:/{name}/{champ.version}") if champ else None
            if kind == "generator":
                result, figures = self.generator_gates(key, path, sha, champ_path)
            else:
                result, figures = self.classifier_gates(path, champ_path)
            ok = gates.passed(result)
            now = self.champion(name)
            if not ok or (now.version if now else None) == (champ.version if champ else None):
                break
        else:
            raise StageError(f"register {name}: the champion kept changing while it was measured "
                             f"({MEASURE_ATTEMPTS} attempts); another `register` is running: try again")
        version = self.client.create_model_version(name, source=uri, run_id=source_run, model_id=model_id,
                                                   tags={"acneops.sha256": sha, "acneops.checkpoint": str(ref)})
        alias = CHAMPION if ok else CHALLENGER
        decision = {"alias": alias, "passed": ok, "failed": [g for g, v in result.items() if not v["passed"]],
                    "gates": result, "champion_before": champ.version if champ else None}
        lineage = _lineage(self.client, source_run)
        card = model_card(kind, key, name, version.version, path, ckpt, lineage, figures, decision)
        self.client.update_model_version(name, version.version, description=card_markdown(card))
        for tag, value in {"acneops.decision": alias, "acneops.gates_passed": str(ok).lower(),
                           "acneops.failed_gates": ",".join(decision["failed"]) or "none",
                           **{f"acneops.gate.{g}": json.dumps(v.get("value")) for g, v in result.items()}}.items():
            self.client.set_model_version_tag(name, version.version, tag, value)
        self.client.set_registered_model_alias(name, alias, version.version)
        self._log_card(name, version.version, card)
        return name, {"outcome": "registered", "version": version.version, "checkpoint": str(ref), "sha256": sha,
                      "model_uri": uri, "card": card, **decision}

    def _log_card(self, name: str, version: str, card: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}-v{version}.json"
            path.write_text(json.dumps(card, indent=2, default=str))
            self.run.log_artifact(path, "cards")


def _read(kind: str, path: Path) -> dict[str, Any]:
    if kind == "generator":
        from acneops.gan import checkpoint

        return checkpoint.load(path)
    from acneops.classify.backbones import read_checkpoint

    return read_checkpoint(path)


def _alias_of(version: Any) -> str:
    aliases = list(getattr(version, "aliases", []) or [])
    return CHAMPION if CHAMPION in aliases else (aliases[0] if aliases else "")


def _lineage(client: Any, run_id: str) -> dict[str, Any]:
    """Git commit, data.dvc md5 and input hashes of the run that trained (or logged) the model."""
    tags = client.get_run(run_id).data.tags
    return {"source_run": run_id, **{k[len("acneops."):]: v for k, v in sorted(tags.items())
                                     if k in ("acneops.git_commit", "acneops.data_md5", "acneops.dvc_stage")
                                     or k.startswith("acneops.input.")}}


def run(cfg: RegisterConfig) -> RegisterResult:
    """Register every configured checkpoint, gate it, move its alias; write reports/registry.json."""
    from mlflow import MlflowClient

    from acneops.tracking import start_run, tracking_uri

    metrics_path = Path(cfg.metrics_path)
    if cfg.generators and not metrics_path.is_file():
        raise StageError(f"params.yaml [{SECTION}.metrics_path]: {metrics_path} not found; the generators' anonymity "
                         "gates read evaluate's audit: run `dvc repro evaluate` first")
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    details_path = metrics_path.parent / "evaluation.json"
    details = json.loads(details_path.read_text()) if details_path.is_file() else {}
    uri = tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    decisions: dict[str, dict[str, Any]] = {}
    with start_run("register", None, to_dict(dataclasses.replace(cfg, measure=None))) as mlrun:
        registrar = _Registrar(cfg, client, mlrun, metrics, details)
        for kind, refs in (("generator", cfg.generators), ("classifier", cfg.classifiers)):
            for key, ref in refs.items():
                name, record = registrar.register(kind, key, str(ref))
                decisions[name] = record
        # a server's URI says where the versions live; an embedded store's absolute path says nothing in git
        report = {"tracking_uri": uri if uri.startswith(("http://", "https://")) else "embedded", "models": decisions}
        write_json(cfg.report_path, report)
        mlrun.log_artifact(cfg.report_path)
        mlrun.log_metrics({"registered": sum(d["outcome"] == "registered" for d in decisions.values()),
                           "promoted": sum(d.get("alias") == CHAMPION and d["outcome"] == "registered"
                                           for d in decisions.values())}, step=0)
    return RegisterResult(decisions, Path(cfg.report_path))
