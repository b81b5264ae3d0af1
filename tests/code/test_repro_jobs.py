"""`acneops repro --jobs N` on a throwaway DVC repository of small script stages: stages run side by side, each
as its own `dvc repro --single-item`, and every stage that finished has its dvc.lock entry (DVC rewrites dvc.lock
under its repository lock, so concurrent writers lose nothing); a failing stage stops new starts and is named with
its log; the next run starts only what is out of date; a run with nothing out of date starts nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ITEMS = [1, 2, 3, 4, 5, 6]

DVC_YAML = {"stages": {
    "work": {"foreach": ITEMS, "do": {"cmd": "python work.py ${item}", "deps": ["work.py"],
                                      "outs": ["w_${item}.txt"]}},
    "join": {"cmd": "python join.py", "deps": ["join.py", *[f"w_{i}.txt" for i in ITEMS]], "outs": ["joined.txt"]},
}}
WORK = """import os, sys, time
item = sys.argv[1]
time.sleep(1.0)
if os.path.exists(f"fail_{item}"):
    print(f"planted failure in item {item}")
    sys.exit(4)
open(f"w_{item}.txt", "w").write(item)
"""
JOIN = f"open('joined.txt', 'w').write(''.join(open(f'w_{{i}}.txt').read() for i in {ITEMS}))\n"


def _repo(tmp: Path) -> Path:
    repo = tmp / "repo"
    (repo / "data").mkdir(parents=True)  # present, so `acneops repro` makes no phantom
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (repo / "work.py").write_text(WORK)
    (repo / "join.py").write_text(JOIN)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    return repo


def _repro(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{repo.parent / 'mlflow.db'}"}
    env.pop("ACNEOPS_PARENT_RUN_ID", None)
    return subprocess.run([sys.executable, "-m", "acneops", "repro", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600)


def _repro_runs(repo: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo.parent / 'mlflow.db'}")
    exp = client.get_experiment_by_name("acneops").experiment_id
    return client.search_runs([exp], "tags.`acneops.stage` = 'repro'")


def _locked(repo: Path) -> set[str]:
    path = repo / "dvc.lock"
    return set(yaml.safe_load(path.read_text())["stages"]) if path.exists() else set()


def test_concurrent_stages_keep_every_lock_entry_and_a_failure_is_named(tmp_path):
    repo = _repo(tmp_path)
    (repo / "fail_3").touch()
    failed = _repro(repo, "--jobs", "3")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    log = repo / ".dvc" / "tmp" / "repro" / "work@3.log"
    assert re.search(rf"stage work@3: dvc repro exited with status \d+ \(log: {re.escape(str(log))}\)", failed.stderr)
    assert "planted failure in item 3" in log.read_text() and "planted failure in item 3" in failed.stdout
    finished = {line.split()[1] for line in failed.stdout.splitlines() if line.startswith("finished ")}
    not_run = set(failed.stderr.split("not run: ")[1].strip().split(", "))
    assert "join" in not_run and "work@3" not in finished | not_run and finished
    assert _locked(repo) == finished  # every stage that finished wrote its entry, while others were running
    assert "up to 3 at once" not in failed.stdout  # the run did not finish
    [run] = _repro_runs(repo)
    assert run.info.status == "FAILED" and run.data.tags["acneops.exit_status"] == "1"
    assert "stage work@3: dvc repro exited with status" in run.data.tags["acneops.failure"]

    (repo / "fail_3").unlink()
    done = _repro(repo, "--jobs", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    started = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("started ")}
    assert started == {f"work@{i}" for i in ITEMS} - finished | {"join"}  # only what was out of date
    assert "up to 3 at once" in done.stdout or len(started) < 4
    assert _locked(repo) == {f"work@{i}" for i in ITEMS} | {"join"}
    assert (repo / "joined.txt").read_text() == "123456"
    # per stage: threads, wall, CPU time and utilisation, printed and on the repro run
    assert re.search(r"^join\s+1\s+[\d.]+\s+[\d.]+\s+\d+%$", done.stdout, re.M), done.stdout
    assert re.search(r"^all\s+[\d.]+\s+[\d.]+\s+\d+%$", done.stdout, re.M)
    latest = max(_repro_runs(repo), key=lambda r: r.info.start_time)
    assert latest.data.metrics["stage_wall_s/work.3"] >= 1.0 and "stage_cpu_s/join" in latest.data.metrics
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=repo, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout

    again = _repro(repo, "--jobs", "3")
    assert again.returncode == 0 and "started" not in again.stdout and "up to date" in again.stdout


def test_options_that_choose_stages_are_refused_with_the_fix(tmp_path):
    repo = _repo(tmp_path)
    out = _repro(repo, "--jobs", "2", "--", "--downstream", "join")
    assert out.returncode == 1 and "['--downstream']" in out.stderr and "--jobs 1" in out.stderr
    unknown = _repro(repo, "--jobs", "2", "no_such_stage")
    assert unknown.returncode == 1 and "dvc repro target 'no_such_stage'" in unknown.stderr
    assert not _locked(repo)


def test_the_default_pipeline_reserves_each_stage_its_threads():
    """What `acneops repro` reserves per stage of the committed dvc.yaml + params.yaml on 2 cores: the GAN trainings
    on all images and the stages that set no count take both cores, the per-class fine-tunes and the classifiers
    one each (so they pair up); a bad count is an error naming its key."""
    import pytest

    from acneops.core.config import ConfigError, load_params
    from acneops.pipeline import dag
    from acneops.pipeline.threads import stage_threads

    params = load_params(ROOT / "params.yaml")
    graph = dag.stage_graph(ROOT)
    threads = {stage: stage_threads(params, stage, 2) for stage in graph if not stage.endswith(".dvc")}
    assert threads["train_gan@base"] == threads["train_gan@all"] == threads["restore"] == 2
    assert {threads[f"train_gan@{c}"] for c in ("healthy", "mild", "moderate", "severe")} == {1}
    assert {threads[s] for s in graph if s.startswith("train_classifier@")} == {1}
    assert stage_threads(params, "my_script", 2) == 1
    params["train_classifier"]["threads"] = -1
    with pytest.raises(ConfigError, match=r"train_classifier.runs.real.threads\]: must be an integer >= 0"):
        stage_threads(params, "train_classifier@real", 2)
