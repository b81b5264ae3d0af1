"""The GAN training step and the state a checkpoint must carry to resume it exactly.

Follows NVIDIA's stylegan2-ada-pytorch ``training/training_loop.py`` where the issue is silent:
- phases Gmain, Greg (every ``pl_interval``), Dmain, Dreg (every ``r1_interval``), each with its own
  z; a regularisation phase's loss is multiplied by its interval (lazy regularisation) and, as in
  NVIDIA's loop, each optimizer's lr and betas are adjusted by c = interval / (interval + 1);
- requires_grad is switched on only for the parameters of the phase being trained; gradients are
  set to None before, NaN/Inf-cleaned (nan_to_num) after, then Adam steps;
- G_ema: beta = 0.5 ** (batch / ema_nimg) with ema_nimg = min(ema_kimg * 1000, cur_nimg * ema_rampup),
  buffers (w_avg) copied from G;
- ADA: p adjusted every ``ada_interval`` minibatches from the signs of D's real logits.
Additions for exact resume: the data order and z of minibatch ``step`` come from generators seeded
with (seed, step) (so do the classes of a conditional run's generated images, drawn from the training
labels as NVIDIA does), and the global torch RNG (synthesis noise, augmentation, style mixing) is reseeded
with (seed, step, rank) at the start of every step, so no draw depends on anything but the step.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any

import torch
from torch import Tensor, nn

from acneops.core.errors import AcneopsError
from acneops.gan import checkpoint as ckpt_io
from acneops.gan.ada import augment_kwargs
from acneops.gan.bank import ImageBank, batch_indices, one_hot, to_float
from acneops.gan.config import TrainGanConfig
from acneops.gan.dist import Dist, average_grads, broadcast_module, mean_across_ranks
from acneops.gan.loss import GanLoss


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str  # Gmain | Greg | Dmain | Dreg
    net: str  # G | D
    interval: int  # run on minibatches with step % interval == 0; the loss gain


@dataclasses.dataclass
class TrainState:
    """Everything that changes during training (what a checkpoint stores)."""

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt: dict[str, torch.optim.Optimizer]  # 'G', 'D'
    params: dict[str, list[nn.Parameter]]  # trainable parameters per network
    phases: list[Phase]
    loss: GanLoss
    augment_pipe: nn.Module | None
    ada: Any  # acneops.gan.ada.pipe.AdaController | None
    step: int = 0  # minibatches done
    cur_nimg: int = 0  # real images shown to D


# the figures each phase reports (GanLoss return keys); every tick record carries all of its run's keys
PHASE_STATS = {"Gmain": ("loss_G", "scores_fake"), "Greg": ("pl_penalty", "pl_mean"),
               "Dmain": ("loss_D", "scores_real", "scores_fake_D"), "Dreg": ("r1_penalty",)}


def stat_keys(state: "TrainState") -> list[str]:
    """Every key a tick record of this run has (None where a lazy phase did not run in the tick)."""
    keys = [k for phase in state.phases for k in PHASE_STATS[phase.name]]
    if state.augment_pipe is not None:
        keys.append("ada_p")
    if state.ada is not None:
        keys.append("ada_rt")
    return sorted(keys)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed of the global torch RNG for minibatch ``step`` on ``rank``."""
    return ((seed * 1_000_003 + step) * 1_009 + rank) % (2 ** 63)


def seed_all(seed: int, rank: int) -> None:
    """Seed every global RNG at the start of a run (NVIDIA seeds numpy and torch with seed * world + rank)."""
    import random

    import numpy as np

    random.seed(seed * 1_009 + rank)
    np.random.seed((seed * 1_009 + rank) % (2 ** 32))
    torch.manual_seed(seed * 1_009 + rank)


