"""StyleGAN2 training and generation speed (prints sec/kimg, images/s, parameter counts).

Default setting = the one NVIDIA's reference is measured at (``train.py --cfg=stylegan2`` with
``--batch=16 --gamma=0.0128 --cbase=32768 --cmax=128 --map-depth=2 --aug=ada``): StyleGAN2 32x32,
batch 16, channel_base 32768, channel_max 128, mapping depth 2, z/w 512, conv clamp 256, minibatch-std
group 4, Adam lr 0.002 betas (0, 0.99), R1 gamma 0.0128 every 16 minibatches, path length weight 2
every 4 (batch shrink 2), style mixing 0.9, G_ema half-life 5 kimg (ramp-up 0.05), ADA on (bgc,
target 0.6, every 4 minibatches, 500 kimg per unit of p, p starts at 0), fp32. It times the real
training step of acneops.gan.loop (all four phases, EMA, ADA) on random images after a warm-up that
covers every phase, then G_ema generation. The machine may be shared: the load average is printed
with the figures, and process CPU time is reported next to wall time.

``--reference PATH`` (a checkout of https://github.com/NVlabs/stylegan3) also runs NVIDIA's own
training at the same setting on the same images, alternated with ours (``--rounds`` times: ours,
theirs, ours, theirs, ...), and prints both settings side by side (a mismatch stops the run), both
sec/kimg per round with the load average before/after, the machine, and the ratio. How NVIDIA's code
is patched for the CPU (in a temporary copy) is in benchmarks/gan_reference.py.

Run: ``python benchmarks/gan_train.py [--device cuda] [--steps 32] [--augment-p 0.2] [--threads N]
[--reference PATH --rounds 2]`` (``--resolution``, ``--batch``, ``--channel-base``, ``--channel-max``,
``--r1-interval``, ... change the setting; ``--profile`` prints the top operators of one timed window).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from acneops.core.config import build
from acneops.gan import dist as gan_dist
from acneops.gan.ada import augment_kwargs
from acneops.gan.config import TrainGanConfig
from acneops.gan.loop import build_state, train_step


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
    ap.add_argument("--pl-weight", type=float, default=2.0, help="path length weight; 0 = no Greg phase")
    ap.add_argument("--pl-interval", type=int, default=4)
    ap.add_argument("--style-mixing", type=float, default=0.9)
    ap.add_argument("--lr", type=float, default=0.002, help="G and D Adam learning rate")
    ap.add_argument("--ada-kimg", type=float, default=500.0, help="kimg for ADA's p to move by 1")
    ap.add_argument("--no-ada", action="store_true", help="train without the augmentation pipeline")
    ap.add_argument("--augment-p", type=float, default=0.0, help="initial ADA p (training starts at 0)")
    ap.add_argument("--warmup", type=int, default=16, help="untimed steps (>= r1 interval: every phase runs)")
    ap.add_argument("--steps", type=int, default=32, help="timed steps (a multiple of the r1 interval)")
    ap.add_argument("--gen-images", type=int, default=256, help="images for the generation figure")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    ap.add_argument("--profile", action="store_true", help="print the top operators of the timed steps")
    ap.add_argument("--flops", action="store_true",
                    help="also count the FLOPs of one tick of training steps and measure this machine's fp32 GEMM "
                         "peak: the share of the peak the step achieves (a bound on what any engine can gain)")
    ap.add_argument("--reference", type=Path, default=None,
                    help="NVlabs/stylegan3 checkout: alternate NVIDIA's training with ours (patched temp copy)")
    ap.add_argument("--rounds", type=int, default=2, help="with --reference: ours/theirs pairs to run")
    return ap.parse_args()


def make_config(a: argparse.Namespace) -> TrainGanConfig:
    values = {
        "name": "bench", "out_dir": "/nonexistent", "labels": ["bench"], "resolution": a.resolution,
        "z_dim": a.z_dim, "w_dim": a.z_dim, "mapping_layers": a.mapping_layers, "channel_base": a.channel_base,
        "channel_max": a.channel_max, "batch": a.batch, "r1_gamma": a.r1_gamma, "r1_interval": a.r1_interval,
        "pl_weight": a.pl_weight, "pl_interval": a.pl_interval, "style_mixing": a.style_mixing,
        "lr_g": a.lr, "lr_d": a.lr, "ada": not a.no_ada, "ada_target": 0.6, "ada_kimg": a.ada_kimg,
        "augment": "bgc", "augment_p": a.augment_p, "device": a.device,
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


def ours_setting(cfg: TrainGanConfig) -> dict:
    """This benchmark's setting under the names of gan_reference.nvidia_setting."""
    keys = ("resolution", "batch", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "conv_clamp",
            "mbstd_group", "lr_g", "lr_d", "betas", "r1_gamma", "r1_interval", "pl_weight", "pl_interval",
            "pl_batch_shrink", "pl_decay", "style_mixing", "ema_kimg", "ema_rampup", "ada", "ada_target",
            "augment_p", "ada_interval", "ada_kimg", "seed")
    out = {k: getattr(cfg, k) for k in keys}
    out.update(augment="+".join(augment_kwargs(cfg.augment)), xflip_dataset=False)
    return out


