"""Versioned regenerated datasets: names, the champions they come from, the quality check, the dataset card, and
the atomic publication of a finished folder (no Prefect here: the flow in :mod:`acneops.flows.regenerate` calls it).

A regenerated dataset is ``<out_root>/<UTC timestamp>-<class>.v<version>-.../`` holding ``<class>/*.png``,
``manifest.csv`` (one row per image: seed, psi, registered model and version, audit result), ``card.json`` and
``card.md`` (the dataset card) and ``samples.png``. It is built in a hidden staging folder beside it and renamed
into place only when complete, so no reader ever sees a partial dataset and two runs never write one folder.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np

from acneops.core.config import ConfigError, require
from acneops.core.errors import AcneopsError, StageError

STAGING_PREFIX = ".staging-"
OWNER_FILE = "owner.json"  # in a staging folder: host and pid of the run writing it (a dead owner's folder is removed)


@dataclasses.dataclass(frozen=True)
class Champion:
    """The registered generator version a class is drawn from, pinned when the run starts."""

    cls: str
    model: str  # registered model name
    version: str
    uri: str  # models:/<name>/<version>: later alias moves do not change what this run draws from
    run_id: str  # the training run that logged it
    sha256: str  # of its checkpoint (tag acneops.sha256)
    figures: dict[str, Any]  # the quality figures on its model card (fd, class_fidelity, n_fake, ...), {} if none


@dataclasses.dataclass(frozen=True)
class QualityLimits:
    max_fd_ratio: float = 1.5  # the set's FD may be at most this many times its champion's (same count, now)
    max_fidelity_drop: float = 0.1  # the set's class fidelity may fall at most this far below its champion's

    def __post_init__(self) -> None:
        require(self.max_fd_ratio > 0, f"regenerate.max_fd_ratio must be > 0, got {self.max_fd_ratio}")
        require(0 <= self.max_fidelity_drop <= 1, "regenerate.max_fidelity_drop must be in [0, 1]")


def registry_client() -> Any:
    from mlflow import MlflowClient

    from acneops.tracking import tracking_uri

    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())


def card_figures(client: Any, model: str, version: str) -> dict[str, Any]:
    """The candidate figures of ``model`` v``version``'s model card, from the `register` run that wrote the card
    (artifact ``cards/<model>-v<version>.json``); {} when no register run holds it."""
    from mlflow.exceptions import MlflowException

    from acneops.tracking import tracking_uri

    experiment = client.get_experiment_by_name("acneops")
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`acneops.stage` = 'register'",
                              order_by=["attributes.start_time DESC"], max_results=50)
    name = f"{model}-v{version}.json"
    for run in runs:
        try:
            listed = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "cards")}
        except MlflowException:
            continue
        if name in listed:
            import mlflow

            mlflow.set_tracking_uri(tracking_uri())
            text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/cards/{name}")
            figures = json.loads(text).get("figures") or {}
            return {**(figures.get("candidate") or {}), "fd_name": figures.get("fd_name")}
    return {}


def resolve_champions(classes: list[str], prefix: str, alias: str) -> dict[str, Champion]:
    """``<prefix>-generator-<class>@<alias>`` of every class, pinned to the version the alias points at now."""
    from mlflow.exceptions import MlflowException

    from acneops.tracking import tracking_uri

    client = registry_client()
    out = {}
    for cls in classes:
        model = f"{prefix}-generator-{cls}"
        try:
            v = client.get_model_version_by_alias(model, alias)
        except MlflowException as exc:
            raise AcneopsError(f"regenerate: no '{alias}' version of registered model {model} on {tracking_uri()} "
                               f"({exc.message.splitlines()[0]}); run the pipeline's `register` stage first "
                               "(`acneops repro`), or set regenerate.models.{cls} to a model URI") from None
        out[cls] = Champion(cls, model, str(v.version), f"models:/{model}/{v.version}", v.run_id or "",
                            (v.tags or {}).get("acneops.sha256", ""), card_figures(client, model, str(v.version)))
    return out


def utc_stamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")


def dataset_name(stamp: str, champions: dict[str, Champion]) -> str:
    """``20261203T031500Z-healthy.v3-mild.v2-...``: when, and from which model versions."""
    return "-".join([stamp, *(f"{c}.v{ch.version}" for c, ch in sorted(champions.items()))])


def _alive(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # another machine's run: not ours to judge
    try:
        os.kill(int(owner["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True
    return True


def staging_folder(out_root: Path) -> Path:
    """A fresh hidden folder in ``out_root`` for one run (owner recorded); staging folders of dead runs on this
    host are removed first."""
    import tempfile

    out_root.mkdir(parents=True, exist_ok=True)
    for old in out_root.glob(f"{STAGING_PREFIX}*"):
        try:
            owner = json.loads((old / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = {}
        if owner and not _alive(owner):
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_root))
    (folder / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    return folder


def publish(data_dir: Path, out_root: Path, name: str) -> Path:
    """Rename the finished ``data_dir`` to ``out_root/name`` (``name-2``, ``-3``... when a concurrent run took the
    name): one atomic rename, never into an existing folder."""
    for n in range(1, 100):
        final = out_root / (name if n == 1 else f"{name}-{n}")
        if final.exists():
            continue
        try:
            os.rename(data_dir, final)  # fails when another run created `final` meanwhile (never empty)
            return final
        except OSError:
            if not final.exists():
                raise
    raise AcneopsError(f"regenerate: 99 datasets named {out_root / name}*; remove old ones")


def rewrite_manifest(data_dir: Path, champions: dict[str, Champion]) -> list[dict[str, str]]:
    """The export's manifest with each image's registered model, version and URI in place of the local cache path of
    the checkpoint it was drawn from (a cache path means nothing on another machine)."""
    path = data_dir / "manifest.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        ch = champions[row["label"]]
        row.pop("generator", None)
        out.append({"file": row["file"], "label": row["label"], "seed": row["seed"], "psi": row["psi"],
                    "model": ch.model, "model_version": ch.version, "model_uri": ch.uri, **row})
    fields = list(out[0]) if out else ["file", "label", "seed", "psi", "model", "model_version", "model_uri"]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(out)
    os.replace(tmp, path)
    return out


def class_images(data_dir: Path, cls: str) -> np.ndarray:
    from PIL import Image

    files = sorted((data_dir / cls).glob("*.png"))
    if not files:
        raise StageError(f"regenerate: no exported images of class '{cls}' in {data_dir}")
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def check_quality(measured: dict[str, dict[str, Any]], limits: QualityLimits) -> dict[str, dict[str, Any]]:
    """Per class and figure: the exported set's value, its champion's measured now on as many unfiltered images (the
    worst of its draws),
    the limit and whether it passed (a figure the judge cannot give, e.g. fidelity of a class it does not know, is
    not checked)."""
    out: dict[str, dict[str, Any]] = {}
    for cls, m in measured.items():
        checks: dict[str, Any] = {}
        if m.get("fd") is not None and m.get("champion_fd") is not None:
            limit = m["champion_fd"] * limits.max_fd_ratio
            checks["fd"] = {"value": m["fd"], "champion": m["champion_fd"], "limit": f"<= {limit:.4g}",
                            "passed": m["fd"] <= limit}
        if m.get("fidelity_checked", True) and m.get("class_fidelity") is not None \
                and m.get("champion_class_fidelity") is not None:
            limit = m["champion_class_fidelity"] - limits.max_fidelity_drop
            checks["class_fidelity"] = {"value": m["class_fidelity"], "champion": m["champion_class_fidelity"],
                                        "limit": f">= {limit:.4g}", "passed": m["class_fidelity"] >= limit}
        out[cls] = checks
    return out


def quality_failures(checks: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{cls} {fig} {c['value']:.4g} (its champion unfiltered {c['champion']:.4g}, limit {c['limit']})"
            for cls, figs in checks.items() for fig, c in figs.items() if not c["passed"]]


def parse_counts(counts: dict[str, Any], where: str) -> dict[str, int]:
    out = {}
    for cls, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"{where}.{cls}: a count of images >= 1, got {n!r}")
        out[str(cls)] = n
    return out
