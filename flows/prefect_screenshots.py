"""Screenshot of the Prefect UI after serving the regenerate schedule and one regeneration (docs/screenshots/prefect_ui.png).

What a user sees, taken with headless Chromium (Debian's `chromium` package): the deployment with its cron schedule,
next scheduled run and the completed run; that run's page (state, task timeline, logs); and its markdown artifact
(the dataset's folder, seed, counts, FD, audit figures and sample grid).

    .venv/bin/python flows/prefect_screenshots.py --repo REPO [--api-url URL] [--out docs/screenshots]
        [--cron "0 3 * * 1"] [--seed N] [--count mild=20 ...]

In ``--repo`` (a repository whose generators are registered champions; its MLflow store as a run there finds it:
MLFLOW_TRACKING_URI or ``sqlite:///<repo>/mlflow.db``) it serves the `acneops-regenerate` deployment
(``flows/pipeline.py serve``), triggers one regeneration through Prefect's API, waits for it to complete and
photographs the UI while the deployment is still served. Without ``--api-url`` it starts `prefect server start` on
127.0.0.1 with a temporary PREFECT_HOME for the time of the script. Writes ``<out>/prefect_ui.png`` (the pages
stacked) and prints each page's visible text (what the test checks: the screenshot shows what the text says).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from headless_chromium import browser, free_port, page
from pipeline import _counts  # --count CLASS=N, as `pipeline.py regenerate` reads it

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # a checkout without `pip install -e .`
from acneops.flows.regenerate import ARTIFACT_KEY, DEPLOYMENT_NAME, FLOW_NAME  # noqa: E402

DEPLOYMENT = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
WIDTH = 2048  # the artifact's table (12 columns) fits beside the page's side panel


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.5)


def _stop(proc: subprocess.Popen, first: int = signal.SIGTERM) -> None:
    """``first`` to the process group, SIGKILL after 30 s."""
    for sig in (first, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1, its sqlite database in ``home`` (analytics off); yields its API URL."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api")  # else the UI calls :4200 whatever --port says
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=home,
                            start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/health", proc, 180, "prefect server", log)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        _stop(proc)


@dataclasses.dataclass(frozen=True)
class Served:
    """The `serve` process and its log."""

    proc: subprocess.Popen
    log: Path

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.tail()}")


@contextlib.contextmanager
def served(repo: Path, params: str, api_url: str, cron: str | None, home: Path) -> Iterator[Served]:
    """`python flows/pipeline.py serve` in ``repo`` against ``api_url``; Ctrl-C (SIGINT) on exit."""
    log = home / "serve.log"
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home / "client"),
           "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    cmd = [sys.executable, str(HERE / "pipeline.py"), "serve", "--params", params, *(["--cron", cron] if cron else [])]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield Served(proc, log)
    finally:
        _stop(proc, signal.SIGINT)


async def _deployment(client: Any, serve: Served, timeout: float = 240) -> Any:
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while True:
        serve.check()
        try:
            return await client.read_deployment_by_name(DEPLOYMENT)
        except ObjectNotFound:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no deployment {DEPLOYMENT} after {timeout} s:\n{serve.tail()}") from None
            await asyncio.sleep(1)


async def regenerate_once(client: Any, serve: Served, parameters: dict[str, Any],
                          timeout: float) -> tuple[Any, Any, Any]:
    """Wait for the served deployment, trigger one run with ``parameters`` (beside the deployment's), wait for
    COMPLETED; (deployment, flow run, its artifact)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    deployment = await _deployment(client, serve)
    run = await client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
    print(f"triggered flow run {run.name} ({run.id}) of {DEPLOYMENT}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + timeout
    while not (run.state and run.state.is_final()):
        serve.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"flow run {run.name} not finished after {timeout} s ({run.state_name}):\n"
                               f"{serve.tail()}")
        await asyncio.sleep(3)
        run = await client.read_flow_run(run.id)
    if not run.state.is_completed():
        raise RuntimeError(f"flow run {run.name} ended {run.state_name}: {run.state.message}\n{serve.tail()}")
    artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
        key=ArtifactFilterKey(any_=[ARTIFACT_KEY]), flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    if not artifacts:
        raise RuntimeError(f"flow run {run.name} completed without a {ARTIFACT_KEY} artifact")
    return deployment, run, artifacts[0]


# run in the page once it has rendered: close first-visit dialogs and banners (a user closes them with one click)
TIDY_JS = """
for (const el of document.querySelectorAll('[role=dialog] button, .p-modal button, .p-toast button')) {
  const label = el.getAttribute('aria-label') || el.innerText || '';
  if (/close|dismiss|skip|not now|no thanks|got it/i.test(label)) el.click();
}
"""


async def _shoot(target: str, url: str, height: int, settle_s: float = 8.0) -> tuple[bytes, str]:
    async with page(target) as p:
        await p.size(WIDTH, height)
        await p.goto(url, settle_s)
        await p.evaluate(TIDY_JS)
        await asyncio.sleep(1.0)
        return await p.screenshot(), await p.text()


def screenshot(ui_url: str, deployment: Any, run: Any, artifact: Any, png: Path) -> dict[str, str]:
    """The deployment page (schedule, runs), the flow run's page (state, timeline, logs) and its artifact's page (the
    markdown), stacked into ``png``; returns {page URL: visible text}."""
    from PIL import Image

    pages = [(f"{ui_url}/deployments/deployment/{deployment.id}", 820),  # schedule, next and completed runs
             (f"{ui_url}/runs/flow-run/{run.id}", 1100),  # state, task timeline with the artifact, logs
             (f"{ui_url}/artifacts/artifact/{artifact.id}", 900)]  # the artifact: folder, seed, figures, grid
    shots, texts = [], {}
    with browser(WIDTH, 1000) as target:
        for url, height in pages:
            data, text = asyncio.run(_shoot(target, url, height))
            shots.append(Image.open(io.BytesIO(data)).convert("RGB"))
            texts[url] = text
    canvas = Image.new("RGB", (WIDTH, sum(s.height for s in shots)), "white")
    top = 0
    for shot in shots:
        canvas.paste(shot, (0, top))
        top += shot.height
    png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(png)
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("."), help="repository with registered champions")
    ap.add_argument("--params", default="params.yaml", help="its params file, relative to --repo")
    ap.add_argument("--api-url", default="", help="a Prefect server's API URL (default: start one on loopback)")
    ap.add_argument("--cron", default=None, help="schedule served (default: params regenerate.cron)")
    ap.add_argument("--count", action="append", default=[], metavar="CLASS=N",
                    help="images of a class for the triggered run (default: the flow's counts)")
    ap.add_argument("--seed", type=int, default=None, help="base seed of the triggered run (default: fresh)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds the regeneration may take")
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = ap.parse_args()
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    repo, png = args.repo.resolve(), args.out.resolve() / "prefect_ui.png"
    parameters = {k: v for k, v in (("counts", _counts(args.count)), ("seed", args.seed)) if v not in (None, {})}
    with tempfile.TemporaryDirectory(prefix="acneops-prefect-") as tmp:
        home = Path(tmp)
        with (contextlib.nullcontext(args.api_url) if args.api_url else prefect_server(home / "server")) as api_url:
            api_url = api_url.rstrip("/")
            with served(repo, args.params, api_url, args.cron, home) as serve, \
                    temporary_settings({PREFECT_API_URL: api_url}):
                async def regenerate() -> tuple[Any, Any, Any]:
                    async with get_client() as client:
                        return await regenerate_once(client, serve, parameters, args.timeout)

                try:
                    deployment, run, artifact = asyncio.run(regenerate())
                except RuntimeError as e:
                    sys.exit(f"prefect_screenshots: {e}")
                texts = screenshot(api_url.removesuffix("/api"), deployment, run, artifact, png)
    print(f"{png}: {run.name} {run.state_name}")
    for url, text in texts.items():
        print(f"{url}: {text[:3000]}")


if __name__ == "__main__":
    main()
