"""The regenerate deployment on a real Prefect server, as a user runs it: `prefect server start` on loopback,
`python flows/pipeline.py serve --cron ...` in a repository whose generators are registered champions (a real MLflow
tracking server on loopback), the schedule read back through Prefect's API, one run triggered there and seen
COMPLETED with its markdown artifact; and the Prefect UI screenshot script against the same server."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from registered_repo import FLOWS, datasets_in, registered_repo
from servers import prefect_server, stop

from acneops.flows.regenerate import ARTIFACT_KEY, DEPLOYMENT_NAME, FLOW_NAME

CRON = "0 3 * * 1"
DEPLOYMENT = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "flows" / "prefect_screenshots.py"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with prefect_server(tmp_path_factory.mktemp("prefect")) as api_url:
        yield api_url


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    with registered_repo(tmp_path_factory.mktemp("served")) as r:
        yield r


def _api(api_url: str, coroutine_fn):
    """Run ``coroutine_fn(client)`` with a Prefect client of ``api_url``."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def go():
        async with get_client() as client:
            return await coroutine_fn(client)

    with temporary_settings({PREFECT_API_URL: api_url}):
        return asyncio.run(go())


def _wait_for_deployment(api_url: str, proc: subprocess.Popen, log: Path, timeout: float = 240):
    from prefect.exceptions import ObjectNotFound

    async def read(client):
        return await client.read_deployment_by_name(DEPLOYMENT)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
        try:
            return _api(api_url, read)
        except ObjectNotFound:
            time.sleep(1)
    raise AssertionError(f"no deployment {DEPLOYMENT} after {timeout} s:\n{log.read_text()[-4000:]}")


def _interrupt(proc: subprocess.Popen) -> None:
    """Ctrl-C as a user stops `serve` (SIGINT to its process group), then the helpers' SIGTERM/SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    stop(proc)


def _artifacts(api_url: str, flow_run_id):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    async def read(client):
        return await client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[ARTIFACT_KEY]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    return _api(api_url, read)


def test_served_deployment_keeps_its_cron_and_a_triggered_run_completes_with_its_artifact(server, repo, tmp_path):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = repo["root"]
    before = set(datasets_in(root))
    env = {**repo["env"], "PREFECT_API_URL": server, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, str(FLOWS), "serve", "--cron", CRON, "--params", "params.yaml"], cwd=root,
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deployment = _wait_for_deployment(server, proc, log)
        assert [s.schedule.cron for s in deployment.schedules] == [CRON]
        assert all(s.active for s in deployment.schedules)
        assert deployment.parameters == {"params_path": str((root / "params.yaml").resolve())}
        with temporary_settings({PREFECT_API_URL: server}):
            run = run_deployment(DEPLOYMENT, timeout=600, poll_interval=2)
        assert run.state is not None and run.state.is_completed(), f"{run.state}:\n{log.read_text()[-4000:]}"
        [folder] = set(datasets_in(root)) - before
        assert (folder / "manifest.csv").is_file() and (folder / "card.json").is_file()
        [artifact] = _artifacts(server, run.id)
        assert artifact.type == "markdown" and folder.name in artifact.data
    finally:
        _interrupt(proc)
    output = log.read_text()
    assert "Traceback" not in output, output[-4000:]


def _require_chromium() -> None:
    if not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
        if os.environ.get("ACNEOPS_REQUIRE_CHROMIUM"):
            pytest.fail("ACNEOPS_REQUIRE_CHROMIUM is set but no chromium is installed")
        pytest.skip("headless Chromium not installed (apt-get install chromium); .ci/run installs it")


def test_the_prefect_ui_shows_the_schedule_and_a_completed_regeneration_with_its_artifact(server, repo, tmp_path):
    """The screenshot script against the server: it serves the deployment, triggers a run and photographs the UI;
    the pages' text (what the screenshot shows) names the deployment, its schedule and the completed run."""
    _require_chromium()
    env = {**repo["env"], "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, str(SCREENSHOTS), "--repo", str(repo["root"]), "--api-url", server,
                           "--cron", CRON, "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    text = done.stdout
    assert DEPLOYMENT_NAME in text and "Completed" in text and ARTIFACT_KEY in text
    assert "At 03:00 AM, only on Monday" in text or CRON in text, text[-3000:]
    pixels = np.asarray(Image.open(tmp_path / "prefect_ui.png").convert("L"), dtype=float)
    assert pixels.shape[1] >= 1400 and pixels.shape[0] >= 1600 and pixels.std() > 10  # two pages, not blank
