"""/bff/auth (DESIGN §8) in-process: the original request's route, method and CSRF headers decide; only trusted
proxies are believed; 200 answers are empty and carry the token; refusals are JSON and never carry one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from bff.forward_auth import TrustedProxies, api_route
from bff.settings import Settings, SettingsError
from tests.bff.conftest import PUBLIC_URL, Rig, running
from tests.bff.doubles import Browser, Provider

pytestmark = pytest.mark.anyio

# The in-process client connects as 127.0.0.1 (httpx.ASGITransport): here it plays the proxy that asks /bff/auth,
# which must be listed — no peer is trusted by default (forward auth is opt-in).
PROXY = "127.0.0.1/32"


@pytest.fixture
def rig_env(rig_env: tuple[Provider, str, dict[str, str]]) -> tuple[Provider, str, dict[str, str]]:
    provider, upstream, env = rig_env
    return provider, upstream, {**env, "BFF_TRUSTED_PROXIES": PROXY}


async def ask(browser: Browser, uri: str, method: str = "GET", **headers: str) -> httpx.Response:
    """What nginx's auth_request sends: the browser's headers plus the original URI and method."""
    return await browser.request(
        "GET", "/bff/auth", csrf=False, headers={"X-Original-URI": uri, "X-Original-Method": method, **headers}
    )


def untrusted(rig: Rig, address: str = "203.0.113.9") -> Browser:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=rig.app, client=(address, 4711)), base_url=PUBLIC_URL)
    return Browser(client)


async def test_a_session_gets_an_empty_200_with_the_token_and_sub(rig: Rig) -> None:
    browser = await rig.logged_in()
    answer = await ask(browser, "/api/notes/me?x=1", **{"X-CSRF": "1"})
    assert answer.status_code == 200, answer.text
    assert answer.content == b"" and answer.headers["content-length"] == "0"
    token = answer.headers["authorization"].removeprefix("Bearer ")
    assert token in rig.provider.access  # a token the provider issued, good at the upstream
    assert answer.headers["x-auth-request-sub"] == "sub-alice"
    assert answer.headers["cache-control"] == "no-store"
    # The same token reaches the upstream through the BFF's own proxy: forward auth hands out what it would send.
    through = await browser.request("GET", "/api/notes/me")
    assert through.status_code == 200


async def test_forward_auth_costs_one_redis_command(rig: Rig) -> None:
    browser = await rig.logged_in()
    client = aioredis.Redis.from_url(rig.settings.redis_url)
    try:
        before = await client.info("commandstats")
        for _ in range(5):
            assert (await ask(browser, "/api/notes/me", **{"X-CSRF": "1"})).status_code == 200
        after = await client.info("commandstats")
    finally:
        await client.aclose()
    calls = {k: after[k]["calls"] - before.get(k, {"calls": 0})["calls"] for k in after}
    calls = {k: v for k, v in calls.items() if v and k != "cmdstat_info"}
    assert calls == {"cmdstat_getex": 5}, calls


async def test_traefik_and_envoy_forms(rig: Rig) -> None:
    browser = await rig.logged_in()
    traefik = await browser.request(
        "GET",
        "/bff/auth",
        csrf=False,
        headers={"X-Forwarded-Uri": "/api/notes/x", "X-Forwarded-Method": "POST", "X-CSRF": "1"},
    )
    assert traefik.status_code == 200 and traefik.headers["authorization"].startswith("Bearer ")
    # Envoy ext_authz sends the original method and path under its path_prefix, with allowed headers copied.
    envoy = await browser.request("DELETE", "/bff/auth/api/notes/x?y=1")
    assert envoy.status_code == 200 and envoy.content == b""
    envoy_no_csrf = await browser.request("DELETE", "/bff/auth/api/notes/x", csrf=False)
    assert envoy_no_csrf.status_code == 403 and envoy_no_csrf.json()["error"] == "csrf"


async def test_without_a_session_401_json_never_a_redirect(rig: Rig) -> None:
    answer = await ask(rig.browser(), "/api/notes/me", **{"X-CSRF": "1"})
    assert answer.status_code == 401 and answer.json()["error"] == "login_required"
    assert "location" not in answer.headers and "authorization" not in answer.headers
    forged = await ask(rig.browser(), "/api/notes/me", **{"X-CSRF": "1", "Cookie": "__Host-session=" + "A" * 43})
    assert forged.status_code == 401


async def test_csrf_is_judged_on_the_original_request(rig: Rig) -> None:
    browser = await rig.logged_in()
    no_header = await ask(browser, "/api/notes/me")
    assert no_header.status_code == 403 and no_header.json()["error"] == "csrf"
    foreign = await ask(browser, "/api/notes/x", "POST", **{"X-CSRF": "1", "Origin": "https://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["error"] == "csrf"
    # the auth request itself is a GET, but the original was a POST: the foreign Origin still counts
    own = await ask(browser, "/api/notes/x", "POST", **{"X-CSRF": "1", "Origin": PUBLIC_URL})
    assert own.status_code == 200
    preflight = await ask(
        browser, "/api/notes/x", "OPTIONS", Origin=PUBLIC_URL, **{"Access-Control-Request-Method": "PUT"}
    )
    assert preflight.status_code == 403
    for refused in (no_header, foreign, preflight):
        assert "authorization" not in refused.headers and "eyJ" not in refused.text


@pytest.fixture
async def policy_rig(rig_env: tuple[Provider, str, dict[str, str]]) -> AsyncIterator[Rig]:
    """Routes of every kind (DESIGN §7), all to the echo upstream."""
    provider, upstream, env = rig_env
    routes = {
        "notes": upstream,
        "chat": {"url": upstream, "websocket": True},
        "ro": {"url": upstream, "methods": ["GET", "HEAD"]},
        "getonly": {"url": upstream, "methods": ["GET"]},
        "public": {"url": upstream, "token": "none"},
        "maybe": {"url": upstream, "token": "optional"},
    }
    async with running(provider, upstream, {**env, "BFF_ROUTES": json.dumps(routes)}) as rig:
        yield rig


async def test_the_route_policy_applies(policy_rig: Rig) -> None:
    anonymous = policy_rig.browser()
    csrf = {"X-CSRF": "1"}
    for route in ("public", "maybe"):  # no session needed; nothing to carry without one
        answer = await ask(anonymous, f"/api/{route}/x", **csrf)
        assert answer.status_code == 200 and answer.content == b"", route
        assert "authorization" not in answer.headers and "x-auth-request-sub" not in answer.headers
    assert (await ask(anonymous, "/api/public/x")).status_code == 403  # X-CSRF still required on every /api/*
    browser = await policy_rig.logged_in()
    assert (await ask(browser, "/api/public/x", **csrf)).headers.get("authorization") is None  # never a token
    assert (await ask(browser, "/api/maybe/x", **csrf)).headers["authorization"].startswith("Bearer ")
    refused = await ask(browser, "/api/ro/x", "DELETE", **csrf)
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    assert refused.json()["error"] == "method_not_allowed" and "authorization" not in refused.headers
    assert (await ask(browser, "/api/ro/x", "GET", **csrf)).status_code == 200


async def test_head_is_allowed_wherever_get_is(policy_rig: Rig) -> None:
    """Issue #18 item 8a: HEAD on a GET-only route was 405 (RFC 9110 §9.3.2: HEAD is GET without the body)."""
    browser = await policy_rig.logged_in()
    asked = await ask(browser, "/api/getonly/x", "HEAD", **{"X-CSRF": "1"})
    assert asked.status_code == 200 and asked.headers["authorization"].startswith("Bearer ")
    proxied = await browser.request("HEAD", "/api/getonly/x")
    assert proxied.status_code == 200 and proxied.content == b"" and int(proxied.headers["content-length"]) > 0
    refused = await browser.request("POST", "/api/getonly/x")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    for path in ("/bff/user", "/healthz"):  # the BFF's own GET endpoints (the frontend's: tests/bff/test_frontend.py)
        assert (await browser.request("HEAD", path)).status_code == 200, path


