"""Screenshots of the MLflow UI as a user sees it: the registered models page and the compare view of the two latest
reproductions (the `acneops repro` parent runs), taken with headless Chromium (Debian's `chromium` package).

    .venv/bin/python flows/mlflow_screenshots.py [--tracking-uri URI] [--out docs/screenshots]

Without ``--tracking-uri`` it serves the repository's embedded store (``sqlite:///<repo>/mlflow.db``, artifacts in
``mlartifacts/``) with ``mlflow server`` on 127.0.0.1 for the time of the screenshots and stops it afterwards; with
a URI (a team server) it opens that server's UI. Writes ``<out>/mlflow_models.png`` and ``<out>/mlflow_compare.png``
and prints each page's visible text (what the test checks: the screenshot shows what the text says).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from headless_chromium import browser, capture, free_port

@contextlib.contextmanager
def embedded_ui(repo: Path) -> Iterator[str]:
    """`mlflow server` on the repository's sqlite store, on loopback; yields its URL; stopped on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{repo.resolve() / 'mlflow.db'}",
           "--artifacts-destination", str(repo.resolve() / "mlartifacts")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server on {repo / 'mlflow.db'} did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _api(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def latest_reproductions(url: str, n: int = 2) -> tuple[str, list[str]]:
    """(experiment id, ids of the ``n`` latest `acneops repro` parent runs of experiment 'acneops')."""
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=acneops",
                                timeout=30) as response:
        experiment = json.loads(response.read())["experiment"]["experiment_id"]
    runs = _api(url, "runs/search", {"experiment_ids": [experiment], "max_results": n,
                                     "filter": "tags.`acneops.stage` = 'repro'", "order_by": ["attributes.start_time DESC"]})
    return experiment, [r["info"]["run_id"] for r in runs.get("runs", [])]


# run in the page once it has rendered: close MLflow 3's first-visit promotion dialog and its assistant side panel
# (a user closes them with one click) and switch the sidebar to its model-training view
TIDY_JS = """
for (const el of document.querySelectorAll('.ant-modal-close, [role=dialog] button[aria-label=Close]')) el.click();
const leaves = [...document.querySelectorAll('body *')].filter(e => e.childElementCount === 0);
const title = leaves.find(e => e.textContent.trim() === 'MLflow Assistant');
for (let box = title, i = 0; box && i < 8; box = box.parentElement, i++) {
  const buttons = box.querySelectorAll('button');
  if (buttons.length >= 2) { buttons[buttons.length - 1].click(); break; }
}
for (const el of document.querySelectorAll('button')) {  // the side panel's close button (top right)
  const r = el.getBoundingClientRect();
  if (r.left > window.innerWidth * 0.85 && r.top < 80 && /close/i.test(el.getAttribute('aria-label') || el.title || '')) el.click();
}
const training = leaves.find(e => e.textContent.trim() === 'Model training');
if (training) training.click();
"""


def shoot(url: str, png: Path, settle_s: float = 12.0, width: int = 1600, height: int = 1000) -> str:
    """Screenshot ``url`` into ``png`` with headless Chromium (load, let the app render for ``settle_s`` seconds,
    close first-visit dialogs, capture); return the page's visible text."""
    png.parent.mkdir(parents=True, exist_ok=True)
    with browser(width, height) as target:
        data, text = asyncio.run(capture(target, url, settle_s, width, height, tidy_js=TIDY_JS))
    png.write_bytes(data)
    return text


def screenshots(url: str, out: Path) -> dict[str, str]:
    """Both pages into ``out``; returns {png path: visible text}."""
    pages = {out / "mlflow_models.png": (f"{url}/#/models", 1000)}
    experiment, runs = latest_reproductions(url)
    if len(runs) >= 2:
        query = urllib.parse.urlencode({"runs": json.dumps(runs[::-1]), "experiments": json.dumps([experiment])})
        pages[out / "mlflow_compare.png"] = (f"{url}/#/compare-runs?{query}", 2200)  # tall: the metrics table too
    else:
        print(f"only {len(runs)} reproduction(s) in the store: no compare view (run `acneops repro` twice)",
              file=sys.stderr)
    return {str(png): shoot(page, png, height=height) for png, (page, height) in pages.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", default="", help="an MLflow server's URL (default: serve the repo's store)")
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = ap.parse_args()
    with contextlib.nullcontext(args.tracking_uri) if args.tracking_uri else embedded_ui(args.repo) as url:
        for png, text in screenshots(url.rstrip("/"), args.out).items():
            print(f"{png}: {text[:2000]}")


if __name__ == "__main__":
    main()
