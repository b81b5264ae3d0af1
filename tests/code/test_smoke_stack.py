"""The fixed technology stack works together in this environment (a bad dependency resolution fails CI).

Each tool runs for real in a temp dir: a Prefect flow (no server: ephemeral API in a temp
PREFECT_HOME), an MLflow run in a temp sqlite store, and the dvc command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PREFECT_HOME"] = str(tmp_path / "prefect")  # set before prefect is imported (fresh process)
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    # the temporary server migrates a fresh database before it answers: Prefect's 20 s timed out on a 2-core CI box
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    return env


def test_prefect_flow_runs_without_a_server(tmp_path):
    code = textwrap.dedent(
        """
        from prefect import flow, task

        @task
        def double(x: int) -> int:
            return 2 * x

        @flow(name="acneops-smoke")
        def smoke(n: int) -> int:
            return sum(double.submit(i).result() for i in range(n))

        print("RESULT", smoke(4))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESULT 12" in done.stdout
    assert (tmp_path / "prefect").is_dir()  # state went to the temp PREFECT_HOME, not ~/.prefect


def test_mlflow_run_in_a_temp_sqlite_store(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("smoke", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "lr", "0.1")
    client.log_metric(run.info.run_id, "loss", 0.5, step=3)
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run.info.run_id)
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"lr": "0.1"} and got.data.metrics == {"loss": 0.5}
    assert got.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    assert int(mlflow.__version__.split(".")[0]) >= 3


def test_dvc_cli_initialises_a_repo(tmp_path):
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    version = subprocess.run([dvc, "--version"], capture_output=True, text=True, timeout=300)
    assert version.returncode == 0 and version.stdout.strip()[0].isdigit(), version.stderr
    init = subprocess.run([dvc, "init", "--no-scm"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stderr
    assert (tmp_path / ".dvc" / "config").is_file()
