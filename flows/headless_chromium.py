"""Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol with `websockets`: what the UI
screenshot scripts (mlflow_screenshots.py, prefect_screenshots.py) share. A page is loaded, given time to render,
tidied by a script of the caller's (first-visit dialogs closed), read as its visible text and captured as PNG.

    with browser(1600, 1000) as target:
        png, text = asyncio.run(capture(target, url, settle_s=12, tidy_js=TIDY_JS))
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    sys.exit("headless Chromium is needed for the screenshots: `apt-get install chromium` (Debian)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def browser(width: int = 1600, height: int = 1000) -> Iterator[str]:
    """Headless Chromium with a throwaway profile; yields the DevTools websocket URL of its page; stopped on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="acneops-chromium-") as profile:
        proc = subprocess.Popen([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                 f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                                 f"--window-size={width},{height}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            yield _page_target(port)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _page_target(port: int, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                pages = [t for t in json.loads(response.read()) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("headless Chromium did not open its DevTools endpoint")
        time.sleep(0.3)


class Page:
    """One DevTools session on a page target: ``await page.call(method, **params)``, plus the few steps the scripts
    need (size, navigate, evaluate, visible text, screenshot)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._ids = iter(range(1, 10**9))

    async def call(self, method: str, **params: object) -> dict:
        ident = next(self._ids)
        await self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout=120))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def size(self, width: int, height: int) -> None:
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)

    async def goto(self, url: str, settle_s: float) -> None:
        """Navigate and give the app ``settle_s`` seconds to fetch and render."""
        await self.call("Page.navigate", url=url)
        await asyncio.sleep(settle_s)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed in the page: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def text(self) -> str:
        """The page's visible text, whitespace collapsed."""
        return " ".join(str(await self.evaluate("document.body.innerText") or "").split())

    async def screenshot(self) -> bytes:
        shot = await self.call("Page.captureScreenshot", format="png")
        return base64.b64decode(shot["data"])


@contextlib.asynccontextmanager
async def page(target: str):
    import websockets

    async with websockets.connect(target, max_size=None) as ws:
        yield Page(ws)


async def capture(target: str, url: str, settle_s: float, width: int, height: int,
                  tidy_js: str = "") -> tuple[bytes, str]:
    """Load ``url`` at ``width`` x ``height``, let it render, run ``tidy_js``; return (PNG bytes, visible text)."""
    async with page(target) as p:
        await p.size(width, height)
        await p.goto(url, settle_s)
        if tidy_js:
            await p.call("Runtime.evaluate", expression=tidy_js)
            await asyncio.sleep(1.5)
        text = await p.text()
        return await p.screenshot(), text
