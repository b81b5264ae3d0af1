"""Prefect flows over the pipeline: ``pipeline`` (dvc.yaml's stages as isolated, retryable tasks) and
``regenerate`` (a fresh, versioned synthetic dataset from the registry's champions, the flow a schedule serves).

Nothing here computes a figure: the flows call the same stages, the same DVC commands and the same export code as
`dvc repro`. Prefect is imported by the flow modules only, so ``import acneops.flows`` stays cheap.
"""

from __future__ import annotations

import os

# Settings for the temporary Prefect server a flow starts when no PREFECT_API_URL is set (a user's own settings
# win). Its analytics heartbeat writes to the temporary server's sqlite file while the flow does, and prints a
# "database is locked" traceback that reads as the flow failing; a temporary server reports nothing anyway.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # Prefect's 20 s is short on a busy 2-core box
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a bar per downloaded model card/checkpoint floods the log
}


def prefect_defaults() -> None:
    """Apply :data:`PREFECT_DEFAULTS` to this process's environment, before Prefect is imported."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