async def test_websocket_handshake_needs_our_origin_instead_of_x_csrf(policy_rig: Rig) -> None:
    browser = await policy_rig.logged_in()
    ws = {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13", "Upgrade": "websocket"}
    ours = await ask(browser, "/api/chat/ws", Origin=PUBLIC_URL, **ws)
    assert ours.status_code == 200 and ours.headers["authorization"].startswith("Bearer ")
    for origin in ("https://evil.example", "null"):
        foreign = await ask(browser, "/api/chat/ws", Origin=origin, **ws)
        assert foreign.status_code == 403 and "authorization" not in foreign.headers
    assert (await ask(browser, "/api/chat/ws", **ws)).status_code == 403  # no Origin
    # a route without websocket: true takes none, as the BFF's own proxy (the edge would make it a tunnel)
    other = await ask(browser, "/api/notes/ws", Origin=PUBLIC_URL, **ws, **{"X-CSRF": "1"})
    assert other.status_code == 404 and "authorization" not in other.headers
    assert (await anonymous_handshake(policy_rig, ws)).status_code == 401


async def test_a_websocket_key_without_an_upgrade_is_no_handshake(policy_rig: Rig) -> None:
    """Issue #18 item 7: any GET carrying Sec-WebSocket-Key skipped the X-CSRF check, Upgrade or not. Only a real
    handshake (Upgrade: websocket) is judged by its Origin instead."""
    browser = await policy_rig.logged_in()
    key = {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13", "Origin": PUBLIC_URL}
    for extra in ({}, {"Upgrade": ""}):
        refused = await ask(browser, "/api/chat/ws", **key, **extra)
        assert refused.status_code == 403 and refused.json()["error"] == "csrf", extra
        assert "authorization" not in refused.headers
    assert (await ask(browser, "/api/chat/ws", **key, **{"X-CSRF": "1"})).status_code == 200  # a plain GET, guarded
    assert (await ask(browser, "/api/chat/ws", **key, Upgrade="WebSocket")).status_code == 200  # token: any case


async def test_an_upgrade_is_a_websocket_on_a_route_that_takes_them_or_refused(policy_rig: Rig) -> None:
    """Found attacking the edges: /bff/auth approved a GET carrying Upgrade: h2c (or a WebSocket handshake on a route
    without websocket: true); nginx and Caddy then passed the upgrade on with the token, and an upstream answering 101
    made the connection a raw tunnel that no method rule, header rule or logout reached again. Any upgrade but a
    WebSocket on a route that takes them is refused, with X-CSRF or without; a list of protocols is no WebSocket."""
    browser = await policy_rig.logged_in()
    csrf = {"X-CSRF": "1", "Origin": PUBLIC_URL, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    for route in ("notes", "chat", "getonly", "public"):
        for protocol in ("h2c", "h2c, websocket", "websocket, h2c", "TLS/1.0", "websocket/13"):
            refused = await ask(browser, f"/api/{route}/x", **csrf, Upgrade=protocol)
            assert refused.status_code == 400, (route, protocol, refused.text)
            assert refused.json()["error"] == "invalid_request" and "authorization" not in refused.headers
    for route in ("notes", "getonly", "public", "maybe"):  # a WebSocket on a route that takes none
        refused = await ask(browser, f"/api/{route}/x", **csrf, Upgrade="websocket")
        assert refused.status_code == 404 and "authorization" not in refused.headers, route
    refused = await ask(browser, "/api/chat/x", "POST", **csrf, Upgrade="websocket")  # a WebSocket is a GET
    assert refused.status_code == 400 and "authorization" not in refused.headers
    allowed = await ask(browser, "/api/chat/x", **csrf, Upgrade=" WebSocket ")
    assert allowed.status_code == 200 and allowed.headers["authorization"].startswith("Bearer ")


async def anonymous_handshake(rig: Rig, ws: dict[str, str]) -> httpx.Response:
    return await ask(rig.browser(), "/api/chat/ws", Origin=PUBLIC_URL, **ws)


async def test_unknown_route_404_and_non_api_404(rig: Rig) -> None:
    browser = await rig.logged_in()
    for uri in ("/api/nope/x", "/bff/user", "/", "/api/"):
        answer = await ask(browser, uri, **{"X-CSRF": "1"})
        assert answer.status_code == 404, uri
        assert "authorization" not in answer.headers
    assert (await browser.request("GET", "/bff/authz", csrf=False)).status_code == 404


@pytest.mark.parametrize(
    "uri",
    [
        "/api/notes/../admin",
        "/api/notes/%2e%2e/admin",
        "/api/notes/%2E./x",
        "/api/notes/a/./b",
        "/api/notes\\..\\x",
        "/api/notes/a\\b",
        "/api/notes%2f..%2fother/x",
        "/api/%2e%2e/x",
        "/api/notes/..;/x",
        "/api/notes/a%5Cb",
        "/api/notes/a%00b",
        "/api/notes/%ff",
        "/api/notes/%252e%252e/x",
    ],
)
async def test_dot_segments_and_backslashes_are_refused(rig: Rig, uri: str) -> None:
    browser = await rig.logged_in()
    answer = await ask(browser, uri, **{"X-CSRF": "1"})
    assert answer.status_code in (400, 404), answer.text
    assert "authorization" not in answer.headers


async def test_conflicting_answers_to_which_request_are_400(rig: Rig) -> None:
    browser = await rig.logged_in()
    # e.g. nginx sets X-Original-URI, and the browser slipped its own X-Forwarded-Uri past a careless configuration
    for extra in (
        {"X-Forwarded-Uri": "/api/other/x"},
        {"X-Forwarded-Method": "DELETE"},
    ):
        answer = await ask(browser, "/api/notes/me", **{"X-CSRF": "1", **extra})
        assert answer.status_code == 400 and "authorization" not in answer.headers
    agreeing = await ask(browser, "/api/notes/me", **{"X-CSRF": "1", "X-Forwarded-Uri": "/api/notes/me"})
    assert agreeing.status_code == 200
    both = await browser.request("GET", "/bff/auth/api/notes/me", headers={"X-Original-URI": "/api/notes/me"})
    assert both.status_code == 400


async def test_missing_or_oversized_original_uri_is_400(rig: Rig) -> None:
    browser = await rig.logged_in()
    bare = await browser.request("GET", "/bff/auth")
    assert bare.status_code == 400 and bare.json()["error"] == "invalid_request"
    huge = await ask(browser, "/api/notes/" + "a" * 9000, **{"X-CSRF": "1"})
    assert huge.status_code == 400


async def test_an_untrusted_peer_gets_403_and_no_token_whatever_it_forges(rig: Rig) -> None:
    victim = await rig.logged_in()
    attacker = untrusted(rig)
    attacker.cookies = dict(victim.cookies)  # even with a stolen cookie and every header right
    try:
        for headers in (
            {"X-Original-URI": "/api/notes/me", "X-Original-Method": "GET", "X-CSRF": "1"},
            {"X-Forwarded-Uri": "/api/notes/me", "X-CSRF": "1", "X-Forwarded-For": "127.0.0.1"},
            {},
        ):
            answer = await attacker.request("GET", "/bff/auth", csrf=False, headers=headers)
            assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
            assert "authorization" not in answer.headers and "eyJ" not in answer.text
        envoy_form = await attacker.request("GET", "/bff/auth/api/notes/me")
        assert envoy_form.status_code == 403
        assert attacker.leaked() == []
    finally:
        await attacker.client.aclose()


@pytest.mark.bff_env(BFF_TRUSTED_PROXIES="10.0.0.0/8, 2001:db8::/32")
async def test_trusted_proxies_setting(rig: Rig) -> None:
    browser = await rig.logged_in()
    assert (await ask(browser, "/api/notes/me", **{"X-CSRF": "1"})).status_code == 403  # loopback no longer trusted
    proxy = untrusted(rig, "10.1.2.3")
    proxy.cookies = dict(browser.cookies)
    try:
        assert (await ask(proxy, "/api/notes/me", **{"X-CSRF": "1"})).status_code == 200
    finally:
        await proxy.client.aclose()


def test_trusted_proxies_membership() -> None:
    assert Settings.from_env({"BFF_CLIENT_SECRET": "x" * 16}).trusted_proxies == ()  # opt-in: nobody by default
    env = {"BFF_CLIENT_SECRET": "x" * 16, "BFF_TRUSTED_PROXIES": "127.0.0.0/8, ::1/128"}
    trusted = TrustedProxies(Settings.from_env(env).trusted_proxies)
    assert "127.0.0.1" in trusted and "127.9.9.9" in trusted and "::1" in trusted
    assert "::ffff:127.0.0.1" in trusted  # IPv4 peer on a dual-stack socket
    for peer in ("10.0.0.1", "::2", "localhost", "/run/bff.sock", "", None, "127.0.0.1.evil"):
        assert peer not in trusted
    for bad in ("10.0.0.1/8", "not-a-cidr", "10.0.0.0/33"):
        with pytest.raises(SettingsError, match="BFF_TRUSTED_PROXIES"):
            Settings.from_env({"BFF_CLIENT_SECRET": "x" * 16, "BFF_TRUSTED_PROXIES": bad})


def test_api_route_reads_the_decoded_route_and_drops_the_query() -> None:
    assert api_route("/api/notes/me?a=b") == ("notes", "/api/notes/me")
    assert api_route("/api/n%6Ftes/x") == ("notes", "/api/n%6Ftes/x")
    assert api_route("/api/notes") == ("notes", "/api/notes")


async def test_a_due_token_is_refreshed_as_for_the_proxy(rig: Rig) -> None:
    rig.provider.access_ttl = 2  # shorter than the skew: refreshed at half-life
    browser = await rig.logged_in()
    first = await ask(browser, "/api/notes/me", **{"X-CSRF": "1"})
    await asyncio.sleep(1.1)
    second = await ask(browser, "/api/notes/me", **{"X-CSRF": "1"})
    assert first.status_code == second.status_code == 200
    assert first.headers["authorization"] != second.headers["authorization"]
    assert rig.provider.refreshes == 1


async def test_a_sub_a_header_cannot_carry_is_refused_at_the_login_and_any_other_goes_as_utf8(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Found attacking the raw /bff/auth route: a provider's sub holding CR or LF split the answer (the raw route fell
    back to the app, which failed it again: two spans, metrics counted twice, no answer), and one beyond latin-1 went
    out with "?" for each character, so two users' subs could read the same to an upstream. Now such a sub fails the
    login (OIDC Core §2: an identifier of up to 255 characters), said to the user and in the log, and any other sub
    goes as its UTF-8 bytes."""
    for bad in ("eve\r\nx-auth-request-user: admin", "x" * 300):
        rig.provider.user = bad
        browser = rig.browser()
        refused = await browser.login(rig.provider_client)
        assert refused.status_code == 400 and "login_failed" in refused.text, refused.text
        assert (await ask(browser, "/api/notes/me", **{"X-CSRF": "1"})).status_code == 401  # no session was made
    assert "names a sub with control characters" in caplog.text
    rig.provider.user = "用户"
    wide = await ask(await rig.logged_in(), "/api/notes/me", **{"X-CSRF": "1"})
    assert dict(wide.headers.raw)[b"x-auth-request-sub"] == "sub-用户".encode()


async def test_an_access_token_no_authorization_header_can_carry_is_refused_at_the_login(rig: Rig) -> None:
    """A provider's access token with a space, CR, LF or a character beyond ASCII cannot go out in an Authorization
    header (RFC 6750 §2.1): the token response is unusable, said to the user and in the log, never stored to split
    a forward-auth answer or an upstream request later."""
    pair = rig.provider._pair

    def broken(family: str) -> dict[str, Any]:
        answer = pair(family)
        answer["access_token"] += "\r\nX-Evil: 1"
        return answer

    rig.provider._pair = broken  # type: ignore[method-assign]
    browser = rig.browser()
    answer = await browser.login(rig.provider_client)
    assert answer.status_code == 503 and "Authorization header cannot carry" in answer.text
    assert (await browser.request("GET", "/api/notes/me")).status_code == 401  # no session was made
