"""The status page in a real browser: Debian's headless chromium, driven over the DevTools
protocol (a few lines of stdlib websocket below; nothing downloaded), against the app served
by waitress on loopback exactly as ``facedrop run`` serves it.

Checks that the loss chart, the timelapse image and the queue render, saves a screenshot to
``test-artifacts/status-page.png``, and that a change in the state database shows up on the
page without a reload.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                       "(apt-get install chromium; .ci/run installs it)"),
]


class DevTools:
    """A minimal DevTools-protocol client over a hand-rolled websocket (RFC 6455, client side)."""

    def __init__(self, ws_url: str, timeout: float = 30.0) -> None:
        assert ws_url.startswith("ws://")
        hostport, _, path = ws_url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        assert b" 101 " in status, status
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, payload: bytes, opcode: int = 1) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _message(self) -> dict:
        data = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode == 9:
                self._send(payload, opcode=10)
                continue
            data += payload
            if b0 & 0x80:
                return json.loads(data)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}).encode())
        while True:
            msg = self._message()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 20.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._message())
        raise TimeoutError(method)

    def js(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_js(self, expression: str, timeout: float = 20.0, every: float = 0.2):
        end = time.monotonic() + timeout
        value = None
        while time.monotonic() < end:
            value = self.js(expression)
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {expression!r} (last value {value!r})")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture()
def browser(tmp_path):
    """Headless chromium with remote debugging on a random loopback port; yields a page."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        tools.call("Runtime.enable")
        yield tools
        tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def served_root(tmp_path, astronaut_faces, grace_faces):
    """A root with finished work and a state database, served by waitress in a thread."""
    from test_web import build_root, populate_db
    from waitress import create_server

    from web_status.app import create_app

    root = build_root(tmp_path / "root", astronaut_faces, grace_faces)
    store, running = populate_db(root)
    from daemon.config import Config
    from daemon.settings import describe

    # served as `facedrop run` serves it (daemon/service.py): waitress, 4 threads, and the
    # settings in force handed over by the daemon
    app = create_app(root, status_ttl=0.2, poll_seconds=0.5,
                     settings=describe(Config(root=root)))
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield root, store, running, f"http://127.0.0.1:{server.effective_port}/"
    server.close()
    thread.join(timeout=5)
    store.close()


def open_page(tools: DevTools, url: str) -> None:
    tools.call("Page.navigate", url=url)
    tools.wait_event("Page.loadEventFired", timeout=30)


def screenshot(tools: DevTools, path: Path) -> Path:
    height = tools.js("Math.ceil(document.documentElement.scrollHeight)")
    tools.call("Emulation.setDeviceMetricsOverride", width=1280, height=int(height),
               deviceScaleFactor=1, mobile=False)
    data = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(data))
    tools.call("Emulation.clearDeviceMetricsOverride")
    return path


