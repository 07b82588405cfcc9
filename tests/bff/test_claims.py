"""DESIGN §11 in-process: the claims a login keeps (BFF_USER_CLAIMS, the rules' claims, userinfo), /bff/user's
``claims``, the forward-auth identity headers (and what cannot be injected through them), route ``require`` (403
``insufficient_claims``, the upstream never called), and the honest ``expires_at`` of a session without a refresh
token."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from bff.claims import identity_headers, keep, parse_claim_names, parse_rules
from bff.routes import parse_routes
from bff.settings import Settings, SettingsError
from tests.bff.conftest import Rig, running
from tests.bff.doubles import Browser, Provider
from tests.conftest import free_port

pytestmark = pytest.mark.anyio

ADMIN = {"name": "Alice Admin", "email": "alice@example.com", "groups": ["staff", "admin"], "email_verified": True}
EVIL = {  # what a provider might let a user set as their profile
    "preferred_username": "eve\r\nX-Injected: 1",
    "email": "eve@example.com\nAuthorization: Bearer x",
    "groups": ["staff", "x,admin", " admin", "admin\r\n", "ops"],
}
PLAIN = {"name": "Bob", "email": "bob@example.com", "groups": ["staff"], "email_verified": False}


class CountingGate:
    """Counts the requests an upstream receives."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls[scope["path"]] += 1
        await self.app(scope, receive, send)


@pytest.fixture
async def claims_rig(redis_url: str, server_factory: Any) -> AsyncIterator[tuple[Rig, CountingGate]]:
    port = free_port()
    provider = Provider(issuer=f"http://127.0.0.1:{port}", claims={"alice": ADMIN, "bob": PLAIN, "eve": EVIL})
    server_factory(provider.app(), port)
    gate = CountingGate(provider.upstream())
    upstream = server_factory(gate).url
    routes = {
        "notes": upstream,
        "admin": {"url": upstream, "require": {"groups": ["admin"]}},
        "verified": {"url": upstream, "require": {"email_verified": [True], "groups": ["staff", "ops"]}},
        "ops": {"url": upstream, "token": "client", "require": {"groups": ["ops"]}},
    }
    env = {
        "BFF_ISSUER": provider.issuer,
        "BFF_CLIENT_ID": "bff",
        "BFF_CLIENT_SECRET": "s3cret-of-the-bff",
        "BFF_PUBLIC_URL": "https://bff.test",
        "BFF_ROUTES": json.dumps(routes),
        "BFF_TRUSTED_PROXIES": "127.0.0.1/32",
        "REDIS_URL": redis_url,
    }
    async with running(provider, upstream, env) as rig:
        yield rig, gate


async def login(rig: Rig, user: str) -> Browser:
    rig.provider.user = user
    return await rig.logged_in()


async def ask(browser: Browser, uri: str, method: str = "GET") -> httpx.Response:
    headers = {"X-Original-URI": uri, "X-Original-Method": method, "X-CSRF": "1"}
    return await browser.request("GET", "/bff/auth", csrf=False, headers=headers)


async def test_bff_user_returns_the_kept_claims_and_never_a_token(claims_rig: tuple[Rig, CountingGate]) -> None:
    rig, _ = claims_rig
    browser = await login(rig, "alice")
    body = (await browser.request("GET", "/bff/user")).json()
    # BFF_USER_CLAIMS' default, plus the claims the routes' require name (groups, email_verified); nothing else of
    # the ID token (iss, aud, nonce, sid) and no token.
    assert body["claims"] == {
        "preferred_username": "alice",
        "name": "Alice Admin",
        "email": "alice@example.com",
        "email_verified": True,
        "groups": ["staff", "admin"],
    }
    assert browser.leaked() == []


