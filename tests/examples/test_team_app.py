"""examples/team-app runs as a team would run it: node-oidc-provider (its provider.mjs), the FastAPI API (api/main.py,
jwt_bff_verifier) and ``bff serve --config bff.toml``, each a process on its own port; the test logs alice and bob
in through the provider's pages, calls the API through the BFF, meets the admin route's rule, and logs out."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from tests.conftest import free_port
from tests.interop.test_node_provider import NODE_OP, Person
from tests.processes import terminate

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "team-app"
API = "https://orders.example/"
# The example's own ports, as its files spell them; the test moves each to a free one.
EXAMPLE_PORTS = {"provider": 9400, "api": 9500, "bff": 8000}


@dataclass
class Running:
    bff: str
    provider: str
    api: str


def ported(text: str, ports: dict[str, int]) -> str:
    for name, port in EXAMPLE_PORTS.items():
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{ports[name]}")
    return text


@pytest.fixture
def team_app(tmp_path: Path, redis_url: str, process_factory: Any) -> Iterator[Running]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (apt-get install nodejs npm)")
    if not (NODE_OP / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(f"oidc-provider is not installed: run `npm ci` in {NODE_OP} (scripts/test does)")
    ports = {name: free_port() for name in EXAMPLE_PORTS}
    secret = secrets.token_urlsafe(32)
    bff_url = f"http://127.0.0.1:{ports['bff']}"

    # The provider: the example's file beside the node_modules the interop tests installed (the same pinned version).
    provider_dir = tmp_path / "provider"
    provider_dir.mkdir()
    shutil.copy(EXAMPLE / "provider" / "provider.mjs", provider_dir)
    shutil.copy(EXAMPLE / "provider" / "package.json", provider_dir)
    (provider_dir / "node_modules").symlink_to(NODE_OP / "node_modules")
    log = (tmp_path / "provider.log").open("wb")
    env = {**os.environ, "PORT": str(ports["provider"]), "BFF_URL": bff_url, "CLIENT_SECRET": secret, "API": API}
    proc = subprocess.Popen([node, "provider.mjs"], cwd=provider_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    issuer = f"http://127.0.0.1:{ports['provider']}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(issuer + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the example's provider did not start:\n" + (tmp_path / "provider.log").read_text())
            time.sleep(0.1)

        api = process_factory(
            ["-m", "uvicorn", "--app-dir", str(EXAMPLE / "api"), "main:app"],
            {"API_ISSUER": issuer, "API_AUDIENCE": API},
            port=ports["api"],
        )
        config = tmp_path / "bff.toml"
        # The example runs from its own directory; here the BFF runs from the repository's, so its SPA is named whole.
        text = ported((EXAMPLE / "bff.toml").read_text(), ports)
        assert 'frontend = "spa"' in text
        config.write_text(text.replace('frontend = "spa"', f'frontend = "{EXAMPLE / "spa"}"'))
        process_factory(
            ["-m", "bff", "serve", "--config", str(config)],
            {"BFF_CLIENT_SECRET": secret, "REDIS_URL": redis_url},
            port=ports["bff"],
            health_path="/readyz",
        )
        yield Running(bff_url, issuer, api.url)
    finally:
        terminate(proc)
        log.close()


async def test_log_in_call_the_api_through_the_bff_and_log_out(team_app: Running) -> None:
    alice, bob = Person(team_app.bff, "alice"), Person(team_app.bff, "bob")
    try:
        # The SPA, served by the BFF from its directory: the page, its script, and the page again for a client-side
        # route a browser navigates to.
        navigate = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}  # what a browser's page load sends
        page = await alice.bff.request("GET", "/", csrf=False, headers=navigate)
        assert page.status_code == 200 and '<script type="module" src="/app.js">' in page.text
        script = await alice.bff.request("GET", "/app.js", csrf=False)
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert "/bff/user" in script.text
        deep = await alice.bff.request("GET", "/orders/A-1", csrf=False, headers=navigate)
        assert deep.status_code == 200 and deep.text == page.text

        await alice.login()
        me = (await alice.user()).json()
        assert me["claims"] == {
            "preferred_username": "alice",
            "name": "Alice Adams",
            "email": "alice@example.com",
            "groups": ["staff", "admin"],
        }
        orders = await alice.bff.request("GET", "/api/orders/orders")
        assert orders.status_code == 200, orders.text
        assert orders.json() == {"user": "alice", "orders": [{"id": "A-1", "item": "tea", "qty": 2}]}
        report = await alice.bff.request("GET", "/api/admin/report")
        assert report.status_code == 200 and report.json() == {"orders": 2, "by": "alice"}

        await bob.login()
        assert (await bob.bff.request("GET", "/api/orders/orders")).json()["user"] == "bob"
        refused = await bob.bff.request("GET", "/api/admin/report")
        assert refused.status_code == 403 and refused.json()["error"] == "insufficient_claims"
        # The API refuses a call without the BFF's token on its own (it is on a port the browser could reach here).
        async with httpx.AsyncClient() as direct:
            assert (await direct.get(team_app.api + "/orders")).status_code == 401

        # Log out through the provider (RP-initiated logout), back at the BFF's page, and the session is gone.
        leaving = await alice.bff.request("GET", me["logout_url"], csrf=False)
        assert leaving.status_code == 302 and leaving.headers["location"].startswith(team_app.provider)
        back = await alice.at_provider(urljoin(team_app.provider, leaving.headers["location"]))
        assert back is not None and back.startswith(team_app.bff + "/")
        assert (await alice.user()).status_code == 401
        assert (await alice.bff.request("GET", "/api/orders/orders")).status_code == 401
        assert (await bob.user()).status_code == 200  # bob's session is his own
        assert alice.bff.leaked() == [] and bob.bff.leaked() == []
    finally:
        await alice.close()
        await bob.close()


def test_the_spa_in_chromium(team_app: Running) -> None:
    """The example's SPA as a user meets it: its page, the provider's login form, the claims and orders it shows,
    the admin report, and the logout through the provider, in Chromium."""
    from playwright.sync_api import expect, sync_playwright

    from tests.browser.test_demo_page import CHROMIUM, CHROMIUM_ARGS

    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (scripts/test installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(team_app.bff + "/")
            expect(page.locator("#who")).to_have_text("Not logged in.")
            page.click("#login")

            # node-oidc-provider's development login form.
            page.wait_for_selector("input[name=login]")
            assert page.url.startswith(team_app.provider)
            page.fill("input[name=login]", "alice")
            page.fill("input[name=password]", "any password")
            page.locator("button[type=submit]").first.click()

            page.wait_for_url(team_app.bff + "/")
            expect(page.locator("#who")).to_have_text("Alice Adams <alice@example.com> · staff, admin")
            expect(page.locator("#orders li")).to_have_text(["A-1: 2 × tea"])
            page.click("#report")
            expect(page.locator("#report-out")).to_have_text("2 orders in all")

            page.click("#logout")  # RP-initiated logout: through the provider (which may ask to confirm) and back
            page.wait_for_url(lambda url: url.startswith(team_app.bff + "/?") or "/session/end" in url)
            if page.url.startswith(team_app.provider):
                page.click("button[value=yes]")
                page.wait_for_url(team_app.bff + "/**")
            expect(page.locator("#who")).to_have_text("Not logged in.")
            assert errors == []
        finally:
            browser.close()
