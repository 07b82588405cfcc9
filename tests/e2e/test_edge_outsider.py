"""Found attacking the nginx edge (DESIGN §8) as an outsider: what the BFF's own proxy keeps from an upstream, nginx
passed on — a browser's method override turned a POST the route allows into a DELETE it does not; and /api/
spelled with a percent-encoded letter reached an upstream without X-CSRF."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_edge import running_edge

pytestmark = pytest.mark.anyio

SPOOFED = {
    "X-HTTP-Method-Override": "DELETE",
    "X-HTTP-Method": "DELETE",
    "X-Method-Override": "DELETE",
    "X-Original-URL": "/admin",
    "X-Original-URI": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-Forwarded-Uri": "/admin",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "1",
    "X-Forwarded-Prefix": "/admin",
    "X-Forwarded-Server": "evil.example",
    "X-Forwarded-Method": "DELETE",
    "X-Original-Method": "DELETE",
    "Forwarded": "for=203.0.113.9;host=evil.example",
    "X-Real-IP": "203.0.113.9",
    "X-Client-IP": "203.0.113.9",
    "True-Client-IP": "203.0.113.9",
    "X-Forwarded-For": "203.0.113.9",
}


async def test_nginx_passes_no_spoofable_header_to_an_upstream(stack_factory: Any, process_factory: Any) -> None:
    async with running_edge(stack_factory, process_factory) as edge:
        browser = edge.stack.browser(edge.url)
        await edge.stack.login(browser, "alice")
        # chat allows GET and POST only: the override must not make this POST a DELETE behind the edge
        response = await browser.request("POST", "/api/chat/headers", headers=SPOOFED, json={})
        assert response.status_code == 200, response.text
        assert "clear-site-data" not in response.headers and "set-cookie" not in response.headers
        saw = {k.lower(): v for k, v in edge.seen[-1].items()}
        passed = {name: saw[name.lower()] for name in SPOOFED if name.lower() in saw and name != "X-Forwarded-For"}
        assert passed == {}
        assert saw["x-forwarded-for"] == "127.0.0.1"  # nginx's own view of the client, not the browser's list

        # nginx routes /%61pi/chat/ to location /api/chat/ (it matches the decoded URI): a cross-site top-level
        # navigation there, with the cookie and without X-CSRF, must be refused as /api/chat/ is.
        calls = len(edge.seen)
        for spelled in ("/%61pi/chat/headers", "/ap%69/chat/headers"):
            response = await browser.request("GET", spelled, csrf=False)
            assert response.status_code == 403 and response.json()["error"] == "csrf", (spelled, response.text)
        assert len(edge.seen) == calls  # the upstream was never called