@pytest.mark.parametrize(
    ("user", "route", "status"),
    [
        ("alice", "admin", 200),
        ("bob", "admin", 403),
        ("alice", "verified", 200),
        ("bob", "verified", 403),  # in staff, but email_verified is false: every named claim must hold
        ("alice", "ops", 403),  # a client-token route checks the user's session all the same
        ("alice", "notes", 200),
        ("bob", "notes", 200),
    ],
)
async def test_require_lets_one_user_through_and_refuses_another_without_calling_the_upstream(
    claims_rig: tuple[Rig, CountingGate], user: str, route: str, status: int
) -> None:
    rig, gate = claims_rig
    browser = await login(rig, user)
    before = sum(gate.calls.values())
    response = await browser.request("GET", f"/api/{route}/x")
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["error"] == "insufficient_claims"
        assert sum(gate.calls.values()) == before  # the upstream never heard of it
        # the same answer at /bff/auth, with the error code for the proxy (nginx has the status only)
        forward = await ask(browser, f"/api/{route}/x")
        assert forward.status_code == 403 and forward.json()["error"] == "insufficient_claims"
        assert forward.headers["x-auth-request-error"] == "insufficient_claims"
        assert "authorization" not in forward.headers
    else:
        assert sum(gate.calls.values()) == before + 1
    anonymous = await rig.browser().request("GET", f"/api/{route}/x")
    assert anonymous.status_code == 401  # no session: log in first, whatever the rule


async def test_the_refusals_are_counted(claims_rig: tuple[Rig, CountingGate]) -> None:
    rig, _ = claims_rig
    browser = await login(rig, "bob")
    assert (await browser.request("GET", "/api/admin/x")).status_code == 403
    metrics = (await browser.request("GET", "/metrics")).text
    assert 'bff_claims_refused_total{route="admin"} 1.0' in metrics


async def test_a_websocket_handshake_is_refused_by_the_rule(redis_url: str, server_factory: Any) -> None:
    """A real handshake to the BFF on a socket: 403 insufficient_claims for bob, the upstream never asked; alice's
    handshake reaches it."""
    import aiohttp
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from bff.app import create_app

    handshakes: list[str] = []

    async def echo(websocket: WebSocket) -> None:
        handshakes.append(websocket.url.path)
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    upstream = server_factory(Starlette(routes=[WebSocketRoute("/ws", echo)]), ws="websockets-sansio").url
    port = free_port()
    provider = Provider(issuer=f"http://127.0.0.1:{port}", claims={"alice": ADMIN, "bob": PLAIN})
    server_factory(provider.app(), port)
    routes = {"live": {"url": upstream, "websocket": True, "require": {"groups": ["admin"]}}}
    env = {
        "BFF_ISSUER": provider.issuer,
        "BFF_CLIENT_SECRET": "s3cret-of-the-bff",
        "BFF_PUBLIC_URL": "https://bff.test",
        "BFF_ROUTES": json.dumps(routes),
        "REDIS_URL": redis_url,
    }
    bff = server_factory(create_app(Settings.from_env(env)), ws="websockets-sansio").url
    async with httpx.AsyncClient() as provider_client, aiohttp.ClientSession() as session:
        for user, allowed in (("bob", False), ("alice", True)):
            provider.user = user
            browser = Browser(httpx.AsyncClient(base_url=bff))
            assert (await browser.login(provider_client)).status_code == 302
            cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
            headers = {"Cookie": cookie, "Origin": "https://bff.test"}
            if allowed:
                async with session.ws_connect(bff.replace("http", "ws") + "/api/live/ws", headers=headers) as ws:
                    assert (await ws.receive_str()) == "hello"
                assert handshakes == ["/ws"]
            else:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(bff.replace("http", "ws") + "/api/live/ws", headers=headers)
                assert refused.value.status == 403 and handshakes == []
            await browser.client.aclose()


async def test_forward_auth_answers_the_identity_headers(claims_rig: tuple[Rig, CountingGate]) -> None:
    rig, _ = claims_rig
    browser = await login(rig, "alice")
    answer = await ask(browser, "/api/admin/x")
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-auth-request-sub"] == "sub-alice"
    assert answer.headers["x-auth-request-user"] == "alice"
    assert answer.headers["x-auth-request-email"] == "alice@example.com"
    assert answer.headers["x-auth-request-groups"] == "staff,admin"
    client_route = await ask(await login(rig, "alice"), "/api/notes/x")
    assert client_route.headers["x-auth-request-user"] == "alice"
    # Worked out once per opened session record, not per question (bff.claims remembers them by claims object).
    import bff.claims

    bff.claims._HEADERS.clear()
    for _ in range(5):
        assert (await ask(browser, "/api/admin/x")).headers["x-auth-request-groups"] == "staff,admin"
    assert len(bff.claims._HEADERS) == 1