def model_args(cfg: TrainGanConfig) -> dict[str, dict[str, Any]]:
    """Constructor kwargs of G and D (stored in every checkpoint)."""
    if cfg.family == "dcgan":
        common = dict(img_resolution=cfg.resolution, img_channels=3, base_channels=cfg.base_channels)
        return {"G": dict(z_dim=cfg.z_dim, **common), "D": common}
    clamp = cfg.conv_clamp or None
    G = dict(z_dim=cfg.z_dim, w_dim=cfg.w_dim, img_resolution=cfg.resolution, img_channels=3,
             mapping_layers=cfg.mapping_layers, channel_base=cfg.channel_base, channel_max=cfg.channel_max,
             conv_clamp=clamp)
    D = dict(img_resolution=cfg.resolution, img_channels=3, channel_base=cfg.channel_base,
             channel_max=cfg.channel_max, conv_clamp=clamp, mbstd_group_size=cfg.mbstd_group)
    if cfg.c_dim:  # the class names ride in G's model_args: a checkpoint names its classes itself
        G.update(c_dim=cfg.c_dim, labels=list(cfg.labels))
        D.update(c_dim=cfg.c_dim, mapping_layers=cfg.mapping_layers)
    return {"G": G, "D": D}


def make_phases(cfg: TrainGanConfig) -> list[Phase]:
    if cfg.family == "dcgan":
        return [Phase("Gmain", "G", 1), Phase("Dmain", "D", 1)]
    phases = [Phase("Gmain", "G", 1)]
    if cfg.pl_weight > 0:
        phases.append(Phase("Greg", "G", cfg.pl_interval))
    phases.append(Phase("Dmain", "D", 1))
    if cfg.r1_gamma > 0:
        phases.append(Phase("Dreg", "D", cfg.r1_interval))
    return phases


def _trainable(module: nn.Module, prefixes: list[str] | None, exclude: list[str]) -> list[nn.Parameter]:
    """Parameters whose name starts with one of ``prefixes`` (all if None) and none of ``exclude``."""
    return [p for n, p in module.named_parameters()
            if (prefixes is None or any(n.startswith(f"{x}.") for x in prefixes))
            and not any(n.startswith(f"{x}.") for x in exclude)]


def select_trainable(cfg: TrainGanConfig, G: nn.Module, D: nn.Module) -> dict[str, list[nn.Parameter]]:
    """FreezeD (first ``freeze_d`` D blocks frozen) and train_g_last (last k synthesis blocks only)."""
    where = f"params.yaml [train_gan.runs.{cfg.name}]"
    G_prefixes = None
    if cfg.train_g_last:
        names = getattr(getattr(G, "synthesis", None), "block_names", None)
        if not names or cfg.train_g_last > len(names):
            raise AcneopsError(f"{where}: train_g_last={cfg.train_g_last} needs a StyleGAN2 generator with at "
                               f"least that many synthesis blocks (has {names})")
        G_prefixes = [f"synthesis.{b}" for b in names[-cfg.train_g_last:]]
    D_frozen: list[str] = []
    if cfg.freeze_d:
        names = getattr(D, "block_names", None)
        if not names or cfg.freeze_d >= len(names):
            raise AcneopsError(f"{where}: freeze_d={cfg.freeze_d} must be below the number of D blocks {names}")
        D_frozen = list(names[:cfg.freeze_d])
    return {"G": _trainable(G, G_prefixes, []), "D": _trainable(D, None, D_frozen)}


def _optimizer(cfg: TrainGanConfig, params: list[nn.Parameter], lr: float, reg_interval: int | None):
    """Adam; with lazy regularisation lr and betas are scaled by c = interval / (interval + 1) (NVIDIA)."""
    c = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    betas = (cfg.betas[0] ** c, cfg.betas[1] ** c)
    return torch.optim.Adam(params, lr=lr * c, betas=betas, eps=1e-8, foreach=True)


def _augment(cfg: TrainGanConfig, dist: Dist) -> tuple[nn.Module | None, Any]:
    """ADA pipe and controller, or (pipe with fixed p, None), or (None, None) without augmentation."""
    if not cfg.ada and cfg.augment_p == 0:
        return None, None
    from acneops.gan.ada.pipe import AdaController, AugmentPipe

    pipe = AugmentPipe(**augment_kwargs(cfg.augment)).train().requires_grad_(False).to(dist.device)
    pipe.p.fill_(cfg.augment_p)
    if not cfg.ada:
        return pipe, None
    ctrl = AdaController(pipe, target=cfg.ada_target, interval=cfg.ada_interval, speed_kimg=cfg.ada_kimg,
                         batch_size=cfg.batch)
    return pipe, ctrl


