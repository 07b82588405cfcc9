"""Every security rule, tried: CSRF, open redirects, state, fixation, forged cookies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bff.sessions import new_secret
from tests.bff.conftest import Rig
from tests.bff.doubles import Provider

pytestmark = pytest.mark.anyio

CSRF = {"error": "csrf", "error_description": "Missing X-CSRF header, foreign Origin or CORS preflight."}


async def test_csrf_header_required(rig: Rig) -> None:
    browser = await rig.logged_in()
    for method, path in (
        ("GET", "/api/notes/me"),
        ("POST", "/api/notes/notes"),
        ("GET", "/bff/user"),
        ("POST", "/bff/logout"),
        ("DELETE", "/api/notes/notes/1"),
    ):
        response = await browser.request(method, path, csrf=False)
        assert response.status_code == 403 and response.json() == CSRF, (method, path)
        wrong = await browser.request(method, path, headers={"X-CSRF": "0"})
        assert wrong.status_code == 403, (method, path)
    assert (await browser.request("GET", "/bff/user")).status_code == 200  # logout above was refused


async def test_foreign_origin_refused_own_origin_allowed(rig: Rig) -> None:
    browser = await rig.logged_in()
    for origin in ("https://evil.example", "null", "https://bff.test.evil.example", "http://bff.test"):
        response = await browser.request("POST", "/api/notes/notes", headers={"Origin": origin}, json={})
        assert response.status_code == 403 and response.json()["error"] == "csrf", origin
    own = await browser.request("POST", "/api/notes/notes", headers={"Origin": "https://bff.test"}, json={})
    assert own.status_code == 200


async def test_cors_preflight_refused(rig: Rig) -> None:
    browser = rig.browser()
    response = await browser.request(
        "OPTIONS",
        "/api/notes/me",
        csrf=False,
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-csrf",
        },
    )
    assert response.status_code == 403 and response.json()["error"] == "csrf"
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "return_to",
    [
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "evil",
        "javascript:alert(1)",
        "/\tevil",
        "/a\r\nSet-Cookie: x=1",
        "/" + "a" * 3000,
    ],
)
async def test_open_redirects_refused(rig: Rig, return_to: str) -> None:
    response = await rig.browser().request("GET", "/bff/login", params={"return_to": return_to}, csrf=False)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert "location" not in response.headers


async def test_bad_state_refused(rig: Rig) -> None:
    browser = rig.browser()
    start = await browser.request("GET", "/bff/login", csrf=False)
    at_provider = await rig.provider_client.get(start.headers["location"])
    callback = at_provider.headers["location"].split("bff.test", 1)[1]
    forged = callback.split("state=")[0] + "state=" + "A" * 43
    for path in (forged, forged.replace("A" * 43, "short"), callback.split("&state=")[0]):
        response = await browser.request("GET", path, csrf=False)
        assert response.status_code == 400 and response.json()["error"] == "invalid_state", path
    # another browser (no login cookie of this one) cannot finish this login
    other = rig.browser()
    assert (await other.request("GET", callback, csrf=False)).status_code == 400
    # the rightful browser still can, once
    assert (await browser.request("GET", callback, csrf=False)).status_code == 302
    again = await browser.request("GET", callback, csrf=False)
    assert again.status_code == 400 and again.json()["error"] == "invalid_state"


async def test_provider_error_is_a_clean_400(rig: Rig) -> None:
    browser = rig.browser()
    start = await browser.request("GET", "/bff/login", csrf=False)
    state = start.headers["location"].split("state=")[1].split("&")[0]
    response = await browser.request("GET", f"/bff/callback?error=access_denied&state={state}", csrf=False)
    assert response.status_code == 400 and response.json()["error"] == "login_failed"


async def test_session_fixation(rig: Rig) -> None:
    # The attacker plants a cookie value (one the BFF never made, and then one of its own session).
    victim = rig.browser()
    planted = new_secret()
    victim.cookies["__Host-session"] = planted
    await victim.login(rig.provider_client)
    assert victim.cookies["__Host-session"] != planted
    attacker = await rig.logged_in()
    attacker_cookie = attacker.cookies["__Host-session"]
    victim2 = rig.browser()
    victim2.cookies["__Host-session"] = attacker_cookie
    await victim2.login(rig.provider_client)
    assert victim2.cookies["__Host-session"] != attacker_cookie
    # the planted session is dead: the attacker does not ride the victim's login
    assert (await attacker.request("GET", "/bff/user")).status_code == 401


@pytest.mark.parametrize(
    "cookie",
    [
        "garbage",
        "A" * 43,
        new_secret(),
        "A" * 8000,
        "%00%ff",
        '"quoted"',
        "eyJhbGciOiJub25lIn0.e30.",
    ],
)
async def test_forged_cookies_are_401_never_500(rig: Rig, cookie: str) -> None:
    browser = rig.browser()
    for method, path in (("GET", "/bff/user"), ("GET", "/api/notes/me"), ("POST", "/api/notes/notes")):
        browser.cookies["__Host-session"] = cookie
        response = await browser.request(method, path)
        assert response.status_code == 401, (cookie[:20], path, response.text)
        assert response.json()["error"] == "login_required"
        assert "__Host-session" not in browser.cookies  # the bad cookie is cleared
    logout = await rig.browser().request("POST", "/bff/logout", headers={"Cookie": f"__Host-session={cookie}"})
    assert logout.status_code == 200


def _forge(kind: str) -> Callable[[dict[str, Any]], str]:
    def make(claims: dict[str, Any]) -> str:
        if kind == "none":
            return jwt.encode(claims, None, algorithm="none")
        if kind == "hmac":
            return jwt.encode(
                claims, "a-shared-secret-of-at-least-32-bytes!!", algorithm="HS256", headers={"kid": "k1"}
            )
        if kind == "other-key":
            other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})
        if kind == "unknown-kid":
            other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k9"})
        if kind == "wrong-nonce":
            return Provider.id_token(Provider(issuer=""), {**claims, "nonce": "not-the-login-nonce"})
        if kind == "wrong-audience":
            return Provider.id_token(Provider(issuer=""), {**claims, "aud": "someone-else"})
        return Provider.id_token(Provider(issuer=""), {**claims, "iss": "https://evil.example"})

    return make


@pytest.mark.parametrize(
    "kind", ["none", "hmac", "other-key", "unknown-kid", "wrong-nonce", "wrong-audience", "wrong-issuer"]
)
async def test_bad_id_tokens_fail_the_login(rig: Rig, kind: str) -> None:
    rig.provider.id_token_override = _forge(kind)
    browser = rig.browser()
    response = await browser.login(rig.provider_client)
    assert response.status_code == 400 and response.json()["error"] == "login_failed", response.text
    assert "__Host-session" not in browser.cookies
