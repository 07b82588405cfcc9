"""Login, /bff/user, the proxy and logout against the provider double, with the browser's view checked."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import redis

from tests.bff.conftest import Rig, bff_env, running
from tests.bff.doubles import Provider
from tests.conftest import free_port

pytestmark = pytest.mark.anyio

COOKIE_RE = re.compile(r"^__Host-session=([A-Za-z0-9_-]{43}); Path=/; Secure; HttpOnly; SameSite=Lax$")


async def test_login_user_api_logout(rig: Rig) -> None:
    browser = rig.browser()
    start = await browser.request("GET", "/bff/login", params={"return_to": "/notes?x=1"}, csrf=False)
    assert start.status_code == 302
    assert start.headers["location"].startswith(rig.provider.issuer + "/authorize?")
    query = parse_qs(urlsplit(start.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["response_type"] == ["code"] and query["client_id"] == ["bff"]
    assert query["redirect_uri"] == ["https://bff.test/bff/callback"] and "openid" in query["scope"][0]
    assert len(query["state"][0]) >= 43 and len(query["nonce"][0]) >= 43 and query["state"] != query["nonce"]
    login_cookie = start.headers["set-cookie"]
    tag = query["state"][0][:12]
    assert re.fullmatch(
        rf"__Host-bff-login-{tag}=[A-Za-z0-9_-]{{200,600}}; Path=/; Max-Age=600; Secure; HttpOnly; SameSite=Lax",
        login_cookie,
    ), login_cookie
    at_provider = await rig.provider_client.get(start.headers["location"])
    callback = await browser.request("GET", at_provider.headers["location"].split("bff.test", 1)[1], csrf=False)
    assert callback.status_code == 302
    assert callback.headers["location"] == "/notes?x=1"
    assert callback.headers["cache-control"] == "no-store"
    set_cookies = callback.headers.get_list("set-cookie")
    assert COOKIE_RE.fullmatch(set_cookies[0]), set_cookies[0]
    assert "Domain" not in set_cookies[0]
    assert set_cookies[1].startswith(f"__Host-bff-login-{tag}=; Path=/; Max-Age=0")

    user = await browser.request("GET", "/bff/user")
    assert user.status_code == 200 and user.headers["cache-control"] == "no-store"
    body = user.json()
    assert body["sub"] == "sub-alice" and body["username"] == "alice" and body["scope"] == "openid notes:read"
    assert body["idle_expires_at"] <= body["expires_at"]
    assert set(body) == {
        *("sub", "username", "scope", "claims", "expires_at", "idle_expires_at", "logout_url"),
        *("acr", "amr", "auth_time"),  # DESIGN §14: the login's level
    }
    assert body["claims"] == {"preferred_username": "alice"}  # BFF_USER_CLAIMS: only what the provider gave

    api = await browser.request("GET", "/api/notes/me?a=b")
    assert api.status_code == 200, api.text
    assert api.json()["path"] == "/me" and api.json()["query"] == "a=b"

    logout = await browser.request("POST", "/bff/logout")
    assert logout.status_code == 200
    assert logout.headers["cache-control"] == "no-store"
    assert logout.headers["clear-site-data"] == '"cookies"'
    assert logout.headers["set-cookie"].startswith("__Host-session=; Path=/; Max-Age=0")
    assert rig.provider.revoked, "the refresh token was not revoked at the auth server"

    after = await browser.request("GET", "/bff/user")
    assert after.status_code == 401 and after.json()["error"] == "login_required"
    # The one token a browser ever sees: the ID token, as id_token_hint of the provider's logout (RP-Initiated
    # Logout §2); never an access or refresh token.
    assert browser.leaked() == []
    hint = parse_qs(urlsplit(logout.json()["logout_url"]).query)["id_token_hint"][0]
    assert jwt.decode(hint, options={"verify_signature": False})["aud"] == "bff"
    assert not any(token in logout.text for token in rig.provider.access)


async def test_old_cookie_dies_at_logout_even_if_replayed(rig: Rig) -> None:
    browser = await rig.logged_in()
    stolen = dict(browser.cookies)
    await browser.request("POST", "/bff/logout")
    thief = rig.browser()
    thief.cookies = stolen
    assert (await thief.request("GET", "/api/notes/me")).status_code == 401


async def test_redis_holds_no_token_or_cookie_in_clear(rig: Rig) -> None:
    browser = await rig.logged_in()
    await browser.request("GET", "/api/notes/me")
    secret = browser.cookies["__Host-session"]
    r = redis.Redis.from_url(rig.settings.redis_url)
    keys = list(r.scan_iter("*"))
    assert keys and all(k.startswith(b"bff:") for k in keys)
    for key in keys:
        blob = r.dump(key) or b""
        assert b"eyJ" not in blob and secret.encode() not in blob and secret.encode() not in key
    r.close()
    tokens = list(rig.provider.access) + list(rig.provider.refresh_index)
    assert tokens


async def test_api_without_session_is_401_never_302(rig: Rig) -> None:
    browser = rig.browser()
    for path in ("/api/notes/me", "/bff/user"):
        response = await browser.request("GET", path)
        assert response.status_code == 401
        assert response.json() == {"error": "login_required", "error_description": "Log in first."}


@pytest.mark.bff_env(BFF_FRONTEND="demo")
async def test_index_page_headers(rig: Rig) -> None:
    browser = rig.browser()
    page = await browser.request("GET", "/", csrf=False)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-cache"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert (await browser.request("GET", "/static/app.js", csrf=False)).status_code == 200


async def test_health_ready_metrics(rig: Rig) -> None:
    browser = rig.browser()
    assert (await browser.request("GET", "/healthz", csrf=False)).status_code == 200
    ready = await browser.request("GET", "/readyz", csrf=False)
    assert ready.status_code == 200, ready.text
    await (await rig.logged_in()).request("GET", "/api/notes/me")
    text = (await browser.request("GET", "/metrics", csrf=False)).text
    assert 'bff_requests_total{route="/api/{route}/{path}",status="200"} 1.0' in text
    assert 'bff_sessions_total{event="created"} 1.0' in text


async def test_back_channel_through_an_internal_url(rig_env: Any) -> None:
    """BFF_AUTH_INTERNAL_URL: discovery, token and revocation calls go to the internal address; the browser is sent
    to the public issuer's authorization endpoint; the issuer checks use the public name."""
    provider, upstream_url, env = rig_env
    internal = provider.issuer
    provider.issuer = "https://auth.public.example"  # not resolvable: only the browser would go there
    async with running(
        provider, upstream_url, {**env, "BFF_ISSUER": provider.issuer, "BFF_AUTH_INTERNAL_URL": internal}
    ) as rig:
        browser = rig.browser()
        start = await browser.request("GET", "/bff/login", csrf=False)
        location = start.headers["location"]
        assert location.startswith("https://auth.public.example/authorize?")
        at_provider = await rig.provider_client.get(location.replace(provider.issuer, internal))
        callback = await browser.request("GET", at_provider.headers["location"].split("bff.test", 1)[1], csrf=False)
        assert callback.status_code == 302, callback.text
        assert (await browser.request("GET", "/api/notes/me")).status_code == 200
        assert (await browser.request("POST", "/bff/logout")).status_code == 200
        assert provider.revoked


