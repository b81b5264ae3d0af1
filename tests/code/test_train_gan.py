"""train_gan: params merging and errors, trainable selection, transfer checks, a tiny end-to-end run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from acneops.core.config import ConfigError
from acneops.core.errors import AcneopsError
from acneops.core.io import sha256_file
from acneops.gan import checkpoint
from acneops.gan import dist as gan_dist
from acneops.gan.ada import augment_kwargs
from acneops.gan.config import TrainGanConfig
from acneops.stages.train_gan import config_from_params

NET = {"resolution": 32, "z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 128,
       "channel_max": 16, "batch": 4, "grid_seeds": 4, "workers": 1, "device": "cpu"}


def _params(**runs) -> dict:
    return {"train_gan": {**NET, "r1_gamma": 0.5, "runs": runs or {"all": {"labels": ["mild", "severe"]}}}}


def test_run_overrides_common_keys():
    params = _params(all={"labels": ["mild", "severe"], "batch": 8}, healthy={"labels": ["healthy"]})
    cfg = config_from_params(params, "all")
    assert cfg.name == "all" and cfg.batch == 8 and cfg.r1_gamma == 0.5
    assert cfg.labels == ("mild", "severe") and cfg.out_dir == Path("models/gan/all")
    assert cfg.metrics_file == Path("reports/train_gan/all.json")
    assert cfg.plots_file == Path("reports/train_gan/all_stats.json")
    assert config_from_params(params, "healthy").batch == 4


def test_unknown_run_lists_the_runs():
    with pytest.raises(ConfigError, match=r"unknown run 'nope'.*\['all', 'healthy'\]"):
        config_from_params(_params(all={"labels": ["mild"]}, healthy={"labels": ["healthy"]}), "nope")
    with pytest.raises(ConfigError, match="pass --name"):
        config_from_params(_params(), None)


@pytest.mark.parametrize("override, message", [
    ({"labels": ["mild"], "lr_gg": 1}, "unknown key"),
    ({"labels": ["mild"], "family": "biggan"}, "family must be"),
    ({"labels": ["mild"], "image_dir": "x"}, "exactly one of labels"),
    ({}, "exactly one of labels"),
    ({"labels": ["mild"], "resolution": 48}, "power of two"),
    ({"labels": ["mild"], "style_mixing": 1.5}, r"\[0, 1\]"),
    ({"labels": ["mild"], "augment": "bgc+warp"}, "warp"),
    ({"labels": ["mild"], "batch": "many"}, "expected a number"),
])
def test_bad_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        config_from_params(_params(x=override), "x")


def test_image_dir_run_drops_common_labels():
    params = _params(sorted={"image_dir": "datasets/sorted/mild"})
    params["train_gan"]["labels"] = ["mild", "moderate"]
    cfg = config_from_params(params, "sorted")
    assert cfg.labels == () and cfg.image_dir == "datasets/sorted/mild"


def test_dcgan_neutralises_inherited_stylegan_keys_but_rejects_explicit_ones():
    cfg = config_from_params(_params(d={"labels": ["mild"], "family": "dcgan"}), "d")
    assert (cfg.r1_gamma, cfg.pl_weight, cfg.style_mixing) == (0.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="stylegan2 only"):
        config_from_params(_params(d={"labels": ["mild"], "family": "dcgan", "r1_gamma": 1.0}), "d")


def test_augment_presets_and_lists():
    assert set(augment_kwargs("bgc")) == {"xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                                          "brightness", "contrast", "lumaflip", "hue", "saturation"}
    assert augment_kwargs("xflip+hue") == {"xflip": 1.0, "hue": 1.0}


def _cfg(tmp_path: Path, **kw) -> TrainGanConfig:
    values = {**NET, "name": "t", "out_dir": str(tmp_path / "out"), "labels": ["healthy"],
              "metrics_path": str(tmp_path / "reports" / "t.json"),
              "plots_path": str(tmp_path / "reports" / "t_stats.json"),
              "restored_dir": str(tmp_path / "restored"), "r1_interval": 2, "pl_interval": 2, **kw}
    from acneops.core.config import build

    return build(TrainGanConfig, values, "test")


def test_freeze_d_and_train_g_last_select_parameters(tmp_path):
    from acneops.gan.loop import build_state

    state = build_state(_cfg(tmp_path, freeze_d=2, train_g_last=1), gan_dist.Dist())
    G_names = {n for n, p in state.G.named_parameters() if any(p is q for q in state.params["G"])}
    D_names = {n for n, p in state.D.named_parameters() if any(p is q for q in state.params["D"])}
    assert G_names and all(n.startswith("synthesis.b32.") for n in G_names)  # last block incl. torgb
    assert any(n.startswith("synthesis.b32.torgb.") for n in G_names)
    assert not any(n.startswith(("b32.", "b16.")) for n in D_names)  # first two D blocks frozen
    assert any(n.startswith("b8.") for n in D_names) and any(n.startswith("b4.") for n in D_names)
    # the optimizers only hold the trainable parameters
    assert sum(len(g["params"]) for g in state.opt["G"].param_groups) == len(G_names)
    with pytest.raises(AcneopsError, match="freeze_d"):
        build_state(_cfg(tmp_path, freeze_d=4), gan_dist.Dist())


def test_lazy_regularisation_adjusts_adam_as_nvidia(tmp_path):
    from acneops.gan.loop import build_state

    state = build_state(_cfg(tmp_path, lr_g=0.002, lr_d=0.004, betas=[0.0, 0.99], pl_interval=4,
                             r1_interval=16), gan_dist.Dist())
    g, d = state.opt["G"].param_groups[0], state.opt["D"].param_groups[0]
    assert g["lr"] == pytest.approx(0.002 * 4 / 5) and g["betas"][1] == pytest.approx(0.99 ** (4 / 5))
    assert d["lr"] == pytest.approx(0.004 * 16 / 17) and d["betas"][1] == pytest.approx(0.99 ** (16 / 17))


def test_transfer_requires_the_same_architecture(tmp_path):
    from acneops.gan.loop import build_state, state_dict, transfer

    base_cfg = _cfg(tmp_path)
    base = build_state(base_cfg, gan_dist.Dist())
    path = tmp_path / "base.pt"
    checkpoint.save(path, state_dict(base, base_cfg))
    same = build_state(_cfg(tmp_path, seed=5), gan_dist.Dist())
    transfer(same, _cfg(tmp_path, seed=5), str(path))
    for a, b in zip(same.G.state_dict().values(), base.G.state_dict().values()):
        assert torch.equal(a, b)
    wider = _cfg(tmp_path, channel_max=32)
    with pytest.raises(AcneopsError, match="channel_max: base 16 vs params 32"):
        transfer(build_state(wider, gan_dist.Dist()), wider, str(path))


def _restored(root: Path, n: int = 8, res: int = 32) -> Path:
    rng = np.random.default_rng(0)
    from PIL import Image

    split = root / "restored" / "train"
    (split / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (res, res, 3), dtype=np.uint8)).save(split / f"images/{i}.png")
        rows.append({"file": f"images/{i}.png", "label": "healthy"})
    rows.append({"file": "images/x.png", "label": "test-only-class"})
    with open(split / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "restored"


@pytest.mark.parametrize("family", ["stylegan2", "dcgan"])
def test_tiny_run_leaves_the_documented_trail(tmp_path, monkeypatch, family):
    from mlflow import MlflowClient

    from acneops.stages.train_gan import run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    _restored(tmp_path)
    extra = {"family": "dcgan", "z_dim": 16, "base_channels": 8, "r1_gamma": 0.0, "pl_weight": 0.0,
             "style_mixing": 0.0, "betas": [0.5, 0.999]} if family == "dcgan" else {}
    cfg = _cfg(tmp_path, total_kimg=0.012, snapshot_kimg=0.008, tick_kimg=0.004, **extra)
    result = run(cfg)
    out = cfg.out_dir
    assert result.checkpoint == out / "final.pt" and not (out / "checkpoint.pt").exists()
    assert json.loads((out / "config.json").read_text())["total_kimg"] == 0.012
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [s["nimg"] for s in stats] == [4, 8, 12] and all(np.isfinite(s["loss_D"]) for s in stats)
    assert {"images_per_sec", "sec_per_kimg"} <= set(json.loads((out / "timing.jsonl").read_text().splitlines()[0]))
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["fakes_kimg00000.008.png", "fakes_kimg00000.012.png"]
    metrics = json.loads(cfg.metrics_file.read_text())  # DVC metrics: last tick's figures, outside out_dir
    assert metrics["kimg"] == 0.012 and metrics["num_images"] == 8 and metrics["loss_D"] == stats[-1]["loss_D"]
    assert json.loads(cfg.plots_file.read_text()) == stats  # DVC plots read JSON lists, not JSONL
    if family == "stylegan2":
        _dvc_plots_read(tmp_path, cfg.plots_file)

    ckpt = checkpoint.load(out / "final.pt")  # self-describing: rebuilds G_ema with no other input
    assert ckpt["family"] == family and ckpt["cur_nimg"] == 12 and ckpt["step"] == 3
    assert ckpt["config"]["name"] == "t" and set(ckpt["model"]) == {"G", "D", "G_ema"}
    assert set(ckpt["optim"]) == {"G", "D"} and {"torch", "numpy", "python"} <= set(ckpt["rng"])
    G = checkpoint.build_generator(ckpt)
    assert G(torch.zeros(2, G.z_dim)).shape == (2, 3, 32, 32)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlrun = client.get_run(result.run_id)
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["family"] == family
    assert mlrun.data.tags["checkpoint_sha256"] == result.sha256 == sha256_file(out / "final.pt")
    assert [m.step for m in client.get_metric_history(result.run_id, "loss_G")] == [4, 8, 12]
    assert len(client.list_artifacts(result.run_id, "grids")) == 2


def _dvc_plots_read(root: Path, plots_file: Path) -> None:
    """The real `dvc plots show` renders the loss curves of the plots file (uniform JSON rows)."""
    import shutil
    import subprocess
    import sys

    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=root, check=True, timeout=300)
    rel = plots_file.relative_to(root)
    (root / "dvc.yaml").write_text(f"plots:\n  - {rel}:\n      x: kimg\n      y: [loss_G, loss_D, r1_penalty]\n")
    shown = subprocess.run([dvc, "plots", "show", "--json"], cwd=root, capture_output=True, text=True, timeout=300)
    out = json.loads(shown.stdout)
    assert "errors" not in out, out.get("errors")
    values = out["data"][str(rel)][0]["content"]["data"]["values"]
    assert {v["kimg"] for v in values} == {0.004, 0.008, 0.012}


def test_missing_classes_and_wrong_sizes_are_clear_errors(tmp_path, monkeypatch):
    from acneops.core.errors import StageError
    from acneops.stages.train_gan import run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    _restored(tmp_path, res=16)
    with pytest.raises(StageError, match="no train images with label in \\['severe'\\]"):
        run(_cfg(tmp_path, labels=["healthy", "severe"]))
    with pytest.raises(StageError, match="image is 16x16, 32x32 is needed .*the GAN trains at 32x32"):
        run(_cfg(tmp_path))


def test_transfer_run_trains_only_the_unfrozen_layers(tmp_path, monkeypatch):
    from acneops.stages.train_gan import run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    _restored(tmp_path)
    schedule = {"total_kimg": 0.008, "snapshot_kimg": 0.008, "tick_kimg": 0.004}
    base = run(_cfg(tmp_path, **schedule))
    cfg = _cfg(tmp_path, out_dir=str(tmp_path / "tuned"), resume_from=str(base.checkpoint), freeze_d=1,
               train_g_last=1, seed=1, **schedule)
    tuned = run(cfg)
    before, after = checkpoint.load(base.checkpoint)["model"], checkpoint.load(tuned.checkpoint)
    assert after["cur_nimg"] == 8 and not tuned.resumed  # fresh counters and optimizer
    for net, frozen, trained in (("G", ("mapping.", "synthesis.b4.", "synthesis.b16."), ("synthesis.b32.",)),
                                 ("D", ("b32.",), ("b16.", "b4."))):
        for name, value in after["model"][net].items():
            if name.endswith(("w_avg", "noise_const")) or "filter" in name:
                continue  # buffers
            if name.startswith(frozen):
                assert torch.equal(value, before[net][name]), f"{net}.{name} was frozen but changed"
            elif name.startswith(trained) and name.endswith("weight"):
                assert not torch.equal(value, before[net][name]), f"{net}.{name} should have trained"


def test_larger_images_are_downscaled_on_load_and_odd_shapes_refused(tmp_path):
    """train_gan.resolution may be below the restored resolution: images are LANCZOS-downscaled on load."""
    from PIL import Image

    from acneops.core.errors import StageError
    from acneops.gan.bank import read_image

    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    big.save(tmp_path / "big.png")
    got = read_image(tmp_path / "big.png", 32)
    want = np.asarray(big.resize((32, 32), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    assert got.shape == (3, 32, 32) and np.array_equal(got, want)
    assert np.array_equal(read_image(tmp_path / "big.png", 64), np.asarray(big).transpose(2, 0, 1))
    Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    with pytest.raises(StageError, match="image is 64x32, 32x32 is needed \\(square.*the GAN trains at 32x32"):
        read_image(tmp_path / "wide.png", 32)
