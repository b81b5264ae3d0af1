"""acneops.tracking against a real MLflow sqlite store in a temp dir (no mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from pipeline_repo import copy_pipeline

from acneops import tracking

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One sqlite store per module (creating the schema takes seconds)."""
    return tmp_path_factory.mktemp("mlflow") / "mlflow.db"


@pytest.fixture()
def uri(store, monkeypatch) -> str:
    value = f"sqlite:///{store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", value)
    monkeypatch.delenv("ACNEOPS_PARENT_RUN_ID", raising=False)
    return value


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_default_uri_is_absolute_sqlite_at_repo_root(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.repo_root() == tmp_path.resolve()
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.tracking_uri() == "http://tracking.example:5000"


def test_params_metrics_artifacts_tags_land(uri, tmp_path, store):
    artifact = tmp_path / "grid.png"
    artifact.write_bytes(b"\x89PNG fake bytes")
    config = {"lr": 0.002, "net": {"z_dim": 64, "betas": [0.0, 0.99]}, "labels": ("mild",)}
    with tracking.start_run("train_gan", "unit", config, tags={"extra": "x"}) as run:
        run.log_metrics({"loss_G": 1.5, "loss_D": 0.5}, step=1000)
        run.log_metrics({"loss_G": 1.25}, step=2000)
        run.log_artifact(artifact, artifact_path="grids")
        run.set_tags({"checkpoint_sha256": "abc"})
    client = _client(uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["lr"] == "0.002"
    assert got.data.params["net.z_dim"] == "64"
    assert got.data.params["net.betas"] == "[0.0, 0.99]"
    assert got.data.tags["acneops.stage"] == "train_gan"
    assert got.data.tags["acneops.name"] == "unit"
    assert got.data.tags["extra"] == "x"
    assert got.data.tags["checkpoint_sha256"] == "abc"
    assert got.data.tags["acneops.config_hash"]  # lineage tags (acneops.tracking.lineage) on every run
    history = client.get_metric_history(run.run_id, "loss_G")
    assert [(m.step, m.value) for m in history] == [(1000, 1.5), (2000, 1.25)]
    listed = [f.path for f in client.list_artifacts(run.run_id, "grids")]
    assert listed == ["grids/grid.png"]
    # artifacts of the embedded store live beside the database, not in the cwd
    assert (store.parent / "mlartifacts").is_dir()


def test_resume_continues_the_same_run(uri):
    with tracking.start_run("train_gan", "resume", {"total_kimg": 1}) as first:
        first.log_metrics({"loss": 3.0}, step=1)
    with tracking.start_run("train_gan", "resume", {"total_kimg": 2}, run_id=first.run_id) as again:
        assert _client(uri).get_run(again.run_id).info.status == "RUNNING"
        again.log_metrics({"loss": 2.0}, step=2)
    assert again.run_id == first.run_id
    got = _client(uri).get_run(first.run_id)
    assert got.info.status == "FINISHED"
    assert [m.step for m in _client(uri).get_metric_history(first.run_id, "loss")] == [1, 2]
    assert got.data.params["total_kimg"] == "1"  # params are immutable ...
    assert got.data.tags["resume.total_kimg"] == "2"  # ... the changed value is kept as a tag


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_marks_failed(uri, error):
    with pytest.raises(type(error)):
        with tracking.start_run("train_gan", "fails", {}) as run:
            raise error
    assert _client(uri).get_run(run.run_id).info.status == "FAILED"


def _child(uri: str, body: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        from acneops import tracking
        with tracking.start_run("train_gan", "child", {{"a": 1}}) as run:
            print(run.run_id, flush=True)
            {body}
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_sigkilled_run_is_marked_failed_by_the_next_run(uri):
    killed = _child(uri, "os.kill(os.getpid(), signal.SIGKILL)")
    assert killed.returncode == -signal.SIGKILL
    stale_id = killed.stdout.split()[0]
    assert _client(uri).get_run(stale_id).info.status == "RUNNING"
    with tracking.start_run("train_gan", "other-name", {}):
        pass
    assert _client(uri).get_run(stale_id).info.status == "RUNNING"  # other names are left alone
    with tracking.start_run("train_gan", "child", {}) as fresh:
        pass
    assert fresh.run_id != stale_id
    stale = _client(uri).get_run(stale_id)
    assert stale.info.status == "FAILED"
    assert "killed" in stale.data.tags["acneops.failure"]


def test_sigterm_marks_failed(uri):
    done = _child(uri, "os.kill(os.getpid(), signal.SIGTERM)")
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert _client(uri).get_run(done.stdout.split()[0]).info.status == "FAILED"


def test_nested_under_parent_run(uri, monkeypatch):
    with tracking.start_run("pipeline", None, {}) as parent:
        monkeypatch.setenv("ACNEOPS_PARENT_RUN_ID", parent.run_id)
        with tracking.start_run("train_gan", "nested", {}) as child:
            pass
    tags = _client(uri).get_run(child.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent.run_id
    assert _client(uri).get_run(parent.run_id).info.status == "FINISHED"


def test_second_run_of_a_stage_open_in_this_process_is_an_error(uri):
    """The bug run_stage had with train_classifier: a wrapper run and the loop's own run of the same stage."""
    with pytest.raises(RuntimeError, match="already open in this process.*TRACKS_ITSELF"):
        with tracking.start_run("train_classifier", "twice", {}) as outer:
            with tracking.start_run("train_classifier", "twice", {}):
                pass
    client = _client(uri)
    runs = client.search_runs([client.get_experiment_by_name("acneops").experiment_id],
                              filter_string="tags.`acneops.name` = 'twice'")
    assert [r.info.run_id for r in runs] == [outer.run_id] and runs[0].info.status == "FAILED"
    with tracking.start_run("train_classifier", "twice", {}) as again:  # closed runs free the name
        pass
    assert _client(uri).get_run(again.run_id).info.status == "FINISHED"


def test_running_run_of_a_live_process_is_not_marked_killed(uri):
    """Only a run whose process is gone is 'left RUNNING by a killed process'."""
    code = textwrap.dedent(
        """
        import sys
        from acneops import tracking
        with tracking.start_run("train_gan", "live", {}) as run:
            print(run.run_id, flush=True)
            sys.stdin.read()  # hold the run open until the test closes stdin
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        live_id = child.stdout.readline().strip()
        assert live_id, "the child process opened no run"
        with tracking.start_run("train_gan", "live", {}) as mine:
            pass
        live = _client(uri).get_run(live_id)
        assert live.info.status == "RUNNING" and "acneops.failure" not in live.data.tags
        assert live.data.tags["acneops.pid"] == str(child.pid)
    finally:
        child.communicate("", timeout=300)
    assert child.returncode == 0
    assert _client(uri).get_run(live_id).info.status == "FINISHED"
    assert _client(uri).get_run(mine.run_id).info.status == "FINISHED"


def test_fail_ends_the_run_failed_and_parent_run_sets_then_restores_the_env(uri, monkeypatch):
    with tracking.start_run("repro", None, {}) as parent:
        with tracking.parent_run(parent) as parent_id:
            assert os.environ["ACNEOPS_PARENT_RUN_ID"] == parent_id == parent.run_id
            with tracking.start_run("ingest", None, {}) as child:
                pass
        assert "ACNEOPS_PARENT_RUN_ID" not in os.environ
        parent.fail("dvc repro exited with status 1")
    got = _client(uri).get_run(parent.run_id)
    assert got.info.status == "FAILED" and got.data.tags["acneops.failure"] == "dvc repro exited with status 1"
    assert _client(uri).get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    monkeypatch.setenv("ACNEOPS_PARENT_RUN_ID", "outer")
    with tracking.parent_run(parent):
        pass
    assert os.environ["ACNEOPS_PARENT_RUN_ID"] == "outer"


def _runs_of(uri: str, stage: str) -> list:
    client = _client(uri)
    return client.search_runs([client.get_experiment_by_name("acneops").experiment_id],
                              filter_string=f"tags.`acneops.stage` = '{stage}'")


def test_acneops_repro_is_one_parent_run_with_the_stage_runs_nested(tmp_path, monkeypatch):
    """`acneops repro --jobs 2 ingest` (phantom data, then `dvc repro --single-item` of data.dvc and ingest) in a
    throwaway repository: the ingest stage's run is nested under the repro run, which records the commit, dvc's
    arguments and exit status; a plain `dvc repro` (--jobs 1) that fails leaves its repro run FAILED."""
    uri = f"sqlite:///{tmp_path / 'own.db'}"  # a store of its own: the other tests' runs stay out
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("ACNEOPS_PARENT_RUN_ID", raising=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["phantom"].update(n_per_class=12, hr_size=96)  # tiny, as in test_dvc_repro.py
    params["ingest"].update(workers=1)
    repo = copy_pipeline(tmp_path / "repo", params, with_code=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "pipeline"], cwd=repo, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    env = dict(os.environ)
    done = subprocess.run([sys.executable, "-m", "acneops", "repro", "--jobs", "2", "ingest"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Running stage 'ingest'" in done.stdout and (repo / "datasets" / "ingest" / "manifest.csv").is_file()
    [ingest] = _runs_of(uri, "ingest")
    parent = _client(uri).get_run(ingest.data.tags["mlflow.parentRunId"])
    assert ingest.info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert parent.data.tags["acneops.stage"] == "repro" and parent.data.params["dvc_args"] == "ingest"
    assert parent.data.tags["acneops.git_commit"] == commit and parent.data.tags["acneops.exit_status"] == "0"
    failed = subprocess.run([sys.executable, "-m", "acneops", "repro", "--jobs", "1", "no_such_stage"], cwd=repo,
                            env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode != 0
    [bad] = [r for r in _runs_of(uri, "repro") if r.data.params.get("dvc_args") == "no_such_stage"]
    assert bad.info.status == "FAILED" and bad.data.tags["acneops.exit_status"] == str(failed.returncode)
    assert "dvc repro exited with status" in bad.data.tags["acneops.failure"]
    assert len(_runs_of(uri, "ingest")) == 1  # the failed reproduction ran no stage


def test_importing_tracking_does_not_import_mlflow():
    code = "import sys, acneops.tracking; sys.exit('mlflow' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_stages_starting_at_once_on_a_fresh_sqlite_store_all_succeed(tmp_path):
    """Two classifier trainings started together on a new clone both create the MLflow database: without the lock
    beside it, each ran MLflow's migration and all but one died ('duplicate column name')."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    code = ("import sys\nfrom acneops import tracking\n"
            "with tracking.start_run('race', sys.argv[1], {'a': 1}) as run:\n    run.log_metrics({'m': 1.0}, 0)")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], env=env, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(e[-400:] for e in errors)
    client = _client(uri)
    runs = client.search_runs([client.get_experiment_by_name("acneops").experiment_id])
    assert sorted(r.data.tags["acneops.name"] for r in runs) == ["0", "1", "2"]


def test_the_experiment_is_a_model_training_one_so_the_ui_opens_on_its_runs(uri):
    with tracking.start_run("ingest", None, {}):
        pass
    client = _client(uri)
    experiment = client.get_experiment_by_name("acneops")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    client.delete_experiment_tag(experiment.experiment_id, "mlflow.experimentKind")  # one made by an older acneops
    with tracking.start_run("ingest", None, {}):
        pass
    assert client.get_experiment_by_name("acneops").tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_tracking_server_that_is_down_is_a_clear_error_within_seconds(monkeypatch):
    import socket
    import time

    from acneops.core.errors import AcneopsError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    began = time.monotonic()
    with pytest.raises(AcneopsError, match=rf"MLflow tracking server http://127.0.0.1:{port} is unreachable"):
        with tracking.start_run("ingest", None, {}):
            pass
    assert time.monotonic() - began < 10


def test_a_run_records_the_image_folders_it_read_as_dataset_inputs(uri, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.csv").write_text("file,label,sha256\nx.png,mild,00\ny.png,severe,11\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.png").write_bytes(b"not really a png, hashed all the same")
    with tracking.start_run("train_classifier", "ds", {}) as run:
        run.log_dataset(tmp_path / "a", "real-train", "training")
        run.log_dataset(tmp_path / "b", "images:b", "training")
    inputs = _client(uri).get_run(run.run_id).inputs.dataset_inputs
    assert sorted(d.dataset.name for d in inputs) == ["images:b", "real-train"]
    digest = {d.dataset.name: d.dataset.digest for d in inputs}["real-train"]
    (tmp_path / "a" / "manifest.csv").write_text("file,label,sha256\nx.png,mild,00\ny.png,severe,12\n")
    with tracking.start_run("train_classifier", "ds2", {}) as run2:
        run2.log_dataset(tmp_path / "a", "real-train", "training")
    assert _client(uri).get_run(run2.run_id).inputs.dataset_inputs[0].dataset.digest != digest  # one image changed


def test_a_reproduction_s_headline_figures_have_stable_names(tmp_path):
    import json

    from acneops.pipeline.repro import headline_metrics

    metrics = {"classifiers": {"real": {"accuracy": 0.7, "accuracy_ci95_low": 0.6, "accuracy_ci95_high": 0.8,
                                        "macro_f1": 0.65, "per_class": {"mild": {"f1": 0.5}}}},
               "comparisons": {"augmented_minus_real": {"accuracy": {"difference": 0.01, "ci95_low": -0.05,
                                                                     "ci95_high": 0.07, "distinguishable": False}}},
               "generators": {"mild": {"fd_domain": 5.0, "fd_domain_sd": 0.4, "class_fidelity": 0.9}},
               "anonymity": {"mild": {"flagged": 0}}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert headline_metrics(tmp_path / "metrics.json") == {
        "real.accuracy": 0.7, "real.accuracy_ci95_low": 0.6, "real.accuracy_ci95_high": 0.8, "real.macro_f1": 0.65,
        "augmented_minus_real.accuracy": 0.01, "augmented_minus_real.accuracy_ci95_low": -0.05,
        "augmented_minus_real.accuracy_ci95_high": 0.07, "gen.mild.fd": 5.0, "gen.mild.class_fidelity": 0.9,
        "anon.mild.flagged": 0.0}
    assert headline_metrics(tmp_path / "missing.json") == {}