async def test_a_users_claims_cannot_inject_headers_into_the_forward_auth_answer(
    claims_rig: tuple[Rig, CountingGate],
) -> None:
    rig, _ = claims_rig
    browser = await login(rig, "eve")
    answer = await ask(browser, "/api/notes/x")
    assert answer.status_code == 200, answer.text
    assert "x-injected" not in answer.headers and "x-auth-request-user" not in answer.headers
    assert "x-auth-request-email" not in answer.headers
    assert answer.headers["x-auth-request-groups"] == "staff,ops"  # never admin, by comma, space or CRLF
    assert answer.headers["authorization"].startswith("Bearer eyJ")  # the BFF's own, once
    assert len(answer.headers.get_list("authorization")) == 1
    refused = await browser.request("GET", "/api/admin/x")
    assert refused.status_code == 403  # the rule sees the real list: "x,admin" is not "admin"
    # /bff/user shows the claims as they are, as JSON: nothing to inject there
    assert (await browser.request("GET", "/bff/user")).json()["claims"]["preferred_username"] == EVIL[
        "preferred_username"
    ]


async def test_the_browser_cannot_send_identity_headers_upstream(claims_rig: tuple[Rig, CountingGate]) -> None:
    rig, _ = claims_rig
    browser = await login(rig, "bob")
    forged = {
        "X-Auth-Request-User": "alice",
        "X-Auth-Request-Email": "alice@example.com",
        "X-Auth-Request-Groups": "admin",
        "X-Auth-Request-Sub": "sub-alice",
    }
    echoed = await browser.request("GET", "/api/notes/x", headers=forged)
    assert echoed.status_code == 200
    seen = {k.lower() for k in echoed.json()["headers"]}
    assert not seen & {h.lower() for h in forged}, seen


@pytest.mark.parametrize(
    "evil",
    [
        {"preferred_username": "eve\r\nX-Auth-Request-Groups: admin", "email": "eve@example.com\nSet-Cookie: x=1"},
        {"preferred_username": "eve\x00", "email": "\x7f"},
        {"groups": ["staff", "x,admin", " admin", "admin\r\n", "ops"]},
        {"groups": "admin\r\nX: y"},
        {"groups": [1, True, {"a": "b"}, None]},
        {"preferred_username": 12, "email": ["a@b"], "groups": {"admin": True}},
        {"preferred_username": "ü" * 3000},
    ],
)
def test_identity_headers_cannot_carry_an_injection(evil: dict[str, Any]) -> None:
    headers = identity_headers(evil)
    for _, value in headers:
        assert b"\r" not in value and b"\n" not in value and b"\x00" not in value and b"\x7f" not in value
        assert len(value) <= 4096
    groups = dict(headers).get(b"x-auth-request-groups")
    if groups is not None:
        assert groups.split(b",") == [b"staff", b"ops"]  # never "admin": neither by comma nor by spaces
    assert b"x-auth-request-user" not in dict(headers) or dict(headers)[b"x-auth-request-user"] == b""


def test_identity_headers_of_plain_claims() -> None:
    assert identity_headers({"preferred_username": "zoë", "groups": "admins"}) == (
        (b"x-auth-request-user", "zoë".encode()),
        (b"x-auth-request-groups", b"admins"),
    )
    assert identity_headers({}) == ()


