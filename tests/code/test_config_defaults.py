"""Every config dataclass's defaults equal params.yaml's values, so code, docs and pipeline describe one default.

For each stage of the STAGES registry (and each run of a foreach stage) the config is built from params.yaml
through the stage's own ``config_from_params``; every key params.yaml sets in the stage's common section (and the
run does not override) must equal the dataclass field's default. The shared sections (audit, phantom, importers)
are checked the same way through acneops.stages.params.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from acneops.core.config import load_params, to_dict
from acneops.stages import STAGES, stage_module
from acneops.stages.params import audit_config, importers_config, phantom_config

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
NOT_FIELDS = {"runs", "upstream"}  # foreach machinery, not config values


def plain(value: Any) -> Any:
    """Compare as params.yaml spells values: paths as strings, tuples as lists, mapping keys as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def field_default(cls: type, key: str) -> Any:
    field = {f.name: f for f in dataclasses.fields(cls)}[key]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    pytest.fail(f"params.yaml sets [{key}] in its common section but {cls.__name__}.{key} has no default; give it "
                "params.yaml's value as default")


def mismatches(section: str, params_values: dict[str, Any], cfg: Any, skip: set[str]) -> list[str]:
    """'section.key: params.yaml X, Cls default Y' for every common key whose built value differs from the default."""
    cls = type(cfg)
    fields = {f.name for f in dataclasses.fields(cls)}
    out = []
    for key in sorted(set(params_values) - NOT_FIELDS - skip):
        assert key in fields, f"params.yaml [{section}.{key}] is not a field of {cls.__name__}"
        built, default = plain(getattr(cfg, key)), plain(field_default(cls, key))
        if built != default:
            out.append(f"[{section}.{key}]: params.yaml {params_values[key]!r} (built {built!r}), "
                       f"{cls.__name__} default {default!r}")
    return out


def stage_cases() -> list[tuple[str, str | None]]:
    params = load_params(PARAMS)
    cases = []
    for stage in STAGES:
        runs = params[stage].get("runs")
        cases += [(stage, name) for name in runs] if isinstance(runs, dict) and runs else [(stage, None)]
    return cases


@pytest.mark.parametrize("stage, name", stage_cases())
def test_stage_config_defaults_equal_params_yaml(stage: str, name: str | None) -> None:
    params = load_params(PARAMS)
    cfg = stage_module(stage).config_from_params(params, name)
    common = {k: v for k, v in params[stage].items() if k != "runs"}
    overridden = set((params[stage].get("runs") or {}).get(name) or {}) if name else set()
    bad = mismatches(stage, common, cfg, overridden)
    assert not bad, (f"{type(cfg).__name__} defaults disagree with params.yaml (set the dataclass default to "
                     "params.yaml's value, or change both):\n  " + "\n  ".join(bad))


@pytest.mark.parametrize("section, build", [("audit", audit_config), ("phantom", phantom_config),
                                            ("importers", importers_config)])
def test_shared_section_defaults_equal_params_yaml(section: str, build: Any) -> None:
    params = load_params(PARAMS)
    cfg = build(params)
    bad = mismatches(section, params[section], cfg, set())
    assert not bad, f"{type(cfg).__name__} defaults disagree with params.yaml:\n  " + "\n  ".join(bad)


def test_the_check_fails_with_the_key_and_both_values() -> None:
    """A dataclass default that drifts from params.yaml is reported by key with both values (the check can fail)."""
    from acneops.gan.config import TrainGanConfig

    drifted_cls = dataclasses.make_dataclass("TrainGanConfig", [("z_dim", int, dataclasses.field(default=512))],
                                             bases=(TrainGanConfig,), frozen=True)
    params = load_params(PARAMS)
    cfg = stage_module("train_gan").config_from_params(params, "base")
    drifted = drifted_cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    common = {k: v for k, v in params["train_gan"].items() if k != "runs"}
    assert mismatches("train_gan", common, drifted, {"labels"}) == [
        f"[train_gan.z_dim]: params.yaml {common['z_dim']!r} (built {cfg.z_dim!r}), TrainGanConfig default 512"]