def build_state(cfg: TrainGanConfig, dist: Dist) -> TrainState:
    """Fresh networks (initialised from ``seed``, identical on every rank), optimizers, ADA and loss."""
    G_cls, D_cls = ckpt_io.family_models(cfg.family)
    args = model_args(cfg)
    torch.manual_seed(cfg.seed)
    G = G_cls(**args["G"]).train().requires_grad_(False).to(dist.device)
    D = D_cls(**args["D"]).train().requires_grad_(False).to(dist.device)
    broadcast_module(G, dist)
    broadcast_module(D, dist)
    G_ema = copy.deepcopy(G).eval()
    params = select_trainable(cfg, G, D)
    lazy = cfg.family == "stylegan2"  # NVIDIA always runs StyleGAN2 with lazy intervals (4, 16)
    opt = {"G": _optimizer(cfg, params["G"], cfg.lr_g, cfg.pl_interval if lazy else None),
           "D": _optimizer(cfg, params["D"], cfg.lr_d, cfg.r1_interval if lazy else None)}
    pipe, ctrl = _augment(cfg, dist)
    loss = GanLoss(cfg.family, G, D, pipe, r1_gamma=cfg.r1_gamma, style_mixing=cfg.style_mixing,
                   pl_weight=cfg.pl_weight, pl_batch_shrink=cfg.pl_batch_shrink, pl_decay=cfg.pl_decay,
                   mean_across_ranks=mean_across_ranks(dist))
    return TrainState(G, D, G_ema, opt, params, make_phases(cfg), loss, pipe, ctrl)


def _run_phase(state: TrainState, phase: Phase, real: Tensor, real_c: Tensor | None, z: Tensor,
               gen_c: Tensor | None, dist: Dist) -> dict[str, Tensor]:
    params = state.params[phase.net]
    for p in params:
        p.grad = None
        p.requires_grad_(True)
    gain = phase.interval
    if phase.name == "Gmain":
        stats = state.loss.g_main(z, gain, gen_c)
    elif phase.name == "Greg":
        stats = state.loss.g_pl(z, gain, gen_c)
    else:
        stats, real_logits = (state.loss.d_main(real, z, gain, real_c, gen_c) if phase.name == "Dmain"
                              else state.loss.d_r1(real, gain, real_c))
        if state.ada is not None:
            state.ada.accumulate(real_logits)
    for p in params:
        p.requires_grad_(False)
    average_grads(params, dist)
    for p in params:
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
    state.opt[phase.net].step()
    return stats


def update_ema(state: TrainState, cfg: TrainGanConfig) -> None:
    """G_ema <- lerp(G, G_ema, beta), beta from the EMA half-life with NVIDIA's rampup; buffers copied."""
    ema_nimg = cfg.ema_kimg * 1000
    if cfg.ema_rampup > 0:
        ema_nimg = min(ema_nimg, state.cur_nimg * cfg.ema_rampup)
    beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
    with torch.no_grad():
        for p_ema, p in zip(state.G_ema.parameters(), state.G.parameters()):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(state.G_ema.buffers(), state.G.buffers()):
            b_ema.copy_(b)


def train_step(state: TrainState, cfg: TrainGanConfig, bank: ImageBank, dist: Dist) -> dict[str, Tensor]:
    """One minibatch of every due phase, then EMA, buffer sync and ADA; returns detached stats."""
    batch_gpu = cfg.batch // dist.world
    mine = slice(dist.rank * batch_gpu, (dist.rank + 1) * batch_gpu)
    idx = batch_indices(cfg.seed, state.step, cfg.batch, len(bank))[mine]
    real = to_float(bank.batch(idx), dist.device)
    z_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + state.step)  # same global z on every rank
    z_all = torch.randn([len(state.phases), cfg.batch, state.G.z_dim], generator=z_gen)[:, mine].to(dist.device)
    real_c, c_all = None, [None] * len(state.phases)
    if cfg.c_dim:  # reals: their own labels; fakes: the labels of random training images (NVIDIA's gen_c)
        real_c = one_hot(bank.classes[idx], cfg.c_dim).to(dist.device)
        drawn = torch.randint(len(bank), [len(state.phases), cfg.batch], generator=z_gen)[:, mine]
        c_all = one_hot(bank.classes[drawn], cfg.c_dim).to(dist.device)
    torch.manual_seed(step_seed(cfg.seed, state.step, dist.rank))
    stats: dict[str, Tensor] = {}
    for phase, z, gen_c in zip(state.phases, z_all, c_all):
        if state.step % phase.interval == 0:
            stats.update(_run_phase(state, phase, real, real_c, z, gen_c, dist))
    update_ema(state, cfg)
    broadcast_module(state.G, dist, buffers_only=True)  # w_avg / BN statistics: rank 0's (DDP default)
    broadcast_module(state.D, dist, buffers_only=True)
    broadcast_module(state.G_ema, dist, buffers_only=True)
    state.cur_nimg += cfg.batch
    state.step += 1
    if state.ada is not None and state.step % cfg.ada_interval == 0:
        state.ada.update()
    return stats