def measure_ours(cfg: TrainGanConfig, dist: gan_dist.Dist, a: argparse.Namespace):
    """(wall sec/kimg, process CPU sec/kimg, state) of a fresh training state's timed steps."""
    state = build_state(cfg, dist)
    bank = RandomImages(max(256, cfg.batch), cfg.resolution)
    wall, cpu = time_training(state, cfg, bank, dist, a)
    nimg = a.steps * cfg.batch
    return wall / nimg * 1000, cpu / nimg * 1000, state


class _FlopCount:
    """Counts FLOPs of the aten ops torch's flop counter knows (matmuls, convolutions and their backward), as a
    dispatch mode: torch's FlopCounterMode also tracks modules with hooks that refuse ``autograd.grad`` (R1 and
    path length differentiate through a gradient)."""

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        class Mode(TorchDispatchMode):
            total = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                count = flop_registry.get(func._overloadpacket)
                if count is not None:
                    Mode.total += count(*args, **kwargs, out_val=out)
                return out

        return Mode()


def step_flops(cfg: TrainGanConfig, dist: gan_dist.Dist) -> float:
    """FLOPs of one training step, averaged over one tick (lcm of the R1 and path-length intervals: every phase in
    its share), as torch's flop counter counts them (matmuls and convolutions, forward and backward, also the
    gradients of gradients; elementwise work is not counted)."""
    state = build_state(cfg, dist)
    bank = RandomImages(max(256, cfg.batch), cfg.resolution)
    tick = math.lcm(cfg.r1_interval, cfg.pl_interval if cfg.pl_weight else 1)
    for _ in range(tick):  # state past its first step (lazy buffers, path-length mean)
        train_step(state, cfg, bank, dist)
    with _FlopCount() as counter:
        for _ in range(tick):
            train_step(state, cfg, bank, dist)
    return counter.total / tick


def gemm_peak(threads: int, size: int = 2048, repeats: int = 20) -> float:
    """This machine's fp32 GFLOPS on a square matmul (the best of ``repeats``) with ``threads`` threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best / 1e9


def roofline(cfg: TrainGanConfig, dist: gan_dist.Dist, sec_per_kimg: float) -> None:
    flops = step_flops(cfg, dist)
    per_kimg = flops * 1000 / cfg.batch
    achieved = per_kimg / sec_per_kimg / 1e9
    peak = gemm_peak(torch.get_num_threads())
    print(f"FLOPs: {flops / 1e9:.1f} GFLOP per step ({per_kimg / 1e12:.2f} TFLOP per kimg, matmul + conv, fwd + bwd); "
          f"achieved {achieved:.0f} GFLOPS = {100 * achieved / peak:.0f}% of this machine's fp32 matmul peak "
          f"({peak:.0f} GFLOPS, 2048^2, {torch.get_num_threads()} threads); at that peak a step could not go below "
          f"{per_kimg / peak / 1e9:.1f} s/kimg")


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _check_setting(cfg: TrainGanConfig, options: dict, ref) -> None:
    """Print acneops' and NVIDIA's settings side by side; stop on any difference."""
    rows = ref.compare(ours_setting(cfg), ref.nvidia_setting(options))
    width = max(len(r[0]) for r in rows)
    print(f"  {'setting':<{width}}  {'acneops':<36} NVIDIA (training_options.json)")
    for key, mine, theirs, same in rows:
        print(f"  {key:<{width}}  {mine:<36} {theirs}{'' if same else '   <-- DIFFERENT'}")
    different = [r[0] for r in rows if not r[3]]
    if different:
        sys.exit(f"settings differ in {different}: change this benchmark's options or train_command in "
                 f"benchmarks/gan_reference.py so both train the same model")


def _rounds(ref, patched: Path, data: Path, cfg: TrainGanConfig, dist: gan_dist.Dist, a) -> tuple[list, list]:
    """(acneops, NVIDIA) sec/kimg per round, run alternately; settings compared after NVIDIA's first run."""
    ours, theirs = [], []
    setting = ours_setting(cfg)
    print("NVIDIA:", " ".join(ref.train_command(patched, data, patched.parent / "run", setting, a.warmup, a.steps)[1:]))
    for r in range(1, a.rounds + 1):
        before = _load()
        wall, cpu, _ = measure_ours(cfg, dist, a)
        ours.append(wall)
        print(f"round {r} acneops: {wall:.1f} s/kimg (process CPU {cpu:.1f} s/kimg); load {before} -> {_load()}",
              flush=True)
        before = _load()
        sec, options = ref.run_reference(patched, data, patched.parent / f"run{r}", setting, a.warmup, a.steps,
                                         torch.get_num_threads(), dist.device.type)
        theirs.append(sec)
        print(f"round {r} NVIDIA:  {sec:.1f} s/kimg; load {before} -> {_load()}", flush=True)
        if r == 1:
            _check_setting(cfg, options, ref)
    return ours, theirs