async def test_logout_works_while_the_auth_server_is_down(rig: Rig) -> None:
    browser = await rig.logged_in()
    stolen = dict(browser.cookies)
    rig.provider.down = True
    logout = await browser.request("POST", "/bff/logout")
    assert logout.status_code == 200 and "Max-Age=0" in logout.headers["set-cookie"]
    assert rig.provider.revoked == []  # it could not be told; the BFF dropped its only copy anyway
    thief = rig.browser()
    thief.cookies = stolen
    assert (await thief.request("GET", "/bff/user")).status_code == 401


@pytest.mark.bff_env(BFF_COOKIE_SECURE="false")
async def test_plain_http_development_cookies(rig: Rig) -> None:
    browser = rig.browser()
    start = await browser.request("GET", "/bff/login", csrf=False)
    assert re.fullmatch(
        r"bff-login-[A-Za-z0-9_-]{12}=[A-Za-z0-9_-]+; Path=/; Max-Age=600; HttpOnly; SameSite=Lax",
        start.headers["set-cookie"],
    )
    at_provider = await rig.provider_client.get(start.headers["location"])
    callback = await browser.request("GET", at_provider.headers["location"].split("bff.test", 1)[1], csrf=False)
    assert re.fullmatch(
        r"session=[A-Za-z0-9_-]{43}; Path=/; HttpOnly; SameSite=Lax", callback.headers.get_list("set-cookie")[0]
    )
    assert (await browser.request("GET", "/bff/user")).status_code == 200


async def test_other_providers_issuer_slash_and_client_secret_post(redis_url: str, server_factory: Any) -> None:
    """A provider whose issuer ends in "/" and that takes client_secret_post only (as some hosted ones do)."""
    port = free_port()
    provider = Provider(issuer=f"http://127.0.0.1:{port}/", post_only=True)
    server_factory(provider.app(), port)
    upstream = server_factory(provider.upstream())
    async with running(provider, upstream.url, bff_env(provider.issuer, upstream.url, redis_url)) as rig:
        browser = await rig.logged_in()
        assert (await browser.request("GET", "/bff/user")).json()["username"] == "alice"
        assert (await browser.request("POST", "/bff/logout")).status_code == 200
        assert provider.revoked
