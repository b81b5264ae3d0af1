"""Test-wide isolation: no test writes into the repository's MLflow store or the user's Prefect home."""

from __future__ import annotations

import os

import pytest

# Tests start torch processes side by side (servers, stage subprocesses) on a small machine: sleeping OpenMP
# waiters keep oversubscribed threads from spinning against each other. Set before any test imports torch. The
# CLI sets no policy: a run owns its cores (acneops.pipeline.repro), where spinning waiters are faster.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path_factory, monkeypatch):
    """Point MLflow at a fresh temp sqlite store and Prefect at a temp home for every test."""
    root = tmp_path_factory.mktemp("tracking")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("PREFECT_HOME", str(root / "prefect"))
    monkeypatch.delenv("ACNEOPS_PARENT_RUN_ID", raising=False)
    monkeypatch.delenv("ACNEOPS_ACCESS_LOG", raising=False)