def alternate(cfg: TrainGanConfig, dist: gan_dist.Dist, a: argparse.Namespace) -> None:
    """Rounds of (ours, NVIDIA's) sec/kimg on the same images, then the ratio."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gan_reference as ref

    tick = math.lcm(cfg.r1_interval, cfg.pl_interval)  # minibatches in one tick of NVIDIA's loop
    if a.steps % tick or a.warmup % tick or a.warmup == 0 or a.rounds < 1:
        sys.exit(f"--reference needs --steps and --warmup (>0) multiples of {tick} (one tick of NVIDIA's loop "
                 f"holds every phase) and --rounds >= 1; got --steps {a.steps} --warmup {a.warmup} --rounds {a.rounds}")
    print(f"machine: {ref.machine()}; threads {torch.get_num_threads()} for both (NVIDIA: OMP_NUM_THREADS, "
          f"+ 1 DataLoader worker process); OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    try:
        with tempfile.TemporaryDirectory(prefix="gan_reference_") as tmp:
            patched = Path(tmp) / "stylegan3"
            for line in ref.copy_and_patch(a.reference, patched):
                print(f"  patched {line}")
            images = RandomImages(max(256, cfg.batch), cfg.resolution).images.numpy()
            data = ref.write_dataset(images, Path(tmp) / "data")
            ours, theirs = _rounds(ref, patched, data, cfg, dist, a)
    except ref.ReferenceRunError as exc:
        sys.exit(f"--reference {a.reference}: {exc}")
    ratios = ", ".join(f"{t / o:.2f}x" for o, t in zip(ours, theirs))
    print(f"acneops {statistics.median(ours):.1f} s/kimg, NVIDIA {statistics.median(theirs):.1f} s/kimg (medians of "
          f"{a.rounds} rounds, {a.steps} timed minibatches each, same images, same setting): acneops trains at "
          f"{statistics.median(theirs) / statistics.median(ours):.2f}x NVIDIA's speed (per round {ratios})")
    if a.flops:
        roofline(cfg, dist, statistics.median(ours))
        per_kimg = step_flops(cfg, dist) * 1000 / cfg.batch
        print(f"NVIDIA at {statistics.median(theirs):.1f} s/kimg on the same network: "
              f"{per_kimg / statistics.median(theirs) / 1e9:.0f} GFLOPS (its own step may count more FLOPs)")


def main() -> None:
    a = parse()
    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    cfg = make_config(a)
    dist = gan_dist.Dist(device=gan_dist.pick_device(a.device))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"setting: {cfg.resolution}x{cfg.resolution}, batch {cfg.batch}, channel_base {cfg.channel_base}, "
          f"channel_max {cfg.channel_max}, mapping {cfg.mapping_layers}, R1 {cfg.r1_gamma} every {cfg.r1_interval}, "
          f"pl {cfg.pl_weight} every {cfg.pl_interval}, mixing {cfg.style_mixing}, lr {cfg.lr_g}, "
          f"ADA {'on' if cfg.ada else 'off'} (p0={cfg.augment_p}), fp32, device {dist.device}, "
          f"threads {torch.get_num_threads()}")
    if a.reference is not None:
        alternate(cfg, dist, a)
        return
    load_before = _load()
    wall, cpu, state = measure_ours(cfg, dist, a)
    print(f"parameters: G {count(state.G) / 1e6:.2f} M, D {count(state.D) / 1e6:.2f} M")
    print(f"training: {wall:.1f} sec/kimg, {1000 / wall:.2f} images/s "
          f"(wall, {a.steps} steps after {a.warmup} warm-up; process CPU {cpu:.1f} s/kimg; "
          f"ADA p at end {float(state.augment_pipe.p) if state.augment_pipe is not None else 0:.3f})")
    if a.flops:
        roofline(cfg, dist, wall)
    gen = time_generation(state.G_ema, a.gen_images, 32, dist.device)
    print(f"generation: {gen:.1f} images/s (G_ema, batch 32, const noise)")
    print(f"load average (1/5/15 min): {load_before} before, {_load()} after ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
