"""The browser SSO session: a second authorization needs no password; prompt and max_age; real auth_time."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from .helpers import (
    SSO_COOKIE,
    authorize_params,
    claims_of,
    exchange,
    location_params,
    password_login,
    pkce,
)

pytestmark = pytest.mark.anyio


async def sso_code(client: httpx.AsyncClient, **overrides: str) -> httpx.Response:
    """An authorization request in the same browser, without the form."""
    return await client.get("/oauth/authorize", params=authorize_params(pkce()[1], **overrides))


async def test_a_second_authorization_in_the_same_browser_needs_no_password(
    client: httpx.AsyncClient, user: Any
) -> None:
    first = await password_login(client)
    set_cookie = [h for h in client.cookies.jar if h.name == SSO_COOKIE]
    assert set_cookie and set_cookie[0].has_nonstandard_attr("HttpOnly")
    await asyncio.sleep(1.1)  # auth_time is the password's time, not the second authorization's
    verifier, challenge = pkce()
    params = authorize_params(challenge)
    response = await client.get("/oauth/authorize", params=params)
    got = location_params(response)  # straight back with a code: no form
    assert got["state"] == params["state"]
    second = (await exchange(client, got["code"], verifier)).json()
    one, two = claims_of(first["id_token"]), claims_of(second["id_token"])
    assert two["sub"] == one["sub"] and two["auth_time"] == one["auth_time"]
    assert two["sid"] != one["sid"]  # each login of a client is its own family
    assert two["iat"] > two["auth_time"]


async def test_another_browser_gets_the_form(client: httpx.AsyncClient, app: Any, user: Any) -> None:
    await password_login(client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://auth.test") as other:
        page = await other.get("/oauth/authorize", params=authorize_params(pkce()[1]))
        assert page.status_code == 200 and 'name="password"' in page.text


@pytest.mark.parametrize("overrides", [{"prompt": "login"}, {"max_age": "0"}, {"prompt": "select_account"}])
async def test_prompt_login_and_max_age_demand_the_password(
    client: httpx.AsyncClient, user: Any, overrides: dict[str, str]
) -> None:
    await password_login(client)
    page = await sso_code(client, **overrides)
    assert page.status_code == 200 and 'name="password"' in page.text


async def test_a_max_age_not_yet_exceeded_reuses_the_session(client: httpx.AsyncClient, user: Any) -> None:
    await password_login(client)
    assert "code" in location_params(await sso_code(client, max_age="3600"))


async def test_prompt_none(client: httpx.AsyncClient, user: Any) -> None:
    assert location_params(await sso_code(client, prompt="none"))["error"] == "login_required"
    await password_login(client)
    assert "code" in location_params(await sso_code(client, prompt="none"))
    assert location_params(await sso_code(client, prompt="none", max_age="0"))["error"] == "login_required"
    assert location_params(await sso_code(client, prompt="none login"))["error"] == "invalid_request"
    assert location_params(await sso_code(client, max_age="-1"))["error"] == "invalid_request"


async def test_the_session_lives_in_redis_by_the_hash_of_its_cookie(
    client: httpx.AsyncClient, user: Any, redis: aioredis.Redis
) -> None:
    await password_login(client)
    cookie = client.cookies[SSO_COOKIE]
    keys = [k.decode() for k in await redis.keys("auth:sso:*")]
    assert keys and not any(cookie in k for k in keys)
    record = next(k for k in keys if not k.endswith(":fams"))
    assert 0 < await redis.ttl(record) <= 28_800  # AUTH_SSO_IDLE_TTL
    await redis.delete(record)  # ended (or expired) at the server: the cookie is worth nothing
    page = await sso_code(client)
    assert page.status_code == 200 and 'name="password"' in page.text


async def test_a_forged_sso_cookie_gets_the_form(client: httpx.AsyncClient, user: Any) -> None:
    client.cookies.set(SSO_COOKIE, "A" * 43)
    page = await sso_code(client)
    assert page.status_code == 200 and 'name="password"' in page.text
