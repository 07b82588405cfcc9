"""Every attack on the verifier is refused: 401 invalid_token with the RFC 6750 challenge, never a 500.

Each case checks the reason (so the right rule refused it, not an accident) and the HTTP answer of a guarded app.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from resource_server.verifier import InvalidToken, TokenVerifier
from resource_server.verifier.testing import FakeIssuer, KeyPair, b64url

from .helpers import AUDIENCE, ISSUER, bearer, client, guarded_app, hs256, resign

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def issuer() -> FakeIssuer:
    return FakeIssuer(ISSUER, AUDIENCE, "RS256")


@pytest.fixture(scope="module")
def verifier(issuer: FakeIssuer) -> TokenVerifier:
    return issuer.verifier()


def header_of(token: str) -> dict[str, Any]:
    return json.loads(b64url_decode(token.split(".")[0]))


def payload_of(token: str) -> dict[str, Any]:
    return json.loads(b64url_decode(token.split(".")[1]))


def b64url_decode(segment: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _hs256_with_public_pem(i: FakeIssuer) -> str:
    return hs256({"alg": "HS256", "typ": "at+jwt", "kid": i.key.kid}, i.claims("notes:write"), i.key.public_pem)


def _hs256_with_public_jwk(i: FakeIssuer) -> str:
    secret = json.dumps(i.key.public_jwk).encode()
    return hs256({"alg": "HS256", "typ": "at+jwt", "kid": i.key.kid}, i.claims("notes:write"), secret)


def _hs256_with_jwk_modulus(i: FakeIssuer) -> str:
    secret = b64url_decode(i.key.public_jwk["n"])
    return hs256({"alg": "HS256", "typ": "at+jwt", "kid": i.key.kid}, i.claims("notes:write"), secret)


def _tampered_payload(i: FakeIssuer) -> str:
    token = i.token("notes:read", sub="alice")
    return resign(token, payload={**payload_of(token), "sub": "bob", "scope": "notes:read notes:write"})


def _tampered_header(i: FakeIssuer) -> str:
    token = i.token("notes:read")
    return resign(token, header={**header_of(token), "x": 1})


def _other_key_same_kid(i: FakeIssuer) -> str:
    return i.token("notes:write", key=KeyPair("RS256", kid=i.key.kid))


def _embedded_jwk(i: FakeIssuer) -> str:
    # RFC 8725 §3.10: a key carried by the token itself must never be trusted.
    attacker = KeyPair("RS256", kid=i.key.kid)
    return i.token("notes:write", key=attacker, headers={"jwk": attacker.public_jwk})


def _jku_to_attacker_jwks(i: FakeIssuer) -> str:
    attacker = KeyPair("RS256", kid="attacker")
    return i.token(
        "notes:write",
        key=attacker,
        headers={"jku": "https://evil.example.test/jwks.json", "x5u": "https://evil.example.test/cert.pem"},
    )


def _es256_der_signature(i: FakeIssuer) -> str:
    return i.token("notes:read", key=KeyPair("ES256", kid=i.key.kid))


def _signature_stripped(i: FakeIssuer) -> str:
    return i.token("notes:read").rsplit(".", 1)[0] + "."


def _unsigned(alg: str) -> Callable[[FakeIssuer], str]:
    return lambda i: i.unsigned_token("notes:write", alg=alg)


def _unsigned_with_signature(i: FakeIssuer) -> str:
    return i.unsigned_token("notes:write") + "c2lnbmF0dXJl"


def _crit(i: FakeIssuer) -> str:
    return i.token("notes:read", headers={"crit": ["exp"], "exp": 0})


def _claims(**claims: Any) -> Callable[[FakeIssuer], str]:
    return lambda i: i.token("notes:read", **claims)


def _relative(**offsets: int) -> Callable[[FakeIssuer], str]:
    """Time claims as offsets from the moment the token is made (the suite may run for minutes after import)."""
    return lambda i: i.token("notes:read", **{k: int(time.time()) + v for k, v in offsets.items()})


def _headers(**headers: Any) -> Callable[[FakeIssuer], str]:
    return lambda i: i.token("notes:read", headers=headers)


def _infinite_exp(i: FakeIssuer) -> str:
    return i.token("notes:read", exp=float("inf"))  # PyJWT writes `Infinity`: JSON has no such number


ATTACKS: dict[str, tuple[Callable[[FakeIssuer], str], str]] = {
    "alg none": (_unsigned("none"), "malformed"),
    "alg None": (_unsigned("None"), "malformed"),
    "alg NONE": (_unsigned("NONE"), "malformed"),
    "alg nOnE": (_unsigned("nOnE"), "malformed"),
    "alg none with a signature": (_unsigned_with_signature, "alg"),
    "alg None with a signature": (lambda i: i.unsigned_token(alg="None") + "c2ln", "alg"),
    "HS256 keyed with the public key PEM": (_hs256_with_public_pem, "alg"),
    "HS256 keyed with the public JWK": (_hs256_with_public_jwk, "alg"),
    "HS256 keyed with the JWK modulus": (_hs256_with_jwk_modulus, "alg"),
    "tampered payload": (_tampered_payload, "signature"),
    "tampered header": (_tampered_header, "signature"),
    "another key reusing a known kid": (_other_key_same_kid, "signature"),
    "a key embedded in the jwk header": (_embedded_jwk, "signature"),
    "jku/x5u to an attacker's keys": (_jku_to_attacker_jwks, "unknown_kid"),
    "ES256 token on an RSA kid": (_es256_der_signature, "alg"),
    "signature stripped": (_signature_stripped, "malformed"),
    "critical header": (_crit, "crit"),
    "wrong iss": (lambda i: i.wrong_issuer_token("notes:read"), "iss"),
    "iss with a trailing slash": (_claims(iss=ISSUER + "/"), "iss"),
    "iss as a prefix": (_claims(iss=ISSUER + ".evil.example"), "iss"),
    "iss partial": (_claims(iss="https://auth.example"), "iss"),
    "iss in another case": (_claims(iss=ISSUER.upper()), "iss"),
    "iss as a list": (_claims(iss=[ISSUER]), "iss"),
    "iss missing": (_claims(iss=None), "iss"),
    "wrong aud": (lambda i: i.wrong_audience_token("notes:read"), "aud"),
    "aud missing": (_claims(aud=None), "aud"),
    "aud list without ours": (_claims(aud=["other", "notes2"]), "aud"),
    "aud empty list": (_claims(aud=[]), "aud"),
    "aud prefix": (_claims(aud="note"), "aud"),
    "aud as an object": (_claims(aud={"notes": True}), "aud"),
    "exp missing": (_claims(exp=None), "exp"),
    "exp as a string": (lambda i: i.token("notes:read", exp=str(int(time.time()) + 300)), "exp"),
    "exp as true": (_claims(exp=True), "exp"),
    "exp infinite": (_infinite_exp, "malformed"),
    "expired": (lambda i: i.expired_token("notes:read"), "expired"),
    "expired beyond the leeway": (_relative(exp=-31), "expired"),
    "nbf in the future": (_relative(nbf=120), "nbf"),
    "nbf as a string": (_claims(nbf="0"), "nbf"),
    "iat in the future": (_relative(iat=120), "iat"),
    "iat missing": (_claims(iat=None), "iat"),
    "sub missing": (_claims(sub=None), "claims"),
    "sub empty": (_claims(sub=""), "claims"),
    "sub a number": (_claims(sub=42), "claims"),
    "jti missing": (_claims(jti=None), "claims"),
    "client_id missing": (_claims(client_id=None), "claims"),
    "scope a list": (lambda i: i.token(["notes:write"]), "claims"),  # type: ignore[arg-type]
    "typ JWT (an ID token)": (lambda i: i.wrong_type_token("notes:read"), "typ"),
    "typ rt+jwt (a refresh token)": (_headers(typ="rt+jwt"), "typ"),
    "typ missing": (_headers(typ=None), "typ"),
    "typ at+jwt-ish": (_headers(typ="at+jwt2"), "typ"),
    "kid missing": (_headers(kid=None), "kid"),
    "kid a number": (_headers(kid=7), "kid"),
    "unknown kid": (lambda i: i.token("notes:read", key=KeyPair("RS256")), "unknown_kid"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_attack_is_refused_with_invalid_token(name: str, issuer: FakeIssuer, verifier: TokenVerifier) -> None:
    make, reason = ATTACKS[name]
    token = make(issuer)
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    assert caught.value.reason == reason

    async with client(guarded_app(verifier)) as http:
        response = await http.post("/write", headers=bearer(token))
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="notes", error="invalid_token", error_description="')
    assert response.json()["error"] == "invalid_token"


async def test_the_same_checks_accept_a_good_token(issuer: FakeIssuer, verifier: TokenVerifier) -> None:
    """The control for the table above: a well-formed token passes, as do edge cases the rules allow."""
    now = int(time.time())  # not the module's import-time clock: the suite may have run for minutes since
    for token in (
        issuer.token("notes:write"),
        issuer.token("notes:write", aud=["other", AUDIENCE]),
        issuer.token("notes:write", headers={"typ": "application/at+jwt"}),
        issuer.token("notes:write", headers={"typ": "AT+JWT"}),  # media types compare case-insensitively
        issuer.token("notes:write", nbf=None),
        issuer.token("notes:write", nbf=now + 20, iat=now + 20),  # within the 30 s leeway
        issuer.token("notes:write", exp=now - 20),  # expired, but within the leeway
        issuer.token("notes:write", headers={"jku": "https://evil.example.test/jwks.json"}),  # ignored
    ):
        claims = await verifier.verify(token)
        assert claims["sub"] == "test-user"
    async with client(guarded_app(verifier)) as http:
        response = await http.post("/write", headers=bearer(issuer.token("notes:write")))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512", "RS1", "ES256K"])
def test_a_verifier_cannot_be_configured_with_a_weak_or_symmetric_algorithm(alg: str) -> None:
    with pytest.raises(ValueError, match="unsupported algorithms"):
        TokenVerifier(ISSUER, AUDIENCE, ["RS256", alg])


async def test_a_token_over_8_kib_is_refused_before_any_decoding(issuer: FakeIssuer, verifier: TokenVerifier) -> None:
    padding = "x" * 9000
    token = issuer.token("notes:read", padding=padding)  # a validly signed token, only too large
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    assert caught.value.reason == "too_large"
    huge = "A" * 200_000  # a 200 kB "token"
    async with client(guarded_app(verifier)) as http:
        for value in (token, huge, f"{huge}.{huge}.{huge}"):
            response = await http.get("/claims", headers=bearer(value))
            assert response.status_code == 401
            assert 'error="invalid_token"' in response.headers["www-authenticate"]
            assert response.json()["error_description"] == "The access token is too large."


GARBAGE = [
    "abc",
    "a.b",
    "a.b.c",
    "a.b.c.d",
    "...",
    ".a.b",
    "a..b",
    "ey.ey.ey",
    "Zm9v.YmFy.YmF6",
    "===.===.===",
    "e30.e30.e30",  # {} . {} . {}
    f"{b64url('[]')}.{b64url('{}')}.AAAA",  # a header that is JSON but not an object
    f"{b64url('null')}.e30.AAAA",
    b64url(bytes([0xFF, 0xFE])) + ".e30.AAAA",  # not UTF-8
    "eyJhbGciOiJSUzI1NiJ9.eyJ.AAAA",  # truncated JSON payload
    "a" * 8192,
    "é.é.é",
    "a b c",
    "a.b.c;",
    "a+b/c=",
    # JSON nested deeper than the parser's stack (RecursionError, was a 500)
    pytest.param(f"{b64url('[' * 5000)}.e30.AAAA", id="deep-header-array"),
    pytest.param(b64url('{"a":' * 1000) + ".e30.AAAA", id="deep-header-object"),
    pytest.param(f"e30.{b64url('[' * 5000)}.AAAA", id="deep-payload"),
]


@pytest.mark.parametrize("token", GARBAGE)
async def test_garbage_is_invalid_token_never_500(token: str, verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidToken):
        await verifier.verify(token)
    async with client(guarded_app(verifier)) as http:
        response = await http.get("/claims", headers={b"Authorization": f"Bearer {token}".encode()})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_random_mutations_of_a_good_token_are_all_refused(issuer: FakeIssuer, verifier: TokenVerifier) -> None:
    good = issuer.token("notes:write")
    rng = random.Random(9068)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
    async with client(guarded_app(verifier)) as http:
        for _ in range(150):
            chars = list(good)
            for _ in range(rng.randint(1, 3)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            token = "".join(chars)
            if token == good:
                continue
            response = await http.post("/write", headers=bearer(token))
            # A flip in the last base64 character's unused bits can leave the token intact; anything else fails.
            assert response.status_code in (200, 401), response.text
            if response.status_code == 200:
                assert token.rstrip("=").split(".")[:2] == good.split(".")[:2]
            else:
                assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_es256_and_eddsa_keys_verify_and_refuse_like_rs256(alg: str) -> None:
    issuer = FakeIssuer(ISSUER, AUDIENCE, alg)
    verifier = issuer.verifier()
    assert (await verifier.verify(issuer.token("notes:read")))["scope"] == "notes:read"
    for token in (
        _tampered_payload(issuer),
        _other_key_same_kid_for(issuer),
        issuer.unsigned_token(),
        hs256({"alg": "HS256", "typ": "at+jwt", "kid": issuer.key.kid}, issuer.claims(), issuer.key.public_pem),
    ):
        with pytest.raises(InvalidToken):
            await verifier.verify(token)


def _other_key_same_kid_for(issuer: FakeIssuer) -> str:
    return issuer.token("notes:write", key=KeyPair(issuer.key.alg, kid=issuer.key.kid))


async def test_an_algorithm_outside_the_allow_list_is_refused_even_with_a_good_key() -> None:
    issuer = FakeIssuer(ISSUER, AUDIENCE, "RS256")
    ed_key = issuer.add_key("EdDSA")
    verifier = issuer.verifier(algorithms=["RS256"])  # the Ed25519 key is skipped: it fits no allowed algorithm
    assert verifier.keys.get(ed_key.kid) is None
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(issuer.token("notes:read"))
    assert caught.value.reason == "alg"
