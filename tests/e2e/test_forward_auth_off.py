"""Forward auth is opt-in (DESIGN §8, default changed): a `bff serve` process started without BFF_TRUSTED_PROXIES
answers no /bff/auth question, not even from loopback — where a same-host reverse proxy that forwards every path
(nginx, Caddy, Apache in front of localhost:8000) delivers the browser's own calls."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.anyio


async def test_bff_serve_by_default_gives_a_loopback_page_no_token(stack_factory: Any, process_factory: Any) -> None:
    stack: Stack = stack_factory(bff_thread=False)
    assert "BFF_TRUSTED_PROXIES" not in stack.bff_env
    port = int(stack.bff_url.rsplit(":", 1)[1])
    process_factory(["-m", "bff", "serve"], stack.bff_env, port=port, health_path="/readyz")
    browser = stack.browser()  # connects over loopback, as the proxy in front would
    await stack.login(browser)
    forged = {"X-Original-URI": "/api/notes/x", "X-Original-Method": "GET", "Origin": stack.bff_url}
    for method, url, headers in (
        ("GET", "/bff/auth", forged),  # the page's own fetch, X-CSRF: 1 added
        ("GET", "/bff/auth/api/notes/x", {}),
    ):
        answer = await browser.request(method, url, headers=headers)
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"] == "forbidden"
        assert "BFF_TRUSTED_PROXIES" in answer.json()["error_description"]
        assert "authorization" not in answer.headers and "eyJ" not in answer.text
    assert (await browser.request("GET", "/api/notes/me")).status_code == 200  # the session itself is good
