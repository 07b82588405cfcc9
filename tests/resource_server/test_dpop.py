"""RFC 9449 at the resource server: a DPoP-bound token works only with a fresh proof by its key, for this request —
every check of §4.3 has a test that tries to break it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from resource_server.verifier import TokenVerifier
from resource_server.verifier.dpop import NonceIssuer, ReplayCache, jwk_thumbprint, normalize_htu
from resource_server.verifier.testing import DPoPKey, FakeIssuer, KeyPair, b64url

from .helpers import AUDIENCE, ISSUER, client, guarded_app

pytestmark = pytest.mark.anyio

URL = "http://rs.test/claims"


def dpop(token: str, proof: str | None) -> dict[str, str]:
    headers = {"Authorization": f"DPoP {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return headers


async def get(verifier: TokenVerifier, headers: Any) -> Any:
    async with client(guarded_app(verifier)) as c:
        return await c.get("/claims", headers=headers)


def refused(response: Any, error: str, scheme: str = "DPoP") -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == error, response.json()
    assert response.headers["www-authenticate"].startswith(f"{scheme} "), response.headers["www-authenticate"]


async def test_a_bound_token_with_a_proof_by_its_key_works() -> None:
    issuer, key = FakeIssuer(ISSUER, AUDIENCE), DPoPKey()
    token = issuer.dpop_token(key, sub="alice")
    response = await get(issuer.verifier(), dpop(token, key.proof("GET", URL, token)))
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == "alice" and response.json()["cnf"] == {"jkt": key.jkt}


@pytest.mark.parametrize("alg", ["RS256", "PS256", "EdDSA"])
async def test_other_proof_algorithms(alg: str) -> None:
    issuer, key = FakeIssuer(ISSUER, AUDIENCE), DPoPKey(alg)
    token = issuer.dpop_token(key)
    assert (await get(issuer.verifier(), dpop(token, key.proof("GET", URL, token)))).status_code == 200


async def test_a_bound_token_is_never_a_bearer_token() -> None:
    issuer, key = FakeIssuer(ISSUER, AUDIENCE), DPoPKey()
    token = issuer.dpop_token(key)
    for mode in ("off", "allowed", "required"):
        verifier = issuer.verifier(dpop=mode)
        as_bearer = await get(verifier, {"Authorization": f"Bearer {token}", "DPoP": key.proof("GET", URL, token)})
        refused(as_bearer, "invalid_token", "DPoP" if mode == "required" else "Bearer")


async def test_the_proof_must_be_there_once_for_this_request_this_key_and_this_token() -> None:
    issuer, key, thief = FakeIssuer(ISSUER, AUDIENCE), DPoPKey(), DPoPKey()
    token, other_token = issuer.dpop_token(key), issuer.dpop_token(key)
    verifier = issuer.verifier()
    now = int(time.time())
    bad = {
        "no proof": None,
        "another URL": key.proof("GET", "http://rs.test/other", token),
        "another host": key.proof("GET", "http://evil.test/claims", token),
        "another method": key.proof("POST", URL, token),
        "another key": thief.proof("GET", URL, token),
        "no ath": key.proof("GET", URL),
        "another token's ath": key.proof("GET", URL, other_token),
        "too old": key.proof("GET", URL, token, iat=now - 300),
        "from the future": key.proof("GET", URL, token, iat=now + 300),
        "iat not a number": key.proof("GET", URL, token, iat="now"),
        "no jti": key.proof("GET", URL, token, jti=None),
        "typ JWT": key.proof("GET", URL, token, headers={"typ": "JWT"}),
        "no typ": key.proof("GET", URL, token, headers={"typ": None}),
        "no jwk": key.proof("GET", URL, token, headers={"jwk": None}),
        "a private jwk": key.proof("GET", URL, token, headers={"jwk": {**key.jwk, "d": "AAAA"}}),
        "a jwk of another key": key.proof("GET", URL, token, headers={"jwk": thief.jwk}),
        "crit": key.proof("GET", URL, token, headers={"crit": ["x"]}),
        "not a JWS": "abc.def",
        "oversized": "a" * 5000 + ".b.c",
    }
    header = b64url({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk})
    claims = b64url({"jti": "x", "htm": "GET", "htu": URL, "iat": now, "ath": "x"})
    bad["alg none"] = f"{header}.{claims}."
    hmac_key = KeyPair("ES256")
    bad["alg HS256"] = hmac_key.sign({"jti": "y", "htm": "GET", "htu": URL, "iat": now}, {"typ": "dpop+jwt"}).replace(
        b64url({"alg": "ES256", "typ": "dpop+jwt"}), b64url({"alg": "HS256", "typ": "dpop+jwt", "jwk": key.jwk})
    )
    for name, proof in bad.items():
        response = await get(verifier, dpop(token, proof))
        assert response.status_code == 401, name
        assert response.json()["error"] == "invalid_dpop_proof", (name, response.json())
        assert response.headers["www-authenticate"].startswith("DPoP "), name
    twice = [("Authorization", f"DPoP {token}"), ("DPoP", key.proof("GET", URL, token))]
    two = await get(verifier, [*twice, ("DPoP", key.proof("GET", URL, token))])
    refused(two, "invalid_dpop_proof")


async def test_a_replayed_proof_is_refused() -> None:
    issuer, key = FakeIssuer(ISSUER, AUDIENCE), DPoPKey()
    token = issuer.dpop_token(key)
    verifier = issuer.verifier()
    proof = key.proof("GET", URL, token)
    assert (await get(verifier, dpop(token, proof))).status_code == 200
    refused(await get(verifier, dpop(token, proof)), "invalid_dpop_proof")
    assert (await get(verifier, dpop(token, key.proof("GET", URL, token)))).status_code == 200  # a fresh one works


async def test_the_url_is_compared_normalized() -> None:
    issuer, key = FakeIssuer(ISSUER, AUDIENCE), DPoPKey()
    token = issuer.dpop_token(key)
    for htu in ("HTTP://RS.TEST:80/claims", "http://rs.test/claims?x=1#f", "http://rs.test/%63laims"):
        assert (await get(issuer.verifier(), dpop(token, key.proof("GET", htu, token)))).status_code == 200, htu
    assert normalize_htu("https://a.test:443") == "https://a.test/"
    assert normalize_htu("https://a.test/%7e%2f") == "https://a.test/~%2F"
    assert normalize_htu("ftp://a.test/") is None and normalize_htu("http://[::1]:8080/x") == "http://[::1]:8080/x"


async def test_an_unbound_token_cannot_use_the_dpop_scheme_and_required_means_bound_only() -> None:
    issuer, key = FakeIssuer(ISSUER, AUDIENCE), DPoPKey()
    plain = issuer.token()
    refused(await get(issuer.verifier(), dpop(plain, key.proof("GET", URL, plain))), "invalid_token")
    assert (await get(issuer.verifier(), {"Authorization": f"Bearer {plain}"})).status_code == 200
    required = issuer.verifier(dpop="required")
    refused(await get(required, {"Authorization": f"Bearer {plain}"}), "invalid_token")
    refused(await get(required, {}), "unauthorized")
    bound = issuer.dpop_token(key)
    assert (await get(required, dpop(bound, key.proof("GET", URL, bound)))).status_code == 200
    off = await get(issuer.verifier(dpop="off"), dpop(bound, key.proof("GET", URL, bound)))
    assert off.status_code == 401 and off.headers["www-authenticate"] == 'Bearer realm="notes"'  # DPoP unknown


async def test_a_nonce_challenge_then_the_proof_with_the_nonce() -> None:
    issuer, key = FakeIssuer(ISSUER, AUDIENCE), DPoPKey()
    token = issuer.dpop_token(key)
    verifier = issuer.verifier(dpop_nonces=NonceIssuer(b"n" * 32))
    challenge = await get(verifier, dpop(token, key.proof("GET", URL, token)))
    refused(challenge, "use_dpop_nonce")
    nonce = challenge.headers["dpop-nonce"]
    assert (await get(verifier, dpop(token, key.proof("GET", URL, token, nonce=nonce)))).status_code == 200
    refused(await get(verifier, dpop(token, key.proof("GET", URL, token, nonce="1.forged"))), "use_dpop_nonce")


def test_thumbprint_and_nonce_and_replay_cache_units() -> None:
    # RFC 7638 §3.1's example key and thumbprint
    rsa = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV"
        "4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdA"
        "ZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU"
        "8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(rsa) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    clock = [1000.0]
    nonces = NonceIssuer(b"s" * 32, lifetime=60, clock=lambda: clock[0])
    nonce = nonces.issue()
    assert nonces.valid(nonce) and not NonceIssuer(b"t" * 32).valid(nonce)
    clock[0] += 70
    assert nonces.valid(nonce)  # the next window still takes it
    clock[0] += 60
    assert not nonces.valid(nonce) and not nonces.valid(None) and not nonces.valid("x" * 100)
    cache = ReplayCache(max_entries=2)
    assert not cache.seen("a", 10, 0) and cache.seen("a", 10, 5) and not cache.seen("a", 20, 11)
    assert not cache.seen("b", 30, 11) and not cache.seen("c", 30, 12) and len(cache) <= 2


@pytest.mark.parametrize(
    "header",
    ["[" * 5000, '{"typ": "dpop+jwt", "alg": "ES256", "jwk": ' + "[" * 3000],
    ids=["deep-array", "deep-jwk"],
)
async def test_a_deeply_nested_proof_header_is_refused_never_a_500(header: str) -> None:
    # JSON nested deeper than the parser's stack raised RecursionError: a 500 here and at the token endpoint.
    issuer, key = FakeIssuer(ISSUER, AUDIENCE), DPoPKey()
    token = issuer.dpop_token(key)
    refused(await get(issuer.verifier(), dpop(token, f"{b64url(header)}.e30.AAAA")), "invalid_dpop_proof")


def test_nonces_in_unicode_digits_or_letters_are_invalid_never_an_exception() -> None:
    clock = [1000.0]
    nonces = NonceIssuer(b"s" * 32, lifetime=60, clock=lambda: clock[0])
    window = nonces.issue().split(".")[0]
    # str.isdigit() takes "²" (int() does not) and hmac.compare_digest() refuses non-ASCII text: both raised
    for nonce in ("\u00b2.abc", f"{window}.\u00e9\u00e9", f"{window}\u0661.abc", "\u0661.x"):
        assert not nonces.valid(nonce)


async def handshake(app: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    """One WebSocket handshake to ``/ws/echo`` as uvicorn presents it; what the app sent (accept + hello, or close)."""
    sent: list[dict[str, Any]] = []
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] in ("websocket.send", "websocket.close"):
            inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws/echo",
        "raw_path": b"/ws/echo",
        "query_string": b"",
        "root_path": "",
        "server": ("rs.test", 80),
        "client": ("127.0.0.1", 5000),
        "subprotocols": [],
        "headers": [(b"host", b"rs.test"), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
    }
    await asyncio.wait_for(app(scope, inbox.get, send), 5)
    return sent


async def test_a_websocket_handshake_takes_a_dpop_token_with_its_proof() -> None:
    from resource_server.app import create_app
    from resource_server.settings import Settings

    issuer, key = FakeIssuer(ISSUER, AUDIENCE), DPoPKey()
    token = issuer.dpop_token(key, sub="ann")
    settings = Settings.from_env({"RS_ISSUER": ISSUER, "REDIS_URL": "redis://127.0.0.1:1/0"})
    app = create_app(settings, verifier=issuer.verifier())
    headers = {"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", "http://rs.test/ws/echo", token)}
    opened = await handshake(app, headers)  # signed as the HTTP GET a handshake is
    assert opened[0]["type"] == "websocket.accept" and '"sub":"ann"' in opened[1]["text"].replace(" ", "")
    for refused in ({"Authorization": f"Bearer {token}"}, headers):  # as a bearer token; the proof replayed
        assert (await handshake(app, refused))[0] == {"type": "websocket.close", "code": 1008, "reason": ""}


@pytest.mark.parametrize(
    "claims",
    [{"jti": "\ud800"}, {"jti": "a\udfffb"}, {"ath": "\u00e9" * 43}],
    ids=["lone-surrogate-jti", "lone-low-surrogate-jti", "non-ascii-ath"],
)
async def test_a_signed_proof_with_an_unencodable_jti_or_non_ascii_ath_is_refused(claims: dict[str, str]) -> None:
    # Any client signs its own proofs: a jti of "\ud800" broke the auth server's replay marker (encode) and a
    # non-ASCII ath made hmac.compare_digest() raise — both 500s.
    issuer, key = FakeIssuer(ISSUER, AUDIENCE), DPoPKey()
    token = issuer.dpop_token(key)
    refused(await get(issuer.verifier(), dpop(token, key.proof("GET", URL, token, **claims))), "invalid_dpop_proof")


async def test_a_proof_for_another_server_is_refused_even_with_that_servers_host() -> None:
    """Issue #18 item 2: an upstream that received a token (valid at two audiences) and a proof for itself replays
    both here, with its own Host header. Without RS_PUBLIC_URL such a token is refused for DPoP; with it, only the
    configured URL counts, never the Host."""
    issuer, key = FakeIssuer(ISSUER, AUDIENCE), DPoPKey()
    token = issuer.dpop_token(key, aud=[AUDIENCE, "other-api"])
    proof_for_other = key.proof("GET", "http://other-api.test/claims", token)
    forged_host = {**dpop(token, proof_for_other), "Host": "other-api.test"}
    refused(await get(issuer.verifier(), forged_host), "invalid_token")  # several audiences: needs public_urls
    configured = issuer.verifier(public_urls=["https://api.example/", "http://rs.test"])
    refused(
        await get(configured, {**dpop(token, key.proof("GET", "http://other-api.test/claims", token))}),
        "invalid_dpop_proof",
    )
    refused(
        await get(
            configured,
            {**dpop(token, key.proof("GET", "http://other-api.test/claims", token)), "Host": "other-api.test"},
        ),
        "invalid_dpop_proof",
    )
    for url in ("https://api.example/claims", URL):  # either configured base URL, the request's path under it
        response = await get(configured, {**dpop(token, key.proof("GET", url, token)), "Host": "internal:8080"})
        assert response.status_code == 200, (url, response.text)
    # a token of this audience alone keeps working without the setting (its Host is trusted: nobody else holds it)
    single = issuer.dpop_token(key)
    assert (await get(issuer.verifier(), dpop(single, key.proof("GET", URL, single)))).status_code == 200
    with pytest.raises(ValueError, match="public URL"):
        issuer.verifier(public_urls=["api.example"])
