"""Step-up with a passkey, in real headless Chromium against `bff stack` (DESIGN §14).

Chromium's virtual authenticator (DevTools Protocol ``WebAuthn.enable`` and ``WebAuthn.addVirtualAuthenticator``,
through Playwright's CDP session) stands in for a security key. The demo user signs in with the password; "Delete all
notes" (the sample API's DELETE /notes, which needs mfa) gets a step-up link; the user enrols a passkey on the auth
server's /account page, follows the link, confirms with the passkey — only the passkey is asked, the password is
there — and is back on the page in the SAME session (same cookie), now at acr mfa, and the delete goes through.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bff.stack import DEMO_PASSWORD, DEMO_USERNAME
from tests.browser.test_demo_page import CHROMIUM, CHROMIUM_ARGS, StackThread


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[StackThread]:
    running = StackThread(tmp_path).start()
    yield running
    running.stop()


def test_enrol_a_passkey_and_step_up_with_it_in_chromium(stack: StackThread) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (.ci/run installs it)"
    bff_url, auth_url = stack.env["BFF_PUBLIC_URL"], stack.env["AUTH_ISSUER"]
    assert "localhost" in auth_url  # WebAuthn's RP ID must be a domain: browsers refuse an IP address
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("WebAuthn.enable")
            authenticator = cdp.send(
                "WebAuthn.addVirtualAuthenticator",
                {
                    "options": {
                        "protocol": "ctap2",
                        "transport": "internal",
                        "hasResidentKey": True,
                        "hasUserVerification": True,
                        "isUserVerified": True,
                        "automaticPresenceSimulation": True,
                    }
                },
            )["authenticatorId"]

            # The password login, through the demo page.
            page.goto(bff_url + "/")
            page.click("#login")
            page.wait_for_selector("input[name=username]")
            page.fill("input[name=username]", DEMO_USERNAME)
            page.fill("input[name=password]", DEMO_PASSWORD)
            page.locator("input[name=password]").press("Enter")
            page.wait_for_url(bff_url + "/")
            expect(page.locator("#status")).to_have_attribute("data-state", "in")
            expect(page.locator("#acr")).to_contain_text("pwd")
            session_cookie = {c["name"]: c["value"] for c in context.cookies(bff_url)}

            # The action that needs mfa: 401 with a step-up link, nothing deleted.
            page.fill("#note-text", "a note to delete")
            page.click("#note-form button[type=submit]")
            expect(page.locator("#notes li")).to_have_count(1)
            page.click("#delete-all")
            expect(page.locator("#step-up-link")).to_be_visible()
            step_up = page.locator("#step-up-link").get_attribute("href")
            assert step_up == "/bff/login?acr_values=mfa&max_age=300&return_to=%2F", step_up
            expect(page.locator("#output")).to_contain_text("insufficient_user_authentication")

            # Enrol a passkey on the auth server's account page (signed in there by the SSO cookie).
            page.goto(auth_url + "/account")
            page.click("#passkey-add")
            expect(page.locator("p.ok").first).to_contain_text("Passkey added")
            expect(page.locator("#recovery-codes li")).to_have_count(10)
            credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
            assert len(credentials) == 1 and credentials[0]["rpId"] == "localhost"

            # Step up: the link, the passkey (the only thing asked), back to the page in the same session.
            page.goto(bff_url + "/")
            page.click("#delete-all")
            page.click("#step-up-link")
            page.wait_for_selector("#passkey-button")
            assert page.locator("input[name=password]").count() == 0  # only what is missing is asked
            page.click("#passkey-button")
            page.wait_for_url(bff_url + "/")
            expect(page.locator("#acr")).to_contain_text("mfa")
            expect(page.locator("#acr")).to_contain_text("hwk")  # a device-bound passkey (RFC 8176)
            assert {c["name"]: c["value"] for c in context.cookies(bff_url)} == session_cookie  # the same session
            page.click("#delete-all")
            expect(page.locator("#step-up-note")).to_have_text("All notes deleted.")
            expect(page.locator("#notes li")).to_have_count(0)
            sign_count = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
            assert sign_count[0]["signCount"] >= 1  # the passkey was used to sign the step-up
        finally:
            browser.close()
