"""RP-Initiated Logout at /oauth/logout and the back-channel logout tokens the auth server sends (DESIGN §6)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auth_server.app import create_app
from servicekit.durable import Durable, WaitPolicy
from tests.conftest import free_port

from .helpers import (
    CLIENTS,
    PASSWORD,
    SSO_COOKIE,
    USERNAME,
    authorize_params,
    claims_of,
    exchange,
    form_of,
    get_code,
    location_params,
    make_settings,
    password_login,
    pkce,
    refresh,
    serve_in_process,
)

pytestmark = pytest.mark.anyio

AFTER_LOGOUT = "http://app.test/signed-out"
EVENT = "http://schemas.openid.net/event/backchannel-logout"


class Receiver:
    """A client's back-channel logout endpoint on a real socket; records the logout tokens it gets."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.status = 200
        self.app = Starlette(routes=[Route("/bc", self.endpoint, methods=["POST"])])

    async def endpoint(self, request: Request) -> Response:
        form = await request.form()
        self.tokens.append(str(form["logout_token"]))
        return Response(status_code=self.status, headers={"Cache-Control": "no-store"})

    async def wait(self, count: int, limit: float = 5.0) -> list[str]:
        deadline = time.monotonic() + limit
        while len(self.tokens) < count and time.monotonic() < deadline:  # noqa: ASYNC110 - another thread fills it
            await asyncio.sleep(0.02)
        return self.tokens


@pytest.fixture
def receiver(server_factory: Any) -> Receiver:
    found = Receiver()
    found.url = server_factory(found.app).url + "/bc"  # type: ignore[attr-defined]
    return found


def logout_clients(receiver: Receiver) -> str:
    clients = [dict(c) for c in CLIENTS]
    clients[0]["post_logout_redirect_uris"] = [AFTER_LOGOUT]
    clients[0]["backchannel_logout_uri"] = receiver.url  # type: ignore[attr-defined]
    clients[2]["backchannel_logout_uri"] = receiver.url  # type: ignore[attr-defined]
    return json.dumps(clients)


@pytest.fixture
async def client(redis_url: str, keys_dir: Path, receiver: Receiver) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(redis_url, keys_dir, AUTH_CLIENTS=logout_clients(receiver)))
    async with serve_in_process(app) as c:
        yield c


async def sso_login(client: httpx.AsyncClient, client_id: str, redirect_uri: str, secret: str) -> dict[str, Any]:
    verifier, challenge = pkce()
    response = await client.get(
        "/oauth/authorize", params=authorize_params(challenge, client_id=client_id, redirect_uri=redirect_uri)
    )
    code = location_params(response)["code"]
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    return dict((await client.post("/oauth/token", data=body, auth=(client_id, secret))).json())


