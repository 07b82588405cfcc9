"""The BFF against a provider nobody here wrote: node-oidc-provider (npm ``oidc-provider``, OpenID-certified for
Back-Channel Logout and RP-Initiated Logout), run by ``node`` from ``tests/interop/node_op`` (``npm ci`` there;
``.ci/run`` does it). The BFF logs in through it, its logout ends the provider's session, and the provider's
back-channel logout ends the BFF's session (DESIGN §6)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from bff.app import create_app
from bff.settings import Settings
from tests.auth_server.helpers import form_of
from tests.bff.doubles import Browser
from tests.conftest import free_port

pytestmark = pytest.mark.anyio

NODE_OP = Path(__file__).resolve().parent / "node_op"
SECRET = "interop-client-secret-0123456789"


@dataclass
class NodeProvider:
    issuer: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def bff_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def node_provider(bff_port: int) -> Iterator[NodeProvider]:
    """One provider for the module (its users' sessions are per browser, so tests do not meet); the BFF in front of
    it is started per test, on the port the provider knows."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (apt-get install nodejs npm)")
    if not (NODE_OP / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(f"oidc-provider is not installed: run `npm ci` in {NODE_OP} (.ci/run does)")
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="node-op-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [node, "provider.mjs", str(port), f"http://127.0.0.1:{bff_port}", SECRET],
            cwd=NODE_OP,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    provider = NodeProvider(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(provider.issuer + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"node-oidc-provider did not start:\n{provider.output()}")
        time.sleep(0.1)
    yield provider
    proc.terminate()
    proc.wait(10)
    log.unlink(missing_ok=True)


def echo_app() -> Any:
    """An upstream that shows which bearer token it got (by hash: node-oidc-provider's are opaque)."""
    import hashlib

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request: Request) -> JSONResponse:
        token = request.headers.get("authorization", "")
        return JSONResponse({"token": hashlib.sha256(token.encode()).hexdigest()[:16], "bearer": token[:7]})

    return Starlette(routes=[Route("/{path:path}", echo)])


@pytest.fixture
def bff_url(node_provider: NodeProvider, bff_port: int, redis_url: str, server_factory: Any) -> str:
    upstream = server_factory(echo_app())
    env = {
        "BFF_ISSUER": node_provider.issuer,
        "BFF_CLIENT_ID": "bff",
        "BFF_CLIENT_SECRET": SECRET,
        "BFF_PUBLIC_URL": f"http://127.0.0.1:{bff_port}",
        "BFF_SCOPES": "openid profile",
        "BFF_ROUTES": json.dumps({"echo": upstream.url, "vault": {"url": upstream.url, "acr": "mfa"}}),
        "REDIS_URL": redis_url,
    }
    return str(server_factory(create_app(Settings.from_env(env)), bff_port).url)


class Person:
    """A browser: node-oidc-provider's cookies in one jar, the BFF's in the other."""

    def __init__(self, bff_url: str, username: str = "alice") -> None:
        self.bff_url = bff_url
        self.username = username
        self.idp = httpx.AsyncClient(timeout=30)
        self.bff = Browser(httpx.AsyncClient(base_url=bff_url, timeout=30))
        self.forms_filled = 0

    async def close(self) -> None:
        await self.idp.aclose()
        await self.bff.client.aclose()

    async def at_provider(self, url: str) -> str | None:
        """Follow the provider's redirects and fill its pages (dev login form, logout confirmation) until it sends
        the browser back to the BFF; returns that URL (None: the provider's own "signed out" page)."""
        response = await self.idp.get(url)
        for _ in range(12):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(self.bff_url):
                    return location
                response = await self.idp.get(location)
                continue
            assert response.status_code == 200, (response.status_code, response.text[:500])
            if "Sign-out Success" in response.text:
                return None
            form = form_of(response.text)
            assert form.action, response.text[:500]
            data = dict(form.fields)
            if 'name="login"' in response.text:
                self.forms_filled += 1
                data.update(login=self.username, password="any password")
            if 'name="logout"' in response.text:
                data["logout"] = "yes"  # "Yes, sign me out"
            response = await self.idp.post(urljoin(str(response.url), form.action), data=data)
        raise AssertionError("the provider never sent the browser back")

    async def login(self) -> None:
        start = await self.bff.request("GET", "/bff/login", csrf=False)
        assert start.status_code == 302
        back = await self.at_provider(start.headers["location"])
        assert back is not None
        callback = await self.bff.request("GET", httpx.URL(back).raw_path.decode(), csrf=False)
        assert callback.status_code == 302, callback.text

    async def user(self) -> httpx.Response:
        return await self.bff.request("GET", "/bff/user")


async def test_login_and_the_bffs_logout_end_the_providers_session(bff_url: str, node_provider: NodeProvider) -> None:
    person = Person(bff_url)
    try:
        await person.login()
        user = await person.user()
        assert user.status_code == 200, user.text
        assert user.json()["username"] == "alice" and person.forms_filled == 1

        sent_before = node_provider.output().count("back-channel logout sent to bff")
        leaving = await person.bff.request("GET", user.json()["logout_url"], csrf=False)
        assert leaving.status_code == 302
        end_session = leaving.headers["location"]
        assert end_session.startswith(node_provider.issuer + "/session/end?")
        sent = parse_qs(urlsplit(end_session).query)
        assert {"id_token_hint", "client_id", "post_logout_redirect_uri", "state"} <= set(sent)
        back = await person.at_provider(end_session)  # node-oidc-provider asks to confirm, then sends us back
        assert (
            back is not None
            and back.startswith(bff_url + "/?")
            and parse_qs(urlsplit(back).query)["state"] == sent["state"]
        )
        assert (await person.user()).status_code == 401
        # It also told the BFF on the back channel (that session was over already: 200 all the same).
        assert node_provider.output().count("back-channel logout sent to bff") == sent_before + 1

        await person.login()  # the provider's session ended too: its login form comes again
        assert person.forms_filled == 2
    finally:
        await person.close()


async def test_access_tokens_are_refreshed_with_the_provider(bff_url: str, node_provider: NodeProvider) -> None:
    person = Person(bff_url)
    try:
        await person.login()
        first = await person.bff.request("GET", "/api/echo/x")
        assert first.status_code == 200 and first.json()["bearer"] == "Bearer ", first.text
        await asyncio.sleep(1.2)  # past half of the 2 s access token life: the next call refreshes
        second = await person.bff.request("GET", "/api/echo/x")
        assert second.status_code == 200, second.text
        assert second.json()["token"] != first.json()["token"]  # a new access token from node-oidc-provider
        await asyncio.sleep(1.2)  # and again, with the rotated refresh token
        third = await person.bff.request("GET", "/api/echo/x")
        assert third.status_code == 200 and third.json()["token"] not in (first.json()["token"], second.json()["token"])
        assert (await person.user()).status_code == 200
    finally:
        await person.close()


async def test_the_providers_back_channel_logout_ends_the_bff_session(
    bff_url: str, node_provider: NodeProvider
) -> None:
    person, other = Person(bff_url), Person(bff_url)
    try:
        await person.login()
        await other.login()  # another browser of the same user: a provider session of its own
        assert (await person.user()).status_code == 200
        sent_before = node_provider.output().count("back-channel logout sent to bff")
        # The user signs out at the provider itself (no BFF involved): it POSTs a logout token to /bff/backchannel.
        assert await person.at_provider(node_provider.issuer + "/session/end") is None  # its "signed out" page
        deadline = time.monotonic() + 5
        while (await person.user()).status_code == 200:
            assert time.monotonic() < deadline, f"the BFF session survived:\n{node_provider.output()}"
            await asyncio.sleep(0.05)
        assert node_provider.output().count("back-channel logout sent to bff") == sent_before + 1
        assert (await other.user()).status_code == 200  # the other provider session (its own sid) stays
    finally:
        await person.close()
        await other.close()


async def test_a_step_up_asks_the_provider_for_mfa_and_checks_the_acr_it_gets(
    bff_url: str, node_provider: NodeProvider
) -> None:
    """DESIGN §14 against a provider nobody here wrote: a route needing acr "mfa" gets a password session a 401 with a
    step_up_url; the BFF asks node-oidc-provider for mfa (an essential acr in the claims parameter, which it
    advertises), checks the acr of the ID token it gets back, and upgrades the same session."""
    person = Person(bff_url)
    try:
        await person.login()
        assert (await person.user()).json()["acr"] != "mfa"  # a plain login (node-oidc-provider names no acr then)
        cookie = dict(person.bff.cookies)
        refused = await person.bff.request("GET", "/api/vault/x")
        assert refused.status_code == 401, refused.text
        step_up_url = refused.json()["step_up_url"]
        assert step_up_url == "/bff/login?acr_values=mfa&return_to=%2F"
        start = await person.bff.request("GET", step_up_url, csrf=False)
        # pushed (node-oidc-provider offers PAR): the browser carries a request_uri; the provider's log line below
        # shows what it was asked (an essential acr "mfa" in the claims parameter)
        assert set(parse_qs(urlsplit(start.headers["location"]).query)) == {"client_id", "request_uri"}
        back = await person.at_provider(start.headers["location"])  # its login prompt again (stand-in factor)
        assert back is not None and person.forms_filled == 2, node_provider.output()
        done = await person.bff.request("GET", httpx.URL(back).raw_path.decode(), csrf=False)
        assert done.status_code == 302, done.text
        assert person.bff.cookies == cookie  # the same session
        user = (await person.user()).json()
        assert user["acr"] == "mfa"  # (node-oidc-provider sends amr only when asked for it)
        assert (await person.bff.request("GET", "/api/vault/x")).status_code == 200
        assert "login of alice at acr mfa (asked: mfa)" in node_provider.output()
    finally:
        await person.close()
