"""Options of one GAN training run (the training loop's frozen config) and what a finished run returns.

Defaults equal params.yaml's CPU default (tests/code/test_config_defaults.py keeps them in step); the
`train_gan` stage (acneops.stages.train_gan) builds this from its params section.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from acneops.core.config import ConfigError, require
from acneops.core.paths import REPORTS_DIR, RESTORED_DIR
from acneops.gan.ada import AugmentSpecError, augment_kwargs

# keys a resume may change: they do not alter the weights of the steps already taken
RESUMABLE_CHANGES = {"total_kimg", "snapshot_kimg", "tick_kimg", "workers", "grid_seeds", "truncation_psi",
                     "metrics_path", "plots_path", "device"}
# keys added after checkpoints were written, with the value every older checkpoint was trained with
# (a checkpoint's config without the key is not "other settings": it resumes, or counts as finished)
ADDED_KEYS = {"conditional": False}




@dataclasses.dataclass(frozen=True)
class TrainGanConfig:
    """params.yaml section ``train_gan`` merged with ``train_gan.runs.<name>``."""

    name: str  # the run's name (from --name), e.g. all, healthy, mild
    out_dir: Path  # where config, checkpoints, logs and grids go; default models/gan/<name>
    metrics_path: str = ""  # final training figures (JSON, DVC metrics); "" = reports/train_gan/<name>.json
    plots_path: str = ""  # per-tick figures as a JSON list (DVC plots); "" = reports/train_gan/<name>_stats.json
    family: str = "stylegan2"  # stylegan2 | dcgan
    labels: tuple[str, ...] = ()  # classes of the restored TRAIN split to train on (or use image_dir)
    image_dir: str = ""  # folder of PNGs to train on instead of labels (e.g. a sorted synthetic set); "" = off
    conditional: bool = False  # one class-conditional G and D over labels (NVIDIA's --cond); false = unconditional
    restored_dir: Path = RESTORED_DIR  # restore stage output (<split>/manifest.csv + images)
    resolution: int = 32  # image side, px (power of two; larger square images are downscaled to it on load)
    z_dim: int = 128  # latent z size (NVIDIA config F: 512)
    w_dim: int = 128  # intermediate latent w size (stylegan2; config F: 512)
    mapping_layers: int = 2  # mapping network depth (stylegan2; config F: 8)
    channel_base: int = 1024  # channels at resolution r = min(channel_base / r, channel_max) (stylegan2; F: 32768)
    channel_max: int = 64  # maximum feature maps per layer (stylegan2; config F: 512)
    conv_clamp: float = 256.0  # clamp of conv outputs as NVIDIA's train.py; 0 = none (stylegan2)
    mbstd_group: int = 4  # minibatch-std group size of D (stylegan2)
    base_channels: int = 64  # DCGAN width: feature maps of the 32x32 layer (dcgan)
    batch: int = 16  # total minibatch over all processes, images
    total_kimg: float = 20.0  # training length, thousands of real images shown to D
    snapshot_kimg: float = 1.0  # checkpoint + sample grid every this many kimg
    tick_kimg: float = 0.25  # stats line every this many kimg
    lr_g: float = 0.005  # G Adam learning rate (NVIDIA: 0.0025)
    lr_d: float = 0.005  # D Adam learning rate (NVIDIA: 0.0025)
    betas: tuple[float, float] = (0.0, 0.99)  # Adam betas (DCGAN paper: 0.5, 0.999)
    r1_gamma: float = 0.0128  # R1 weight gamma; 0 = off (NVIDIA auto: 0.0002 * resolution^2 / batch)
    r1_interval: int = 16  # lazy R1 every this many minibatches
    pl_weight: float = 0.0  # path length weight; 0 = off (NVIDIA: 2)
    pl_interval: int = 4  # lazy path length every this many minibatches
    pl_batch_shrink: int = 2  # path length minibatch = batch / this
    pl_decay: float = 0.01  # EMA decay of the path length target
    style_mixing: float = 0.0  # style mixing probability, 0..1 (NVIDIA: 0.9)
    ema_kimg: float = 5.0  # G_ema half-life, kimg; 0 = G_ema is a copy of G
    ema_rampup: float = 0.05  # EMA half-life at most cur_nimg * this (NVIDIA's rampup); 0 = none
    ada: bool = False  # adaptive discriminator augmentation (NVIDIA: on)
    ada_target: float = 0.6  # target of r_t = E[sign(D(real))]
    ada_interval: int = 4  # adjust p every this many minibatches
    ada_kimg: float = 100.0  # kimg for p to move by 1 (NVIDIA: 500; 100 for short / transfer runs)
    augment: str = "bgc"  # preset (blit, geom, color, bg, bgc) or transforms joined by '+', e.g. xflip+hue
    augment_p: float = 0.0  # initial p (the fixed p when ada is false; 0 and ada false = no augmentation)
    resume_from: str = ""  # base checkpoint for transfer learning (weights only); "" = from scratch
    freeze_d: int = 0  # FreezeD: freeze the first k D blocks (from the image side)
    train_g_last: int = 0  # train only the last k synthesis blocks (+toRGB), mapping frozen; 0 = all of G
    seed: int = 0  # seeds the initial weights and every minibatch's data order and noise
    grid_seeds: int = 16  # sample grid shows seeds 0..grid_seeds-1
    truncation_psi: float = 1.0  # truncation of the sample grids
    workers: int = 0  # torch CPU threads per process; 0 = all cores split over the processes
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda

    def __post_init__(self) -> None:
        where = f"params.yaml [train_gan.runs.{self.name}]"
        require(self.family in ("stylegan2", "dcgan"),
                f"{where}: family must be stylegan2 or dcgan, got {self.family!r}")
        require(not (self.conditional and self.image_dir),
                f"{where}: conditional: true needs the classes of labels, but image_dir {self.image_dir!r} is an "
                "unlabelled folder; set conditional: false or train on labels instead of image_dir")
        require(not (self.conditional and self.family != "stylegan2"),
                f"{where}: conditional: true is for family stylegan2 (the DCGAN has no class input), "
                f"got family {self.family!r}")
        require(bool(self.labels) != bool(self.image_dir),
                f"{where}: set exactly one of labels (restored train classes) or image_dir (a folder of PNGs)")
        require(self.resolution in [2 ** k for k in range(5, 11)],
                f"{where}: resolution must be a power of two in 32..1024, got {self.resolution}")
        require(self.batch >= 1 and self.total_kimg > 0 and self.snapshot_kimg > 0 and self.tick_kimg > 0,
                f"{where}: batch, total_kimg, snapshot_kimg and tick_kimg must be > 0")
        require(min(self.r1_interval, self.pl_interval, self.ada_interval, self.pl_batch_shrink) >= 1,
                f"{where}: r1_interval, pl_interval, ada_interval and pl_batch_shrink must be >= 1")
        require(0 <= self.style_mixing <= 1 and 0 <= self.augment_p <= 1 and 0 <= self.ada_target <= 1,
                f"{where}: style_mixing, augment_p and ada_target must be in [0, 1]")
        require(min(self.ema_kimg, self.ema_rampup, self.r1_gamma, self.pl_weight, self.freeze_d,
                    self.train_g_last, self.workers, self.seed) >= 0, f"{where}: negative values are not allowed")
        require(self.device in ("auto", "cpu", "cuda"), f"{where}: device must be auto, cpu or cuda")
        try:
            augment_kwargs(self.augment, where)
        except AugmentSpecError as exc:
            raise ConfigError(str(exc)) from exc

    @property
    def metrics_file(self) -> Path:
        return Path(self.metrics_path or REPORTS_DIR / "train_gan" / f"{self.name}.json")

    @property
    def plots_file(self) -> Path:
        return Path(self.plots_path or REPORTS_DIR / "train_gan" / f"{self.name}_stats.json")

    @property
    def c_dim(self) -> int:
        """Width of the class input c: len(labels) for a conditional run, 0 otherwise."""
        return len(self.labels) if self.conditional else 0

    def batch_gpu(self, world: int) -> int:
        """Images per process per step; the total batch must split evenly."""
        require(self.batch % world == 0,
                f"params.yaml [train_gan.runs.{self.name}]: batch {self.batch} does not split over {world} processes")
        return self.batch // world

    def to_dict(self) -> dict[str, Any]:
        from acneops.core.config import to_dict

        return to_dict(self)


@dataclasses.dataclass(frozen=True)
class TrainGanResult:
    """What a finished `train_gan` produced."""

    name: str  # run name
    checkpoint: Path  # out_dir/final.pt
    sha256: str  # of the final checkpoint
    cur_nimg: int  # real images shown to D
    resumed: bool  # continued from an earlier checkpoint of this run
    run_id: str  # MLflow run id ('' on ranks > 0)

    def summary(self) -> str:
        how = "resumed and finished" if self.resumed else "trained"
        return f"train_gan@{self.name}: {how} {self.cur_nimg / 1000:.3f} kimg -> {self.checkpoint} ({self.sha256[:12]})"


