"""Benchmark: anonymity-audit time for 5,000 synthetic x 1,500 real train images on CPU (prints seconds).

Three parts, every phase timed (wall and process CPU seconds; CPU is steadier on a shared machine):

0. ``search``: the shared nearest-neighbour search (acneops.metrics.neighbors, scikit-learn's
   ``pairwise_distances_chunked``) against the two hand-written searches it replaced (frozen in
   tests/code/legacy_oracles.py) on random 512-d features, 5,000 queries x 1,500 references;
1. ``core``: the statistics on arrays — random 512-d features and random pixel vectors at the
   configured pixel size with as many reference views as the config compares against (flips and
   crops), plus 500 test rows for C_T and membership inference.
2. ``e2e``: ``run_audit`` end to end on phantom faces (64 px) with the 'tiny' extractor: pixel
   vectors and views, features (and mirrored features), copies, C_T, membership.

    .venv/bin/python benchmarks/audit.py                       # defaults: 5000 x 1500, test 500
    .venv/bin/python benchmarks/audit.py --pixel-size 32       # the 32 px variant
    .venv/bin/python benchmarks/audit.py --n-syn 1000 --skip-e2e
    .venv/bin/python benchmarks/audit.py --search-only         # part 0 only
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from acneops.audit import AuditConfig, run_audit
from acneops.audit.attacks import data_copying_ct, membership_auc
from acneops.audit.copies import audit_copies, view_specs
from acneops.metrics.neighbors import nearest_neighbors

LEGACY = Path(__file__).resolve().parents[1] / "tests" / "code" / "legacy_oracles.py"


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    t0, c0 = time.perf_counter(), time.process_time()
    yield
    print(f"  {label:34s} wall {time.perf_counter() - t0:7.2f} s   cpu {time.process_time() - c0:7.2f} s", flush=True)


def bench_search(n_query: int, n_ref: int, dim: int, repeats: int = 3) -> None:
    spec = importlib.util.spec_from_file_location("legacy_oracles", LEGACY)
    legacy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(legacy)
    rng = np.random.default_rng(0)
    query, ref = rng.normal(size=(n_query, dim)), rng.normal(size=(n_ref, dim))
    flip = [ref[:, ::-1].copy()]
    print(f"search: {n_query} queries x {n_ref} references, {dim}-d float64 features (best of {repeats})")
    cases = {
        "k=1  hand-written audit search": lambda: legacy.audit_search(query, ref, 1),
        "k=1  hand-written metrics search": lambda: legacy.distribution_search(query, ref, 1),
        "k=1  sklearn chunked (shared)": lambda: nearest_neighbors(query, ref, 1),
        "k=2 +flip view  hand-written audit": lambda: legacy.audit_search(query, ref, 2, flip),
        "k=2 +flip view  sklearn chunked": lambda: nearest_neighbors(query, ref, 2, flip),
        "k=3 leave-one-out  hand-written metrics": lambda: legacy.distribution_search(query, query, 3, True),
        "k=3 leave-one-out  sklearn chunked": lambda: nearest_neighbors(query, query, 3, exclude_self=True),
    }
    for label, run in cases.items():
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print(f"  {label:40s} wall {min(wall):7.2f} s   cpu {min(cpu):7.2f} s", flush=True)


def bench_core(cfg: AuditConfig, n_syn: int, n_real: int, n_test: int, feat_dim: int) -> None:
    rng = np.random.default_rng(0)
    pix_dim = cfg.pixel_size**2 * 3
    n_views = len(view_specs(cfg.crop_scales, cfg.crop_positions, cfg.check_flips))
    print(f"core: {n_syn} synthetic x {n_real} real, features {feat_dim}-d, pixels {pix_dim}-d "
          f"({cfg.pixel_size} px) x {n_views} views, test {n_test}")
    syn_f, real_f, test_f = (rng.normal(size=(n, feat_dim)) for n in (n_syn, n_real, n_test))
    syn_p, real_p, test_p = (rng.normal(size=(n, pix_dim)).astype(np.float32) for n in (n_syn, n_real, n_test))
    views = [rng.normal(size=(n_real, pix_dim)).astype(np.float32) for _ in range(n_views - 1)]
    flip_f = rng.normal(size=(n_real, feat_dim))
    with timed("copies (feature + pixel NN, rules)"):
        res = audit_copies(syn_f, real_f, syn_p, real_p, cfg, real_feats_flipped=flip_f, real_pixel_views=views,
                           view_names=[f"v{i}" for i in range(n_views)])
    with timed("C_T features"):
        ct = data_copying_ct(syn_f, real_f, test_f, cfg)
    with timed("C_T pixels"):
        data_copying_ct(syn_p, real_p, test_p, cfg)
    with timed("membership AUC features + pixels"):
        membership_auc(real_f, test_f, syn_f, cfg.block_size), membership_auc(real_p, test_p, syn_p, cfg.block_size)
    print(f"  (random data: flagged {res.flags.mean():.1%}, C_T {ct['ct']:.2f})")


def bench_e2e(cfg: AuditConfig, n_syn: int, n_real: int, n_test: int, size: int) -> None:
    from acneops.data.phantom import PhantomConfig, render
    from acneops.features.extractors import get_extractor

    labels = ("healthy", "mild", "moderate", "severe")

    def faces(n: int, seed: int) -> np.ndarray:
        pc = PhantomConfig(seed=seed, hr_size=size, supersample=1, lr_size=16)
        return np.stack([np.asarray(render(pc, labels[i % 4], i // 4)[0]) for i in range(n)])

    print(f"e2e: run_audit on phantom faces {size} px, 'tiny' extractor: {n_syn} synthetic x {n_real} real, "
          f"test {n_test}")
    with timed("render phantom faces (not audit)"):
        real, syn = faces(n_real + n_test, 1), faces(n_syn, 2)
    ext = get_extractor("tiny", seed=0)
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_audit(syn, real[:n_real], cfg, ext, real[n_real:])
    for phase, seconds in result.timings.items():
        print(f"  {phase:34s} wall {seconds:7.2f} s")
    print(f"  {'total run_audit':34s} wall {time.perf_counter() - t0:7.2f} s   cpu {time.process_time() - c0:7.2f} s")
    print(f"  {result.summary()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-syn", type=int, default=5000)
    ap.add_argument("--n-real", type=int, default=1500)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--feat-dim", type=int, default=512)
    ap.add_argument("--pixel-size", type=int, default=AuditConfig.pixel_size)
    ap.add_argument("--crop-positions", type=int, default=AuditConfig.crop_positions)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--search-only", action="store_true")
    args = ap.parse_args()
    bench_search(args.n_syn, args.n_real, args.feat_dim)
    if args.search_only:
        return
    cfg = AuditConfig(pixel_size=args.pixel_size, crop_positions=args.crop_positions)
    bench_core(cfg, args.n_syn, args.n_real, args.n_test, args.feat_dim)
    if not args.skip_e2e:
        bench_e2e(cfg, args.n_syn, args.n_real, args.n_test, args.image_size)


if __name__ == "__main__":
    main()
