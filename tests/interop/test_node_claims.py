"""DESIGN §11 against a provider nobody here wrote: node-oidc-provider in its second configuration
(``node_op/claims.mjs``: users with ``name``, ``email`` and ``groups``; JWT access tokens by resource indicators).

Its claims reach ``/bff/user`` (from userinfo: node-oidc-provider keeps them out of an ID token issued beside an
access token) and the forward-auth headers; a ``require: {"groups": ["admin"]}`` route lets alice through and answers
bob 403 ``insufficient_claims`` without calling the upstream, through the BFF's proxy and through nginx; its RFC 9068
access tokens (``typ: at+jwt``, ``aud`` the resource) are accepted by our verifier in the resource server behind."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bff.app import create_app
from bff.settings import Settings
from resource_server.app import create_app as create_rs_app
from resource_server.settings import Settings as RSSettings
from tests.conftest import free_port
from tests.edge import Edge
from tests.interop.test_node_provider import NODE_OP, SECRET, NodeProvider, Person

pytestmark = pytest.mark.anyio

API = "https://api.example.test/"  # the resource indicator (RFC 8707) of the API: its tokens' aud
ALICE = {
    "preferred_username": "alice",
    "name": "Alice Adams",
    "email": "alice@example.com",
    "groups": ["staff", "admin"],
}


@dataclass
class Ports:
    bff: int  # the BFF reached directly
    edge: int  # nginx in front of a second BFF


@pytest.fixture(scope="module")
def ports() -> Ports:
    return Ports(free_port(), free_port())


@pytest.fixture(scope="module")
def claims_provider(ports: Ports) -> Iterator[NodeProvider]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (apt-get install nodejs npm)")
    if not (NODE_OP / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(f"oidc-provider is not installed: run `npm ci` in {NODE_OP} (.ci/run does)")
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="node-op-claims-", suffix=".log")[1])
    bffs = f"http://127.0.0.1:{ports.bff},http://127.0.0.1:{ports.edge}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [node, "claims.mjs", str(port), bffs, SECRET, API], cwd=NODE_OP, stdout=out, stderr=subprocess.STDOUT
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


class CountingGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls[scope["path"]] += 1
        await self.app(scope, receive, send)


def segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def whoami_app() -> Starlette:
    """An upstream that says what it was told: the identity headers, and its token's JOSE header and claims (never
    the token itself)."""

    async def whoami(request: Request) -> JSONResponse:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        headers = {k: v for k, v in request.headers.items() if k.startswith("x-auth-request-")}
        return JSONResponse({"headers": headers, "jose": segment(token, 0), "claims": segment(token, 1)})

    return Starlette(routes=[Route("/{path:path}", whoami)])


@dataclass
class World:
    provider: NodeProvider
    rs: CountingGate
    rs_url: str
    whoami_url: str
    redis_url: str
    server_factory: Any

    def bff_env(self, public_url: str) -> dict[str, str]:
        routes = {
            "api": {"url": self.rs_url, "resource": API},
            "admin": {"url": self.rs_url, "resource": API, "require": {"groups": ["admin"]}},
            "whoami": {"url": self.whoami_url, "resource": API},
        }
        return {
            "BFF_ISSUER": self.provider.issuer,
            "BFF_CLIENT_ID": "bff",
            "BFF_CLIENT_SECRET": SECRET,
            "BFF_PUBLIC_URL": public_url,
            "BFF_COOKIE_SECURE": "false",
            "BFF_SCOPES": "openid profile email groups api:read",
            "BFF_USER_CLAIMS": "preferred_username,name,email,groups",
            "BFF_ROUTES": json.dumps(routes),
            "BFF_TRUSTED_PROXIES": "127.0.0.1/32",
            "REDIS_URL": self.redis_url,
        }


@pytest.fixture
def world(claims_provider: NodeProvider, redis_url: str, server_factory: Any) -> World:
    # Our resource server, its verifier configured for the provider's JWT access tokens of the API.
    rs_settings = RSSettings.from_env({"RS_ISSUER": claims_provider.issuer, "RS_AUDIENCE": API, "REDIS_URL": redis_url})
    rs = CountingGate(create_rs_app(rs_settings))
    rs_url = server_factory(rs).url
    whoami_url = server_factory(whoami_app()).url
    return World(claims_provider, rs, rs_url, whoami_url, redis_url, server_factory)


@pytest.fixture
def bff_url(world: World, ports: Ports) -> str:
    public = f"http://127.0.0.1:{ports.bff}"
    return str(world.server_factory(create_app(Settings.from_env(world.bff_env(public))), ports.bff).url)


@contextlib.asynccontextmanager
async def people(bff_url: str) -> AsyncIterator[tuple[Person, Person]]:
    alice, bob = Person(bff_url, "alice"), Person(bff_url, "bob")
    try:
        await alice.login()
        await bob.login()
        yield alice, bob
    finally:
        await alice.close()
        await bob.close()


async def test_the_providers_claims_in_bff_user_and_the_forward_auth_headers(bff_url: str) -> None:
    async with people(bff_url) as (alice, bob):
        user = (await alice.user()).json()
        assert user["sub"] == "alice" and user["claims"] == ALICE
        assert (await bob.user()).json()["claims"]["groups"] == ["staff"]
        assert alice.bff.leaked() == []  # no token in what the browser saw (below, the test plays the proxy)
        asked = await alice.bff.request(
            "GET", "/bff/auth", headers={"X-Original-URI": "/api/api/me", "X-Original-Method": "GET"}
        )
        assert asked.status_code == 200, asked.text
        assert asked.headers["x-auth-request-sub"] == "alice"
        assert asked.headers["x-auth-request-user"] == "alice"
        assert asked.headers["x-auth-request-email"] == "alice@example.com"
        assert asked.headers["x-auth-request-groups"] == "staff,admin"


async def test_a_groups_rule_lets_alice_through_and_refuses_bob_without_calling_the_upstream(
    world: World, bff_url: str
) -> None:
    async with people(bff_url) as (alice, bob):
        through = await alice.bff.request("GET", "/api/admin/me")
        assert through.status_code == 200, through.text
        assert world.rs.calls["/me"] == 1
        refused = await bob.bff.request("GET", "/api/admin/me")
        assert refused.status_code == 403 and refused.json()["error"] == "insufficient_claims"
        assert world.rs.calls["/me"] == 1  # the upstream never heard of bob's request
        asked = await bob.bff.request(
            "GET", "/bff/auth", headers={"X-Original-URI": "/api/admin/me", "X-Original-Method": "GET"}
        )
        assert asked.status_code == 403 and asked.json()["error"] == "insufficient_claims"
        assert (await bob.bff.request("GET", "/api/api/me")).status_code == 200  # bob's other routes work


async def test_its_rfc9068_access_tokens_are_accepted_by_our_verifier(world: World, bff_url: str) -> None:
    async with people(bff_url) as (alice, _):
        me = await alice.bff.request("GET", "/api/api/me")
        assert me.status_code == 200, me.text  # our resource server verified the provider's JWT access token
        body = me.json()
        assert body["sub"] == "alice" and body["client_id"] == "bff" and body["aud"] == API
        assert "api:read" in body["scope"].split()
        seen = (await alice.bff.request("GET", "/api/whoami/x")).json()
        assert seen["jose"]["typ"].lower() in ("at+jwt", "application/at+jwt")  # RFC 9068 §2.1
        assert seen["claims"]["iss"] == world.provider.issuer and seen["claims"]["aud"] == API


async def test_the_rule_and_the_identity_headers_through_nginx(world: World, ports: Ports) -> None:
    edge_url = f"http://127.0.0.1:{ports.edge}"
    bff = world.server_factory(create_app(Settings.from_env(world.bff_env(edge_url))))
    rs, who = world.rs_url.removeprefix("http://"), world.whoami_url.removeprefix("http://")
    edge = Edge(ports.edge, f"127.0.0.1:{bff.port}", {"notes": rs, "live": rs, "api": rs, "admin": rs, "whoami": who})
    try:
        edge.start()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))  # a missing tool is a failure, never a skip
    try:
        async with people(edge_url) as (alice, bob):
            through = await alice.bff.request("GET", "/api/admin/me")
            assert through.status_code == 200 and through.headers["server"] == "nginx", through.text
            assert through.json()["aud"] == API
            calls = world.rs.calls["/me"]
            refused = await bob.bff.request("GET", "/api/admin/me")
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"] == "insufficient_claims"  # nginx answers the BFF's reason, not "csrf"
            assert world.rs.calls["/me"] == calls  # nginx never called the upstream
            no_csrf = await bob.bff.request("GET", "/api/api/me", csrf=False)
            assert no_csrf.status_code == 403 and no_csrf.json()["error"] == "csrf"

            told = (await alice.bff.request("GET", "/api/whoami/x")).json()["headers"]
            assert told == {
                "x-auth-request-sub": "alice",
                "x-auth-request-user": "alice",
                "x-auth-request-email": "alice@example.com",
                "x-auth-request-groups": "staff,admin",
            }
            forged = {"X-Auth-Request-Groups": "admin", "X-Auth-Request-User": "alice", "X-Auth-Request-Email": "x"}
            told = (await bob.bff.request("GET", "/api/whoami/x", headers=forged)).json()["headers"]
            assert told["x-auth-request-groups"] == "staff" and told["x-auth-request-user"] == "bob"
            assert told["x-auth-request-email"] == "bob@example.com"
            assert alice.bff.leaked() == [] and bob.bff.leaked() == []
    finally:
        edge.cleanup()
