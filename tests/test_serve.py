"""`kiosk serve` works offline: the page and everything it loads come from the kiosk itself.

A repair bench has no internet. The server runs as a subprocess (``kiosk serve --simulate healthy`` on a
free localhost port); the tests read its page, every asset the page names, what those name in turn (CSS
``url()`` and ``@import``, font files) and the terminal script, and require every reference to be relative
or to the kiosk's own origin, and every asset to load. textual-serve's stock page fails this: it takes its
font from fonts.googleapis.com.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Attributes that make a browser fetch or navigate to something.
URL_ATTRIBUTES = {"src", "href", "srcset", "poster", "data", "action", "formaction", "background", "manifest"}
#: Where CSS names another resource.
CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)|@import\s+(['"])(.*?)\3""", re.IGNORECASE)
CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
#: A string literal in a script that starts with an absolute or protocol-relative URL (what fetch(),
#: new WebSocket(), importScripts() or an injected stylesheet would load).
JS_ABSOLUTE_URL = re.compile(r"""["'`(]\s*((?:https?:|wss?:)?//[^\s"'`)]+)""", re.IGNORECASE)
#: The font family textual-serve's terminal script opens its terminal with (not xterm's own default).
JS_TERMINAL_FONT = re.compile(r'new [\w.]*Terminal\(\{[^}]*?fontFamily:\s*"([^"]+)"')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(proc: subprocess.Popen, port: int, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"kiosk serve ended with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"kiosk serve did not listen on {port} within {timeout:g} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (textual-serve exits gracefully), then SIGKILL the whole session: it also runs the apps."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session (start_new_session): only what it started
    proc.wait(timeout=5)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The origin (``http://127.0.0.1:PORT``) of a `kiosk serve --simulate healthy` run for this module."""
    home = tmp_path_factory.mktemp("serve-home")
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
           "XDG_CONFIG_HOME": str(home / "config")}  # fmt: skip
    env.pop("PARTICLE_KIOSK_LIBRARY", None)
    port = _free_port()
    log = home / "serve.log"
    command = [sys.executable, "-m", "kiosk.cli", "serve", "--simulate", "healthy", "--speed", "20",
               "--journal", str(home / "journal.sqlite"), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        _wait_listening(proc, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, "", b""


class _Page(HTMLParser):
    """The URLs a page's tags name, its inline <style> text and its inline <script> text."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.styles: list[str] = []
        self.scripts: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in URL_ATTRIBUTES or (name.startswith("data-") and name.endswith("url")):
                values = [part.split()[0] for part in value.split(",") if part.strip()] if name == "srcset" else [value]
                self.urls += [(tag, name, v) for v in values]
            elif name == "style":
                self.styles.append(value)
        self._in = tag if tag in ("style", "script") else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "style":
            self.styles.append(data)
        elif self._in == "script":
            self.scripts.append(data)


def _css_references(css: str) -> list[str]:
    css = CSS_COMMENT.sub("", css)
    return [m.group(2) or m.group(4) for m in CSS_URL.finditer(css)]


def _foreign(origin: str, base: str, reference: str) -> str | None:
    """Why a reference is not the kiosk's own (None when it is relative, same-origin or inline data)."""
    reference = reference.strip()
    if reference.startswith("//"):
        return "protocol-relative: another host"
    scheme = urlsplit(reference).scheme.lower()
    if not scheme or scheme in ("data", "blob", "about", "javascript"):
        return None
    if scheme not in ("http", "https", "ws", "wss"):
        return f"a {scheme}: URL"
    if urlsplit(urljoin(base, reference)).netloc != urlsplit(origin).netloc:
        return "another host"
    return None


def _crawl(origin: str) -> dict[str, object]:
    """GET the page and, breadth first, what it references; every reference checked, every asset fetched."""
    page_url = origin + "/"
    status, _, body = _get(page_url)
    assert status == 200, f"GET / answered {status}"
    html = body.decode("utf-8")
    page = _Page()
    page.feed(html)
    foreign: list[str] = []
    loaded: dict[str, tuple[int, str]] = {}
    css_texts = list(page.styles)
    js_texts = list(page.scripts)
    queue = [(page_url, f"<{tag} {attr}>", value) for tag, attr, value in page.urls]
    queue += [(page_url, "inline CSS", ref) for css in page.styles for ref in _css_references(css)]
    while queue:
        base, where, reference = queue.pop(0)
        if not reference.strip():
            continue
        why = _foreign(origin, base, reference)
        if why:
            foreign.append(f"{where} {reference!r} ({why})")
            continue
        url = urljoin(base, reference).split("#")[0]
        if urlsplit(url).scheme not in ("http", "https") or url in loaded:
            continue
        status, ctype, data = _get(url)
        loaded[url] = (status, ctype)
        if url.endswith(".css") or ctype == "text/css":
            css = data.decode("utf-8", "replace")
            css_texts.append(css)
            queue += [(url, f"CSS {url}", ref) for ref in _css_references(css)]
        elif url.endswith(".js") or ctype in ("application/javascript", "text/javascript"):
            js_texts.append(data.decode("utf-8", "replace"))
    for js in js_texts:
        for match in JS_ABSOLUTE_URL.finditer(js):
            why = _foreign(origin, origin + "/", match.group(1))
            if why:
                foreign.append(f"script string {match.group(1)!r} ({why})")
    return {"html": html, "page": page, "foreign": foreign, "loaded": loaded, "css": css_texts, "js": js_texts}


@pytest.fixture(scope="module")
def crawled(served):
    return _crawl(served)


def test_serve_page_references_only_the_kiosk_itself(crawled):
    assert crawled["foreign"] == [], "the page loads from other hosts:\n" + "\n".join(crawled["foreign"])
    assert "googleapis" not in crawled["html"] and "gstatic" not in crawled["html"]


def test_serve_page_assets_all_load(crawled):
    loaded = crawled["loaded"]
    failed = {url: status for url, (status, _) in loaded.items() if status != 200}
    assert failed == {}, f"assets that did not load: {failed}"
    paths = {urlsplit(url).path for url in loaded}
    # the terminal itself: textual-serve's script and stylesheet, and the font its script draws with
    assert {"/static/js/textual.js", "/static/css/xterm.css"} <= paths, paths
    assert any(path.startswith("/static/fonts/") for path in paths), paths


def test_serve_terminal_font_is_served_by_the_kiosk(crawled):
    """The family textual.js asks for ('Roboto Mono') is an @font-face of the page, from the kiosk's files."""
    families = [m.group(1) for js in crawled["js"] for m in JS_TERMINAL_FONT.finditer(js)]
    assert families, "textual.js no longer names its terminal's font: see what it loads now"
    terminal_family = families[0].split(",")[0].strip().strip("'\"")
    faces = [face for css in crawled["css"] for face in re.findall(r"@font-face\s*{[^}]*}", CSS_COMMENT.sub("", css))]
    ours = [face for face in faces if re.search(rf"""font-family:\s*['"]?{re.escape(terminal_family)}['"]?""", face)]
    assert ours, f"no @font-face for {terminal_family!r}: the browser would look for it elsewhere"
    for face in ours:
        for reference in _css_references(face):
            assert not reference.startswith(("http:", "https:", "//")), face
            assert reference.startswith("static/fonts/"), face


def test_serve_websocket_on_the_pages_own_host_streams_the_kiosk(served, crawled):
    """The page opens ``ws`` beside itself (it sets no other host); there the kiosk's main screen arrives."""
    assert "data-session-websocket-url" not in crawled["html"]  # the script derives it from the page's address
    assert 'new URL("ws", window.location.href)' in crawled["html"]
    from aiohttp import ClientSession, WSMsgType

    async def first_screen() -> str:
        seen = b""
        url = served.replace("http:", "ws:") + "/ws?width=100&height=30"
        async with ClientSession() as session, session.ws_connect(url) as ws:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (b"PARTICLE BENCH KIOSK" in seen and b"RECOVER" in seen):
                message = await ws.receive(timeout=deadline - time.monotonic())
                if message.type == WSMsgType.BINARY:
                    seen += message.data
                elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        return seen.decode("utf-8", "replace")

    screen = asyncio.run(first_screen())
    assert "PARTICLE BENCH KIOSK" in screen and "RECOVER" in screen, screen[-2000:]