def state_dict(state: TrainState, cfg: TrainGanConfig) -> dict[str, Any]:
    """The resumable part of a checkpoint (the caller adds mlflow_run_id etc.)."""
    return {
        "family": cfg.family,
        "model": {k: getattr(state, k).state_dict() for k in ("G", "D", "G_ema")},
        "model_args": {"G": dict(state.G.model_args), "D": dict(state.D.model_args)},
        "step": state.step,
        "cur_nimg": state.cur_nimg,
        "config": cfg.to_dict(),
        "optim": {k: o.state_dict() for k, o in state.opt.items()},
        "augment": None if state.augment_pipe is None else {
            "p": float(state.augment_pipe.p), "ctrl": state.ada.state_dict() if state.ada else None},
        "pl_mean": state.loss.pl_mean.detach().cpu().clone(),
        "rng": ckpt_io.rng_state(),
    }


def load_state(state: TrainState, ckpt: dict[str, Any]) -> None:
    """Restore everything :func:`state_dict` saved (exact resume)."""
    for key in ("G", "D", "G_ema"):
        getattr(state, key).load_state_dict(ckpt["model"][key])
    for key, opt in state.opt.items():
        opt.load_state_dict(ckpt["optim"][key])
    if state.augment_pipe is not None and ckpt.get("augment"):
        state.augment_pipe.p.fill_(ckpt["augment"]["p"])
        if state.ada is not None and ckpt["augment"].get("ctrl"):
            state.ada.load_state_dict(ckpt["augment"]["ctrl"])
    state.loss.pl_mean = ckpt["pl_mean"].to(torch.float32).clone()
    state.step, state.cur_nimg = int(ckpt["step"]), int(ckpt["cur_nimg"])
    ckpt_io.set_rng_state(ckpt["rng"])


def transfer(state: TrainState, cfg: TrainGanConfig, path: str) -> list[str]:
    """Transfer learning: G, D and G_ema weights from a base checkpoint; optimizer and counters stay fresh.

    The base must have the run's architecture up to the class conditioning (c_dim, labels, D's class
    mapping). Same conditioning: every tensor is loaded. Other conditioning (e.g. a conditional run from an
    unconditional base): tensors matching by name and shape are copied (synthesis, D's conv blocks, ...) and
    the rest keeps its fresh initialisation (NVIDIA's copy_params_and_buffers); so do the class embeddings
    when both are conditional over other class lists. Returns the freshly initialised ``net.name``s.
    """
    base = ckpt_io.load(path)
    ours = {"G": dict(state.G.model_args), "D": dict(state.D.model_args)}
    where = f"train_gan.resume_from {path}"
    ckpt_io.check_same_architecture(base, cfg.family, ours, where, ignore=ckpt_io.CONDITIONING_KEYS)
    if all(base["model_args"][n] == ours[n] for n in ("G", "D")):
        for key in ("G", "D", "G_ema"):
            getattr(state, key).load_state_dict(base["model"][key])
        return []
    same_classes = base["model_args"]["G"].get("labels") == ours["G"].get("labels")
    fresh = []
    for key in ("G", "D", "G_ema"):
        source = {k: v for k, v in base["model"][key].items() if same_classes or not k.startswith("mapping.embed.")}
        fresh += [f"{key}.{name}" for name in ckpt_io.copy_matching(source, getattr(state, key))[1]]
    return fresh


def weights_sha256(state: TrainState) -> str:
    """One hash of every parameter and buffer of G, D and G_ema (replicas must agree on it)."""
    h = hashlib.sha256()
    for key in ("G", "D", "G_ema"):
        for name, tensor in getattr(state, key).state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
