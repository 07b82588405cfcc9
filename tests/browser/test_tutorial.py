"""The tutorial (docs/tutorial/getting-started.md), done as it says, in headless Chromium against `bff stack`: log
in as the demo user, then the console snippet it shows (docs_src/tutorial/call_api.js) calls the API through the
BFF, and the page's scripts see neither a cookie nor a token."""

from __future__ import annotations

from pathlib import Path

from bff.stack import DEMO_PASSWORD, DEMO_USERNAME
from tests.browser.test_demo_page import CHROMIUM, CHROMIUM_ARGS, StackThread, stack  # noqa: F401 (the fixture)
from tests.conftest import REPO

SNIPPET = REPO / "docs_src" / "tutorial" / "call_api.js"


def test_the_tutorial_ends_with_a_logged_in_api_call(stack: StackThread) -> None:  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (scripts/test installs it)"
    (expression,) = [line for line in SNIPPET.read_text().splitlines() if line and not line.startswith("//")]
    bff_url = stack.env["BFF_PUBLIC_URL"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(bff_url + "/")
            page.click("#login")
            page.wait_for_selector("input[name=username]")
            page.fill("input[name=username]", DEMO_USERNAME)
            page.fill("input[name=password]", DEMO_PASSWORD)
            page.locator("input[name=password]").press("Enter")
            page.wait_for_url(bff_url + "/")
            expect(page.locator("#username")).to_have_text(DEMO_USERNAME)

            me = page.evaluate(f"async () => {{ return {expression}; }}")  # the snippet, as the console runs it
            assert me["aud"] == "notes" and me["sub"] and me["client_id"], me
            without = page.evaluate("async () => (await fetch('/api/notes/me')).status")
            assert without == 403  # the X-CSRF header the tutorial explains is what lets the call through
            assert page.evaluate("document.cookie") == ""  # HttpOnly: the session cookie is not the page's to read
            storage = page.evaluate("JSON.stringify([localStorage, sessionStorage])")
            assert "eyJ" not in storage
        finally:
            browser.close()
