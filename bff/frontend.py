"""What the BFF serves outside ``/bff/*``, ``/api/*`` and its service endpoints: ``BFF_FRONTEND`` (DESIGN §11).

* a directory (a built SPA), :class:`StaticSite`: its files with their ``Content-Type``; ``index.html`` for ``/`` and,
  for a page navigation (``bff.pages.is_navigation``) to a path with no file, the SPA fallback to ``index.html``; a
  missing file fetched as an asset is 404, never ``index.html``. ``index.html`` (and every name without a content
  hash) is ``Cache-Control: no-cache`` (revalidated with its ETag); a name carrying a content hash
  (``app.3f9a1c2e.js``, Vite's ``index-BdX3k9aZ.js``) is ``public, max-age=31536000, immutable``. Refused (404): dot
  segments in any spelling (``bff.paths.climbs``), any segment starting with a dot (``.env``, ``.git/``), a path that
  resolves outside the directory (symlinks included), directories (no listing);
* an ``http(s)://`` URL, :class:`DevServer`: a dev server (Vite, webpack) or a CDN origin, proxied as it answers,
  WebSocket upgrades included (hot reload), with none of the browser's cookies or credentials, and none of its
  ``Set-Cookie`` back;
* ``demo`` (the demo page at ``/`` and ``/static/``, routes of ``bff.app``) or ``none``: anything else is 404.

With ``BFF_LOGIN_REQUIRED``, whatever the frontend serves needs a session: a navigation without one is sent to
``/bff/login?return_to=<path>``, anything else (an asset, a ``fetch``) is 401 JSON, never redirected.

This app is the router's default, behind ``/api/`` (a middleware ahead of the router) and ``/bff/*``: the proxy's hot
path never reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import logging
import mimetypes
import os
import re
import stat
from collections.abc import Iterable
from urllib.parse import urlencode

import aiohttp
import anyio.to_thread
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState
from yarl import URL

from bff.endpoints import Endpoints, cookie, safe_return_to
from bff.errors import (
    BadRequest,
    BFFError,
    CSRFError,
    LoginRequired,
    MethodNotAllowed,
    NotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from bff.metrics import Metrics
from bff.pages import error_response, is_navigation
from bff.paths import climbs
from bff.proxy import DROP_REQUEST, DROP_RESPONSE, _filter, client_timeout
from bff.settings import Settings

log = logging.getLogger(__name__)

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
INDEX = "index.html"
CHUNK = 64 * 1024
SMALL = 256 * 1024  # files up to this size are answered from memory, read in the same thread as the lookup
# Content types by extension, not the host's /etc/mime.types (which differs between images and may lack .mjs, .wasm,
# .webmanifest): a wrong type for a module script stops the SPA (browsers refuse one that is not JavaScript).
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml",
    ".pdf": "application/pdf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
}
# A content hash in a file name, as bundlers write it: 8 characters of base64url after "-" or "." (Vite, Rollup,
# esbuild: index-BdX3k9aZ.js, chunk-5KZ6JT2P.js), or 8 to 64 hex digits between dots (webpack, Parcel:
# app.3f9a1c2e.js, main.3f9a1c2e.chunk.js). A word is not a hash: the base64url one needs a digit, or two capitals
# and two small letters (a Vite hash without a digit); the hex one needs a digit.
_B64_HASH = re.compile(r"[.-]([A-Za-z0-9_-]{8})\.[A-Za-z0-9]+$")
_HEX_HASH = re.compile(r"\.([0-9a-f]{8,64})\.(?:[A-Za-z0-9]+\.)*[A-Za-z0-9]+$")


def hashed(name: str) -> bool:
    """Whether the file ``name`` carries a content hash, so that its bytes never change under that name."""
    found = _HEX_HASH.search(name)
    if found and any(c.isdigit() for c in found.group(1)):
        return True
    found = _B64_HASH.search(name)
    if not found:
        return False
    token = found.group(1)
    upper, lower = sum(c.isupper() for c in token), sum(c.islower() for c in token)
    return any(c.isdigit() for c in token) or (upper >= 2 and lower >= 2)


def content_type(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


class StaticSite:
    """A built SPA's directory (see the module docstring)."""

    def __init__(self, root: str, *, private: bool = False) -> None:
        self.root = os.path.realpath(root)
        self.index = os.path.join(self.root, INDEX)
        # BFF_LOGIN_REQUIRED: what only a session may see, no shared cache (a CDN in front) may keep
        self.immutable = "private, max-age=31536000, immutable" if private else IMMUTABLE
        self.revalidate = "private, no-cache" if private else REVALIDATE

    def find(self, scope: Scope) -> str | None:
        """The file to serve for the request's path, or None when there is none; raises NotFound for a path that
        must not be served at all (and gets no fallback either)."""
        raw: bytes = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
        path: str = scope["path"]
        if climbs(raw) or b"%2f" in raw.lower() or "\\" in path or "\x00" in path:
            raise NotFound("No such file.")  # no file name holds a slash: an encoded one is someone's trick
        segments = path.split("/")[1:]
        directory = bool(segments) and segments[-1] == ""
        if directory:
            segments.pop()  # "/" and "/dir/"
        if any(not s or s.startswith(".") for s in segments):
            raise NotFound("No such file.")  # "//", dotfiles and dot directories (.env, .git/)
        if not segments:
            segments, directory = [INDEX], False  # "/" is the SPA's index.html, for anyone
        real = os.path.realpath(os.path.join(self.root, *segments))
        relative = os.path.relpath(real, self.root)
        if relative == os.curdir or relative.startswith(os.pardir) or os.path.isabs(relative):
            raise NotFound("No such file.")  # a symlink out of the directory, or to the directory itself
        if any(part.startswith(".") for part in relative.split(os.sep)):
            raise NotFound("No such file.")  # a symlink to a dotfile inside
        try:
            info = os.stat(real)
        except (OSError, ValueError):
            return None
        # a directory is no file (never a listing), nor is a file asked for as a directory ("/app.js/")
        return real if stat.S_ISREG(info.st_mode) and not directory else None

    def load(self, scope: Scope) -> tuple[str, os.stat_result, bytes | None] | None:
        """The file to answer with (the SPA's index.html for a navigation to a path with no file), its stat and,
        when it is small and no range is asked for, its bytes: all in one call, which runs in a worker thread."""
        found = self.find(scope)
        if found is None:
            if not is_navigation(scope):
                return None  # an asset: never index.html, which a script tag would choke on
            found = self.index  # the SPA fallback: its router shows the page
        try:
            info = os.stat(found)
            if info.st_size > SMALL or any(name == b"range" for name, _ in scope["headers"]):
                return found, info, None
            with open(found, "rb") as file:
                return found, info, file.read(SMALL + 1)
        except OSError:
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            raise MethodNotAllowed("GET, HEAD", "The site's files are only read.")
        # One hop to the thread pool for the lookup and a small file's bytes: FileResponse alone makes four (stat,
        # open, read, close), which made an asset slower to serve than a proxied API call.
        loaded = await anyio.to_thread.run_sync(self.load, scope)
        if loaded is None:
            raise NotFound("No such file.")
        path, info, body = loaded
        name = os.path.basename(path)
        etag = '"' + hashlib.md5(f"{info.st_mtime}-{info.st_size}".encode(), usedforsecurity=False).hexdigest() + '"'
        headers = {
            "Cache-Control": self.immutable if hashed(name) else self.revalidate,
            "ETag": etag,
            "Last-Modified": email.utils.formatdate(info.st_mtime, usegmt=True),
            "X-Content-Type-Options": "nosniff",
        }
        if path == self.index:  # also the answer to a navigation to a path with no file, which a fetch gets 404 for
            headers["Vary"] = "Sec-Fetch-Mode, Accept"
        response: Response
        if _not_modified(scope, etag, info.st_mtime):
            del headers["X-Content-Type-Options"]
            response = Response(status_code=304, headers=headers)
        elif body is None:  # large, or a range asked for: streamed from the file
            response = FileResponse(path, headers=headers, media_type=content_type(name), stat_result=info)
        else:
            headers["Content-Length"] = str(len(body))
            content = body if scope["method"] == "GET" else b""
            response = Response(content, headers=headers, media_type=content_type(name))
        await response(scope, receive, send)


