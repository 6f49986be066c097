"""A headless chromium driven through the Chrome DevTools Protocol, for tests of the operator console.

Debian's `chromium` is started headless with a throw-away profile on a port the OS picks (read back from the
profile's DevToolsActivePort file); the page target is driven over one websocket (websocket-client). Events
the tests care about are kept: console calls, uncaught exceptions, log entries (CSP violations among them)
and JavaScript dialogs, which are dismissed at once so that a page that opens one cannot hang the test.
`close()` kills the browser's whole process group, whatever happened before."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class BrowserError(RuntimeError):
    """The browser failed to start, a CDP command failed, or a page expression threw."""


class Browser:
    def __init__(self, width: int = 1280, height: int = 900, start_timeout: float = 30) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-"))
        self.log_path = self.profile / "chromium.log"
        self.process: subprocess.Popen | None = None
        self.socket: websocket.WebSocket | None = None
        self.ids = itertools.count(1)
        self.console: list[dict[str, Any]] = []  # Runtime.consoleAPICalled: {"type", "text"}
        self.exceptions: list[str] = []  # Runtime.exceptionThrown
        self.log_entries: list[dict[str, Any]] = []  # Log.entryAdded: {"source", "level", "text", "url"}
        self.dialogs: list[dict[str, Any]] = []  # Page.javascriptDialogOpening: {"type", "message"}
        try:
            self._start(width, height, start_timeout)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ start and stop

    def _start(self, width: int, height: int, timeout: float) -> None:
        command = [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--window-size={width},{height}",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        port = self._devtools_port(timeout)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        page = next((t for t in targets if t.get("type") == "page"), None)
        if page is None:
            raise BrowserError(f"no page target among {targets}")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def _devtools_port(self, timeout: float) -> int:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                first_line = active.read_text().splitlines()[0]
                return int(first_line)
            except (OSError, IndexError, ValueError):
                time.sleep(0.05)  # chromium writes the file once it listens
        raise BrowserError(f"chromium did not open its DevTools port within {timeout} s:\n{self.log_tail()}")

    def close(self) -> None:
        """Close the connection, kill chromium and its helpers, remove the profile; safe to call twice."""
        if self.socket is not None:
            try:
                self.socket.close()
            except (OSError, websocket.WebSocketException):
                pass
            self.socket = None
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------------ CDP

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        """Send a CDP command and return its result, recording the events that arrive meanwhile."""
        if self.socket is None:
            raise BrowserError("the browser is closed")
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            self.socket.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = json.loads(self.socket.recv())
            except websocket.WebSocketTimeoutException:
                raise BrowserError(f"{method}: no answer within {timeout} s") from None
            if message.get("id") == message_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self._record(message["method"], message.get("params", {}))

    def _record(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append({"type": params.get("type"), "text": text})
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.log_entries.append({k: entry.get(k) for k in ("source", "level", "text", "url")})
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append({"type": params.get("type"), "message": params.get("message")})
            # Dismiss it without waiting for the answer (it comes back with its id and is skipped above).
            assert self.socket is not None
            self.socket.send(
                json.dumps({"id": next(self.ids), "method": "Page.handleJavaScriptDialog", "params": {"accept": False}})
            )

    # ------------------------------------------------------------------ page

    def navigate(self, url: str, timeout: float = 30) -> None:
        """Open `url` and wait until the document has loaded."""
        result = self.send("Page.navigate", {"url": url}, timeout)
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url}: {result['errorText']}")
        self.wait_for(f"document.readyState === 'complete' && location.href === {json.dumps(url)}", timeout)

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of a JavaScript expression in the page (promises awaited), as JSON; BrowserError if it
        throws."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "userGesture": True},
            timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression!r} threw: {description}")
        return result.get("result", {}).get("value")

    def wait_for(self, condition: str, timeout: float, what: str | None = None, interval: float = 0.1) -> Any:
        """Poll a JavaScript expression until it is truthy and return its value; AssertionError naming `what`
        (the expression by default), with the last value seen, once `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what or condition}: not so after {timeout:.0f} s (last seen: {value!r})"[:2000])
            time.sleep(interval)

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page (not just the viewport) to `path`."""
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
