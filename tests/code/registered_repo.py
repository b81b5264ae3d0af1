"""A tiny repository whose generators are registered champions on a real MLflow tracking server (helpers, not tests):
the state `regenerate` starts from after a user's `acneops repro`, built through `acneops run` like test_register's."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml
from servers import mlflow_server
from test_register import LABELS, _params, _run, _write_params

from acneops.data.access import MANIFEST

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "flows" / "pipeline.py"
COUNT = 6  # images per class of a regenerated dataset


def regenerate_params(root: Path, **regenerate: object) -> dict:
    """test_register's params plus the synthesize and regenerate sections the flow reads."""
    p = _params(root)
    p["synthesize"] = {"generators": {c: str(root / f"models/gan/{c}/final.pt") for c in LABELS},
                       "counts": {c: COUNT for c in LABELS}, "out_dir": str(root / "synthetic_export"),
                       "report_path": str(root / "reports/synthesize.json"), "restored_dir": str(root / "restored"),
                       "audit_extractor": "tiny", "audit_checkpoint": None, "class_filter": "", "batch": 8,
                       "max_rounds": 2}
    p["audit"] = {"ct_cells": 2}
    p["regenerate"] = {"out_root": "datasets/regenerated", **regenerate}
    return p


@contextlib.contextmanager
def registered_repo(root: Path) -> Iterator[dict]:
    """A tracking server on loopback and ``root`` with champions of every class (first `register`)."""
    from test_evaluate import make_classifier, make_generator, make_restored, make_synthetic

    with mlflow_server(root / "server") as uri:
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "ACNEOPS_MODEL_CACHE": str(root / "model_cache"),
               "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
        env.pop("ACNEOPS_PARENT_RUN_ID", None)
        make_restored(root / "restored", LABELS)
        make_synthetic(root / "synthetic", LABELS)
        make_classifier(root / "models/sorter.pt", ("mild", "severe"))
        make_classifier(root / "models/augmented.pt", LABELS, always="severe")
        for i, c in enumerate(LABELS):
            make_generator(root / f"models/gan/{c}/final.pt", seed=i)
        _write_params(root, _params(root))
        _run(root, env, "train_classifier", "--name", "real")
        _run(root, env, "evaluate")
        _run(root, env, "register")
        (root / "params.yaml").write_text(yaml.safe_dump(regenerate_params(root)))
        assert (root / "restored" / "train" / MANIFEST).is_file()
        yield {"root": root, "uri": uri, "env": env}


def regenerate(root: Path, env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python flows/pipeline.py regenerate ...` in ``root``, as a user runs it."""
    return subprocess.run([sys.executable, str(FLOWS), "regenerate", "--params", "params.yaml", *args], cwd=root,
                          env=env, capture_output=True, text=True, timeout=timeout)


def datasets_in(root: Path) -> list[Path]:
    folder = root / "datasets" / "regenerated"
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
