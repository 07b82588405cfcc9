"""RFC 9449 at the token endpoint: proofs checked (a nonce demanded first), access tokens bound, a public client's
refresh tokens bound, and a bound token never taken as a bearer token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth_server.app import create_app
from resource_server.verifier.testing import DPoPKey, b64url

from .helpers import (
    BFF_SECRET,
    CLIENTS,
    PASSWORD,
    REDIRECT,
    USERNAME,
    claims_of,
    get_code,
    make_settings,
    pkce,
    serve_in_process,
)

pytestmark = pytest.mark.anyio

TOKEN_URL = "http://auth.test/oauth/token"
PUBLIC = {
    "client_id": "mobile",
    "redirect_uris": [REDIRECT],
    "grant_types": ["authorization_code", "refresh_token"],
    "scope": "openid notes:read",
    "audience": ["notes"],
}


async def post_token(
    client: httpx.AsyncClient, data: dict[str, str], key: DPoPKey | None, *, nonce: str | None = None, **kw: Any
) -> httpx.Response:
    headers = {"DPoP": key.proof("POST", TOKEN_URL, nonce=nonce)} if key is not None else {}
    return await client.post("/oauth/token", data=data, headers=headers, **kw)


async def with_nonce(client: httpx.AsyncClient, data: dict[str, str], key: DPoPKey, **kw: Any) -> httpx.Response:
    """A token request as a DPoP client makes it: the nonce challenge first, then the same request with the nonce."""
    challenge = await post_token(client, data, key, **kw)
    assert challenge.status_code == 400 and challenge.json()["error"] == "use_dpop_nonce", challenge.text
    return await post_token(client, data, key, nonce=challenge.headers["dpop-nonce"], **kw)


async def code_data(client: httpx.AsyncClient, client_id: str = "bff") -> dict[str, str]:
    verifier, challenge = pkce()
    scope = " ".join(next(c["scope"] for c in [*CLIENTS, PUBLIC] if c["client_id"] == client_id).split())
    got = await get_code(client, challenge, client_id=client_id, scope=scope)
    return {
        "grant_type": "authorization_code",
        "code": got["code"],
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }


@pytest.fixture
async def dpop_client(redis_url: str, keys_dir: Path) -> Any:
    app = create_app(make_settings(redis_url, keys_dir, AUTH_CLIENTS=json.dumps([*CLIENTS, PUBLIC])))
    async with serve_in_process(app) as client:
        assert (await client.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201
        yield client


async def test_a_confidential_clients_tokens_are_bound_after_a_nonce_challenge(dpop_client: httpx.AsyncClient) -> None:
    assert (
        "ES256"
        in (await dpop_client.get("/.well-known/openid-configuration")).json()["dpop_signing_alg_values_supported"]
    )
    key = DPoPKey()
    data = await code_data(dpop_client)
    response = await with_nonce(dpop_client, data, key, auth=("bff", BFF_SECRET))  # the challenge did not burn the code
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP" and claims_of(body["access_token"])["cnf"] == {"jkt": key.jkt}
    assert "cnf" not in claims_of(body["refresh_token"])  # a confidential client's refresh token is bound by its secret
    nonce = response.headers["dpop-nonce"]  # a fresh nonce on every answer: the next request needs no challenge

    refreshed = await post_token(
        dpop_client,
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        key,
        nonce=nonce,
        auth=("bff", BFF_SECRET),
    )
    assert refreshed.status_code == 200 and refreshed.json()["token_type"] == "DPoP"
    assert claims_of(refreshed.json()["access_token"])["cnf"] == {"jkt": key.jkt}
    introspected = await dpop_client.post(
        "/oauth/introspect", data={"token": refreshed.json()["access_token"]}, auth=("bff", BFF_SECRET)
    )
    assert introspected.json()["cnf"] == {"jkt": key.jkt}

    # userinfo, a resource of the auth server's own: the bound token only with a proof, never as a bearer token
    token = refreshed.json()["access_token"]
    as_bearer = await dpop_client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert as_bearer.status_code == 401
    proof = key.proof("GET", "http://auth.test/userinfo", token)
    ok = await dpop_client.get("/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert ok.status_code == 200 and ok.json()["preferred_username"] == USERNAME
    thief = DPoPKey().proof("GET", "http://auth.test/userinfo", token)
    assert (
        await dpop_client.get("/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": thief})
    ).status_code == 401


async def test_a_public_clients_refresh_token_needs_a_proof_by_its_key(dpop_client: httpx.AsyncClient) -> None:
    key, thief = DPoPKey(), DPoPKey()
    data = {**(await code_data(dpop_client, "mobile")), "client_id": "mobile"}
    body = (await with_nonce(dpop_client, data, key)).json()
    assert claims_of(body["refresh_token"])["cnf"] == {"jkt": key.jkt}
    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": "mobile"}
    for presenter in (None, thief):  # stolen, it is useless without the key
        response = (
            await with_nonce(dpop_client, refresh, presenter)
            if presenter
            else await post_token(dpop_client, refresh, None)
        )
        assert response.status_code == 400 and response.json()["error"] == "invalid_dpop_proof", response.text
    ok = await with_nonce(dpop_client, refresh, key)  # the refused attempts were not reuse: the owner goes on
    assert ok.status_code == 200, ok.text
    assert claims_of(ok.json()["refresh_token"])["cnf"] == {"jkt": key.jkt}  # the binding survives the rotation


async def test_bad_proofs_are_refused_before_the_code_is_used(dpop_client: httpx.AsyncClient) -> None:
    key = DPoPKey()
    data = await code_data(dpop_client)
    challenge = await post_token(dpop_client, data, key, auth=("bff", BFF_SECRET))
    nonce = challenge.headers["dpop-nonce"]
    bad = {
        "another URL": key.proof("POST", "http://auth.test/oauth/revoke", nonce=nonce),
        "another method": key.proof("GET", TOKEN_URL, nonce=nonce),
        "a forged nonce": key.proof("POST", TOKEN_URL, nonce="1.AAAA"),
        "not a JWT": "garbage",
        "typ JWT": key.proof("POST", TOKEN_URL, nonce=nonce, headers={"typ": "JWT"}),
        # nested deeper than the JSON parser's stack, and a nonce in Unicode digits: both were 500s
        "a deep header": b64url('{"typ": "dpop+jwt", "alg": "ES256", "jwk": ' + "[" * 3000) + ".e30.AAAA",
        "a Unicode-digit nonce": key.proof("POST", TOKEN_URL, nonce="\u00b2." + nonce.split(".", 1)[1]),
        "a non-ASCII nonce": key.proof("POST", TOKEN_URL, nonce=nonce.split(".", 1)[0] + ".\u00e9"),
        "a lone-surrogate jti": key.proof("POST", TOKEN_URL, nonce=nonce, jti="\ud800"),  # was a 500 (replay marker)
    }
    for name, proof in bad.items():
        response = await dpop_client.post("/oauth/token", data=data, headers={"DPoP": proof}, auth=("bff", BFF_SECRET))
        assert response.status_code == 400, name
        assert response.json()["error"] in ("invalid_dpop_proof", "use_dpop_nonce"), (name, response.text)
    two = [("DPoP", key.proof("POST", TOKEN_URL, nonce=nonce))] * 2
    refused = await dpop_client.post("/oauth/token", data=data, headers=two, auth=("bff", BFF_SECRET))
    assert refused.json()["error"] == "invalid_dpop_proof"
    proof = key.proof("POST", TOKEN_URL, nonce=nonce)
    first = await dpop_client.post("/oauth/token", data=data, headers={"DPoP": proof}, auth=("bff", BFF_SECRET))
    assert first.status_code == 200, first.text  # none of the refusals above used the code up
    again = await dpop_client.post("/oauth/token", data=data, headers={"DPoP": proof}, auth=("bff", BFF_SECRET))
    assert again.status_code == 400 and again.json()["error"] == "invalid_dpop_proof"  # a replayed proof


async def test_without_nonces_and_without_dpop(redis_url: str, keys_dir: Path) -> None:
    app = create_app(make_settings(redis_url, keys_dir, AUTH_DPOP_NONCE="0"))
    async with serve_in_process(app) as client:
        assert (await client.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201
        key = DPoPKey()
        bound = await post_token(client, await code_data(client), key, auth=("bff", BFF_SECRET))
        assert bound.status_code == 200 and bound.json()["token_type"] == "DPoP" and "dpop-nonce" not in bound.headers
        plain = await post_token(client, await code_data(client), None, auth=("bff", BFF_SECRET))
        assert plain.json()["token_type"] == "Bearer" and "cnf" not in claims_of(plain.json()["access_token"])
        # a grace retry with another key gets the same refresh token, and an access token bound to that key
        rt = {"grant_type": "refresh_token", "refresh_token": bound.json()["refresh_token"]}
        first = await post_token(client, rt, key, auth=("bff", BFF_SECRET))
        other = DPoPKey()
        retry = await post_token(client, rt, other, auth=("bff", BFF_SECRET))
        assert retry.json()["refresh_token"] == first.json()["refresh_token"]
        assert claims_of(retry.json()["access_token"])["cnf"] == {"jkt": other.jkt}


async def test_a_proof_for_another_host_is_refused_whatever_host_the_request_names(
    dpop_client: httpx.AsyncClient,
) -> None:
    """Issue #18 item 2: the token endpoint compares htu with its issuer's endpoint only, never the Host header."""
    key = DPoPKey()
    data = await code_data(dpop_client)
    challenge = await post_token(dpop_client, data, key, auth=("bff", BFF_SECRET))
    nonce = challenge.headers["dpop-nonce"]
    for host in ("other.test", "auth.internal:9000"):
        proof = key.proof("POST", f"http://{host}/oauth/token", nonce=nonce)
        response = await dpop_client.post(
            "/oauth/token", data=data, headers={"DPoP": proof, "Host": host}, auth=("bff", BFF_SECRET)
        )
        assert response.status_code == 400 and response.json()["error"] == "invalid_dpop_proof", (host, response.text)
    # the advertised endpoint works whatever Host the request came in with (a client on an internal address)
    proof = key.proof("POST", TOKEN_URL, nonce=nonce)
    ok = await dpop_client.post(
        "/oauth/token", data=data, headers={"DPoP": proof, "Host": "auth.internal:9000"}, auth=("bff", BFF_SECRET)
    )
    assert ok.status_code == 200, ok.text
