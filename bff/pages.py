"""Navigations and calls (DESIGN §11): how the BFF tells them apart, and the answer each gets when the BFF fails.

A *navigation* is the browser loading a page (a link, the address bar, a redirect back from the provider): it sends
``Sec-Fetch-Mode: navigate``. Clients without Fetch Metadata (older browsers, curl) count as navigating when their
``Accept`` prefers ``text/html`` (a browser's page load sends ``text/html,…,*/*;q=0.8``; ``fetch`` sends ``*/*``).
Everything else is a *call*.

Every :class:`~bff.errors.BFFError` is answered by :func:`error_response`: a small HTML page for a navigation (the
status, the error's sentence, the request id, a way back; no stack trace, every value escaped) and
``{"error", "error_description"}`` JSON for a call. It is the one place errors become answers (the app's exception
handler, the plain-ASGI ``/api`` and ``/bff/auth`` paths and the CSRF middleware all call it), so an error class added
anywhere gets its page for free.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable, Mapping

from starlette.responses import Response
from starlette.types import Scope

from bff.errors import BFFError
from servicekit.logs import current, request_id

# What each status means to someone looking at a browser tab (the error's own sentence follows it).
TITLES = {
    400: "This request could not be completed",
    401: "You are not logged in",
    403: "This is not allowed",
    404: "Page not found",
    405: "This request could not be completed",
    429: "Too many requests at once",
    500: "Something went wrong on our side",
    502: "A service behind this site is unreachable",
    503: "This site is briefly unavailable",
    504: "A service behind this site did not answer in time",
}
LOGIN_ERRORS = frozenset({"login_required", "invalid_state", "login_failed"})  # the page offers to log in again
STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}"
    "h1{font-size:1.4rem}p.code{color:#666;font-size:.85rem}a{color:#0b57d0}"
)
# The page has no script and no resource of its own: only its one inline style may apply (by hash, not 'unsafe-inline')
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def prefers_html(accept: bytes) -> bool:
    """Whether an ``Accept`` header lists ``text/html`` with a weight no other type beats (RFC 9110 §12.5.1)."""
    best_other, html_q = 0.0, -1.0
    for item in accept.decode("latin-1").split(",")[:32]:
        media, _, params = item.partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if not 0.0 <= q <= 1.0:
            q = 0.0
        if media == "text/html":
            html_q = max(html_q, q)
        elif media and q > best_other:
            best_other = q
    return html_q > 0 and html_q >= best_other


def is_navigation(scope: Scope) -> bool:
    """Whether the request is a page navigation (see the module docstring)."""
    headers = scope["headers"]
    mode = _header(headers, b"sec-fetch-mode")
    if mode is not None:  # Fetch Metadata is authoritative when sent: a fetch() asking for text/html is a call
        return mode.strip().lower() == b"navigate"
    accept = _header(headers, b"accept")
    return accept is not None and prefers_html(accept)


def error_page(exc: BFFError, rid: str) -> str:
    title = TITLES.get(exc.status_code) or ("This request could not be completed" if exc.status_code < 500 else
                                            TITLES[500])  # fmt: skip
    e = html.escape
    step_up = exc.extra.get("step_up_url")
    if isinstance(step_up, str):
        title = "Confirm it is you"
    action = (
        f'<a href="{e(str(step_up))}">Confirm it is you</a> · <a href="/">Go to the start page</a>'
        if isinstance(step_up, str)
        else '<a href="/bff/login">Log in again</a> · <a href="/">Go to the start page</a>'
        if exc.error in LOGIN_ERRORS
        else '<a href="/">Go to the start page</a>'
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{exc.status_code} · {e(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{e(title)}</h1><p>{e(exc.description)}</p><p>{action}</p>"
        f'<p class="code">Error {exc.status_code} <code>{e(exc.error)}</code> · request id <code>{e(rid)}</code>'
        "</p></body></html>\n"
    )


def error_response(exc: BFFError, scope: Scope, headers: Mapping[str, str] | None = None) -> Response:
    """The answer to ``exc``: an HTML page for a navigation, JSON otherwise; never cached; carrying the request id
    (the access log line shows the same id)."""
    context = current()  # the id this request's log lines carry (DESIGN §12)
    rid = context.request_id if context is not None else request_id(scope["headers"])
    common = {"Cache-Control": "no-store", **exc.headers, **(headers or {}), "X-Request-ID": rid}
    if scope.get("type") == "http" and is_navigation(scope):
        return Response(
            error_page(exc, rid),
            status_code=exc.status_code,
            headers={**PAGE_HEADERS, **common},
            media_type="text/html; charset=utf-8",
        )
    body = json.dumps({"error": exc.error, "error_description": exc.description, **exc.extra}).encode()
    return Response(body, status_code=exc.status_code, headers=common, media_type="application/json")
