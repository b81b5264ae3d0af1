"""The ``regenerate`` flow: a fresh, versioned synthetic dataset from the registry's champion generators, the job a
Prefect schedule runs (``python flows/pipeline.py serve``, cron from params ``regenerate.cron``).

One run:

1. pins ``<prefix>-generator-<class>@champion`` of every class to the version the alias points at now (or the
   model URIs of ``regenerate.models``), with the quality figures of each version's model card;
2. draws a fresh base seed (recorded) and exports the requested counts with the ``synthesize`` stage's own code:
   the anonymity filter against every real train image, the class filter, top-ups; a class the filter cannot fill
   (any shortfall above ``regenerate.max_shortfall``, default 0) fails the run;
3. measures each class's FD and class fidelity against the real train images (the stored reference: the feature
   cache evaluate and register use, in the same feature space) and fails when either is worse than its champion's,
   measured now on as many unfiltered images (FD depends on the count), past ``max_fd_ratio`` /
   ``max_fidelity_drop``; the champion's model-card figures are reported beside them;
4. publishes ``datasets/regenerated/<UTC>-<class>.v<version>-.../`` by one rename of a complete folder (images,
   manifest, dataset card, sample grid); optionally ``dvc add``s it.

A failed run writes nothing under ``datasets/regenerated/`` (its staging folder is removed), so every earlier
dataset stays as it was. Each run is an MLflow run (stage ``regenerate``: the dataset as an input with its digest,
the model versions, audit and quality figures, the card) and leaves a Prefect markdown artifact (counts, FD, audit
figures, a sample grid).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from acneops.flows import prefect_defaults

prefect_defaults()

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from acneops.core.config import ConfigError, build, load_params, section
from acneops.core.errors import AcneopsError, StageError
from acneops.flows import datasets
from acneops.flows.card import artifact_markdown, card_markdown, dataset_card

SECTION = "regenerate"
FLOW_NAME = "acneops-regenerate"
DEPLOYMENT_NAME = "acneops-regenerate"
ARTIFACT_KEY = "acneops-regenerated-dataset"


@dataclasses.dataclass(frozen=True)
class RegenerateConfig:
    out_root: Path = Path("datasets/regenerated")  # one folder per run: <UTC>-<class>.v<version>-...
    alias: str = "champion"  # registry alias of the generators drawn from
    models: dict[str, str] = dataclasses.field(default_factory=dict)  # class -> model URI; default: alias per class
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # class -> images; default: synthesize.counts
    max_shortfall: float = 0.0  # share of a class the filters may leave unfilled before the run fails
    max_fd_ratio: float = 1.5  # FD of the set <= its champion's (as many unfiltered images) x this
    max_fidelity_drop: float = 0.1  # class fidelity of the set >= its champion's - this
    cron: str = "0 3 * * 1"  # schedule `serve` uses: Mondays 03:00
    dvc_add: bool = False  # `dvc add` each new dataset folder

    def __post_init__(self) -> None:
        datasets.QualityLimits(self.max_fd_ratio, self.max_fidelity_drop)  # checks the limits
        if not 0 <= self.max_shortfall < 1:
            raise ConfigError(f"{SECTION}.max_shortfall must be in [0, 1), got {self.max_shortfall}")
        if len(self.cron.split()) != 5:
            raise ConfigError(f"{SECTION}.cron: five cron fields (minute hour day month weekday), got {self.cron!r}")


def load_config(params: dict[str, Any]) -> RegenerateConfig:
    values = dict(params.get(SECTION) or {})
    return build(RegenerateConfig, values, SECTION)


@contextlib.contextmanager
def _in_repo(params_path: Path) -> Iterator[Path]:
    """Work in the repository of ``params_path`` (its relative paths are relative to it), as DVC stages do; a served
    run starts wherever Prefect's runner is."""
    root = params_path.resolve().parent
    before = Path.cwd()
    os.chdir(root)
    try:
        yield root
    finally:
        os.chdir(before)


@task(name="resolve champions", cache_policy=NO_CACHE)
def resolve(classes: list[str], prefix: str, cfg: RegenerateConfig) -> dict[str, datasets.Champion]:
    if cfg.models:
        return _from_uris(classes, cfg.models)
    return datasets.resolve_champions(classes, prefix, cfg.alias)


