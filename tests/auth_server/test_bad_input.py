"""Bad input never reaches the catch-all handler: every endpoint answers garbage with a 4xx, never a 500."""

from __future__ import annotations

import base64
import itertools
import time
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio

PATHS = [
    "/oauth/authorize",
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/introspect",
    "/userinfo",
    "/register",
    "/users",
    "/.well-known/jwks.json",
    "/.well-known/openid-configuration",
    "/metrics",
    "/healthz",
]
BODIES: list[tuple[bytes, str | None]] = [
    (b"", None),
    (b"\xff\xfe\x00\x01", "application/x-www-form-urlencoded"),
    (b"a=%ff&b=%c3%28", "application/x-www-form-urlencoded"),
    (b'{"grant_type": "refresh_token"}', "application/json"),
    (b'{"grant_type": "refresh_token"}', "application/x-www-form-urlencoded"),
    (b"[]", "application/json"),
    (b"null", "application/json"),
    (b'{"username": {"a": 1}, "password": [1]}', "application/json"),
    (b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--x--\r\n", "multipart/form-data; boundary=x"),
    (b"grant_type=authorization_code&code=&redirect_uri=&code_verifier=", "application/x-www-form-urlencoded"),
    (b"grant_type=refresh_token&refresh_token=" + b"A" * 9000, "application/x-www-form-urlencoded"),
    (b"token=" + b"e" * 100 + b".e30.", "application/x-www-form-urlencoded"),
    (b"client_id=bff&response_type=code&redirect_uri=x", "application/x-www-form-urlencoded"),
    (b"=&&=&==", "application/x-www-form-urlencoded"),
]
HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode()},
    {"Authorization": "Basic " + base64.b64encode(b"bff").decode()},
    {"Authorization": "Basic"},
    {"Authorization": "Bearer " + "x" * 10_000},
    {"Authorization": "Bearer e30.e30.e30"},
    {"Cookie": "auth-form=" + "z" * 40 + "; x"},
]
QUERIES = ["", "?client_id=bff&client_id=spa", "?%ff=1", "?next=%00", "?" + "&".join(f"k{i}=v" for i in range(100))]


async def test_garbage_everywhere_is_never_a_500(client: httpx.AsyncClient, user: Any) -> None:
    statuses: set[int] = set()
    for path, (body, content_type), headers in itertools.product(PATHS, BODIES, HEADERS):
        request_headers = dict(headers)
        if content_type:
            request_headers["Content-Type"] = content_type
        response = await client.post(path, content=body, headers=request_headers)
        statuses.add(response.status_code)
        assert response.status_code < 500, (path, body[:40], headers, response.status_code, response.text[:200])
    for path, query, headers in itertools.product(PATHS, QUERIES, HEADERS):
        response = await client.get(path + query, headers=headers)
        statuses.add(response.status_code)
        assert response.status_code < 500, (path, query, headers, response.status_code, response.text[:200])
    assert {400, 401, 405} <= statuses
    assert 'status="500"' not in (await client.get("/metrics")).text


@pytest.mark.parametrize(
    "token",
    ["\u00b2.abc", "1\u00b2.abc", "\u0661\u0662\u0663.abc", "NOW.\u00e9\u00e9", "NOW.abc\u0661", "\u00b2"],
    ids=["superscript", "digit-superscript", "arabic-indic", "mac-non-ascii", "mac-arabic-digit", "bare"],
)
async def test_a_unicode_digit_or_letter_in_the_form_token_is_a_400(
    client: httpx.AsyncClient, user: Any, token: str
) -> None:
    # str.isdigit() accepts "²" (int() does not) and hmac.compare_digest() refuses non-ASCII text: both were 500s.
    from .helpers import PASSWORD, USERNAME, authorize_params, form_of

    page = await client.get("/oauth/authorize", params=authorize_params("x" * 43))
    form = form_of(page.text)
    assert form.action is not None
    token = token.replace("NOW", str(int(time.time())))  # a fresh time reaches the MAC comparison
    fields = {**form.fields, "username": USERNAME, "password": PASSWORD, "form_token": token}
    response = await client.post(form.action, data=fields)
    assert response.status_code == 400 and "expired" in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(b"[" * 10_000, None, id="deep-array"),  # deeper than the JSON parser's stack: was a 500
        pytest.param(b'{"username": ' * 2000, None, id="deep-object"),
        pytest.param(b'{"username": "lone", "password": "abcdefgh\\ud800"}', "password", id="lone-surrogate"),
        pytest.param(b'{"username": "lone\\udc00", "password": "abcdefghij"}', "username", id="username-surrogate"),
    ],
)
async def test_malformed_sign_up_json_is_a_400(
    client: httpx.AsyncClient, redis: Any, body: bytes, field: str | None
) -> None:
    response = await client.post("/users", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    if field is not None:
        assert field in response.json()["error_description"]
    assert [key async for key in redis.scan_iter("auth:user:*")] == []


async def test_max_age_in_unicode_digits_is_refused(client: httpx.AsyncClient) -> None:
    from .helpers import authorize_params, location_params

    response = await client.get("/oauth/authorize", params=authorize_params("x" * 43, max_age="\u00b2"))
    assert location_params(response)["error"] == "invalid_request"