def test_rule_values_compare_with_their_json_type() -> None:
    rules = parse_rules("r", {"email_verified": [True], "level": [2], "groups": ["admin"]})
    ok = {"email_verified": True, "level": 2.0, "groups": ["x", "admin"]}
    assert rules.allows(ok)
    assert not rules.allows({**ok, "email_verified": "true"})
    assert not rules.allows({**ok, "email_verified": 1})
    assert not rules.allows({**ok, "level": "2"})
    assert not rules.allows({**ok, "groups": "x admin"})
    assert not rules.allows({**ok, "groups": []})
    assert not rules.allows({**ok, "groups": [["admin"]]})  # no nesting: a list's elements are compared
    assert rules.allows({**ok, "groups": "admin"})  # a single string holds one value
    assert rules.allows({**ok, "groups": [{"a": 1}, None, 1, True, "admin"]})  # odd elements beside a match
    assert not rules.allows({**ok, "groups": [{"admin": 1}, ["admin"], None, 1, True]})
    assert rules.allows({**ok, "level": [1, "x", 2]}) and not rules.allows({**ok, "level": [True, "2", [2]]})
    assert not rules.allows({**ok, "level": None}) and rules.allows({**ok, "email_verified": [True]})  # list: any
    assert not rules.allows({k: v for k, v in ok.items() if k != "level"})  # a missing claim fails


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"url": "http://x", "require": ["admin"]}, "BFF_ROUTES[r].require must be an object"),
        ({"url": "http://x", "require": {}}, "BFF_ROUTES[r].require must be an object"),
        ({"url": "http://x", "require": {"groups": "admin"}}, "BFF_ROUTES[r].require.groups must be a non-empty list"),
        ({"url": "http://x", "require": {"groups": []}}, "BFF_ROUTES[r].require.groups must be a non-empty list"),
        ({"url": "http://x", "require": {"groups": [{"a": 1}]}}, "BFF_ROUTES[r].require.groups: {"),
        ({"url": "http://x", "require": {"groups": [None]}}, "BFF_ROUTES[r].require.groups: null is not"),
        ({"url": "http://x", "require": {"bad name": ["x"]}}, "BFF_ROUTES[r].require: bad claim name"),
        ({"url": "http://x", "token": "none", "require": {"groups": ["a"]}}, "BFF_ROUTES[r].require needs a signed"),
        ({"url": "http://x", "token": "optional", "require": {"g": ["a"]}}, "BFF_ROUTES[r].require needs a signed"),
    ],
)
def test_a_bad_rule_stops_the_start_naming_route_and_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_routes(json.dumps({"r": spec}))
    assert str(caught.value).startswith(message), str(caught.value)


def test_user_claims_setting() -> None:
    assert parse_claim_names(None) == ("preferred_username", "name", "email")
    assert parse_claim_names(" email , groups,email") == ("email", "groups")
    assert parse_claim_names("") == ()
    with pytest.raises(SettingsError, match="BFF_USER_CLAIMS: bad claim name 'a b'"):
        parse_claim_names("a b")
    routes = json.dumps({"a": {"url": "http://a", "require": {"groups": ["g"]}}})
    env = {"BFF_CLIENT_SECRET": "x", "BFF_USER_CLAIMS": "email", "BFF_ROUTES": routes}
    assert Settings.from_env(env).kept_claims == ("email", "groups")


def test_oversized_claims_are_left_out_by_name(caplog: pytest.LogCaptureFixture) -> None:
    found = {"a": "x" * 5000, "b": "secret-value", "c": ["g"] * 1100, "d": float("nan"), "e": "x" * 4000}
    with caplog.at_level(logging.WARNING):
        kept = keep(found, ["a", "b", "c", "d", "e", "missing"])
    assert kept == {"b": "secret-value", "e": "x" * 4000}
    assert "claim a " in caplog.text and "claim c " in caplog.text and "claim d " in caplog.text
    assert "xxxx" not in caplog.text and "secret-value" not in caplog.text


async def test_claims_the_id_token_lacks_come_from_userinfo(redis_url: str, server_factory: Any) -> None:
    port = free_port()
    provider = Provider(
        issuer=f"http://127.0.0.1:{port}",
        claims={"alice": {"name": "Alice"}},
        userinfo={"alice": {"email": "alice@example.com", "groups": ["admin"], "name": "Not Used"}},
    )
    server_factory(provider.app(), port)
    upstream = server_factory(provider.upstream()).url
    env = {
        "BFF_ISSUER": provider.issuer,
        "BFF_CLIENT_SECRET": "s3cret-of-the-bff",
        "BFF_PUBLIC_URL": "https://bff.test",
        "BFF_USER_CLAIMS": "name,email,groups",
        "BFF_ROUTES": json.dumps({"notes": upstream}),
        "REDIS_URL": redis_url,
    }
    async with running(provider, upstream, env) as rig:
        browser = await rig.logged_in()
        claims = (await browser.request("GET", "/bff/user")).json()["claims"]
        assert claims == {"name": "Alice", "email": "alice@example.com", "groups": ["admin"]}  # the ID token first
        assert provider.userinfo_calls == 1
        metrics = (await browser.request("GET", "/metrics")).text
        assert 'bff_provider_requests_total{endpoint="userinfo",outcome="ok"} 1.0' in metrics
        # A userinfo answer about someone else (OIDC Core §5.3.2) is not used.
        provider.userinfo = {"alice": {"sub": "sub-mallory", "email": "mallory@example.com"}}
        other = await rig.logged_in()
        assert (await other.request("GET", "/bff/user")).json()["claims"] == {"name": "Alice"}
        metrics = (await other.request("GET", "/metrics")).text
        assert 'bff_provider_requests_total{endpoint="userinfo",outcome="refused"} 1.0' in metrics