def _from_uris(classes: list[str], models: dict[str, str]) -> dict[str, datasets.Champion]:
    """Champions named by URI in params (``models:/name/3`` or ``models:/name@alias``), pinned to a version."""
    missing = [c for c in classes if c not in models]
    if missing:
        raise ConfigError(f"{SECTION}.models: no model for {missing}; name one per class or leave models empty")
    client = datasets.registry_client()
    out = {}
    for cls in classes:
        ref = str(models[cls])
        body = ref[len("models:/"):] if ref.startswith("models:/") else ""
        if "@" in body:
            name, alias = body.split("@", 1)
            v = client.get_model_version_by_alias(name, alias)
        elif body.count("/") == 1:
            v = client.get_model_version(*body.split("/"))
        else:
            raise ConfigError(f"{SECTION}.models.{cls}: a registered model URI models:/<name>/<version> or "
                              f"models:/<name>@<alias>, got {ref!r}")
        out[cls] = datasets.Champion(cls, v.name, str(v.version), f"models:/{v.name}/{v.version}", v.run_id or "",
                                     (v.tags or {}).get("acneops.sha256", ""),
                                     datasets.card_figures(client, v.name, str(v.version)))
    return out


@task(name="export with the anonymity filter", cache_policy=NO_CACHE)
def export(params: dict[str, Any], champions: dict[str, datasets.Champion], counts: dict[str, int], seed: int,
           max_shortfall: float, data_dir: Path, report_dir: Path) -> Any:
    from acneops.stages import synthesize

    cfg = synthesize.config_from_params(params)
    cfg = dataclasses.replace(cfg, generators={c: ch.uri for c, ch in champions.items()}, counts=counts, seed=seed,
                              out_dir=data_dir, report_path=report_dir / "synthesize.json", max_shortfall=max_shortfall)
    return synthesize.run(cfg)


@task(name="measure quality", cache_policy=NO_CACHE)
def measure(params: dict[str, Any], data_dir: Path, champions: dict[str, datasets.Champion]) -> dict[str, Any]:
    """Per class, in evaluate's feature space against the real train images of the class (the feature cache evaluate
    and register use): FD and class fidelity of the exported set, and of as many unfiltered images of its champion at
    evaluate's seeds, ``evaluate.generation_draws`` disjoint draws. FD grows as the sample shrinks and varies with the
    seeds, so the set is compared with the worst of its champion's draws on the same count; the champion's model-card
    figures (another count) are reported beside them. Class fidelity is not checked when the class filter is the
    judge: the filter made the exported set agree with it."""
    from acneops.classify.data import real_items
    from acneops.evaluation.generators import (
        ROLE,
        class_fidelity,
        one_blas_thread,
        real_labels,
        train_labels,
    )
    from acneops.evaluation.scoring import build_extractor, load_judge
    from acneops.features.cache import cached_stats
    from acneops.gan.sampling import generate, load_generator
    from acneops.metrics.distribution import fd_from_features
    from acneops.stages.register import config_from_params

    cfg = config_from_params(params).measure
    extractor, _ = build_extractor(cfg)
    judge = load_judge(cfg)
    present = train_labels(Path(cfg.restored_dir))
    psi = float((params.get("synthesize") or {}).get("psi", 1.0))
    judge_path = cfg.sorter if cfg.fidelity_judge == "sorter" else cfg.classifiers.get(cfg.fidelity_judge, "")
    class_filter = (params.get("synthesize") or {}).get("class_filter") or ""
    judge_is_filter = bool(judge_path and class_filter) and Path(judge_path).resolve() == Path(class_filter).resolve()

    def figures(images: Any, real_feats: Any, cls: str, labels: list[str]) -> dict[str, Any]:
        fake = extractor.extract(images, batch_size=cfg.feature_batch, desc=None)
        with one_blas_thread():
            fd = fd_from_features(real_feats, fake)
        fidelity = class_fidelity(images, cls, labels, judge, cfg.batch)
        return {"fd": fd, "class_fidelity": fidelity["own"] if fidelity else None}

    out: dict[str, Any] = {}
    for cls, ch in champions.items():
        images = datasets.class_images(data_dir, cls)
        labels = real_labels(cls, cfg, present)
        real = [it.path for it in real_items(Path(cfg.restored_dir), "train", ROLE, labels)]
        real_feats = cached_stats(extractor, real, cfg.cache_dir, keep_features=True, batch_size=cfg.feature_batch,
                                  desc=f"regenerate {cls}: features (real train)").features
        G, family = load_generator(ch.uri)
        label = cls if getattr(G, "c_dim", 0) else None
        n = len(images)
        draws = [figures(generate(ch.uri, range(cfg.seed + k * n, cfg.seed + (k + 1) * n), batch=cfg.batch,
                                  psi=psi if family == "stylegan2" else 1.0, label=label, desc=None),
                         real_feats, cls, labels) for k in range(max(1, cfg.generation_draws))]
        mine = figures(images, real_feats, cls, labels)
        fids = [d["class_fidelity"] for d in draws if d["class_fidelity"] is not None]
        out[cls] = {**mine, "champion_fd": max(d["fd"] for d in draws), "champion_fd_draws": [d["fd"] for d in draws],
                    "champion_class_fidelity": min(fids) if fids else None,
                    "fidelity_checked": mine["class_fidelity"] is not None and not judge_is_filter,
                    "card_fd": ch.figures.get("fd"), "card_class_fidelity": ch.figures.get("class_fidelity"),
                    "card_n_fake": ch.figures.get("n_fake"), "fd_name": extractor.metric_prefix, "n": len(images),
                    "n_real": len(real), "feature_space": extractor.identity}
    return out


