"""RFC 6750 over HTTP: where the token may be, and the status, challenge and body of each error."""

from __future__ import annotations

import pytest

from resource_server.verifier import TokenVerifier, VerifierError
from resource_server.verifier.testing import FakeIssuer

from .helpers import AUDIENCE, ISSUER, bearer, client, guarded_app

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def issuer() -> FakeIssuer:
    return FakeIssuer(ISSUER, AUDIENCE)


@pytest.fixture(scope="module")
def verifier(issuer: FakeIssuer) -> TokenVerifier:
    return issuer.verifier()


async def test_no_token_is_401_with_a_bare_challenge(verifier: TokenVerifier) -> None:
    errors: list[VerifierError] = []
    async with client(guarded_app(verifier, errors)) as http:
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
            response = await http.get("/claims", headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == 'Bearer realm="notes"'  # RFC 6750 §3.1: no error code
    assert [e.reason for e in errors] == ["missing", "missing"]


async def test_expired_token_gets_exactly_the_documented_body_and_header(
    issuer: FakeIssuer, verifier: TokenVerifier
) -> None:
    async with client(guarded_app(verifier)) as http:
        response = await http.get("/claims", headers=bearer(issuer.expired_token("notes:read")))
    assert response.status_code == 401
    assert response.json() == {
        "code": 401,
        "error": "invalid_token",
        "error_description": "The access token provided has expired.",
    }
    assert response.content == (
        b'{"code": 401, "error": "invalid_token", "error_description": "The access token provided has expired."}'
    )
    assert response.headers["www-authenticate"] == (
        'Bearer realm="notes", error="invalid_token", error_description="The access token provided has expired."'
    )
    assert response.headers["content-type"] == "application/json"


async def test_missing_scope_is_403_insufficient_scope_naming_the_scope(
    issuer: FakeIssuer, verifier: TokenVerifier
) -> None:
    async with client(guarded_app(verifier)) as http:
        for scope in ("notes:read", "", "notes:writer", "NOTES:WRITE"):
            response = await http.post("/write", headers=bearer(issuer.token(scope)))
            assert response.status_code == 403, scope
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith('Bearer realm="notes", error="insufficient_scope", error_description="')
            assert challenge.endswith(', scope="notes:write"')
            assert response.json()["error"] == "insufficient_scope"
        ok = await http.post("/write", headers=bearer(issuer.token("notes:read notes:write", sub="alice")))
    assert ok.status_code == 200
    assert ok.json() == {"ok": True, "sub": "alice"}


async def test_a_token_in_the_query_string_is_ignored(issuer: FakeIssuer, verifier: TokenVerifier) -> None:
    token = issuer.token("notes:read")
    async with client(guarded_app(verifier)) as http:
        response = await http.get("/claims", params={"access_token": token})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="notes"'
        # With a header as well it is not a second method: the query is simply not looked at.
        response = await http.get("/claims", params={"access_token": "garbage"}, headers=bearer(token))
        assert response.status_code == 200


async def test_two_token_methods_are_400_invalid_request(issuer: FakeIssuer, verifier: TokenVerifier) -> None:
    token = issuer.token("notes:write")
    async with client(guarded_app(verifier)) as http:
        both = await http.post("/form", headers=bearer(token), data={"access_token": token, "x": "1"})
        two_headers = await http.get(
            "/claims", headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
        )
        two_in_body = await http.post(
            "/form",
            content=f"access_token={token}&access_token={token}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        empty = await http.get("/claims", headers={"Authorization": "Bearer "})
    for response in (both, two_headers, two_in_body, empty):
        assert response.status_code == 400
        assert response.headers["www-authenticate"].startswith('Bearer realm="notes", error="invalid_request"')
        assert response.json()["error"] == "invalid_request"


async def test_the_form_body_method_works_alone_and_the_app_still_reads_the_body(
    issuer: FakeIssuer, verifier: TokenVerifier
) -> None:
    async with client(guarded_app(verifier)) as http:
        response = await http.post("/form", data={"access_token": issuer.token(sub="carol"), "text": "hi"})
        as_get = await http.request("GET", "/claims", data={"access_token": issuer.token()})  # §2.2: never GET
    assert response.status_code == 200, response.text
    assert response.json() == {"fields": ["access_token", "text"], "sub": "carol"}
    assert as_get.status_code == 401
    assert as_get.headers["www-authenticate"] == 'Bearer realm="notes"'


async def test_bearer_scheme_is_case_insensitive(issuer: FakeIssuer, verifier: TokenVerifier) -> None:
    async with client(guarded_app(verifier)) as http:
        response = await http.get("/claims", headers={"Authorization": f"bearer {issuer.token()}"})
    assert response.status_code == 200
    assert response.json()["iss"] == ISSUER


async def test_public_paths_need_no_token_but_verify_one_that_is_sent(
    issuer: FakeIssuer, verifier: TokenVerifier
) -> None:
    async with client(guarded_app(verifier)) as http:
        anonymous = await http.get("/public")
        signed_in = await http.get("/public", headers=bearer(issuer.token()))
        forged = await http.get("/public", headers=bearer(issuer.unsigned_token()))
    assert anonymous.json() == {"auth": False}
    assert signed_in.json() == {"auth": True}
    assert forged.status_code == 401


async def test_error_descriptions_never_break_the_challenge_syntax() -> None:
    from resource_server.verifier import InvalidToken
    from resource_server.verifier.starlette import challenge

    value = challenge(InvalidToken('a "quoted" \\ text'), 'realm "x"')
    assert value == 'Bearer realm="realm \'x\'", error="invalid_token", error_description="a \'quoted\'  text"'
