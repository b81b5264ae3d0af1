"""Screenshots of the MLflow UI as a user sees it: the registered models page and the compare view of the two latest
reproductions (the `acneops repro` parent runs), taken with headless Chromium (Debian's `chromium` package).

    .venv/bin/python flows/mlflow_screenshots.py [--tracking-uri URI] [--out reports]

Without ``--tracking-uri`` it serves the repository's embedded store (``sqlite:///<repo>/mlflow.db``, artifacts in
``mlartifacts/``) with ``mlflow server`` on 127.0.0.1 for the time of the screenshots and stops it afterwards; with
a URI (a team server) it opens that server's UI. Writes ``<out>/mlflow_models.png`` and ``<out>/mlflow_compare.png``
and prints each page's visible text (what the test checks: the screenshot shows what the text says).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

WINDOW = "1600,1000"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    sys.exit("headless Chromium is needed for the screenshots: `apt-get install chromium` (Debian)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def embedded_ui(repo: Path) -> Iterator[str]:
    """`mlflow server` on the repository's sqlite store, on loopback; yields its URL; stopped on exit."""
    port = _free_port()
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


def shoot(url: str, png: Path, budget_ms: int = 20000) -> str:
    """Screenshot ``url`` into ``png`` with headless Chromium after ``budget_ms`` of page time; return its text."""
    base = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--window-size={WINDOW}", f"--virtual-time-budget={budget_ms}", "--user-data-dir=" + str(png.parent / ".chromium")]
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*base, f"--screenshot={png}", url], check=True, capture_output=True, timeout=180)
    dom = subprocess.run([*base, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=180).stdout
    shutil.rmtree(png.parent / ".chromium", ignore_errors=True)
    return _text(dom)


def _text(html: str) -> str:
    from html.parser import HTMLParser

    parts: list[str] = []

    class Text(HTMLParser):
        skip = 0

        def handle_starttag(self, tag, attrs):
            self.skip += tag in ("script", "style")

        def handle_endtag(self, tag):
            self.skip -= tag in ("script", "style") and self.skip > 0

        def handle_data(self, data):
            if not self.skip and data.strip():
                parts.append(data.strip())

    Text().feed(html)
    return " ".join(parts)


def screenshots(url: str, out: Path) -> dict[str, str]:
    """Both pages into ``out``; returns {png path: visible text}."""
    pages = {out / "mlflow_models.png": f"{url}/#/models"}
    experiment, runs = latest_reproductions(url)
    if len(runs) >= 2:
        query = urllib.parse.urlencode({"runs": json.dumps(runs[::-1]), "experiments": json.dumps([experiment])})
        pages[out / "mlflow_compare.png"] = f"{url}/#/compare-runs?{query}"
    else:
        print(f"only {len(runs)} reproduction(s) in the store: no compare view (run `acneops repro` twice)",
              file=sys.stderr)
    return {str(png): shoot(page, png) for png, page in pages.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", default="", help="an MLflow server's URL (default: serve the repo's store)")
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path, default=Path("reports"))
    args = ap.parse_args()
    with contextlib.nullcontext(args.tracking_uri) if args.tracking_uri else embedded_ui(args.repo) as url:
        for png, text in screenshots(url.rstrip("/"), args.out).items():
            print(f"{png}: {text[:2000]}")


if __name__ == "__main__":
    main()