def _dvc_add(folder: Path) -> None:
    import subprocess

    from acneops.pipeline.repro import dvc_env

    dvc, env = dvc_env()
    done = subprocess.run([dvc, "--wait-for-lock", "add", str(folder)], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise AcneopsError(f"dvc add {folder} failed (the dataset itself is complete): "
                                    f"{(done.stderr or done.stdout).strip()[-800:]}")


def _metrics(result: Any, measured: dict[str, dict[str, Any]]) -> dict[str, float]:
    out = {k: v for k, v in result.metrics().items()}
    for cls, m in measured.items():
        out[f"{cls}/fd"] = m["fd"]
        if m["class_fidelity"] is not None:
            out[f"{cls}/class_fidelity"] = m["class_fidelity"]
    return out


@flow(name=FLOW_NAME, log_prints=True)
def regenerate(params_path: str = "params.yaml", seed: int | None = None, counts: dict[str, int] | None = None,
               dvc_add: bool | None = None) -> Any:
    """A new dataset in ``regenerate.out_root`` from the champions; returns its folder. Fails, writing nothing there,
    when a class cannot be filled or its quality is worse than its champion allows. A refusal (bad input, a failed
    gate) ends the run Failed with its reason as the message, not as a traceback: it is not a crash."""
    from prefect.states import Failed

    try:
        return _regenerate(params_path, seed, counts, dvc_add)
    except AcneopsError as exc:
        print(f"error: {exc}")
        return Failed(message=str(exc))


def _regenerate(params_path: str, seed: int | None, counts: dict[str, int] | None, dvc_add: bool | None) -> str:
    from acneops import tracking
    from acneops.synthetic.export import MAX_SEED

    with _in_repo(Path(params_path)) as root:
        params = load_params(root / Path(params_path).name)
        cfg = load_config(params)
        counts = datasets.parse_counts(counts or cfg.counts or section(params, "synthesize")["counts"],
                                       f"{SECTION}.counts")
        seed = secrets.randbelow(MAX_SEED + 1) if seed is None else int(seed)
        dvc_add = cfg.dvc_add if dvc_add is None else dvc_add
        prefix = (params.get("register") or {}).get("prefix", "acneops")
        classes = list(counts)
        config = {"params_path": str(params_path), "seed": seed, "counts": counts, "alias": cfg.alias,
                  "models": dict(cfg.models), "max_fd_ratio": cfg.max_fd_ratio,
                  "max_fidelity_drop": cfg.max_fidelity_drop, "max_shortfall": cfg.max_shortfall}
        with tracking.start_run("regenerate", None, config) as run:
            champions = resolve(classes, prefix, cfg)
            run.log_params({f"model.{c}": f"{ch.model}/{ch.version}" for c, ch in champions.items()})
            print(f"regenerate: seed {seed}; " + ", ".join(f"{c} <- {ch.uri}" for c, ch in champions.items()))
            staging = datasets.staging_folder(root / cfg.out_root)
            report_dir = Path(tempfile.mkdtemp(prefix="acneops-regenerate-"))  # audit pairs show real faces
            try:
                result = export(params, champions, counts, seed, cfg.max_shortfall, staging / "data", report_dir)
                for audit in (report_dir / "audit_synthesize").glob("*.json"):
                    run.log_artifact(audit, "audit")
                measured = measure(params, staging / "data", champions)
                checks = datasets.check_quality(measured,
                                                datasets.QualityLimits(cfg.max_fd_ratio, cfg.max_fidelity_drop))
                run.log_metrics(_metrics(result, measured), step=0)
                failures = datasets.quality_failures(checks)
                if failures:
                    raise StageError("regenerate: the exported set is worse than its champion allows: "
                                              + "; ".join(failures) + f"; nothing was written to {cfg.out_root}")
                name = datasets.dataset_name(datasets.utc_stamp(), champions)
                rows = datasets.rewrite_manifest(staging / "data", champions)
                card = dataset_card(name, seed, champions, result, measured, checks, params, rows, run.run_id)
                _write_card(staging / "data", card)
                final = datasets.publish(staging / "data", root / cfg.out_root, name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                shutil.rmtree(report_dir, ignore_errors=True)
            run.log_dataset(final, name=f"regenerated/{final.name}", context="synthetic")
            run.log_artifact(final / "card.json")
            run.log_artifact(final / "card.md")
            run.set_tags({"acneops.dataset": str(final.relative_to(root))})
            _artifact(final, card)
            if dvc_add:
                _dvc_add(final.relative_to(root))
        print(f"regenerate: {sum(card['counts'].values())} images -> {final}")
        return str(final)


def _write_card(folder: Path, card: dict[str, Any]) -> None:
    import json

    from acneops.report.grid import save_grid

    (folder / "card.json").write_text(json.dumps(card, indent=2, default=str))
    (folder / "card.md").write_text(card_markdown(card))
    firsts = [sorted((folder / c).glob("*.png"))[:8] for c in card["counts"]]
    save_grid([f for files in firsts for f in files], folder / "samples.png", ncol=8)


def _artifact(final: Path, card: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=ARTIFACT_KEY, markdown=artifact_markdown(final, card),
                             description=f"Regenerated dataset {final.name}")


def run(params_path: Path, seed: int | None = None, counts: dict[str, int] | None = None,
        dvc_add: bool = False) -> str:
    """The flow once, now (the CLI's ``regenerate``); prints the new folder whatever Prefect's log level."""
    import sys

    state = regenerate(params_path=str(params_path), seed=seed, counts=counts or None, dvc_add=dvc_add or None,
                       return_state=True)
    if not state.is_completed():
        print(f"error: regenerate {state.name}: {state.message}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    folder = state.result()
    print(f"regenerated dataset: {folder}", flush=True)
    return folder


def serve(params_path: Path, cron: str | None = None) -> None:
    """Serve the regenerate deployment on ``cron`` (default params ``regenerate.cron``) until interrupted."""
    import sys

    params_path = Path(params_path).resolve()
    cfg = load_config(load_params(params_path))
    if not os.environ.get("PREFECT_API_URL"):
        print("warning: PREFECT_API_URL is not set: the schedule lives in a temporary Prefect server that ends with "
              "this process. Start `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api to keep "
              "schedules and run history.", file=sys.stderr, flush=True)
    regenerate.serve(name=DEPLOYMENT_NAME, cron=cron or cfg.cron, parameters={"params_path": str(params_path)},
                     description="A fresh versioned synthetic dataset from the registry's champion generators.")

