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


def test_sort_stage_writes_the_sorted_sets_and_shows_its_progress_by_name(tmp_path, monkeypatch, capsys):
    """The path `acneops run sort all` / dvc take (run_stage): a tiny DCGAN and a 32 px resnet18 sorter;
    stderr carries the stage's bars (generate, sorter labels, write PNGs), each with its final count."""
    import torch
    import yaml

    from acneops.classify.backbones import (
        create_classifier,
        model_args_for,
        save_checkpoint,
    )
    from acneops.core.io import read_csv, read_json
    from acneops.gan import checkpoint
    from acneops.stages import run_stage

    labels = ("mild", "moderate", "severe")
    torch.manual_seed(0)
    G_cls, D_cls = checkpoint.family_models("dcgan")
    G_args, D_args = dict(z_dim=8, img_resolution=32, base_channels=8), dict(img_resolution=32, base_channels=8)
    G, D = G_cls(**G_args), D_cls(**D_args)
    checkpoint.save(tmp_path / "g.pt", {"format": checkpoint.FORMAT, "family": "dcgan",
                                        "model": {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()},
                                        "model_args": {"G": G_args, "D": D_args}, "step": 0, "cur_nimg": 0,
                                        "config": {}})
    save_checkpoint(tmp_path / "s.pt", create_classifier("resnet18", 3, img_size=32),
                    model_args_for("resnet18", 3, 32, labels), epoch=1)
    params = {"sort": {"out_dir": str(tmp_path / "sorted"), "report_path": str(tmp_path / "sort.json"),
                       "n_images": 12, "batch": 4, "threshold": 0.0, "min_per_class": 1,
                       "runs": {"all": {"generator": str(tmp_path / "g.pt"), "sorter": str(tmp_path / "s.pt")}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("TQDM_DELAY", "0")  # bars off a terminal show only slow loops; show these short ones
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    result = run_stage("sort", "all", tmp_path / "params.yaml")
    assert sum(result.counts.values()) == 12 and read_json(tmp_path / "sort.json")["n_generated"] == 12
    assert len(read_csv(tmp_path / "sorted" / "manifest.csv")) == 12
    err = capsys.readouterr().err
    for bar in ("sort: generate", "sort: sorter labels", "sort: write PNGs"):
        assert any(bar in line and "12/12" in line for line in err.replace("\r", "\n").splitlines()), bar
