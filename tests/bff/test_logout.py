"""Logout in both directions (DESIGN §6): /bff/logout with its sid guard, and /bff/backchannel's checks, each
refusal on its own, in front of the provider double on real sockets and a real Redis."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from servicekit.durable import Durable, WaitPolicy
from tests.bff.conftest import PUBLIC_URL, Rig, running
from tests.bff.doubles import Browser, Provider

pytestmark = pytest.mark.anyio

EVENT = "http://schemas.openid.net/event/backchannel-logout"
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def logout_url(browser: Browser) -> str:
    user = await browser.request("GET", "/bff/user")
    assert user.status_code == 200, user.text
    return str(user.json()["logout_url"])


async def alive(browser: Browser) -> bool:
    return (await browser.request("GET", "/bff/user")).status_code == 200


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def backchannel(rig: Rig, token: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("data", {"logout_token": token})
    return await rig.browser().request("POST", "/bff/backchannel", csrf=False, **kwargs)


def provider_sids(rig: Rig) -> list[str]:
    """Every login (family) the provider double started, oldest first."""
    return list(rig.provider.families)


# --- the user's logout ------------------------------------------------------------------------------------------


async def test_user_shows_a_logout_url_bound_to_the_session(rig: Rig) -> None:
    one, two = await rig.logged_in(), await rig.logged_in()
    url_one, url_two = await logout_url(one), await logout_url(two)
    assert url_one.startswith("/bff/logout?sid=") and url_one != url_two
    assert url_one == await logout_url(one)  # stable for the session


@pytest.mark.parametrize("sid", [None, "", "wrong", "other-session"])
async def test_get_logout_without_the_right_sid_is_400_and_the_session_stays(rig: Rig, sid: str | None) -> None:
    browser = await rig.logged_in()
    if sid == "other-session":
        sid = query(await logout_url(await rig.logged_in()))["sid"]
    params = {} if sid is None else {"sid": sid}
    response = await browser.request("GET", "/bff/logout", params=params, csrf=False)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert "set-cookie" not in response.headers
    assert await alive(browser) and not rig.provider.revoked


async def test_get_logout_ends_the_session_and_goes_to_the_provider(rig: Rig) -> None:
    browser = await rig.logged_in()
    url = await logout_url(browser)
    response = await browser.request("GET", url, csrf=False)  # a page navigation: no X-CSRF header
    assert response.status_code == 302 and response.headers["cache-control"] == "no-store"
    location = response.headers["location"]
    assert location.startswith(rig.provider.issuer + "/logout?")
    params = query(location)
    assert params["client_id"] == "bff" and params["post_logout_redirect_uri"] == PUBLIC_URL + "/"
    assert len(params["state"]) >= 32
    hint = jwt.decode(params["id_token_hint"], options={"verify_signature": False})
    assert hint["aud"] == "bff" and hint["sid"] in rig.provider.revoked  # the very login that was revoked
    assert response.headers["set-cookie"].startswith("__Host-session=; Path=/; Max-Age=0")
    assert not await alive(browser)


async def test_post_logout_answers_the_provider_url(rig: Rig) -> None:
    browser = await rig.logged_in()
    refused = await browser.request("POST", "/bff/logout", csrf=False)
    assert refused.status_code == 403 and await alive(browser)
    response = await browser.request("POST", "/bff/logout")
    assert response.status_code == 200
    assert response.json()["logout_url"].startswith(rig.provider.issuer + "/logout?id_token_hint=")
    assert not await alive(browser)


async def test_a_provider_without_end_session_sends_the_browser_to_the_post_logout_url(
    rig_env: tuple[Provider, str, dict[str, str]],
) -> None:
    provider, upstream_url, env = rig_env
    provider.end_session = False
    async with running(provider, upstream_url, {**env, "BFF_POST_LOGOUT_URL": "https://app.test/bye"}) as rig:
        browser = await rig.logged_in()
        response = await browser.request("GET", await logout_url(browser), csrf=False)
        assert response.status_code == 302 and response.headers["location"] == "https://app.test/bye"
        assert not await alive(browser)


async def test_logout_without_a_session_still_reaches_the_provider_without_a_hint(rig: Rig) -> None:
    # The session ended on the back channel meanwhile: there is no ID token left to send.
    response = await rig.browser().request("GET", "/bff/logout", params={"sid": "stale"}, csrf=False)
    assert response.status_code == 302
    params = query(response.headers["location"])
    assert "id_token_hint" not in params and params["client_id"] == "bff"


# --- the provider's logout, on the back channel ------------------------------------------------------------------


async def test_a_valid_logout_token_ends_the_session_of_its_sid(rig: Rig) -> None:
    ended, kept = await rig.logged_in(), await rig.logged_in()
    sid = provider_sids(rig)[0]
    response = await backchannel(rig, rig.provider.logout_token(sid=sid, sub="sub-alice"))
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    assert not await alive(ended)
    assert await alive(kept)  # another login of the same user
    # The user's later logout has no ID token to send: the provider is asked without a hint.
    after = await ended.request("GET", "/bff/logout", params={"sid": "x"}, csrf=False)
    assert after.status_code == 302 and "id_token_hint" not in query(after.headers["location"])


async def test_a_sub_only_logout_token_ends_every_session_of_that_user(rig: Rig) -> None:
    alice_one, alice_two = await rig.logged_in(), await rig.logged_in()
    rig.provider.user = "bob"
    bob = await rig.logged_in()
    response = await backchannel(rig, rig.provider.logout_token(sub="sub-alice"))
    assert response.status_code == 200
    assert not await alive(alice_one) and not await alive(alice_two)
    assert await alive(bob)


async def test_a_logout_token_that_beats_the_login_to_the_bff_still_wins(rig: Rig) -> None:
    # The provider ends a login while the BFF is still completing it (the token arrives before the session is
    # indexed): the login must not leave a session behind.
    rig.provider.next_sid = "sid-ended-early"
    assert (await backchannel(rig, rig.provider.logout_token(sid="sid-ended-early"))).status_code == 200
    browser = rig.browser()
    callback = await browser.login(rig.provider_client)
    assert callback.status_code == 400 and callback.json()["error"] == "login_failed"
    assert "__Host-session" not in browser.cookies and not await alive(browser)
    assert await alive(await rig.logged_in())  # another provider login is not affected


async def test_a_logout_token_with_an_enormous_exp_is_no_500(rig: Rig) -> None:
    browser = await rig.logged_in()
    token = rig.provider.logout_token(sid=provider_sids(rig)[0], exp=10**400)
    refused = await backchannel(rig, token)  # a 400 naming the exp (it cannot be remembered that long), never a 500
    assert refused.status_code == 400 and "longer" in refused.json()["error_description"]
    assert await alive(browser)


async def test_a_logout_token_matching_nothing_is_still_200(rig: Rig) -> None:
    response = await backchannel(rig, rig.provider.logout_token(sid="no-such-login"))
    assert response.status_code == 200


def _valid_claims(rig: Rig, sid: str) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": rig.provider.issuer, "aud": "bff", "iat": now, "exp": now + 60, "jti": f"j-{now}", "sid": sid}
    return {**claims, "events": {EVENT: {}}}


def _none_alg(rig: Rig, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, None, algorithm="none", headers={"typ": "logout+jwt", "kid": "k1"})


def _hs256_with_the_public_key(rig: Rig, claims: dict[str, Any]) -> str:
    # The classic confusion: HMAC keyed with the provider's public key, which anyone can fetch.
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "logout+jwt", "kid": "k1"}).encode())
    body = b64(json.dumps(claims).encode())
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()  # any public key bytes
    from cryptography.hazmat.primitives import serialization

    secret = pem.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


REFUSALS: dict[str, Any] = {
    "signed_by_another_key": lambda rig, sid: rig.provider.logout_token(key=OTHER_KEY, sid=sid),
    "signed_by_an_unknown_key": lambda rig, sid: rig.provider.logout_token(
        key=OTHER_KEY, headers={"kid": "k-other"}, sid=sid
    ),
    "with_a_nonce": lambda rig, sid: rig.provider.logout_token(sid=sid, nonce="n-1"),
    "wrong_aud": lambda rig, sid: rig.provider.logout_token(sid=sid, aud="another-client"),
    "wrong_iss": lambda rig, sid: rig.provider.logout_token(sid=sid, iss="https://evil.test"),
    "no_events": lambda rig, sid: rig.provider.logout_token(sid=sid, events=None),
    "another_event": lambda rig, sid: rig.provider.logout_token(sid=sid, events={"urn:other": {}}),
    "event_not_an_object": lambda rig, sid: rig.provider.logout_token(sid=sid, events={EVENT: "yes"}),
    "neither_sid_nor_sub": lambda rig, sid: rig.provider.logout_token(),
    "expired": lambda rig, sid: rig.provider.logout_token(
        sid=sid, iat=int(time.time()) - 600, exp=int(time.time()) - 300
    ),
    "no_exp": lambda rig, sid: rig.provider.logout_token(sid=sid, exp=None),
    "no_iat": lambda rig, sid: rig.provider.logout_token(sid=sid, iat=None),
    "no_jti": lambda rig, sid: rig.provider.logout_token(sid=sid, jti=None),
    "wrong_typ": lambda rig, sid: rig.provider.logout_token(sid=sid, headers={"typ": "JWT"}),
    "alg_none": lambda rig, sid: _none_alg(rig, _valid_claims(rig, sid)),
    "hs256_with_a_public_key": lambda rig, sid: _hs256_with_the_public_key(rig, _valid_claims(rig, sid)),
    "garbage": lambda rig, sid: "garbage",
    "garbage_with_dots": lambda rig, sid: "eyJ.eyJ.x",
    "encrypted_jwe": lambda rig, sid: "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d",
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_the_back_channel_refuses(rig: Rig, case: str) -> None:
    browser = await rig.logged_in()
    sid = provider_sids(rig)[-1]
    response = await backchannel(rig, REFUSALS[case](rig, sid))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.headers["cache-control"] == "no-store"
    assert await alive(browser)


async def test_the_back_channel_refuses_a_replayed_jti(rig: Rig) -> None:
    first, second = await rig.logged_in(), await rig.logged_in()
    one, two = provider_sids(rig)
    token = rig.provider.logout_token(sid=one, jti="jti-once")
    assert (await backchannel(rig, token)).status_code == 200
    assert not await alive(first)
    replay = rig.provider.logout_token(sid=two, jti="jti-once")  # a new token, but a jti seen before
    response = await backchannel(rig, replay)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert await alive(second)


async def test_a_logout_token_refused_with_503_is_heard_when_the_provider_retries_it(rig: Rig) -> None:
    """Back-Channel Logout §2.8: a provider may retry; the auth server's notifier retries a 5xx with the same token.
    A logout that could not be made durable (503) must not leave the token's jti marked used, or the retry would be
    refused as a replay (400, final) and the session would live on."""
    browser = await rig.logged_in()
    logout = next(r.endpoint.__self__ for r in rig.app.routes if getattr(r, "path", "") == "/bff/backchannel")
    working = logout.index.durable
    token = rig.provider.logout_token(sid=provider_sids(rig)[0])
    logout.index.durable = Durable(working.client, WaitPolicy(1, 50))  # a replica required that is not there
    try:
        assert (await backchannel(rig, token)).status_code == 503
    finally:
        await logout.index.durable.aclose()
        logout.index.durable = working
    assert await alive(browser)
    assert (await backchannel(rig, token)).status_code == 200  # the same token, retried
    assert not await alive(browser)
    assert (await backchannel(rig, token)).status_code == 400  # done once: now it is a replay


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"logout_token": "x"}},
        {"content": b"logout_token=a&logout_token=b", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"data": {"token": "x"}},
        {"content": b"\xff\xfe", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"content": b"logout_token=" + b"a" * 20000, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    ],
    ids=["json", "two_tokens", "no_token", "not_utf8", "too_large"],
)
async def test_the_back_channel_refuses_a_malformed_request(rig: Rig, kwargs: dict[str, Any]) -> None:
    response = await backchannel(rig, "", **kwargs)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert response.headers["cache-control"] == "no-store"


async def test_the_index_is_cluster_safe_and_expires_with_the_sessions(rig: Rig, redis_url: str) -> None:
    import redis.asyncio as aioredis

    await rig.logged_in()
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in await client.keys("bff:{bcl-*}")]
        # the sid set and the user's set (the forms of earlier releases, until BFF_COMPACT_STORE), each its own hash tag
        assert sorted(k.split(":")[1] for k in keys) == ["{bcl-sid", "{bcl-sub"]
        # the user's list of sessions (DESIGN §14): the sub index, in the user set's slot, expiring with the sessions
        (listed,) = [k.decode() for k in await client.keys("bff:{bcl-*}:list")]
        assert listed.startswith("bff:{bcl-sub:") and listed.endswith("}:list") and listed.startswith(tuple(keys))
        assert 0 < await client.ttl(listed) <= rig.settings.absolute_ttl
        for key in keys:
            assert key.startswith("bff:{") and key.endswith("}")
            assert 0 < await client.ttl(key) <= rig.settings.absolute_ttl
            members = await client.smembers(key)
            assert all(m.startswith(b"bff:{") and m.endswith(b"}:s") for m in members)
    finally:
        await client.aclose()


async def test_a_logout_tokens_jti_is_remembered_until_its_exp(rig: Rig, redis_url: str) -> None:
    """Issue #18 item 8b: the jti was remembered 10 minutes at most, so a logout token living an hour could be
    replayed after 10 minutes. Now it is kept until the token's exp; a token that claims to live longer than a day is
    refused instead of being remembered for ever."""
    import hashlib

    import redis.asyncio as aioredis

    browser = await rig.logged_in()
    sid = provider_sids(rig)[0]
    now = int(time.time())
    token = rig.provider.logout_token(sid=sid, jti="long-lived", exp=now + 3600)
    assert (await backchannel(rig, token)).status_code == 200
    assert not await alive(browser)
    digest = hashlib.sha256(f"{rig.provider.issuer} long-lived".encode()).hexdigest()
    client = aioredis.Redis.from_url(redis_url)
    try:
        ttl = await client.pttl(f"bff:{{bcl-jti:{digest}}}")
    finally:
        await client.aclose()
    assert 3600_000 <= ttl <= (3600 + 31 + 1) * 1000, ttl  # until exp (+ the leeway), not 10 minutes
    too_long = rig.provider.logout_token(sid=sid, jti="for-ever", exp=now + 86_400 + 120)
    refused = await backchannel(rig, too_long)
    assert refused.status_code == 400 and "longer" in refused.json()["error_description"]
