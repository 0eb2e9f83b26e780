"""Helpers for the tests that look at sportray in a real browser (test_browser.py, and
test_cluster.py's views of the real two-node sweep): headless Chromium, a token-adding proxy for
the Ray dashboard, and `mlflow ui` on a store.

Chromium is Debian's `chromium` ($SPORTRAY_CHROMIUM overrides the path); `NO_CHROMIUM` is the
skip reason where it is missing. Screenshots go to $SPORTRAY_BROWSER_ARTIFACTS, else
browser-artifacts/ at the repository root (ignored by git; docs/screenshots/ keeps copies).
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SPORTRAY_CHROMIUM", "/usr/bin/chromium")
HAVE_CHROMIUM = Path(CHROMIUM).exists()
NO_CHROMIUM = f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set SPORTRAY_CHROMIUM)"
TOKEN_DIALOG = "Authentication Token Required"   # the Ray dashboard's page without a token


def artifacts_dir() -> Path:
    d = Path(os.environ.get("SPORTRAY_BROWSER_ARTIFACTS", ROOT / "browser-artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium(url: str, profile: Path, *, screenshot: Path | None = None, budget_ms: int = 20000,
             size: str = "1600,1000", timeout: float = 120) -> str:
    """Load `url` in headless Chromium; returns the DOM after `budget_ms` of virtual time and,
    with `screenshot`, writes a PNG of the same page load."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
           f"--window-size={size}", f"--virtual-time-budget={budget_ms}", "--dump-dom"]
    if screenshot:
        cmd.append(f"--screenshot={screenshot}")
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    if screenshot:
        assert screenshot.exists() and screenshot.stat().st_size > 10_000, out.stderr[-2000:]
    return out.stdout


def wait_http(url: str, timeout: float = 120, headers: dict | None = None, proc=None) -> int:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before {url} answered")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError as e:
            last = e
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s ({last})")


def get_json(url: str, headers: dict | None = None, timeout: float = 10):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
        return json.loads(r.read())


# ----------------------------------------------------------------------------- MLflow

@contextlib.contextmanager
def mlflow_ui(uri: str, log_path: Path, *, wait: bool = True):
    """`mlflow ui` on `uri`, bound to 127.0.0.1 on a free port; yields its base URL (wait=False:
    at once, still starting: `wait_http(base + "/health")` before loading a page).

    The store's schema must exist before (`tracking.connect(uri)`), or the server and a writer
    race to create it. MLflow 3's job runner (eight huey consumers, for GenAI jobs the compare
    view never uses) is left off: on a 2-core machine it costs the page seconds."""
    port = free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with Path(log_path).open("w") as log:
        proc = subprocess.Popen([mlflow, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            if wait:
                assert wait_http(base + "/health", proc=proc) == 200
            yield base
        finally:  # the server and its uvicorn child: the process group started here
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """The MLflow UI's compare view of `run_ids` (what "Compare" on selected runs opens)."""
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])},
                                   quote_via=urllib.parse.quote)
    return f"{base}/#/compare-runs?{query}"


# ----------------------------------------------------------------------------- Ray dashboard

