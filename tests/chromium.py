"""Open a page in real headless Chromium and report what a user would see and what the
browser complained about, through the DevTools protocol over a pipe
(``--remote-debugging-pipe``: JSON messages on fds 3/4, NUL-separated; no websocket
library needed).

Collected problems: console.error / console.warn calls, uncaught exceptions, and the
browser's own log entries at warning or error level (failed resource loads, blocked
requests, ...). Plus: images that did not decode, and a full-page PNG screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    problems: list[str] = field(default_factory=list)  # console errors, exceptions, log errors
    broken_images: int = 0
    images: int = 0
    title: str = ""
    text: str = ""  # document.body.innerText
    screenshot: bytes = b""  # PNG


class _Pipe:
    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int) -> None:
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        seen = [e for e in self.events if e.get("method") == method]
        while not seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout:g} s")
            self.events.append(self._read(deadline))
            seen = [e for e in self.events if e.get("method") == method]
        return seen[0]

    def _read(self, deadline: float | None = None) -> dict:
        import select

        while b"\0" not in self.buffer:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.01)
            ready, _, _ = select.select([self.read_fd], [], [], wait)
            if not ready:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit {self.proc.poll()})")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)


def check_page(chromium: str, url: str, width: int = 1280, timeout: float = 60) -> PageCheck:
    """Load `url`, wait for its load event, and collect what `PageCheck` holds."""
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    profile = tempfile.mkdtemp(prefix="autotune-chromium-")

    def child_fds() -> None:
        # Chromium reads commands on fd 3 and writes replies on fd 4. Move both ends above
        # 4 first, so neither dup2 overwrites the other.
        import fcntl

        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    proc = subprocess.Popen(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(3, 4),
        preexec_fn=child_fds,
    )
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = _Pipe(proc, to_chrome_w, from_chrome_r)
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        pipe.events.clear()
        pipe.send("Page.navigate", {"url": url}, session=session)
        pipe.wait_event("Page.loadEventFired", timeout)
        result = PageCheck()
        facts = pipe.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify({title: document.title,"
                " text: document.body ? document.body.innerText : '',"
                " images: document.images.length,"
                " broken: [...document.images].filter(i => !i.complete || !i.naturalWidth).length,"
                " height: document.documentElement.scrollHeight})",
                "returnByValue": True,
            },
            session=session,
        )["result"]["value"]
        facts = json.loads(facts)
        result.title, result.text = facts["title"], facts["text"]
        result.images, result.broken_images = facts["images"], facts["broken"]
        shot = pipe.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True},
            session=session,
        )
        result.screenshot = base64.b64decode(shot["data"])
        for event in pipe.events:
            result.problems += _problem(event)
        return result
    finally:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            pipe.send("Browser.close")
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        shutil.rmtree(profile, ignore_errors=True)


def _problem(event: dict) -> list[str]:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in (
        "error",
        "warning",
        "assert",
    ):
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        return [f"console.{params['type']}: {args}"]
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        text = details.get("exception", {}).get("description") or details.get("text")
        return [f"uncaught: {text}"]
    if method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
        entry = params["entry"]
        return [f"{entry['source']} {entry['level']}: {entry['text']} {entry.get('url', '')}"]
    return []


def non_blank_fraction(png: bytes) -> tuple[float, int]:
    """Share of pixels that are not the page background (white), and the number of
    distinct colours: a blank or single-colour screenshot scores ~0 and 1."""
    import io

    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    ink = (img < 245).any(axis=2)
    colours = len(np.unique(img.reshape(-1, 3)[::7], axis=0))
    return float(ink.mean()), colours


def write_page(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.write_text(body)
    return path
