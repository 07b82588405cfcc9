"""The demo page in real headless Chromium (Debian's, driven by Playwright), against `bff stack` on real sockets.

It logs in through the auth server's form, sees the page logged in, calls the API, checks that neither
`document.cookie` nor web storage holds a session or a token, takes a screenshot; then the auth server ends the login
(a sign-out there reaches the BFF on the back channel: the live socket closes with 1008), the user logs in again
(with the password), and logs out through the provider's end-session endpoint, back to the page, signed out.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bff.stack import DEMO_PASSWORD, DEMO_USERNAME, StackPorts, run_stack, stack_environment
from tests.bff.doubles import no_hint
from tests.conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


class StackThread:
    """`bff stack` (embedded store, as the README's command runs it) in a thread with its own event loop."""

    def __init__(self, tmp_path: Path) -> None:
        self.ports = StackPorts(auth=free_port(), resource=free_port(), bff=free_port(), live=free_port())
        base = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        self.env = stack_environment(self.ports, {**base, "AUTH_KEYS_DIR": str(tmp_path / "keys")})
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop_event = asyncio.Event()
            ready = asyncio.Event()
            waiter = asyncio.create_task(ready.wait())
            waiter.add_done_callback(lambda _: self.ready.set())
            await run_stack("127.0.0.1", self.ports, self.env, ready=ready, stop=self.stop_event)

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self.ready.set()
        finally:
            self.loop.close()

    def start(self) -> StackThread:
        self.thread.start()
        assert self.ready.wait(60), "bff stack did not come up"
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self.stop_event is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[StackThread]:
    running = StackThread(tmp_path).start()
    yield running
    running.stop()


def test_demo_page_login_api_logout_in_chromium(stack: StackThread, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (.ci/run installs it)"
    bff_url = stack.env["BFF_PUBLIC_URL"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            seen_tokens: list[str] = []
            page.on(
                "response",
                lambda r: (
                    seen_tokens.append(r.url)
                    if "eyJ" in no_hint(r.headers.get("location") or "") or "eyJ" in no_hint(r.url)
                    else None
                ),
            )

            page.goto(bff_url + "/")
            expect(page.locator("#status")).to_have_attribute("data-state", "out")
            expect(page.locator("#logout")).to_be_hidden()
            page.click("#login")

            # The auth server's login form.
            page.wait_for_selector("input[name=username]")
            assert page.url.startswith(stack.env["AUTH_ISSUER"])
            page.fill("input[name=username]", DEMO_USERNAME)
            page.fill("input[name=password]", DEMO_PASSWORD)
            page.locator("input[name=password]").press("Enter")

            # Back on the demo page, logged in.
            page.wait_for_url(bff_url + "/")
            expect(page.locator("#status")).to_have_attribute("data-state", "in")
            expect(page.locator("#username")).to_have_text(DEMO_USERNAME)
            expect(page.locator("#login")).to_be_hidden()
            expect(page.locator("#logout")).to_be_visible()

            # Call the API through the BFF: create a note and see it listed, then GET /me.
            page.fill("#note-text", "hello from chromium")
            page.click("#note-form button[type=submit]")
            expect(page.locator("#notes li span")).to_have_text(["hello from chromium"])
            page.click("#whoami")
            expect(page.locator("#output")).to_contain_text('"sub"')

            # Two APIs, each with a token for itself alone; a live WebSocket through the BFF.
            expect(page.locator("#aud-notes")).to_have_text('aud = "notes"')
            expect(page.locator("#aud-live")).to_have_text('aud = "live"')
            expect(page.locator("#live-status")).to_have_attribute("data-state", "open")
            expect(page.locator("#live-log")).to_contain_text('aud = "live"')
            page.fill("#live-text", "hi over the socket")
            page.click("#live-form button[type=submit]")
            expect(page.locator("#live-log")).to_contain_text("echo: hi over the socket")

            # No session and no token is readable by scripts or kept in web storage.
            assert page.evaluate("document.cookie") == ""
            storage = page.evaluate(
                "[localStorage.length, sessionStorage.length, JSON.stringify(localStorage),"
                " JSON.stringify(sessionStorage)]"
            )
            assert storage[:2] == [0, 0], storage
            assert "eyJ" not in page.content()
            # Cookies are not port-bound, so the auth server's own cookies on localhost show up here too.
            cookies = context.cookies(bff_url)
            assert not any("eyJ" in c["value"] for c in cookies)
            (cookie,) = [c for c in cookies if c["name"] == "__Host-session"]
            assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"

            shot = tmp_path / "demo-page.png"
            page.screenshot(path=str(shot), full_page=True)
            data = shot.read_bytes()
            assert data.startswith(b"\x89PNG") and len(data) > 5_000

            # The provider ends the login (the user signs out at the auth server in another tab): its back-channel
            # logout reaches the BFF, the session ends, and the BFF closes the live socket with 1008.
            other = context.new_page()
            other.goto(stack.env["AUTH_ISSUER"] + "/oauth/logout")
            other.click("#confirm-logout")
            expect(other.locator("p.ok")).to_contain_text("You are signed out")
            other.close()
            expect(page.locator("#live-status")).to_have_attribute("data-code", "1008", timeout=5000)
            page.reload()
            expect(page.locator("#status")).to_have_attribute("data-state", "out")

            # Log in again: the auth server's session ended too, so it asks for the password.
            page.click("#login")
            page.wait_for_selector("input[name=username]")
            page.fill("input[name=username]", DEMO_USERNAME)
            page.fill("input[name=password]", DEMO_PASSWORD)
            page.locator("input[name=password]").press("Enter")
            page.wait_for_url(bff_url + "/")
            expect(page.locator("#status")).to_have_attribute("data-state", "in")

            # Log out through the provider: BFF -> the auth server's end-session endpoint -> back here, signed out.
            with page.expect_response(lambda r: r.url.startswith(stack.env["AUTH_ISSUER"] + "/oauth/logout")) as ended:
                page.click("#logout")
            assert ended.value.status == 302  # a valid id_token_hint: no question asked
            page.wait_for_url(bff_url + "/")
            expect(page.locator("#status")).to_have_attribute("data-state", "out")
            expect(page.locator("#status")).to_contain_text("Signed out")
            assert [c for c in context.cookies(bff_url) if c["name"] == "__Host-session"] == []
            page.click("#login")  # the next login asks for the password again
            page.wait_for_selector("input[name=password]")
            assert seen_tokens == []
        finally:
            browser.close()
