"""Micro-timing of the StyleGAN2 networks at the training benchmark's setting (prints figures).

32x32, batch 16, channel_base 32768, channel_max 128, mapping depth 2, fp32. Times G forward+backward
(unfused and fused modulated conv), G no-grad forward, D forward+backward, the R1 double backward
through D, the path-length double backward through G, and one training iteration of the networks
alone (NVIDIA's phases: Gmain; Greg every 4 on half the batch; Dmain on fakes and reals; Dreg every 16;
no augmentation, no optimizer step), each in channels-last and NCHW layout.
Reports the best wall time and the best process CPU time over ``--reps`` runs (CPU time is the steadier
figure on a shared machine). Run: ``python benchmarks/stylegan2_forward.py [--threads 2]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from acneops.gan.stylegan2 import build_stylegan2


def _time(fn, reps: int) -> tuple[float, float]:
    """(best wall ms, best CPU ms) of ``fn()`` after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return min(wall), min(cpu)


def _cases(G, D, z, reals, resolution: int) -> dict:
    """name -> zero-argument callable doing one measured step."""
    def g_step(fused: bool):
        def step():
            G.zero_grad(set_to_none=True)
            G.synthesis(G.mapping(z), fused_modconv=fused).square().mean().backward()
        return step

    def g_infer():
        with torch.no_grad():
            G.synthesis(G.mapping(z))

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
        ws = G.mapping(z[: len(z) // 2])
        img = G.synthesis(ws)
        noise = torch.randn_like(img) / resolution
        (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        grad.square().sum(2).mean(1).sqrt().mean().backward()

    state = {"k": 0}

    def iteration():
        """Amortised training iteration: lazy regularisers on their schedule via a rotating counter."""
        k = state["k"] = state["k"] + 1
        D.requires_grad_(False)
        torch.nn.functional.softplus(-D(G(z))).mean().backward()
        D.requires_grad_(True)
        if k % 4 == 0:
            pl_step()
        with torch.no_grad():
            fake = G(z)
        torch.nn.functional.softplus(D(fake)).mean().backward()
        x = reals.detach().requires_grad_(k % 16 == 0)
        logits = D(x)
        loss = torch.nn.functional.softplus(-logits).mean()
        if k % 16 == 0:
            (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
            loss = loss + grad.square().sum(dim=(1, 2, 3)).mean()
        loss.backward()

    def iterations16():
        for _ in range(16):
            iteration()

    return {"G fwd+bwd (unfused modconv)": g_step(False), "G fwd+bwd (fused modconv)": g_step(True),
            "G no-grad forward": g_infer, "D fwd+bwd": d_step, "D R1 double backward": r1_step,
            "G path length, half batch": pl_step, "16 training iterations (nets only)": iterations16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channel-base", type=int, default=32768)
    parser.add_argument("--channel-max", type=int, default=128)
    parser.add_argument("--mapping-layers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layout", choices=("both", "nhwc", "nchw"), default="both")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this text")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    G, D = build_stylegan2(args.resolution, args.channel_base, args.channel_max, mapping_layers=args.mapping_layers)
    print(f"G params {sum(p.numel() for p in G.parameters()):,}  D params {sum(p.numel() for p in D.parameters()):,}"
          f"  threads {args.threads}  batch {args.batch}  {args.resolution}px")
    z = torch.randn(args.batch, G.z_dim)
    reals = torch.randn(args.batch, G.img_channels, args.resolution, args.resolution)
    layouts = {"both": (True, False), "nhwc": (True,), "nchw": (False,)}[args.layout]
    for name, step in _cases(G, D, z, reals, args.resolution).items():
        if args.only and args.only not in name:
            continue
        row = []
        for channels_last in layouts:
            G.synthesis.channels_last = D.channels_last = channels_last
            wall, cpu = _time(step, 1 if "iterations" in name else args.reps)
            row.append(f"{'NHWC' if channels_last else 'NCHW'} wall {wall:8.1f} ms cpu {cpu:8.1f} ms")
            if "iterations" in name:
                row[-1] += f" (~{wall / 16 * 1000 / args.batch / 1000:.1f} s/kimg wall)"
        print(f"{name:34s} " + " | ".join(row))


if __name__ == "__main__":
    main()
