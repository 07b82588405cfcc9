"""The demo page's "Your sessions" panel (DESIGN §14) in real headless Chromium, against `bff stack`: two browsers
(two contexts, two cookie jars) of the demo user see each other in the panel; one ends the other with its End button
(the other's live WebSocket closes with 1008); the ended one signs in again and signs out the other devices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bff.stack import DEMO_PASSWORD, DEMO_USERNAME
from tests.browser.test_demo_page import CHROMIUM, CHROMIUM_ARGS, StackThread


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[StackThread]:
    running = StackThread(tmp_path).start()
    yield running
    running.stop()


def sign_in(page: Any, bff_url: str) -> None:
    from playwright.sync_api import expect

    page.goto(bff_url + "/")
    expect(page.locator("#status")).to_have_attribute("data-state", "out")
    page.click("#login")
    # The auth server's form, or straight back: its single sign-on outlives a BFF session ended from elsewhere.
    page.locator("input[name=username], #status[data-state=in]").first.wait_for()
    if page.locator("input[name=username]").count():
        page.fill("input[name=username]", DEMO_USERNAME)
        page.fill("input[name=password]", DEMO_PASSWORD)
        page.locator("input[name=password]").press("Enter")
    page.wait_for_url(bff_url + "/")
    expect(page.locator("#status")).to_have_attribute("data-state", "in")


def test_your_sessions_panel_in_chromium(stack: StackThread, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (.ci/run installs it)"
    bff_url = stack.env["BFF_PUBLIC_URL"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            laptop = browser.new_context(user_agent="Laptop Chromium").new_page()
            phone = browser.new_context(user_agent="Phone Chromium").new_page()
            sign_in(laptop, bff_url)
            expect(laptop.locator("#session-list li")).to_have_count(1)
            expect(laptop.locator("#sessions-end-others")).to_be_disabled()
            sign_in(phone, bff_url)
            expect(phone.locator("#live-status")).to_have_attribute("data-state", "open")

            # The laptop sees both, itself marked; the phone is listed with its browser and network.
            laptop.click("#sessions-refresh")
            rows = laptop.locator("#session-list li")
            expect(rows).to_have_count(2)
            expect(rows.nth(0)).to_contain_text("Laptop Chromium")
            expect(rows.nth(0)).to_contain_text("this browser")
            expect(rows.nth(1)).to_contain_text("Phone Chromium")
            expect(rows.nth(1)).to_contain_text("127.0.0.0/24")
            laptop.screenshot(path=str(tmp_path / "sessions-panel.png"), full_page=True)

            # End the phone's session from the laptop: the phone's live socket closes with 1008, its page is out.
            rows.nth(1).locator("button.end").click()
            expect(laptop.locator("#sessions-note")).to_have_text("Session ended.")
            expect(rows).to_have_count(1)
            expect(phone.locator("#live-status")).to_have_attribute("data-code", "1008", timeout=5000)
            phone.reload()
            expect(phone.locator("#status")).to_have_attribute("data-state", "out")

            # The phone signs in again and signs out every other device: the laptop's session ends.
            sign_in(phone, bff_url)
            expect(phone.locator("#session-list li")).to_have_count(2)
            expect(phone.locator("#session-list li").nth(1)).to_contain_text("this browser")
            phone.click("#sessions-end-others")
            expect(phone.locator("#sessions-note")).to_have_text("Every other device is signed out.")
            expect(phone.locator("#session-list li")).to_have_count(1)
            expect(laptop.locator("#live-status")).to_have_attribute("data-code", "1008", timeout=5000)
            laptop.reload()
            expect(laptop.locator("#status")).to_have_attribute("data-state", "out")
            expect(phone.locator("#status")).to_have_attribute("data-state", "in")
        finally:
            browser.close()
