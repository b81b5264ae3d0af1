"""params.yaml sections read outside one stage's own section: the anonymity audit (shared by synthesize and
evaluate) and the data commands (`acneops data phantom`, `acneops data import-acne04`). Domain packages take the
built configs; only this layer knows where in params.yaml they come from."""

from __future__ import annotations

from typing import Any

from acneops.audit import AuditConfig
from acneops.core.config import ConfigError, build, section
from acneops.data.importers import ImportersConfig
from acneops.data.phantom import PhantomConfig


def audit_config(params: dict[str, Any]) -> AuditConfig:
    """The anonymity audit's thresholds from the top-level ``audit`` section."""
    return build(AuditConfig, section(params, "audit"), "audit")


def phantom_config(params: dict[str, Any], task: str = "acne") -> PhantomConfig:
    """PhantomConfig from params.yaml's ``phantom`` section and the task chosen on the command line."""
    values = section(params, "phantom")
    if "task" in values:
        raise ConfigError("params.yaml [phantom.task]: the task is chosen with --task acne|mask; remove the key")
    return build(PhantomConfig, {**values, "task": task}, "phantom")


def importers_config(params: dict[str, Any] | None) -> ImportersConfig:
    """ImportersConfig from the optional ``importers`` section of params (defaults when absent)."""
    if not params or "importers" not in params:
        return ImportersConfig()
    values = params["importers"]
    if not isinstance(values, dict):
        raise ConfigError(f"params.yaml: section 'importers' must be a mapping, got {values!r}")
    return build(ImportersConfig, values, "importers")
