"""Stage `train_gan`: train one generator (StyleGAN2 with ADA, or DCGAN) on one image set.

`acneops run train_gan --name <run>` trains the run ``<run>`` of params section ``train_gan``
(its ``runs`` mapping overrides the common keys per run; dvc.yaml lists one `train_gan@<run>`
stage per run via foreach). Single process, or `torchrun --nproc_per_node N -m acneops run
train_gan --name <run>` for data-parallel training (see acneops.gan.dist).

Trail left in ``out_dir`` (default ``models/gan/<run>``), written by rank 0:
- ``config.json``: the resolved config, written before training starts;
- ``checkpoint.pt``: self-describing checkpoint every ``snapshot_kimg`` (atomic); renamed to
  ``final.pt`` when training completes. Re-running the same command after a kill (even SIGKILL)
  resumes from it and ends with exactly the weights of an uninterrupted run (CPU);
- ``stats.jsonl``: per tick losses, R1 and path-length penalties, ADA p and r_t (deterministic);
  ``timing.jsonl``: per tick images/s and sec/kimg (wall-clock, varies);
- ``grids/fakes_kimg<kimg>.png``: fixed-seed sample grid of G_ema per snapshot;
- outside out_dir, so dvc.yaml can list them: ``metrics_path`` (default ``reports/train_gan/<run>.json``)
  the last tick's figures, kimg and image count; ``plots_path`` (default
  ``reports/train_gan/<run>_stats.json``) stats.jsonl rewritten as a JSON list every tick (DVC plots
  read JSON, YAML, CSV or TSV, not JSONL);
- one MLflow run per training (resumed runs continue it): params, per-tick metrics with
  step = cur_nimg (kimg * 1000, an integer), grids as artifacts, checkpoint path and sha256 as tags.

Where the issue is silent the loop does what NVIDIA's stylegan2-ada-pytorch training_loop.py does
(see acneops.gan.loop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acneops.core.config import ConfigError, build, check_upstream
from acneops.core.paths import REPORTS_DIR, RESTORED_DIR, gan_dir
from acneops.gan.config import TrainGanConfig, TrainGanResult
from acneops.stages.params import foreach_values

Config = TrainGanConfig  # the stage's frozen config: the training loop's options (acneops.gan.config)

STYLEGAN_ONLY = {"r1_gamma": 0.0, "pl_weight": 0.0, "style_mixing": 0.0}  # neutral values for dcgan
TRACKS_ITSELF = True  # acneops.stages.run_stage: this stage opens (and resumes) its own MLflow run, rank 0 only


def upstream_of(values: dict[str, Any]) -> Path:
    """What a run reads beyond the restored train split: its image_dir, else its base checkpoint's folder."""
    if values.get("image_dir"):
        return Path(str(values["image_dir"]))
    if values.get("resume_from"):
        return Path(str(values["resume_from"])).parent
    return Path(str(values.get("restored_dir", RESTORED_DIR))) / "train"


def config_from_params(params: dict[str, Any], name: str | None) -> TrainGanConfig:
    """Merge ``train_gan``'s common keys with ``train_gan.runs[name]`` into a validated config."""
    values, override = foreach_values(params, "train_gan", name)
    values["name"] = name
    check_upstream(values, upstream_of(values), f"train_gan.runs.{name}")
    if "image_dir" in override and "labels" not in override:  # a folder run drops the common labels
        values["labels"] = []
    values.setdefault("out_dir", str(gan_dir(name)))
    values.setdefault("metrics_path", str(REPORTS_DIR / "train_gan" / f"{name}.json"))
    values.setdefault("plots_path", str(REPORTS_DIR / "train_gan" / f"{name}_stats.json"))
    if values.get("family") == "dcgan":  # DCGAN has no R1/path length/style mixing: neutralise inherited keys
        explicit = {k: override[k] for k in STYLEGAN_ONLY if k in override and override[k] != STYLEGAN_ONLY[k]}
        if explicit:
            raise ConfigError(f"params.yaml [train_gan.runs.{name}]: {explicit} apply to stylegan2 only; "
                              "remove them from this dcgan run")
        values.update(STYLEGAN_ONLY)
    return build(TrainGanConfig, values, f"train_gan.runs.{name}")


def run(cfg: TrainGanConfig) -> TrainGanResult:
    """Train (or resume, or confirm finished) the generator of run ``cfg.name``."""
    from acneops.gan.train import train
    from acneops.registry import generator_model
    from acneops.registry.models import ensure_logged

    result = train(cfg)
    if result.run_id:  # rank 0: the generator as an MLflow pyfunc model of its run (`register` finds it by sha256)
        ensure_logged(result.run_id, result.checkpoint, generator_model.spec, "generator", cfg.name,
                      tags={"family": cfg.family})
    return result
