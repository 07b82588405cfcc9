"""Sign-up: the JSON API and the HTML form; argon2id hashes; 409 for a taken name, 400 naming the field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from .helpers import authorize_params, form_of, location_params, login, pkce

pytestmark = pytest.mark.anyio


async def test_json_sign_up_hashes_with_argon2id(client: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    response = await client.post("/users", json={"username": "Carol.B-1", "password": "p" * 8})
    assert response.status_code == 201
    body = response.json()
    assert body["username"] == "Carol.B-1" and len(body["sub"]) >= 16
    record = (await redis.get("auth:user:carol.b-1")).decode()
    # OWASP parameters: argon2id, m=19 MiB, t=2, p=1; the password itself is nowhere.
    assert "$argon2id$v=19$m=19456,t=2,p=1$" in record and "pppppppp" not in record
    assert (await client.post("/users", json={"username": "carol.b-1", "password": "q" * 20})).status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "ab", "password": "long-enough"}, "username"),
        ({"username": "a" * 65, "password": "long-enough"}, "username"),
        ({"username": "bad name", "password": "long-enough"}, "username"),
        ({"username": "ünïcode", "password": "long-enough"}, "username"),
        ({"username": 123, "password": "long-enough"}, "username"),
        ({"password": "long-enough"}, "username"),
        ({"username": "dave", "password": "short"}, "password"),
        ({"username": "dave", "password": "x" * 129}, "password"),
        ({"username": "dave", "password": None}, "password"),
        ({"username": "dave"}, "password"),
    ],
)
async def test_bad_sign_ups_name_the_field(client: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    response = await client.post("/users", json=body)
    assert response.status_code == 400
    assert response.json()["field"] == field and response.json()["error"] == "invalid_request"


async def test_password_limits_are_length_only(client: httpx.AsyncClient) -> None:
    for i, password in enumerate(["aaaaaaaa", "x" * 128, "pässwörd ✓ 🙂"]):
        assert (await client.post("/users", json={"username": f"u{i}xx", "password": password})).status_code == 201


async def test_bad_json_bodies(client: httpx.AsyncClient) -> None:
    for content, content_type in [
        (b"{", "application/json"),
        (b"[1]", "application/json"),
        (b"\xff", "application/json"),
        (b"username=a&password=b", "text/plain"),
    ]:
        response = await client.post("/users", content=content, headers={"Content-Type": content_type})
        assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    big = await client.post(
        "/users", content=b"[" + b"1," * 40_000 + b"1]", headers={"Content-Type": "application/json"}
    )
    assert big.status_code == 413


async def test_html_sign_up_then_back_to_the_login(client: httpx.AsyncClient) -> None:
    verifier, challenge = pkce()
    params = authorize_params(challenge)
    login_page = await client.get("/oauth/authorize", params=params)
    register_link = login_page.text.split('href="')[1].split('"')[0].replace("&amp;", "&")
    page = await client.get(register_link)
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    form = form_of(page.text)
    assert form.fields["next"].startswith("/oauth/authorize?")
    taken = {**form.fields, "username": "erin", "password": "erin-password"}
    created = await client.post("/register", data=taken)
    assert created.status_code == 303
    back = created.headers["location"]
    assert back.startswith("http://auth.test/oauth/authorize?")
    again = await client.post("/register", data=taken)
    assert again.status_code == 409 and "taken" in again.text
    short = await client.post("/register", data={**taken, "username": "frank", "password": "short"})
    assert short.status_code == 400 and "password" in short.text
    assert location_params(await login(client, params, "erin", "erin-password"))["code"]


async def test_html_sign_up_refuses_foreign_posts_and_open_redirects(client: httpx.AsyncClient) -> None:
    page = await client.get("/register?next=https://evil.test/")
    form = form_of(page.text)
    assert form.fields["next"] == ""
    no_token = await client.post("/register", data={"username": "gina", "password": "gina-password"})
    assert no_token.status_code == 400
    evil = await client.post(
        "/register",
        data={**form.fields, "next": "//evil.test/oauth/authorize?", "username": "gina", "password": "gina-password"},
    )
    assert evil.status_code == 201 and "location" not in evil.headers