async def test_without_a_refresh_token_the_session_ends_with_its_access_token(
    rig_env: tuple[Provider, str, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    import bff.endpoints

    provider, upstream, env = rig_env
    provider.no_refresh, provider.access_ttl = True, 3
    bff.endpoints._warned_no_refresh = False
    async with running(provider, upstream, env) as rig:
        with caplog.at_level(logging.WARNING, "bff.endpoints"):
            browser = await rig.logged_in()
            await rig.logged_in()
        said = [r.getMessage() for r in caplog.records if "no refresh token" in r.getMessage()]
        assert len(said) == 1 and "offline_access" in said[0] and "BFF_SCOPES" in said[0]  # once per process
        metrics = (await browser.request("GET", "/metrics")).text
        assert "bff_logins_without_refresh_token_total 2.0" in metrics  # but every such login counted
        user = (await browser.request("GET", "/bff/user")).json()

        assert user["expires_at"] <= time.time() + 3 and user["idle_expires_at"] <= user["expires_at"]
        # The token serves to its end (no refresh is tried, none could succeed) ...
        assert (await browser.request("GET", "/api/notes/x")).status_code == 200
        assert provider.refreshes == 0
        # ... and then the session is over, as expires_at said.
        await asyncio.sleep(max(0.0, user["expires_at"] + 1.1 - time.time()))
        assert (await browser.request("GET", "/api/notes/x")).status_code == 401
        assert (await browser.request("GET", "/bff/user")).status_code == 401


async def test_a_refresh_with_an_id_token_renews_the_claims(
    rig_env: tuple[Provider, str, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    """A user taken out of a group at the provider loses a rule's route at the next refresh, not the next login."""
    provider, upstream, env = rig_env
    provider.claims = {"alice": {"groups": ["admin"]}}
    provider.refresh_id_token, provider.access_ttl = True, 2
    routes = {"notes": upstream, "admin": {"url": upstream, "require": {"groups": ["admin"]}}}
    async with running(provider, upstream, {**env, "BFF_ROUTES": json.dumps(routes)}) as rig:
        browser = await rig.logged_in()
        assert (await browser.request("GET", "/api/admin/x")).status_code == 200
        provider.claims = {"alice": {"groups": ["staff"]}}  # removed from admin at the provider
        await asyncio.sleep(1.1)  # past half the 2 s token life: the next call refreshes
        assert (await browser.request("GET", "/api/notes/x")).status_code == 200
        assert provider.refreshes == 1
        refused = await browser.request("GET", "/api/admin/x")
        assert refused.status_code == 403 and refused.json()["error"] == "insufficient_claims"
        assert (await browser.request("GET", "/bff/user")).json()["claims"]["groups"] == ["staff"]

        # An ID token about someone else (or not verifiable) is not used: the claims stay, with a WARNING.
        provider.id_token_override = lambda claims: "not-a-jwt"
        provider.claims = {"alice": {"groups": ["admin"]}}
        await asyncio.sleep(1.1)
        with caplog.at_level(logging.WARNING, "bff.auth_client"):
            assert (await browser.request("GET", "/api/notes/x")).status_code == 200
        assert provider.refreshes == 2
        assert (await browser.request("GET", "/bff/user")).json()["claims"]["groups"] == ["staff"]
        assert "the ID token of a refresh was not used" in caplog.text