def assert_refused_page(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert "location" not in response.headers


async def assert_password_asked(client: httpx.AsyncClient) -> None:
    page = await client.get("/oauth/authorize", params=authorize_params(pkce()[1]))
    assert page.status_code == 200 and 'name="password"' in page.text


async def test_discovery_advertises_both_logouts(client: httpx.AsyncClient) -> None:
    meta = (await client.get("/.well-known/openid-configuration")).json()
    assert meta["end_session_endpoint"] == "http://auth.test/oauth/logout"
    assert meta["backchannel_logout_supported"] is True
    assert meta["backchannel_logout_session_supported"] is True


async def test_logout_with_a_hint_ends_the_sso_session_and_every_login_born_of_it(
    client: httpx.AsyncClient, user: Any, receiver: Receiver
) -> None:
    bff = await password_login(client)
    other = await sso_login(client, "other", "http://other.test/cb", "other-secret-0123456789")
    response = await client.get(
        "/oauth/logout",
        params={"id_token_hint": bff["id_token"], "post_logout_redirect_uri": AFTER_LOGOUT, "state": "s-1"},
    )
    assert response.status_code == 302
    assert response.headers["location"] == AFTER_LOGOUT + "?state=s-1"
    assert SSO_COOKIE not in client.cookies
    for tokens, client_id, secret in ((bff, "bff", None), (other, "other", "other-secret-0123456789")):
        auth = (client_id, secret or "bff-secret-0123456789")
        body = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        assert (await client.post("/oauth/token", data=body, auth=auth)).json()["error"] == "invalid_grant"
    await assert_password_asked(client)
    # Both clients registered a back-channel URI: each hears of its own login, with the sid of its ID token.
    got = sorted((claims_of(t) for t in await receiver.wait(2)), key=lambda c: c["aud"])
    assert [(c["aud"], c["sid"]) for c in got] == [
        ("bff", claims_of(bff["id_token"])["sid"]),
        ("other", claims_of(other["id_token"])["sid"]),
    ]


async def test_a_logout_answered_503_half_way_ends_every_login_when_retried(
    redis_url: str, keys_dir: Path, receiver: Receiver
) -> None:
    """The SSO session's list of its logins is dropped only after they are ended: a logout that failed half-way
    (here Redis unreachable for the families' revocation: 503) ends them all when the user or RP tries again."""
    app = create_app(make_settings(redis_url, keys_dir, AUTH_CLIENTS=logout_clients(receiver)))
    async with serve_in_process(app) as client:
        assert (await client.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201
        bff = await password_login(client)
        other = await sso_login(client, "other", "http://other.test/cb", "other-secret-0123456789")
        tokens = app.state.endpoints.tokens
        working = tokens.durable
        unreachable = aioredis.Redis(port=free_port(), retry_on_error=[], retry=None)
        tokens.durable = Durable(unreachable, WaitPolicy(replicas=0))
        params = {"id_token_hint": bff["id_token"]}
        try:
            assert (await client.get("/oauth/logout", params=params)).status_code == 503
        finally:
            tokens.durable = working
            await unreachable.aclose()
        assert (await client.get("/oauth/logout", params=params)).status_code == 200  # retried: signed out
        for login, auth in ((bff, ("bff", "bff-secret-0123456789")), (other, ("other", "other-secret-0123456789"))):
            body = {"grant_type": "refresh_token", "refresh_token": login["refresh_token"]}
            assert (await client.post("/oauth/token", data=body, auth=auth)).json()["error"] == "invalid_grant"
        await assert_password_asked(client)


async def test_a_logout_token_is_what_back_channel_logout_says(
    client: httpx.AsyncClient, user: Any, receiver: Receiver, keys_dir: Path
) -> None:
    tokens = await password_login(client)
    await client.get("/oauth/logout", params={"id_token_hint": tokens["id_token"]})
    [token] = await receiver.wait(1)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "logout+jwt" and header["alg"] == "RS256"
    jwks = (await client.get("/.well-known/jwks.json")).json()
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    claims = jwt.decode(token, key, algorithms=["RS256"], audience="bff", issuer="http://auth.test")
    id_claims = claims_of(tokens["id_token"])
    assert claims["sid"] == id_claims["sid"] and claims["sub"] == id_claims["sub"]
    assert claims["events"] == {EVENT: {}}
    assert "nonce" not in claims and claims["jti"] and claims["exp"] > claims["iat"]


async def test_an_unregistered_post_logout_redirect_uri_is_refused(client: httpx.AsyncClient, user: Any) -> None:
    tokens = await password_login(client)
    for uri in ("http://evil.test/", AFTER_LOGOUT + "/", AFTER_LOGOUT + "?x=1", "http://app.test/bff/callback"):
        response = await client.get(
            "/oauth/logout", params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": uri}
        )
        assert_refused_page(response)
    # Without a client to check it against, even a registered URI is refused.
    assert_refused_page(await client.get("/oauth/logout", params={"post_logout_redirect_uri": AFTER_LOGOUT}))
    assert "code" in location_params(await client.get("/oauth/authorize", params=authorize_params(pkce()[1])))


async def test_a_hint_for_another_client_is_refused(client: httpx.AsyncClient, user: Any) -> None:
    tokens = await password_login(client)
    response = await client.get("/oauth/logout", params={"id_token_hint": tokens["id_token"], "client_id": "other"})
    assert_refused_page(response)


async def test_without_a_valid_hint_the_user_confirms_first(client: httpx.AsyncClient, user: Any) -> None:
    tokens = await password_login(client)
    forged = tokens["id_token"][:-4] + ("AAAA" if not tokens["id_token"].endswith("AAAA") else "BBBB")
    for params in ({}, {"id_token_hint": forged}, {"id_token_hint": "garbage"}):
        page = await client.get("/oauth/logout", params={**params, "client_id": "bff", "state": "s-2"})
        assert page.status_code == 200 and "Sign out?" in page.text
    # A cross-site POST without the form token only gets the question again; the session stays.
    again = await client.post("/oauth/logout", data={"client_id": "bff"})
    assert again.status_code == 200 and "Sign out?" in again.text
    forged_form = await client.post("/oauth/logout", data={"client_id": "bff", "form_token": "1.abc"})
    assert forged_form.status_code == 400
    assert "code" in location_params(await client.get("/oauth/authorize", params=authorize_params(pkce()[1])))
    page = await client.get(
        "/oauth/logout", params={"client_id": "bff", "post_logout_redirect_uri": AFTER_LOGOUT, "state": "s-3"}
    )
    form = form_of(page.text)
    confirmed = await client.post("/oauth/logout", data=form.fields)
    assert confirmed.headers["location"] == AFTER_LOGOUT + "?state=s-3"
    await assert_password_asked(client)
    assert (await refresh(client, tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_a_logout_without_redirect_shows_the_signed_out_page(client: httpx.AsyncClient, user: Any) -> None:
    tokens = await password_login(client)
    page = await client.post("/oauth/logout", data={"id_token_hint": tokens["id_token"]})
    assert page.status_code == 200 and "You are signed out" in page.text


async def test_a_hint_still_works_after_the_client_revoked_its_own_login(client: httpx.AsyncClient, user: Any) -> None:
    # The BFF revokes its refresh token first, then sends the browser here: the SSO session must still end.
    tokens = await password_login(client)
    await client.post("/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=("bff", "bff-secret-0123456789"))
    response = await client.get("/oauth/logout", params={"id_token_hint": tokens["id_token"]})
    assert response.status_code == 200
    client.cookies.clear()
    client.cookies.update({k: v for k, v in response.cookies.items() if v})
    await assert_password_asked(client)


@pytest.mark.parametrize("how", ["revoke", "reuse"])
async def test_the_end_of_a_family_is_sent_on_the_back_channel(
    client: httpx.AsyncClient, user: Any, receiver: Receiver, how: str
) -> None:
    tokens = await password_login(client)
    sid = claims_of(tokens["id_token"])["sid"]
    if how == "revoke":
        await client.post(
            "/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=("bff", "bff-secret-0123456789")
        )
    else:
        second = await refresh(client, tokens["refresh_token"])
        assert (await refresh(client, second.json()["refresh_token"])).status_code == 200
        # two generations back: reuse, past the retry grace's single generation (DESIGN §9)
        assert (await refresh(client, tokens["refresh_token"])).json()["error"] == "invalid_grant"
    [token] = await receiver.wait(1)
    assert claims_of(token)["sid"] == sid and claims_of(token)["sub"] == user["sub"]


async def test_a_revocation_answered_503_for_late_replicas_is_still_announced(
    redis_url: str, keys_dir: Path, receiver: Receiver
) -> None:
    """A revocation whose deletion reached the master but not the replicas in time is a 503 (not durable), yet the
    family is gone: its end must reach the feed and the back channel now, for a retry would find nothing to end."""
    app = create_app(make_settings(redis_url, keys_dir, AUTH_CLIENTS=logout_clients(receiver)))
    async with serve_in_process(app) as client:
        assert (await client.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201
        login = await password_login(client)
        sid = claims_of(login["id_token"])["sid"]
        tokens = app.state.endpoints.tokens
        working = tokens.durable
        tokens.durable = Durable(working.client, WaitPolicy(1, 50))  # a replica required that is not there
        try:
            body = {"token": login["refresh_token"]}
            late = await client.post("/oauth/revoke", data=body, auth=("bff", "bff-secret-0123456789"))
            assert late.status_code == 503
        finally:
            await tokens.durable.aclose()
            tokens.durable = working
        [token] = await receiver.wait(1)
        assert claims_of(token)["sid"] == sid
        feed = (await client.get("/oauth/revocations")).json()["revocations"]
        assert sid in [entry["sid"] for entry in feed]


async def test_delivery_is_retried_after_a_server_error(
    client: httpx.AsyncClient, user: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("auth_server.backchannel.RETRY_DELAYS", (0.05, 0.3))  # (0.5, 2.0) in service: same path
    receiver.status = 503
    tokens = await password_login(client)
    await client.get("/oauth/logout", params={"id_token_hint": tokens["id_token"]})
    await receiver.wait(2)
    receiver.status = 200
    got = await receiver.wait(3)
    assert len(got) == 3 and len({claims_of(t)["jti"] for t in got}) == 1  # the same token, retried
    delivered = 'auth_backchannel_logouts_total{outcome="delivered"} 1.0'
    for _ in range(100):
        metrics = (await client.get("/metrics")).text
        if delivered in metrics:
            break
        await asyncio.sleep(0.02)
    assert delivered in metrics, [line for line in metrics.splitlines() if "backchannel" in line]


async def test_sessions_revoke_ends_everything_of_one_user(
    client: httpx.AsyncClient, user: Any, receiver: Receiver, redis_url: str, keys_dir: Path
) -> None:
    from auth_server.__main__ import _revoke_user

    first = await password_login(client)
    second = await password_login(client)
    created = await client.post("/users", json={"username": "bob.b", "password": "another good password"})
    assert created.status_code == 201
    settings = make_settings(redis_url, keys_dir, AUTH_CLIENTS=logout_clients(receiver))
    sessions, families = await _revoke_user(settings, USERNAME)
    assert (sessions, families) == (2, 2)
    sids = {claims_of(t["id_token"])["sid"] for t in (first, second)}
    assert {claims_of(t)["sid"] for t in receiver.tokens} == sids  # delivered before the command returned
    for tokens in (first, second):
        assert (await refresh(client, tokens["refresh_token"])).json()["error"] == "invalid_grant"
    await assert_password_asked(client)
    with pytest.raises(LookupError):
        await _revoke_user(settings, "nobody")


async def test_a_fresh_login_in_the_same_browser_keeps_every_login_under_one_logout(
    client: httpx.AsyncClient, user: Any
) -> None:
    first = await password_login(client)
    verifier, challenge = pkce()
    page = await client.get("/oauth/authorize", params=authorize_params(challenge, prompt="login"))
    form = form_of(page.text)
    assert form.action is not None
    posted = await client.post(form.action, data={**form.fields, "username": USERNAME, "password": PASSWORD})
    second = (await exchange(client, location_params(posted)["code"], verifier)).json()
    assert claims_of(second["id_token"])["auth_time"] >= claims_of(first["id_token"])["auth_time"]
    # Without the browser's SSO cookie (Clear-Site-Data from the client's own logout can wipe it on a shared host),
    # the *first* login's hint ends that login only (issue #18 item 3); with the cookie, one logout with it ends the
    # re-authenticated session and every login.
    sso_cookie = client.cookies[SSO_COOKIE]
    client.cookies.clear()
    await client.get("/oauth/logout", params={"id_token_hint": first["id_token"]})
    assert (await refresh(client, first["refresh_token"])).json()["error"] == "invalid_grant"
    second = (await refresh(client, second["refresh_token"])).json()
    assert "access_token" in second
    client.cookies.set(SSO_COOKIE, sso_cookie)
    await client.get("/oauth/logout", params={"id_token_hint": first["id_token"]})
    assert (await refresh(client, second["refresh_token"])).json()["error"] == "invalid_grant"
    await assert_password_asked(client)


async def test_a_code_from_a_sign_in_that_ended_meanwhile_is_refused(client: httpx.AsyncClient, user: Any) -> None:
    verifier, challenge = pkce()
    code = (await get_code(client, challenge))["code"]
    page = await client.get("/oauth/logout", params={"client_id": "bff"})
    await client.post("/oauth/logout", data=form_of(page.text).fields)  # confirmed: the SSO session ends
    refused = await exchange(client, code, verifier)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "params",
    [
        {"id_token_hint": "x" * 9000},
        {"id_token_hint": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."},
        {"id_token_hint": "a.b.c", "client_id": "nobody"},
        {"state": "s" * 2000},
        {"client_id": "bff", "post_logout_redirect_uri": "javascript:alert(1)"},
        {"client_id": "\x00"},
    ],
)
async def test_garbage_at_the_logout_endpoint_is_never_a_500(
    client: httpx.AsyncClient, user: Any, params: dict[str, str]
) -> None:
    tokens = await password_login(client)
    for response in (
        await client.get("/oauth/logout", params=params),
        await client.post("/oauth/logout", data=params),
        await client.post("/oauth/logout", json=params),
    ):
        assert response.status_code in (200, 400), response.text
        assert "location" not in response.headers
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200  # nothing was logged out
    for hint in (tokens["access_token"], tokens["refresh_token"]):  # tokens of other types are no hint
        page = await client.get("/oauth/logout", params={"id_token_hint": hint})
        assert page.status_code == 200 and "Sign out?" in page.text


async def test_an_id_token_alone_does_not_end_the_users_sign_in(client: httpx.AsyncClient, user: Any) -> None:
    """Issue #18 item 3: any holder of an ID token (another RP, a log) sent GET /oauth/logout?id_token_hint=… from a
    client without the SSO cookie and ended every login of the user. Now it ends only the login the hint names (which
    its client could revoke itself); the user's SSO session and other logins live on."""
    bff = await password_login(client)
    other = await sso_login(client, "other", "http://other.test/cb", "other-secret-0123456789")
    browser_cookies = dict(client.cookies)
    client.cookies.clear()  # the attacker: no SSO cookie
    response = await client.get("/oauth/logout", params={"id_token_hint": bff["id_token"]})
    assert response.status_code == 200 and "You are signed out" in response.text
    client.cookies.clear()
    client.cookies.update(browser_cookies)
    assert (await refresh(client, bff["refresh_token"])).json()["error"] == "invalid_grant"
    body = {"grant_type": "refresh_token", "refresh_token": other["refresh_token"]}
    kept = await client.post("/oauth/token", data=body, auth=("other", "other-secret-0123456789"))
    assert kept.status_code == 200, kept.text  # another client's login of the same sign-in lives on
    assert "code" in location_params(await client.get("/oauth/authorize", params=authorize_params(pkce()[1])))
    # the same user's SSO cookie of *another* browser is not the hint's session either
    third = await password_login(client)
    client.cookies.delete(SSO_COOKIE)
    await password_login(client)  # another sign-in of the same user in a second browser
    await client.get("/oauth/logout", params={"id_token_hint": third["id_token"]})
    assert "code" in location_params(await client.get("/oauth/authorize", params=authorize_params(pkce()[1])))
