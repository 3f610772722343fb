"""A real headless Chromium (Debian's ``chromium``, installed with apt when missing), driven over the
DevTools protocol: open a page, wait until a script says it is ready, read its DOM, take a screenshot.

Chromium runs with a fresh profile and without the background services that would reach for the
network (on a closed network they make it misbehave).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import websockets

from tests.harness.postgres_server import as_root

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = (
    ("apt-get", "update", "-q"),
    ("apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", "chromium"),
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 30.0
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def chromium_binary(binary: Path = CHROMIUM) -> Path:
    """Debian's Chromium, installed with apt-get when missing (as root, or through ``sudo -n``)."""
    if binary.exists():
        return binary
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        raise RuntimeError(
            f"Chromium is not installed ({binary}) and installing it needs root: run `sudo apt-get install chromium`"
        )
    for command in INSTALL:
        step = as_root(command, euid=os.geteuid(), sudo=shutil.which("sudo"))
        done = subprocess.run(step, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=APT_ENV)
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-20:])
            raise RuntimeError(f"installing Chromium: `{' '.join(step)}` exited {done.returncode}:\n{tail}")
    if not binary.exists():
        raise RuntimeError(f"Chromium was installed but {binary} does not exist")
    return binary


class Page:
    """One tab, spoken to over its DevTools websocket."""

    def __init__(self, socket: websockets.ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        await self._socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(await self._socket.recv())
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def open(self, url: str, width: int = 1400, height: int = 1000) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
        )
        await self.call("Page.enable")
        await self.call("Page.navigate", url=url)

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Until ``expression`` is truthy in the page; its last value is told when it never is."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        text = await self.evaluate("document.body ? document.body.innerText.slice(0, 3000) : ''")
        raise AssertionError(f"{expression!r} stayed {value!r} for {timeout}s; the page reads:\n{text}")

    async def screenshot(self, path: Path) -> Path:
        """The whole page, as PNG."""
        size = await self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        shot = await self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


class Browser:
    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.profile = Path(tempfile.mkdtemp(prefix="gantry-chromium-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> Browser:
        self.process = subprocess.Popen(
            [str(self.binary), *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while not (active.exists() and active.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                error = self.process.stderr.read().decode(errors="replace")[-2000:] if self.process.stderr else ""
                self.stop()
                raise RuntimeError(f"Chromium did not start (exit {self.process.poll()}):\n{error}")
            time.sleep(0.1)
        self.port = int(active.read_text().splitlines()[0])
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    @asynccontextmanager
    async def page(self) -> AsyncIterator[Page]:
        """A new tab, closed after use."""
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as devtools:
            target = (await devtools.put("/json/new?about:blank")).json()
            try:
                async with websockets.connect(target["webSocketDebuggerUrl"], max_size=None) as socket:
                    yield Page(socket)
            finally:
                await devtools.get(f"/json/close/{target['id']}")