class _TokenProxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def token_proxy(target: str, token: str) -> tuple[_TokenProxy, str]:
    """127.0.0.1 reverse proxy to `target` that adds the dashboard token to every request.

    Ray 2.60's dashboard asks for its token in a dialog (/api/* answers 401 without it);
    headless Chromium's command line cannot type into it or set the HttpOnly cookie it would
    leave, so the proxy does what an authenticating proxy in front of the dashboard does."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self):
            body = None
            if self.headers.get("Content-Length"):
                body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "accept-encoding", "connection")}
            headers["Authorization"] = f"Bearer {token}"
            req = urllib.request.Request(target + self.path, data=body, headers=headers, method=self.command)
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    status, rheaders, data = r.status, r.headers, r.read()
            except urllib.error.HTTPError as e:
                status, rheaders, data = e.code, e.headers, e.read()
            self.send_response(status)
            for k, v in rheaders.items():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        def log_message(self, *args):
            pass

    server = _TokenProxy(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def dashboard_actors(base: str, token: str) -> list[dict]:
    """Every actor the dashboard knows (the state API behind its actors page)."""
    data = get_json(f"{base}/api/v0/actors?limit=1000&detail=1", {"Authorization": f"Bearer {token}"})
    return data["data"]["result"]["result"]


# ----------------------------------------------------------------------------- a page to click in

class Page:
    """One headless Chromium tab driven over the DevTools protocol (aiohttp's websocket, which
    Ray's dashboard already depends on), for what a person does after a page loads -- type a
    page size, close a side panel -- before the screenshot. `chromium()` stays the plain
    load-and-screenshot path.

        with Page(profile) as page:
            page.goto(url)
            page.wait_for("document.body.innerText.includes('RayTrainWorker')")
            page.type_into("input[name=x]", "30")
            page.screenshot(path)
    """

    def __init__(self, profile: Path, *, width: int = 1600, height: int = 1000, timeout: float = 60):
        import asyncio

        self.width, self.height, self.timeout = width, height, timeout
        self.profile = Path(profile)
        self.profile.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self._log = (self.profile / "chromium.log").open("w")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True)
        self._loop = asyncio.new_event_loop()
        self._id = 0
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    pages = [t for t in get_json(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page"]
                    if pages:
                        break
                except OSError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Chromium's DevTools did not come up (log {self._log.name})")
                time.sleep(0.2)
            self._run(self._connect(pages[0]["webSocketDebuggerUrl"]))
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    async def _connect(self, ws_url: str) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(ws_url, max_msg_size=0)

    def _run(self, coro):
        return self._loop.run_until_complete(coro)

    async def _send(self, method: str, params: dict) -> dict:
        import asyncio

        self._id += 1
        msg_id = self._id
        await self._ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self._ws.receive_json(), self.timeout)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def send(self, method: str, **params) -> dict:
        return self._run(self._send(method, params))

    def eval(self, expression: str):
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:200]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def reload(self) -> None:
        self.send("Page.reload", ignoreCache=True)
        time.sleep(0.5)
        self.wait_for("document.readyState === 'complete'")

    def wait_for(self, expression: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.eval(f"!!({expression})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true after {timeout:.0f} s: {expression}\n{self.text()[:2000]}")
            time.sleep(0.5)

    def text(self) -> str:
        return self.eval("document.body ? document.body.innerText : ''") or ""

    def dom(self) -> str:
        return self.eval("document.documentElement.outerHTML") or ""

    def click(self, selector: str) -> None:
        """A click on the first element matching `selector` (as a person's mouse would land)."""
        box = self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; e.scrollIntoView({{block: 'nearest'}}); const r = e.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        assert box, f"nothing matches {selector}"
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def type(self, text: str) -> None:
        """Text typed into whatever has the focus."""
        self.send("Input.insertText", text=text)

    def press(self, key: str = "Enter") -> None:
        codes = {"Enter": 13, "Escape": 27, "Tab": 9}
        extra = {"text": "\r"} if key == "Enter" else {}
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                      windowsVirtualKeyCode=codes[key], **(extra if kind == "keyDown" else {}))

    def type_into(self, selector: str, text: str) -> None:
        """Select the field's content and type `text` over it (real key input, so React sees it)."""
        found = self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return false; e.focus(); e.select(); return true; }})()""")
        assert found, f"nothing matches {selector}"
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path, *, full_page: bool = True, max_height: int = 4000) -> Path:
        """A PNG of the page; full_page: as tall as its content (up to max_height px)."""
        import base64

        height = self.height
        if full_page:
            height = min(max_height, max(self.height, int(self.eval(
                "Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)"))))
            self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=height,
                      deviceScaleFactor=1, mobile=False)
            time.sleep(1.0)   # re-layout at the new size
        data = self.send("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        if full_page:
            self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                      deviceScaleFactor=1, mobile=False)
        assert Path(path).stat().st_size > 10_000, path
        return Path(path)

    def close(self) -> None:
        try:
            if getattr(self, "_session", None) is not None:
                self._run(self._ws.close())
                self._run(self._session.close())
        except Exception:   # noqa: BLE001 - the browser goes below either way
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._loop.close()
        self._log.close()

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
