"""params.yaml reading shared by several commands: the foreach-run merge (train_gan, train_classifier, sort), the
anonymity audit section (shared by synthesize and evaluate), the prior-only classes (``ingest.prior_classes``, read
by every stage that must know them) and the data commands (`acneops data phantom`, `acneops data import-acne04`).
Domain packages take the built configs; only this layer knows where in params.yaml they come from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from acneops.core.config import ConfigError, build, section

if TYPE_CHECKING:  # each function imports the config it builds: a stage's import closure, which its dvc.yaml
    # deps must cover (tests/code/test_dvc_truth.py), then holds the audit/phantom/importers code only if it uses it
    from acneops.audit import AuditConfig
    from acneops.data.importers import ImportersConfig
    from acneops.data.phantom import PhantomConfig


def foreach_values(params: dict[str, Any], section_name: str, name: str | None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(merged values, the run's own overrides) of run ``name`` of a foreach stage.

    The section's common keys are overridden by ``<section>.runs[name]`` (dvc.yaml runs one stage per key of
    ``runs``: ``<section>@<name>``). A missing or unknown name, a ``runs`` that is not a mapping of mappings,
    or a ``name`` key in params (the name comes from ``--name``) is a ConfigError naming the key and the fix.
    """
    common = dict(section(params, section_name))
    runs = common.pop("runs", None) or {}
    if not isinstance(runs, dict):
        raise ConfigError(f"params.yaml [{section_name}.runs]: must map run names to overrides, got {runs!r}")
    choices = f"pass --name with one of {sorted(runs)} (the keys of params.yaml {section_name}.runs)"
    if not name:
        raise ConfigError(f"{section_name} needs a run name: {choices}")
    if name not in runs:
        raise ConfigError(f"params.yaml [{section_name}.runs]: unknown run {name!r}; {choices}")
    override = runs[name] or {}
    if not isinstance(override, dict):
        raise ConfigError(f"params.yaml [{section_name}.runs.{name}]: must be a mapping of keys to override, "
                          f"got {override!r}")
    if "name" in common or "name" in override:
        raise ConfigError(f"params.yaml [{section_name}]: 'name' comes from --name; remove it from params")
    return {**common, **override}, dict(override)


def with_prior_classes(params: dict[str, Any], values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` of section ``where`` plus ``prior_classes`` from ``ingest.prior_classes`` (none when params has no
    ingest section): the one place they are set, so a stage section may not set its own."""
    if "prior_classes" in values:
        raise ConfigError(f"params.yaml [{where}.prior_classes]: the prior-only classes are set once, in "
                          "ingest.prior_classes; remove the key here")
    ingest = params.get("ingest") if isinstance(params.get("ingest"), dict) else {}
    prior = ingest.get("prior_classes") or []
    if not isinstance(prior, (list, tuple)):
        raise ConfigError(f"params.yaml [ingest.prior_classes]: a list of class names, got {prior!r}")
    return {**values, "prior_classes": [str(c) for c in prior]}


def audit_config(params: dict[str, Any]) -> AuditConfig:
    """The anonymity audit's thresholds from the top-level ``audit`` section."""
    from acneops.audit import AuditConfig

    return build(AuditConfig, section(params, "audit"), "audit")


def phantom_config(params: dict[str, Any], task: str = "acne") -> PhantomConfig:
    """PhantomConfig from params.yaml's ``phantom`` section and the task chosen on the command line."""
    from acneops.data.phantom import PhantomConfig

    values = section(params, "phantom")
    if "task" in values:
        raise ConfigError("params.yaml [phantom.task]: the task is chosen with --task acne|mask; remove the key")
    return build(PhantomConfig, {**values, "task": task}, "phantom")


def importers_config(params: dict[str, Any] | None) -> ImportersConfig:
    """ImportersConfig from the optional ``importers`` section of params (defaults when absent)."""
    from acneops.data.importers import ImportersConfig

    if not params or "importers" not in params:
        return ImportersConfig()
    values = params["importers"]
    if not isinstance(values, dict):
        raise ConfigError(f"params.yaml: section 'importers' must be a mapping, got {values!r}")
    return build(ImportersConfig, values, "importers")