def test_status_page_in_chromium(served_root, browser):  # browser closes before the server
    root, store, running, url = served_root
    browser.call("Log.enable")
    open_page(browser, url)
    js = browser.js

    # the queue and the running job render
    rows = js("Array.from(document.querySelectorAll('#queue tbody tr')).map(r => r.textContent)")
    assert len(rows) == 3 and "clip1.mp4" in rows[0] and "paused" in rows[2]
    assert js("document.querySelector('#running progress').value") == 250
    assert "30 / 120 frames" in js("document.querySelector('#running .job-meta').textContent")
    # the loss chart and the timelapse image are loaded images with real pixels
    chart = ("(() => { const i = document.querySelector('article.model img[data-field=chart]');"
             " return i && i.complete && i.naturalWidth >= 600 ? i.naturalWidth : 0; })()")
    assert browser.wait_js(chart) >= 600
    timelapse = ("(() => { const i = document.querySelector('article.model .tl-img');"
                 " return i && i.complete && i.naturalWidth > 0 ? i.getAttribute('src') : ''; })()")
    assert browser.wait_js(timelapse).endswith("/timelapse/00000750.jpg")
    assert js("document.querySelectorAll('.thumbs img').length") >= 10
    broken = js("Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0)"
                ".map(i => i.getAttribute('src'))")
    assert broken == [], broken
    # hostile names are text: they are in the page's text, and nothing ran
    text = js("document.body.innerText")
    assert "<script>alert(1)<script>_swapped.mp4" in text and "<i>carol<i> holiday.mp4" in text
    assert js("document.querySelectorAll('main script, main i, main u').length") == 0
    # the model's learning rate, and the loss that blew up, are on show (not hidden by styles)
    assert "learning rate 7.5e-5" in text and "random warp off since 600" in text
    assert js("(() => { const w = document.querySelector('[data-field=diverged]');"
              " return w && w.offsetHeight > 0 ? w.innerText : ''; })()").startswith(
        "The loss blew up 2 times")
    screenshot(browser, ARTIFACTS / "status-page.png")

    # stepping back through the timelapse
    js("document.querySelector('article.model .tl-prev').click()")
    assert js("document.querySelector('article.model .tl-img').getAttribute('src')").endswith(
        "00000500.jpg")
    assert "iteration 500" in js("document.querySelector('article.model .tl-caption').textContent")

    # live: change the database and the files, and watch the same page follow
    js("window.__samePage = 'yes'")
    store.update(running, done=90, total=120, progress=0.75)
    waiting = store.add_job("convert", root / "targets" / "demo" / "clip3.mp4", model="demo")
    store.update(waiting, message="waiting for model demo (iteration 1000, converts when it "
                                  "stops)")
    from hotfolders.model import ModelFolder
    from hotfolders.timelapse import write as write_jpeg

    frame = np.zeros((270, 600, 3), np.uint8)
    frame[:, 300:] = 200
    write_jpeg(ModelFolder(root / "models" / "demo").preview(waiting), frame)
    store.upsert_model("demo", iterations=1000, loss_a=0.031, loss_b=0.042, status="training")
    from test_web import timelapse_jpg, write_loss_csv
    from hotfolders.faceimage import list_faces

    model = root / "models" / "demo"
    write_loss_csv(model / "loss.csv", 250, start=751)
    timelapse_jpg(model / "timelapse" / "00001000.jpg",
                  list_faces(root / "approved" / "bob" / "bob_clip"), 1000)
    shutil.copy(root / "output" / "demo" / "alice_swapped.mp4",
                root / "output" / "demo" / "fresh_swapped.mp4")
    assert browser.wait_js("document.querySelector('#running progress').value === 750")
    assert browser.wait_js("document.querySelectorAll('#queue tbody tr').length === 4")
    assert browser.wait_js("document.querySelector('#outputs').textContent.includes('fresh_swapped.mp4')")
    assert browser.wait_js("document.querySelector('[data-field=iterations]').textContent === '1,000'")
    assert browser.wait_js("document.querySelector('[data-field=state]').textContent === 'training'")
    # a target waiting for its model: why, and its preview frame from the latest save
    preview = ("(() => { const i = document.querySelector('#queue img.preview');"
               " return i && i.complete && i.naturalWidth === 600; })()")
    assert browser.wait_js(preview)
    assert "converts when it stops" in js("document.querySelector('#queue').textContent")
    assert js("document.querySelectorAll('#settings tr').length") > 30
    assert browser.wait_js("document.querySelector('img[data-field=chart]').getAttribute('src')"
                           ".endsWith('i=1000')")
    # the person had stepped back in the timelapse: the view stays where it was
    assert js("document.querySelector('article.model .tl-img').getAttribute('src')").endswith(
        "00000500.jpg")
    # the new frame is listed once a status rebuild has seen its file (files and database are
    # read at slightly different moments, so it may arrive one poll after the iterations)
    assert browser.wait_js("document.querySelector('article.model .tl-range').max === '3'")
    assert js("document.querySelector('article.model .tl-img').getAttribute('src')").endswith(
        "00000500.jpg")
    assert js("window.__samePage") == "yes", "the page was reloaded"
    assert "75.0%" in js("document.querySelector('#running .job-meta').textContent")
    browser.wait_js(chart)
    screenshot(browser, ARTIFACTS / "status-page-updated.png")

    # nothing went wrong in the page: no script errors, no dialogs, no CSP violations
    events = browser.events
    assert not [e for e in events if e.get("method") == "Runtime.exceptionThrown"]
    assert not [e for e in events if e.get("method") == "Page.javascriptDialogOpening"]
    errors = [(e["params"]["entry"]["text"], e["params"]["entry"].get("url")) for e in events if e.get("method") == "Log.entryAdded"
              and e["params"]["entry"]["level"] == "error"]
    assert not errors, errors