def _not_modified(scope: Scope, etag: str, mtime: float) -> bool:
    """RFC 9110 §13.1.2 If-None-Match (weak comparison), else §13.1.3 If-Modified-Since."""
    match = since = None
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            match = value.decode("latin-1")
        elif name == b"if-modified-since":
            since = value.decode("latin-1")
    if match is not None:
        tags = {t.strip().removeprefix("W/") for t in match.split(",")}
        return "*" in tags or etag.removeprefix("W/") in tags
    if since is not None:
        try:
            return int(mtime) <= email.utils.parsedate_to_datetime(since).timestamp()
        except (TypeError, ValueError, OverflowError):
            return False
    return False


class DevServer:
    """A dev server or CDN origin, proxied (see the module docstring)."""

    def __init__(self, url: str, *, origin: str, timeout: float, metrics: Metrics, private: bool = False) -> None:
        self.private = private  # BFF_LOGIN_REQUIRED: its answers are Cache-Control private, whatever it says
        self.base = url.rstrip("/")
        self.base_bytes = self.base.encode("latin-1")
        self.origin = origin.lower()
        self.timeout = client_timeout(timeout)
        self.metrics = metrics
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            auto_decompress=False,  # bodies pass through as the server encoded them
            cookie_jar=aiohttp.DummyCookieJar(),  # its cookies are never kept, and the browser's never sent
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def target(self, scope: Scope) -> URL:
        raw: bytes = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
        if climbs(raw):
            raise BadRequest("Dot segments, control characters and broken encodings are not allowed in paths.")
        query = scope.get("query_string", b"")
        target = self.base + raw.decode("latin-1")
        return URL(target + "?" + query.decode("latin-1") if query else target, encoded=True)

    def answer_headers(self, raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The dev server's answer headers as the browser gets them: no cookies set or cleared (DROP_RESPONSE), no
        CORS grant (Vite answers ``Access-Control-Allow-Origin: *``; the BFF's origin shares nothing cross-site, and
        a credentialed grant would let another site read pages that BFF_LOGIN_REQUIRED guards), a redirect to the
        dev server's own URL made a path of ours (the browser stays on the BFF), and under BFF_LOGIN_REQUIRED
        ``Cache-Control: private`` (a CDN origin's ``public`` would let a shared cache hand out what needs a login)."""
        kept = []
        cache: list[bytes] = []
        for name, value in _filter(raw, DROP_RESPONSE):
            if name.startswith(b"access-control-"):
                continue
            if self.private and name == b"cache-control":
                cache += [d.strip() for d in value.split(b",") if d.strip().lower() not in (b"public", b"private", b"")]
                continue
            if name == b"location" and value.startswith(self.base_bytes):
                rest = value[len(self.base_bytes) :]
                if not rest or rest.startswith((b"/", b"?", b"#")):  # its own URL, not http://dev:5173/v420 for /v42
                    value = rest if rest.startswith(b"/") else b"/" + rest
            kept.append((name, value))
        if self.private:
            kept.append((b"cache-control", b", ".join([b"private", *cache])))
        return kept

    def _failed(self, exc: BFFError) -> BFFError:
        self.metrics.upstream_errors.labels("frontend", exc.error).inc()
        log.warning("BFF_FRONTEND %s: %s", self.base, exc.description)
        return exc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.session is not None, "DevServer.open() runs in the lifespan"
        url = self.target(scope)
        # The browser's cookies, Authorization, CSRF header and Host stay here: the dev server (or CDN) is not ours
        # to trust with them. Its Host is its own (a dev server checks it: Vite's server.allowedHosts).
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in _filter(scope["headers"], DROP_REQUEST, underscored=False)
        ]
        request = Request(scope, receive)
        # The body as the browser framed it (a GET may carry one too): a Content-Length passed on without its bytes
        # would leave the dev server waiting for them.
        framed = any(
            (name == b"content-length" and value != b"0") or name == b"transfer-encoding"
            for name, value in scope["headers"]
        )
        body = request.stream() if framed else None
        try:
            upstream = await self.session.request(
                scope["method"], url, headers=headers, data=body, allow_redirects=False, timeout=self.timeout
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise self._failed(UpstreamTimeout("The frontend server (BFF_FRONTEND) did not answer in time.")) from exc
        except aiohttp.ClientError as exc:
            raise self._failed(UpstreamUnavailable("The frontend server (BFF_FRONTEND) is unreachable.")) from exc
        try:
            kept = self.answer_headers(upstream.raw_headers)
            await send({"type": "http.response.start", "status": upstream.status, "headers": kept})
            while chunk := await upstream.content.read(CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The status is out: leave the answer unfinished, so the browser sees the body as broken, not whole.
            log.warning("BFF_FRONTEND %s broke off its answer: %s", self.base, type(exc).__name__)
            self.metrics.upstream_errors.labels("frontend", "broken_off").inc()
            return
        finally:
            upstream.release()
        await send({"type": "http.response.body", "body": b""})

    async def websocket(self, websocket: WebSocket) -> None:
        """A WebSocket to the dev server (its hot reload), from this site's pages only: a foreign page could
        otherwise read the dev server's messages through us (Vite's own check, GHSA-vg6x-rcgg-rjx6)."""
        assert self.session is not None, "DevServer.open() runs in the lifespan"
        origin = websocket.headers.get("origin")
        if origin is None or origin.lower() != self.origin:
            raise CSRFError("A WebSocket handshake needs this site's Origin.")
        url = self.target(websocket.scope)
        url = url.with_scheme("wss" if url.scheme == "https" else "ws")
        offered = websocket.headers.get("sec-websocket-protocol", "")
        protocols = [p.strip() for p in offered.split(",") if p.strip()]
        try:
            async with asyncio.timeout(self.timeout.sock_connect or 30.0):
                upstream = await self.session.ws_connect(url, protocols=protocols, autoclose=False, autoping=True)
        except TimeoutError as exc:
            raise self._failed(UpstreamTimeout("The frontend server (BFF_FRONTEND) did not answer in time.")) from exc
        except aiohttp.ClientError as exc:
            raise self._failed(
                UpstreamUnavailable("The frontend server (BFF_FRONTEND) refused the WebSocket.")
            ) from exc
        try:
            await websocket.accept(subprotocol=upstream.protocol)
            pumps = [
                asyncio.create_task(_to_upstream(websocket, upstream)),
                asyncio.create_task(_to_browser(websocket, upstream)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in pumps:
                    task.cancel()
                for task in pumps:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        finally:
            await upstream.close()
            if websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close(1001)


def _close_code(code: int | None) -> int:
    # RFC 6455 §7.4.1: 1005, 1006 and 1015 name states and are never sent in a close frame
    return code if code is not None and 1000 <= code <= 4999 and code not in (1004, 1005, 1006, 1015) else 1000


async def _to_upstream(websocket: WebSocket, upstream: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            await upstream.close(code=_close_code(message.get("code")))
            return
        if message.get("text") is not None:
            await upstream.send_str(message["text"])
        else:
            await upstream.send_bytes(message.get("bytes") or b"")


async def _to_browser(websocket: WebSocket, upstream: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        message = await upstream.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            await websocket.send_text(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await websocket.send_bytes(message.data)
        else:  # CLOSE, CLOSED, ERROR
            if message.type == aiohttp.WSMsgType.CLOSE:
                await upstream.close()
                await websocket.close(_close_code(message.data), message.extra or "")
            else:
                await websocket.close(1011, "frontend server connection lost")
            return


def describe(settings: Settings) -> str:
    """What the BFF serves, said plainly at start-up."""
    kind = settings.frontend_kind
    gate = "; pages need a login (BFF_LOGIN_REQUIRED)" if settings.login_required and kind != "none" else ""
    return {
        "directory": f"frontend: the built SPA in {settings.frontend} (its index.html for page navigations to paths "
        "with no file)",
        "url": f"frontend: proxying {settings.frontend} (a dev server or CDN origin), WebSockets included, without the "
        "browser's cookies or credentials",
        "demo": "frontend: the demo page at / (BFF_FRONTEND=demo)",
        "none": "frontend: none; only /bff/*, /api/*, /healthz, /readyz and /metrics answer (set BFF_FRONTEND to your "
        "built SPA's directory or your dev server's URL to serve it)",
    }[kind] + gate


class Frontend:
    """The router's default app: the frontend ``BFF_FRONTEND`` names, behind ``BFF_LOGIN_REQUIRED``."""

    route = "frontend"  # the metrics label of every request served here (bounded: never the path)

    def __init__(self, settings: Settings, endpoints: Endpoints, metrics: Metrics) -> None:
        self.kind = settings.frontend_kind
        self.login_required = settings.login_required
        self.endpoints = endpoints
        self.site = StaticSite(settings.frontend, private=settings.login_required) if self.kind == "directory" else None
        self.dev = (
            DevServer(
                settings.frontend,
                origin=settings.public_origin,
                timeout=settings.upstream_timeout,
                metrics=metrics,
                private=settings.login_required,
            )
            if self.kind == "url"
            else None
        )

    @property
    def path(self) -> str:  # read by the metrics middleware as the route template
        return self.route

    async def open(self) -> None:
        if self.dev is not None:
            await self.dev.open()

    async def close(self) -> None:
        if self.dev is not None:
            await self.dev.close()

    async def _gate(self, scope: Scope, receive: Receive) -> Response | None:
        """Under BFF_LOGIN_REQUIRED: None with a session; a redirect to the login for a navigation without one."""
        manager = self.endpoints.manager
        ref = manager.ref(cookie(HTTPConnection(scope), self.endpoints.settings.cookie_name))
        try:
            if ref is None or await manager.load(ref) is None:
                raise LoginRequired()
        except LoginRequired:
            if scope["type"] != "http" or not is_navigation(scope):
                raise
            raw: bytes = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
            query = scope.get("query_string", b"")
            try:
                back = safe_return_to((raw + (b"?" + query if query else b"")).decode("latin-1"))
            except BadRequest:
                back = "/"
            return RedirectResponse("/bff/login?" + urlencode({"return_to": back}), 302, {"Cache-Control": "no-store"})
        return None

    async def demo_page(self, request: Request) -> Response:
        """``GET /`` of ``BFF_FRONTEND=demo``."""
        if self.login_required:
            redirect = await self._gate(request.scope, request.receive)
            if redirect is not None:
                return redirect
        return await self.endpoints.index(request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        path = scope["path"]
        if self.kind in ("none", "demo") or path == "/bff" or path.startswith("/bff/"):
            raise NotFound("No such page." if is_navigation(scope) else "No such route.")
        if self.login_required:
            redirect = await self._gate(scope, receive)
            if redirect is not None:
                await redirect(scope, receive, send)
                return
        if self.site is not None:
            await self.site(scope, receive, send)
        elif self.dev is not None:
            await self.dev(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        try:
            if self.dev is None or scope["path"].startswith("/bff/"):
                raise NotFound("No WebSocket here.")
            if self.login_required:
                await self._gate(scope, receive)
            await self.dev.websocket(websocket)
        except BFFError as exc:
            if websocket.application_state != WebSocketState.CONNECTING:
                return  # accepted already: the relay ended
            if "websocket.http.response" in scope.get("extensions", {}):
                await websocket.send_denial_response(error_response(exc, scope))
            else:
                await websocket.close(1008)
