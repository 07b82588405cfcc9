"""A built SPA of one's own behind the BFF (DESIGN §11), in real headless Chromium against `bff stack` with
``BFF_FRONTEND`` naming the SPA's directory (docs_src/your_spa/dist, which docs/guides/your-spa.md shows: a hashed
module and stylesheet, a client-side route).

The SPA loads at a deep link (the navigation fallback), logs in through the auth server's form and comes back to
that route, calls an API through the BFF, and logs out through the provider. With ``BFF_LOGIN_REQUIRED``, a
navigation goes to the login while a ``fetch`` of the same page is answered 401, never redirected; an error the BFF
makes is a page in the tab and JSON to a ``fetch``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bff.stack import DEMO_PASSWORD, DEMO_USERNAME
from tests.browser.test_demo_page import CHROMIUM, CHROMIUM_ARGS, StackThread

SPA = Path(__file__).resolve().parents[2] / "docs_src" / "your_spa" / "dist"  # the guide shows these files
FETCH = """async ([url, headers]) => {
  const r = await fetch(url, {headers, redirect: "manual"});
  return {status: r.status, type: r.type, redirected: r.redirected, contentType: r.headers.get("content-type"),
          body: await r.text()};
}"""


def start_stack(tmp_path: Path, **env: str) -> StackThread:
    stack = StackThread(tmp_path)
    stack.env.update({"BFF_FRONTEND": str(SPA), **env})
    return stack.start()


@pytest.fixture
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (.ci/run installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in(page: Any, issuer: str) -> None:
    page.wait_for_selector("input[name=username]")
    assert page.url.startswith(issuer)
    page.fill("input[name=username]", DEMO_USERNAME)
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.locator("input[name=password]").press("Enter")


def test_spa_loads_logs_in_calls_the_api_and_logs_out(chromium: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    stack = start_stack(tmp_path)
    try:
        bff = stack.env["BFF_PUBLIC_URL"]
        page = chromium.new_context().new_page()
        assets: list[tuple[str, int, str]] = []
        page.on("response", lambda r: assets.append((r.url, r.status, r.headers.get("cache-control", ""))))

        page.goto(bff + "/orders/7")  # a deep link: no such file, the SPA's index.html for a navigation
        expect(page.locator("body")).to_have_attribute("data-state", "out")
        expect(page.locator("#route")).to_have_text("Order 7")
        assert (bff + "/assets/index-BdX3k9aZ.js", 200, "public, max-age=31536000, immutable") in assets
        assert (bff + "/assets/index-Dk3x9QzA.css", 200, "public, max-age=31536000, immutable") in assets
        assert (bff + "/orders/7", 200, "no-cache") in assets
        missing = page.evaluate(FETCH, ["/assets/index-Zz9Zz9Zz.js", {}])  # a missing asset is no page
        assert missing["status"] == 404 and "<html" not in missing["body"]

        page.click("#login")
        log_in(page, stack.env["AUTH_ISSUER"])
        page.wait_for_url(bff + "/orders/7")  # back to the route the login started from
        expect(page.locator("body")).to_have_attribute("data-state", "in")
        expect(page.locator("#user")).to_have_text(DEMO_USERNAME)
        expect(page.locator("#route")).to_have_text("Order 7")

        page.click("#home")  # the client-side router: no page load, then an API call through the BFF
        expect(page.locator("#route")).to_have_text("Home")
        page.click("#call")
        expect(page.locator("#api")).to_have_attribute("data-status", "200")
        assert json.loads(page.locator("#api").text_content() or "{}")["sub"]
        assert page.evaluate("document.cookie") == ""  # the session is an HttpOnly cookie; no token in the page

        page.click("#logout")  # through the provider's end-session endpoint, back to BFF_POST_LOGOUT_URL
        page.wait_for_url(re.compile(re.escape(bff) + r"/(\?state=.*)?$"))  # the provider's state comes back
        expect(page.locator("body")).to_have_attribute("data-state", "out")
        after = page.evaluate(FETCH, ["/api/notes/me", {"X-CSRF": "1"}])
        assert after["status"] == 401 and json.loads(after["body"])["error"] == "login_required"
    finally:
        stack.stop()


def test_login_required_navigation_redirects_fetch_gets_401(chromium: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    stack = start_stack(tmp_path, BFF_LOGIN_REQUIRED="true")
    try:
        bff, issuer = stack.env["BFF_PUBLIC_URL"], stack.env["AUTH_ISSUER"]
        page = chromium.new_context().new_page()
        # A service endpoint needs no login: a page on this origin to fetch from
        page.goto(bff + "/healthz")
        for url in ("/orders/7", "/", "/assets/index-BdX3k9aZ.js"):
            answer = page.evaluate(FETCH, [url, {}])
            assert answer["status"] == 401 and not answer["redirected"], (url, answer)
            assert answer["contentType"] == "application/json" and json.loads(answer["body"])["error"] == (
                "login_required"
            )
        user = page.evaluate(FETCH, ["/bff/user", {"X-CSRF": "1"}])
        assert user["status"] == 401 and json.loads(user["body"])["error"] == "login_required"

        # An error the BFF makes: a page in the tab, JSON to a fetch
        as_call = page.evaluate(FETCH, ["/bff/callback?state=forged", {}])
        assert as_call["status"] == 400 and json.loads(as_call["body"])["error"] == "invalid_state"
        shown = page.goto(bff + "/bff/callback?state=forged")
        assert shown is not None and shown.status == 400
        expect(page.locator("h1")).to_have_text("This request could not be completed")
        expect(page.locator("body")).to_contain_text("request id")
        expect(page.locator("a[href='/bff/login']")).to_have_text("Log in again")
        # its one inline style applies under its strict CSP (allowed by hash): no script, nothing else
        assert page.evaluate("getComputedStyle(document.body).maxWidth") == "576px"

        page.goto(bff + "/orders/7?tab=items")  # a navigation: to the login, and back to the page after it
        log_in(page, issuer)
        page.wait_for_url(bff + "/orders/7?tab=items")
        expect(page.locator("body")).to_have_attribute("data-state", "in")
        expect(page.locator("#route")).to_have_text("Order 7")
        assert page.evaluate(FETCH, ["/assets/index-BdX3k9aZ.js", {}])["status"] == 200
    finally:
        stack.stop()
