"""Real servers and real headless Chromium for UI tests (tests/test_ui.py): no mocks, no browser driver.

- `free_port()`; `background(cmd, env, log)`: a server in its own process group, stopped on exit;
  `wait_healthy(proc, url, log)`: until its health URL answers 200; `stop(*procs)`: all of them at once.
- `page_text(url, tmp)`: the visible text of a page after Chromium ran its JavaScript (`--dump-dom`).
- `screenshot(url, path, tmp)`: a PNG of the page as a person sees it.

Single-page apps (Prefect's Vue UI, MLflow's React UI) render nothing without `--virtual-time-budget`: Chromium
then exits at the `load` event, before the app has fetched its data. With a budget it runs virtual time (timers,
animations) up to the budget, and waits for pending network requests, before dumping or capturing.
"""

from __future__ import annotations

import contextlib
import html.parser
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = shutil.which("chromium")
# The flags the machines' notes require: no sandbox as root, and nothing that reaches for Google's hosts
# (the network is closed here and those connections fail many at a time).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
BUDGET_MS = 15000


def free_port() -> int:
    """A port the kernel just handed out on loopback (free now; servers bind it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def background(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Start `cmd` in its own process group (output to `log`) and stop the whole group afterwards."""
    out = open(log, "ab")   # noqa: SIM115 - closed below, after the process group ends
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)
        out.close()


def stop(*procs: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM every process group at once (so their shutdowns overlap), then SIGKILL what is left after grace_s."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_healthy(proc: subprocess.Popen, health_url: str, log: Path, startup_s: float = 240) -> None:
    """Block until `health_url` answers 200; fail with the server's log if it exits or never answers."""
    deadline = time.monotonic() + startup_s     # a hang guard, not a timing check
    while not _healthy(health_url):
        assert proc.poll() is None, f"{proc.args[:3]} exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{health_url} not up after {startup_s} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def chromium(url: str, tmp: Path, *args: str, budget_ms: int = BUDGET_MS) -> subprocess.CompletedProcess:
    """One headless Chromium run on a fresh profile (no state carried from an earlier page)."""
    assert CHROMIUM, "chromium is not installed (Debian package `chromium`; .ci/run installs it)"
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args, url]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, f"chromium failed on {url}: {done.stderr[-2000:]}"
    return done


class _Text(html.parser.HTMLParser):
    """Visible text of a DOM dump: the content of every element except scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style", "noscript"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def page_text(url: str, tmp: Path, save: Path | None = None, budget_ms: int = BUDGET_MS) -> str:
    """The page's visible text after its scripts ran (one space between text nodes); the DOM goes to `save`."""
    dom = chromium(url, tmp, "--dump-dom", budget_ms=budget_ms).stdout
    if save is not None:
        save.write_text(dom)
    parser = _Text()
    parser.feed(dom)
    return " ".join(parser.parts)


def screenshot(url: str, path: Path, tmp: Path, budget_ms: int = BUDGET_MS) -> Path:
    """A 1400x1000 PNG of the page; fails if Chromium wrote none."""
    chromium(url, tmp, f"--screenshot={path}", "--window-size=1400,1000", budget_ms=budget_ms)
    assert path.is_file() and path.stat().st_size > 0, f"no screenshot of {url}"
    return path


def distinct_colours(png: Path) -> int:
    """How many colours a screenshot has: a blank (unrendered) page has one or two."""
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
        return len(rgb.getcolors(maxcolors=rgb.width * rgb.height) or [])


class Browser:
    """One headless Chromium driven over the DevTools protocol (Python `websockets`, a Prefect dependency), for
    what the CLI cannot do: click a tab. Prefect's flow-run page ignores `?tab=Task Runs` on a fresh load (it
    hides that tab until the run has loaded, then falls back to Logs), so a person clicks it; so does this."""

    def __init__(self, tmp: Path, size: tuple[int, int] = (1400, 1000)) -> None:
        import json
        import re

        from websockets.sync.client import connect

        assert CHROMIUM, "chromium is not installed (Debian package `chromium`; .ci/run installs it)"
        self._json = json
        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={size[0]},{size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        lines = []
        for line in self.proc.stderr:                       # Chromium prints its DevTools URL on start
            lines.append(line)
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                break
        else:
            raise AssertionError(f"chromium exited without a DevTools URL: {''.join(lines)[-2000:]}")
        import threading

        # Keep reading Chromium's stderr, or a full pipe would block it.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.ws = connect(found.group(1), max_size=None, open_timeout=30)
        self._id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=size[0], height=size[1],
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, session: bool = False, **params: object) -> dict:
        """Send one command and return its result (events that arrive meanwhile are skipped)."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(self._json.dumps(msg))
        while True:
            reply = self._json.loads(self.ws.recv(timeout=120))
            if reply.get("id") == self._id:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})

    def js(self, expression: str) -> object:
        return self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                         awaitPromise=True)["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def text(self) -> str:
        return str(self.js("document.body ? document.body.innerText : ''") or "")

    def wait_for(self, *needles: str, timeout_s: float = 90) -> str:
        """The page's visible text once it holds every needle (or whatever it holds after timeout_s)."""
        deadline = time.monotonic() + timeout_s             # a hang guard, not a timing check
        while True:
            text = self.text()
            if all(n in text for n in needles) or time.monotonic() > deadline:
                return text
            time.sleep(0.5)

    def click(self, label: str) -> bool:
        """Click the first visible button, tab or link whose text is exactly `label`, as a person would."""
        return bool(self.js(
            "(() => { const want = " + self._json.dumps(label) + ";"
            " for (const el of document.querySelectorAll('button, [role=tab], a, li')) {"
            "  if (el.innerText && el.innerText.trim() === want && el.offsetParent !== null) { el.click(); return true; } }"
            " return false; })()"))

    def screenshot(self, path: Path) -> Path:
        import base64

        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def dom(self) -> str:
        return str(self.js("document.documentElement.outerHTML") or "")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        stop(self.proc, grace_s=10)
        shutil.rmtree(self.profile, ignore_errors=True)
