"""sort: confident images go to their top class; a thin class is topped up (and counted), never silently empty."""

from __future__ import annotations

import numpy as np
import pytest

from acneops.core.config import ConfigError
from acneops.stages.sort import config_from_params
from acneops.synthetic.sorting import assign

PROBS = np.array([
    [0.90, 0.05, 0.05],  # confident class 0
    [0.80, 0.10, 0.10],  # confident class 0
    [0.10, 0.85, 0.05],  # confident class 1
    [0.40, 0.35, 0.25],  # below threshold, best for class 2 among the rejected after [4]
    [0.34, 0.33, 0.33],  # below threshold
])


def test_confident_images_keep_their_top_class_and_the_rest_are_rejected():
    label, top, topped = assign(PROBS, threshold=0.5, min_per_class=0)
    assert label.tolist() == [0, 0, 1, -1, -1] and top.tolist() == [0, 0, 1, 0, 0] and topped == {}


def test_a_thin_class_is_topped_up_with_its_most_probable_rejected_images():
    label, _, topped = assign(PROBS, threshold=0.5, min_per_class=1)
    assert topped == {2: 1}
    assert label.tolist() == [0, 0, 1, -1, 2]  # image 4 has the higher class-2 probability of the two rejected


def test_sort_runs_are_named_and_unknown_names_are_a_clear_error():
    params = {"sort": {"runs": {"all": {"generator": "g.pt", "sorter": "s.pt"}}}}
    cfg = config_from_params(params, "all")
    assert str(cfg.generator) == "g.pt" and str(cfg.sorter) == "s.pt"
    with pytest.raises(ConfigError, match=r"unknown run 'mild'.*\['all'\]"):
        config_from_params(params, "mild")
    with pytest.raises(ConfigError, match="threshold"):
        config_from_params({"sort": {"threshold": 2, "runs": {"all": {}}}}, "all")
