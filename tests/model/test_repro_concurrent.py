"""Concurrent fine-tunes compute what sequential ones do, and a killed concurrent run resumes exactly (issue 11).

A tiny phantom pipeline (tests/code/pipeline_repo.py) runs its GAN chain up to G_all once (`dvc repro
train_gan@all`: ingest, restore, base, all); three copies of that repository then run the four per-class
fine-tunes three ways:
- A: plain `dvc repro train_gan` (sequential, DVC's own order);
- B: `acneops repro --jobs 2 train_gan` (the fine-tunes two at a time, one CPU thread each, as params.yaml says;
  the stages up to G_all are up to date and are not started);
- C: the same, SIGKILLed (the whole process group: scheduler, DVC processes, trainings) while two fine-tunes are
  training past a checkpoint, then `acneops repro --jobs 2 train_gan` again.
Every fine-tuned checkpoint ends bit-identical (every tensor, optimizer and RNG state, step counts: all but the
MLflow run id, which names a different run in each copy) and every deterministic file byte-identical; dvc.lock
holds the same stages with the same commands, params and dependency hashes (a GAN folder's own hash differs only
through timing.jsonl, wall-clock seconds, and the run id in final.pt); a second `acneops repro --jobs 2` starts
nothing. Slow: about 16
stage runs of a few seconds each, dominated by Python, torch and DVC start-up.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from gan_testkit import assert_same

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from pipeline_repo import copy_pipeline, tiny_params  # noqa: E402  (tests/code: the tiny pipeline)

ROOT = Path(__file__).resolve().parents[2]
FINE_TUNES = ("healthy", "mild", "moderate", "severe")
GANS = ("base", "all", *FINE_TUNES)
# fine-tunes of 50 steps of 8 images, a checkpoint every 4: long enough to be killed mid-way
FINE_TUNE = {"total_kimg": 0.4, "snapshot_kimg": 0.032, "tick_kimg": 0.008}
# files of a GAN run that are the same bytes in every run (timing.jsonl is wall-clock; final.pt holds the run id)
DETERMINISTIC = ("config.json", "stats.jsonl")


def _params() -> dict:
    params = tiny_params()
    for run in FINE_TUNES:
        assert params["train_gan"]["runs"][run]["workers"] == 1  # params.yaml: one thread per fine-tune
        params["train_gan"]["runs"][run].update(FINE_TUNE)
    return params


def _env(repo: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    env.pop("ACNEOPS_PARENT_RUN_ID", None)
    return env


def _repo(tmp: Path) -> Path:
    repo = copy_pipeline(tmp, _params(), with_code=True)
    _run([sys.executable, "-m", "acneops", "data", "phantom", "data"], repo)
    return repo


def _run(cmd: list[str], repo: Path) -> str:
    done = subprocess.run(cmd, cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _concurrent(repo: Path) -> str:
    return _run([sys.executable, "-m", "acneops", "repro", "--jobs", "2", "train_gan"], repo)


def _lock(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def _assert_same_gans(a: Path, b: Path) -> None:
    for run in GANS:  # base and all: the copies' own, unchanged by the fine-tunes
        ckpt_a = torch.load(a / "models/gan" / run / "final.pt", weights_only=True)
        ckpt_b = torch.load(b / "models/gan" / run / "final.pt", weights_only=True)
        ckpt_a.pop("mlflow_run_id"), ckpt_b.pop("mlflow_run_id")
        assert_same(ckpt_a, ckpt_b, f"train_gan@{run} final.pt")
        for name in [*(f"models/gan/{run}/{f}" for f in DETERMINISTIC), f"reports/train_gan/{run}.json",
                     f"reports/train_gan/{run}_stats.json",
                     *(p.relative_to(a).as_posix() for p in sorted((a / "models/gan" / run / "grids").glob("*.png")))]:
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs"


def _overlapping_fine_tunes(repo: Path) -> int:
    """How many pairs of fine-tune MLflow runs (nested under the repro run) overlapped in time."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("acneops").experiment_id
    runs = [r for r in client.search_runs([exp], "tags.`acneops.stage` = 'train_gan'")
            if r.data.tags["acneops.name"] in FINE_TUNES]
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert client.get_run(parent).data.tags["acneops.stage"] == "repro" and len(runs) == 4
    spans = [(r.info.start_time, r.info.end_time) for r in runs]
    return sum(s1 < e2 and s2 < e1 for i, (s1, e1) in enumerate(spans) for s2, e2 in spans[i + 1:])


