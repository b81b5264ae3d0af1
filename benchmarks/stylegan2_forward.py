"""Micro-timing of the StyleGAN2 networks on the training benchmark's setting (prints figures).

32x32, batch 16, channel_base 32768, channel_max 128, mapping depth 2, fp32: G forward+backward
(fused vs unfused modulated conv), D forward+backward, the R1 double backward through D and the
path-length double backward through G.synthesis. Run: ``python benchmarks/stylegan2_forward.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from acneops.stylegan2 import build_stylegan2


def _time(fn, reps: int, warmup: int = 1) -> str:
    """Median wall time and median process CPU time of ``fn()``, in ms (CPU time is steadier on a
    shared machine)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return f"wall {statistics.median(wall):7.1f} ms  cpu {statistics.median(cpu):7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channel-base", type=int, default=32768)
    parser.add_argument("--channel-max", type=int, default=128)
    parser.add_argument("--mapping-layers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    G, D = build_stylegan2(args.resolution, args.channel_base, args.channel_max, mapping_layers=args.mapping_layers)
    print(f"G params {sum(p.numel() for p in G.parameters()):,}  D params {sum(p.numel() for p in D.parameters()):,}")
    z = torch.randn(args.batch, G.z_dim)
    reals = torch.randn(args.batch, G.img_channels, args.resolution, args.resolution)

    for fused in (False, True):
        def g_step():
            G.zero_grad(set_to_none=True)
            G.synthesis(G.mapping(z), fused_modconv=fused).square().mean().backward()
        with torch.no_grad():
            t_inf = _time(lambda: G.synthesis(G.mapping(z), fused_modconv=fused), args.reps)
        print(f"G fused_modconv={fused!s:5}  fwd+bwd {_time(g_step, args.reps)} | no-grad fwd {t_inf}")

    def d_step():
        D.zero_grad(set_to_none=True)
        D(reals).sum().backward()

    def r1_step():
        D.zero_grad(set_to_none=True)
        x = reals.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        grad.square().sum(dim=(1, 2, 3)).mean().backward()

    def pl_step():
        G.zero_grad(set_to_none=True)
        ws = G.mapping(z[: args.batch // 2])
        img = G.synthesis(ws)
        noise = torch.randn_like(img) / args.resolution
        (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        grad.square().sum(2).mean(1).sqrt().mean().backward()

    print(f"D fwd+bwd                          {_time(d_step, args.reps)}")
    print(f"D R1 (double backward)            {_time(r1_step, args.reps)}")
    print(f"G path length, half batch (dbl bwd) {_time(pl_step, args.reps)}")


if __name__ == "__main__":
    main()
