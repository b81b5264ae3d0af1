"""StyleGAN2 training and generation speed (prints sec/kimg, images/s, parameter counts).

Default setting = the one NVIDIA's reference is measured at: StyleGAN2 32x32, batch 16, channel_base
32768, channel_max 128, mapping depth 2, z/w 512, R1 gamma 0.0128 every 16 minibatches, path length
every 4, style mixing 0.9, ADA on (bgc, target 0.6), fp32. It times the real training step of
acneops.gan.loop (all four phases, EMA, ADA) on random images after a warm-up that covers every
phase, then G_ema generation. The machine may be shared: the load average is printed with the
figures, and process CPU time is reported next to wall time.

Run: ``python benchmarks/gan_train.py [--device cuda] [--steps 32] [--augment-p 0.2] [--threads N]``
(``--resolution``, ``--batch``, ``--channel-base``, ``--channel-max``, ``--r1-interval``, ... change
the setting; ``--profile`` prints the top operators of one timed window).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from acneops.gan import dist as gan_dist
from acneops.core.config import build
from acneops.gan.loop import build_state, train_step
from acneops.gan.config import TrainGanConfig


class RandomImages:
    """Stands in for acneops.gan.bank.ImageBank: uint8 (N, 3, R, R) random images."""

    def __init__(self, n: int, resolution: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8, generator=gen)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images[indices]


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--channel-base", type=int, default=32768)
    ap.add_argument("--channel-max", type=int, default=128)
    ap.add_argument("--mapping-layers", type=int, default=2)
    ap.add_argument("--z-dim", type=int, default=512)
    ap.add_argument("--r1-gamma", type=float, default=0.0128)
    ap.add_argument("--r1-interval", type=int, default=16)
    ap.add_argument("--pl-interval", type=int, default=4)
    ap.add_argument("--style-mixing", type=float, default=0.9)
    ap.add_argument("--no-ada", action="store_true", help="train without the augmentation pipeline")
    ap.add_argument("--augment-p", type=float, default=0.0, help="initial ADA p (training starts at 0)")
    ap.add_argument("--warmup", type=int, default=16, help="untimed steps (>= r1 interval: every phase runs)")
    ap.add_argument("--steps", type=int, default=32, help="timed steps (a multiple of the r1 interval)")
    ap.add_argument("--gen-images", type=int, default=256, help="images for the generation figure")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    ap.add_argument("--profile", action="store_true", help="print the top operators of the timed steps")
    return ap.parse_args()


def make_config(a: argparse.Namespace) -> TrainGanConfig:
    values = {
        "name": "bench", "out_dir": "/nonexistent", "labels": ["bench"], "resolution": a.resolution,
        "z_dim": a.z_dim, "w_dim": a.z_dim, "mapping_layers": a.mapping_layers, "channel_base": a.channel_base,
        "channel_max": a.channel_max, "batch": a.batch, "r1_gamma": a.r1_gamma, "r1_interval": a.r1_interval,
        "pl_interval": a.pl_interval, "style_mixing": a.style_mixing, "ada": not a.no_ada,
        "ada_target": 0.6, "augment": "bgc", "augment_p": a.augment_p, "device": a.device,
    }
    return build(TrainGanConfig, values, "benchmark")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(state, cfg: TrainGanConfig, bank: RandomImages, dist: gan_dist.Dist, a) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``a.steps`` training steps after ``a.warmup`` steps."""
    for _ in range(a.warmup):
        train_step(state, cfg, bank, dist)
    _sync(dist.device)
    t0, c0 = time.perf_counter(), time.process_time()
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(a.steps):
                train_step(state, cfg, bank, dist)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    else:
        for _ in range(a.steps):
            train_step(state, cfg, bank, dist)
    _sync(dist.device)
    return time.perf_counter() - t0, time.process_time() - c0


def time_generation(G: torch.nn.Module, n: int, batch: int, device: torch.device) -> float:
    """Images per second of G_ema (const noise, psi 1, inference mode)."""
    z = torch.randn(n, G.z_dim, device=device)
    with torch.inference_mode():
        G(z[:batch], noise_mode="const")  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            G(z[start:start + batch], noise_mode="const")
        _sync(device)
    return n / (time.perf_counter() - t0)


def main() -> None:
    a = parse()
    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    cfg = make_config(a)
    dist = gan_dist.Dist(device=gan_dist.pick_device(a.device))
    state = build_state(cfg, dist)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"setting: {cfg.resolution}x{cfg.resolution}, batch {cfg.batch}, channel_base {cfg.channel_base}, "
          f"channel_max {cfg.channel_max}, mapping {cfg.mapping_layers}, R1 {cfg.r1_gamma} every {cfg.r1_interval}, "
          f"pl every {cfg.pl_interval}, mixing {cfg.style_mixing}, ADA {'on' if cfg.ada else 'off'} "
          f"(p0={cfg.augment_p}), fp32, device {dist.device}, threads {torch.get_num_threads()}")
    print(f"parameters: G {count(state.G) / 1e6:.2f} M, D {count(state.D) / 1e6:.2f} M")
    bank = RandomImages(max(256, cfg.batch), cfg.resolution)
    load_before = os.getloadavg()[0]
    wall, cpu = time_training(state, cfg, bank, dist, a)
    nimg = a.steps * cfg.batch
    print(f"training: {wall / nimg * 1000:.1f} sec/kimg, {nimg / wall:.2f} images/s "
          f"(wall, {a.steps} steps after {a.warmup} warm-up; process CPU {cpu / nimg * 1000:.1f} s/kimg; "
          f"ADA p at end {float(state.augment_pipe.p) if state.augment_pipe is not None else 0:.3f})")
    gen = time_generation(state.G_ema, a.gen_images, 32, dist.device)
    print(f"generation: {gen:.1f} images/s (G_ema, batch 32, const noise)")
    print(f"load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