@pytest.fixture(scope="module")
def up_to_g_all(tmp_path_factory) -> Path:
    """A repository with the stages up to G_all reproduced (ingest, restore, train_gan@base, train_gan@all)."""
    repo = _repo(tmp_path_factory.mktemp("repro") / "upstream")
    _run([sys.executable, "-m", "dvc", "repro", "train_gan@all"], repo)
    return repo


def _copy(repo: Path, dest: Path) -> Path:
    shutil.copytree(repo, dest, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def sequential(up_to_g_all) -> Path:
    a = _copy(up_to_g_all, up_to_g_all.parent / "sequential")
    _run([sys.executable, "-m", "dvc", "repro", "train_gan"], a)
    return a


@pytest.mark.slow
def test_concurrent_fine_tunes_equal_sequential_ones_and_a_second_run_starts_nothing(up_to_g_all, sequential):
    a, b = sequential, _copy(up_to_g_all, up_to_g_all.parent / "concurrent")
    out = _concurrent(b)
    started = {line.split()[1] for line in out.splitlines() if line.startswith("started ")}
    assert started == {f"train_gan@{r}" for r in FINE_TUNES} and "up to 2 at once" in out
    assert _overlapping_fine_tunes(b) >= 2  # the fine-tunes really trained side by side
    _assert_same_gans(a, b)
    lock_a, lock_b = _lock(a), _lock(b)
    assert set(lock_a) == set(lock_b) == {"ingest", "restore", *(f"train_gan@{r}" for r in GANS)}
    for stage in lock_a:  # the same command, params and input hashes; outputs: the files compared above
        assert {k: lock_a[stage][k] for k in ("cmd", "deps", "params")} == {
            k: lock_b[stage][k] for k in ("cmd", "deps", "params")}, stage
    for stage in ("ingest", "restore", "train_gan@base", "train_gan@all"):
        assert lock_a[stage] == lock_b[stage]
    before = (b / "dvc.lock").read_bytes()
    again = _concurrent(b)
    assert "started" not in again and "up to date" in again and (b / "dvc.lock").read_bytes() == before


def _training(repo: Path) -> list[str]:
    """Fine-tunes that wrote a checkpoint and logged ticks after it, and have not finished."""
    out = []
    for run in FINE_TUNES:
        folder = repo / "models/gan" / run
        stats = folder / "stats.jsonl"
        ticks = stats.read_text().count("\n") if stats.exists() else 0
        if (folder / "checkpoint.pt").exists() and ticks >= 6 and not (folder / "final.pt").exists():
            out.append(run)
    return out


@pytest.mark.slow
def test_a_killed_concurrent_run_resumes_to_the_same_weights(up_to_g_all, sequential):
    a, c = sequential, _copy(up_to_g_all, up_to_g_all.parent / "killed")
    proc = subprocess.Popen([sys.executable, "-m", "acneops", "repro", "--jobs", "2", "train_gan"], cwd=c,
                            env=_env(c), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group, killed as a whole
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None and len(_training(c)) < 2:
        time.sleep(0.02)
    killed = _training(c)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(killed) == 2, f"not two fine-tunes mid-training when killed ({killed}); lengthen FINE_TUNE"
    assert "train_gan@all" in _lock(c) and not any(f"train_gan@{r}" in _lock(c) for r in FINE_TUNES)

    out = _concurrent(c)
    for run in killed:
        assert "resumed" in (c / ".dvc/tmp/repro" / f"train_gan@{run}.log").read_text(), run
    started = {line.split()[1] for line in out.splitlines() if line.startswith("started ")}
    assert started == {f"train_gan@{r}" for r in FINE_TUNES}  # G_all and the stages before it did not rerun
    _assert_same_gans(a, c)
