"""Found attacking the whole stack on loopback as an outsider: each case failed (a 500, or worse) before its fix."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.vanishing_client import assert_quiet, post_and_vanish

from .helpers import (
    BFF_SECRET,
    SSO_COOKIE,
    authorize_params,
    exchange,
    location_params,
    login,
    pkce,
    refresh,
    tokens_for,
)

pytestmark = pytest.mark.anyio

U64 = 2**64 - 1


@pytest.mark.parametrize(
    "since",
    [f"{U64 + 1}-0", f"0-{U64 + 1}", "9" * 20 + "-0", f"{U64}-{U64 + 1}"],
    ids=["ms_past_64_bits", "seq_past_64_bits", "twenty_nines", "both"],
)
async def test_a_revocation_cursor_past_64_bits_is_400_not_500(client: httpx.AsyncClient, since: str) -> None:
    response = await client.get("/oauth/revocations", params={"since": since})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


async def test_the_last_possible_cursor_reads_nothing_and_the_feed_still_works(
    client: httpx.AsyncClient, user: Any
) -> None:
    last = f"{U64}-{U64}"
    response = await client.get("/oauth/revocations", params={"since": last})
    assert response.status_code == 200, response.text
    assert response.json() == {"revocations": [], "cursor": last, "more": False}
    tokens = await tokens_for(client)
    await client.post("/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=("bff", BFF_SECRET))
    assert len((await client.get("/oauth/revocations", params={"since": f"{U64 - 1}-0"})).json()["revocations"]) == 0
    assert len((await client.get("/oauth/revocations")).json()["revocations"]) == 1


async def test_a_cross_site_logout_with_someone_elses_id_token_asks_and_keeps_the_browsers_sso(
    client: httpx.AsyncClient, user: Any
) -> None:
    # The attacker's own ID token, from a login of their own (in their own browser: the client's cookies are reset).
    created = await client.post("/users", json={"username": "mallory", "password": "mallory-password-1"})
    assert created.status_code == 201, created.text
    verifier, challenge = pkce()
    got = location_params(await login(client, authorize_params(challenge), "mallory", "mallory-password-1"))
    mallory = (await exchange(client, got["code"], verifier)).json()
    # The victim's browser, signed in at the auth server as the victim.
    client.cookies.clear()
    victim = await tokens_for(client)
    sso = client.cookies.get(SSO_COOKIE)
    assert sso is not None
    # A cross-site page sends that browser to the logout endpoint with the attacker's hint (RP-Initiated Logout §2:
    # a hint that is not of the user logged in here must be confirmed).
    response = await client.get("/oauth/logout", params={"id_token_hint": mallory["id_token"]})
    assert response.status_code == 200 and 'name="form_token"' in response.text, response.text
    assert client.cookies.get(SSO_COOKIE) == sso
    again = await client.get("/oauth/authorize", params=authorize_params(pkce()[1]))
    assert "code" in location_params(again)  # the victim's SSO session still signs them in
    assert (await refresh(client, victim["refresh_token"])).status_code == 200


@pytest.mark.parametrize(
    "path", ["/oauth/token", "/oauth/par", "/oauth/authorize", "/oauth/logout", "/register", "/users"]
)
async def test_a_client_gone_mid_body_is_no_server_error(
    app: Any, client: httpx.AsyncClient, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        status = await post_and_vanish(app, path, [(b"content-type", b"application/x-www-form-urlencoded")])
    assert status == 499
    assert_quiet(caplog)


@pytest.mark.parametrize(
    "extra",
    [{"prompt": "none login"}, {"max_age": "-1"}, {"max_age": "1e3"}, {"max_age": "9" * 11}, {"max_age": "１"}],
    ids=["prompt_none_not_alone", "negative_max_age", "max_age_float", "max_age_too_long", "max_age_unicode_digit"],
)
async def test_a_pushed_request_the_authorization_endpoint_would_refuse_is_refused_at_the_push(
    client: httpx.AsyncClient, extra: dict[str, str]
) -> None:
    # RFC 9126 §2.1: the request is checked as /oauth/authorize checks it. These were stored (201) and failed only
    # when the browser arrived.
    params = {**authorize_params(pkce()[1]), **extra}
    response = await client.post("/oauth/par", data=params, auth=("bff", BFF_SECRET))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    fine = await client.post("/oauth/par", data={**params, "prompt": "login", "max_age": "0"}, auth=("bff", BFF_SECRET))
    assert fine.status_code == 201, fine.text
