"""Sessions that end everywhere (DESIGN §6), on real sockets: the auth server's SSO session, the BFF's logout
through the provider and back, and `auth-server sessions revoke` reaching BFF replicas on the back channel."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from tests.auth_server.helpers import form_of
from tests.bff.doubles import Browser
from tests.conftest import REPO
from tests.e2e.conftest import PASSWORD, Stack

pytestmark = pytest.mark.anyio


class Person:
    """One real browser: a cookie jar for the auth server (its SSO session) and one for a BFF."""

    def __init__(self, stack: Stack, bff_url: str | None = None) -> None:
        self.stack = stack
        self.idp = httpx.AsyncClient(timeout=30)
        stack.clients.append(self.idp)
        self.bff: Browser = stack.browser(bff_url)
        self.password_asked = 0

    async def login(self, username: str = "alice") -> None:
        created = await self.idp.post(self.stack.auth_url + "/users", json={"username": username, "password": PASSWORD})
        assert created.status_code in (201, 409), created.text
        start = await self.bff.request("GET", "/bff/login", csrf=False)
        at = await self.idp.get(start.headers["location"])
        if at.status_code == 200:  # the form: no SSO session (yet)
            self.password_asked += 1
            form = form_of(at.text)
            assert form.action is not None
            data = {**form.fields, "username": username, "password": PASSWORD}
            at = await self.idp.post(urljoin(str(at.url), form.action), data=data)
        assert at.status_code == 302, at.text
        callback = httpx.URL(at.headers["location"])
        done = await self.bff.request("GET", callback.raw_path.decode(), csrf=False)
        assert done.status_code == 302, done.text

    async def alive(self) -> bool:
        return (await self.bff.request("GET", "/bff/user")).status_code == 200


async def test_a_second_login_in_the_same_browser_needs_no_password(stack_factory: Any) -> None:
    stack: Stack = stack_factory()
    person = Person(stack)
    await person.login()
    assert person.password_asked == 1
    person.bff = stack.browser()  # the BFF session is gone (another tab, or it expired) ...
    await person.login()
    assert person.password_asked == 1  # ... but the auth server remembers the browser
    assert await person.alive()


async def test_the_logout_sid_guard_on_real_sockets(stack_factory: Any) -> None:
    stack: Stack = stack_factory()
    person = Person(stack)
    await person.login()
    for params in ({}, {"sid": "forged"}):
        refused = await person.bff.request("GET", "/bff/logout", params=params, csrf=False)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
        assert await person.alive()


async def test_the_full_logout_round_trip(stack_factory: Any) -> None:
    stack: Stack = stack_factory()
    person = Person(stack)
    await person.login()
    url = (await person.bff.request("GET", "/bff/user")).json()["logout_url"]
    leaving = await person.bff.request("GET", url, csrf=False)
    assert leaving.status_code == 302
    at_provider = leaving.headers["location"]
    assert at_provider.startswith(stack.auth_url + "/oauth/logout?")
    back = await person.idp.get(at_provider)  # a valid id_token_hint: no question asked
    assert back.status_code == 302, back.text
    returned = urlsplit(back.headers["location"])
    assert f"{returned.scheme}://{returned.netloc}{returned.path}" == stack.bff_url + "/"  # BFF_POST_LOGOUT_URL
    assert parse_qs(returned.query)["state"] == parse_qs(urlsplit(at_provider).query)["state"]
    assert not await person.alive()
    await person.login()
    assert person.password_asked == 2  # the provider's session ended too: the next login asks for the password


async def test_sessions_revoke_ends_one_user_on_every_replica(stack_factory: Any, process_factory: Any) -> None:
    stack: Stack = stack_factory(bff_thread=False)
    port = int(stack.bff_url.rsplit(":", 1)[1])
    first = process_factory(["-m", "bff", "serve"], stack.bff_env, port=port, health_path="/readyz")
    second = process_factory(["-m", "bff", "serve"], stack.bff_env, health_path="/readyz")
    alice_one, alice_two = Person(stack, first.url), Person(stack, second.url)
    bob = Person(stack, second.url)
    await alice_one.login()
    await alice_two.login()
    await bob.login("bob")
    assert all([await alice_one.alive(), await alice_two.alive(), await bob.alive()])

    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "auth_server", "sessions", "revoke", "alice"],
        env={**stack.bff_env, **stack.auth_env, "PATH": ""},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "ended 2 SSO session(s) and 2 login(s) of alice" in done.stdout
    # Each replica's own session of alice, and the other replica's view of it: all gone within 2 s.
    views = [alice_one.bff, alice_two.bff, Browser(httpx.AsyncClient(base_url=second.url, timeout=30))]
    views[2].cookies = dict(alice_one.bff.cookies)
    stack.clients.append(views[2].client)
    while any([(await view.request("GET", "/bff/user")).status_code == 200 for view in views]):
        assert time.monotonic() - started < 2.0, "a session of alice outlived the revocation by 2 s"
        await asyncio.sleep(0.05)
    print(f"alice's sessions gone on both replicas {time.monotonic() - started:.2f} s after the command started")
    assert await bob.alive()
    # The auth server's side ended too: alice's browsers must type the password again.
    alice_one.bff = stack.browser(first.url)
    await alice_one.login()
    assert alice_one.password_asked == 2
