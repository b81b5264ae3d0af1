"""The one foreach-run merge (acneops.stages.params.foreach_values) behind train_gan, train_classifier and sort:
common keys overridden by runs[name], the same errors for every foreach stage."""

from __future__ import annotations

import pytest

from acneops.core.config import ConfigError
from acneops.stages import stage_module
from acneops.stages.params import foreach_values

RUNS = {  # a valid run of each foreach stage (whatever the stage needs beyond its common keys)
    "train_gan": {"labels": ["mild"]},
    "train_classifier": {},
    "sort": {"generator": "g.pt", "sorter": "s.pt"},
}


def test_common_keys_are_overridden_by_the_run():
    params = {"sort": {"batch": 8, "threshold": 0.5, "runs": {"all": {"threshold": 0.9}, "other": None}}}
    assert foreach_values(params, "sort", "all") == ({"batch": 8, "threshold": 0.9}, {"threshold": 0.9})
    assert foreach_values(params, "sort", "other") == ({"batch": 8, "threshold": 0.5}, {})
    assert params["sort"]["runs"]["all"] == {"threshold": 0.9}  # params are not modified


@pytest.mark.parametrize("stage", sorted(RUNS))
@pytest.mark.parametrize("runs, name, message", [
    ("RUN", "nope", r"params.yaml \[{stage}.runs\]: unknown run 'nope'; pass --name with one of \['a', 'b'\] "
                    r"\(the keys of params.yaml {stage}.runs\)"),
    ("RUN", None, r"{stage} needs a run name: pass --name with one of \['a', 'b'\]"),
    ("RUN", "", r"{stage} needs a run name"),
    ([1, 2], "a", r"params.yaml \[{stage}.runs\]: must map run names to overrides, got \[1, 2\]"),
    ({"a": 3}, "a", r"params.yaml \[{stage}.runs.a\]: must be a mapping of keys to override, got 3"),
    ({"a": {"name": "x"}}, "a", r"params.yaml \[{stage}\]: 'name' comes from --name; remove it from params"),
])
def test_every_foreach_stage_gives_the_same_errors(stage, runs, name, message):
    if runs == "RUN":
        runs = {"a": RUNS[stage], "b": RUNS[stage]}
    with pytest.raises(ConfigError, match=message.format(stage=stage)):
        stage_module(stage).config_from_params({stage: {"runs": runs}}, name)
