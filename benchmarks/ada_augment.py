"""Timing of the ADA augmentation pipeline and of DCGAN steps on CPU (prints figures).

AugmentPipe with every transform on ('bgc'), forward + backward, at the given p, resolutions and batch;
plus the R1-style double backward at the first resolution, and a DCGAN G+D forward/backward at 64 px.
Run: ``python benchmarks/ada_augment.py [--batch 16] [--p 0.6] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from acneops.gan.ada.pipe import AugmentPipe
from acneops.gan.dcgan import bce_d_loss, bce_g_loss, build_dcgan

BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
           brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)


def _time(fn, reps: int, warmup: int = 2) -> str:
    """Median wall and process-CPU time of ``fn()`` in ms (CPU time is steadier on a shared machine)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return f"wall {statistics.median(wall):7.1f} ms  cpu {statistics.median(cpu):7.1f} ms"


def bench_augment(res: int, batch: int, p: float, reps: int) -> None:
    pipe = AugmentPipe(**BGC)
    pipe.p.fill_(p)
    x = torch.rand(batch, 3, res, res, requires_grad=True)

    def fwd():
        with torch.no_grad():
            pipe(x)

    def fwd_bwd():
        pipe(x).square().sum().backward()

    def double_bwd():  # what lazy R1 does through the augmentation
        (grad,) = torch.autograd.grad(pipe(x).square().sum(), x, create_graph=True)
        grad.square().sum().backward()

    print(f"AugmentPipe bgc p={p} batch={batch} {res}px  forward          {_time(fwd, reps)}")
    print(f"AugmentPipe bgc p={p} batch={batch} {res}px  forward+backward {_time(fwd_bwd, reps)}")
    print(f"AugmentPipe bgc p={p} batch={batch} {res}px  double backward  {_time(double_bwd, reps)}")


def bench_dcgan(batch: int, reps: int) -> None:
    torch.manual_seed(0)
    G, D = build_dcgan(img_resolution=64, z_dim=128, base_channels=64)
    reals = torch.rand(batch, 3, 64, 64) * 2 - 1

    def step():
        fakes = G(torch.randn(batch, 128))
        (bce_d_loss(D(reals), D(fakes.detach())) + bce_g_loss(D(fakes))).backward()

    print(f"DCGAN 64px batch={batch} G+D forward+backward   {_time(step, reps, warmup=1)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--p", type=float, default=0.6)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for res in args.resolutions:
        bench_augment(res, args.batch, args.p, args.reps)
    bench_dcgan(args.batch, max(3, args.reps // 4))


if __name__ == "__main__":
    main()
