"""Exact resume: SIGKILL a training after its first checkpoint, re-run the same command, and end with
exactly the weights (and optimizer, ADA, path-length state) of an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import torch
from gan_testkit import (
    assert_same,
    make_restored,
    read_jsonl_lines,
    run_stage,
    stage_cmd,
    stage_env,
    write_params,
)

RUN = "resume"
SCHEDULE = {"total_kimg": 0.096, "snapshot_kimg": 0.032, "tick_kimg": 0.008}  # 24 steps of 4 images


def _kill_after_first_checkpoint(root: Path) -> None:
    """Start the stage, wait until a checkpoint exists and training went past it, then SIGKILL."""
    out = root / "models" / "gan" / RUN
    proc = subprocess.Popen(stage_cmd(RUN), cwd=root, env=stage_env(root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "checkpoint.pt").exists() and read_jsonl_lines(out / "stats.jsonl") >= 5:
            break  # checkpoint at tick 4; tick 5 was logged after it and must be recomputed
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be killed; lengthen SCHEDULE"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "final.pt").exists()


def test_sigkill_and_rerun_gives_the_uninterrupted_weights(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for root in (straight, killed):
        make_restored(root, per_class=8)
        write_params(root, RUN, **SCHEDULE)

    run_stage(straight, RUN)
    _kill_after_first_checkpoint(killed)
    partial = torch.load(killed / "models/gan" / RUN / "checkpoint.pt", weights_only=True)
    assert 0 < partial["cur_nimg"] < 96
    resumed = run_stage(killed, RUN)
    assert "resumed" in resumed.stdout

    a = torch.load(straight / "models/gan" / RUN / "final.pt", weights_only=True)
    b = torch.load(killed / "models/gan" / RUN / "final.pt", weights_only=True)
    assert a["cur_nimg"] == b["cur_nimg"] == 96 and a["step"] == b["step"] == 24
    assert 0 < float(b["augment"]["p"]) <= 1  # ADA state took part
    assert b["mlflow_run_id"] == partial["mlflow_run_id"]  # the resumed training continued its run
    a.pop("mlflow_run_id"), b.pop("mlflow_run_id")
    assert_same(a, b)
    # the deterministic log is the same too (lines after the checkpoint were dropped and recomputed)
    for name in (f"models/gan/{RUN}/stats.jsonl", f"reports/train_gan/{RUN}.json",
                 f"reports/train_gan/{RUN}_stats.json"):
        assert (straight / name).read_text() == (killed / name).read_text()

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{killed / 'mlflow.db'}")
    run = client.get_run(b.get("mlflow_run_id", partial["mlflow_run_id"]))
    assert run.info.status == "FINISHED"
    assert run.data.tags["checkpoint_path"].endswith("final.pt")


def test_rerun_of_a_finished_training_changes_nothing(tmp_path):
    make_restored(tmp_path, per_class=4)
    write_params(tmp_path, RUN, total_kimg=0.016, snapshot_kimg=0.016, tick_kimg=0.008)
    run_stage(tmp_path, RUN)
    final = tmp_path / "models/gan" / RUN / "final.pt"
    before = (final.stat().st_mtime_ns, final.read_bytes())
    again = run_stage(tmp_path, RUN)
    assert "resumed and finished" in again.stdout
    assert (final.stat().st_mtime_ns, final.read_bytes()) == before
    # changing a training setting starts afresh instead of resuming someone else's run
    write_params(tmp_path, RUN, total_kimg=0.016, snapshot_kimg=0.016, tick_kimg=0.008, lr_g=0.001)
    fresh = run_stage(tmp_path, RUN)
    assert "starting afresh" in fresh.stdout and "lr_g" in fresh.stdout
    assert torch.load(final, weights_only=True)["config"]["lr_g"] == 0.001
