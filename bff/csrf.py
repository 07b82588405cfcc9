"""CSRF defence as plain ASGI middleware.

* ``/api/*``, ``/bff/user``, ``/bff/sessions[/…]`` and ``POST /bff/logout`` need ``X-CSRF: 1`` (``GET
  /bff/logout`` is a page navigation, guarded by the session's logout id instead, DESIGN §6): a cross-site page can
  only send a custom header after a CORS preflight, and
* every CORS preflight is refused, so it never can;
* a state-changing request whose ``Origin`` is not the BFF's own is refused.

Any of these answers ``403 {"error": "csrf"}`` (an HTML page for a page navigation, ``bff.pages``).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from bff.errors import CSRFError
from bff.pages import error_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
GUARDED_EXACT = frozenset({"/bff/user", "/bff/logout", "/bff/sessions"})


def guarded(path: str) -> bool:
    return path.startswith(("/api/", "/bff/sessions/")) or path in GUARDED_EXACT


class CSRFMiddleware:
    def __init__(self, app: ASGIApp, *, origin: str) -> None:
        self.app = app
        self.origin = origin.encode("latin-1").lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await error_response(CSRFError(), scope)(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        return allowed(scope["method"], scope["path"], scope["headers"], self.origin)


def allowed(method: str, path: str, headers: Iterable[tuple[bytes, bytes]], origin: bytes) -> bool:
    """The CSRF rules for a request; ``origin`` is the BFF's own, lower-cased. Also what ``/bff/auth`` applies to
    the original request a proxy asks about (DESIGN §8)."""
    csrf = sent_origin = preflight = None
    for name, value in headers:
        if name == b"x-csrf":
            csrf = value
        elif name == b"origin":
            sent_origin = value
        elif name == b"access-control-request-method":
            preflight = value
    if method == "OPTIONS" and (preflight is not None or sent_origin is not None):
        return False  # CORS preflight: never granted
    if method not in SAFE_METHODS and sent_origin is not None and sent_origin.lower() != origin:
        return False  # "null" (sandboxed, file:) is foreign too
    if method == "GET" and path == "/bff/logout":
        return True  # a page navigation, guarded by the session's logout id instead (DESIGN §6)
    return not guarded(path) or csrf == b"1"
