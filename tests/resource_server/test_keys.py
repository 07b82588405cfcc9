"""The JWKS cache: discovery, at most one refetch per cooldown under a flood of unknown kids, and keys kept while
the auth server is down."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import httpx
import pytest

from resource_server.verifier import InvalidToken, JWKSCache, KeysUnavailable, TokenVerifier
from resource_server.verifier.keys import JWKSError, discovery_urls, parse_jwk
from resource_server.verifier.testing import FakeIssuer, KeyPair

from .helpers import AUDIENCE, ISSUER, Clock, bearer, client, guarded_app

pytestmark = pytest.mark.anyio


class AuthServerDouble:
    """The FakeIssuer's discovery + JWKS app behind a counting, switchable httpx transport."""

    def __init__(self, issuer: FakeIssuer) -> None:
        self.issuer = issuer
        self.requests: list[str] = []
        self.up = True
        self._asgi = httpx.ASGITransport(app=issuer.asgi_app())

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        return await self._asgi.handle_async_request(request)

    def http_client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport()
        transport.handle_async_request = self.handle  # type: ignore[method-assign]
        return httpx.AsyncClient(transport=transport)

    @property
    def jwks_fetches(self) -> int:
        return self.requests.count("/.well-known/jwks.json")


def make_verifier(double: AuthServerDouble, clock: Clock | None = None, **kwargs: Any) -> TokenVerifier:
    cache = JWKSCache(
        issuer=ISSUER,
        algorithms=["RS256", "ES256", "EdDSA"],
        http_client=double.http_client(),
        clock=clock or Clock(),
        cooldown=30,
        **kwargs,
    )
    return TokenVerifier(ISSUER, AUDIENCE, keys=cache)


@pytest.fixture(scope="module")
def issuer() -> FakeIssuer:
    return FakeIssuer(ISSUER, AUDIENCE)


async def test_discovers_the_jwks_uri_from_the_issuer(issuer: FakeIssuer) -> None:
    double = AuthServerDouble(issuer)
    verifier = make_verifier(double)
    assert not verifier.ready
    assert await verifier.start()
    assert verifier.ready
    assert double.requests == ["/.well-known/openid-configuration", "/.well-known/jwks.json"]
    assert (await verifier.verify(issuer.token("notes:read")))["scope"] == "notes:read"
    await verifier.aclose()


async def test_discovery_falls_back_to_rfc8414_metadata_and_refuses_another_issuers() -> None:
    issuer = FakeIssuer(ISSUER, AUDIENCE)
    double = AuthServerDouble(issuer)
    seen: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(404)
        return await double.handle(request)

    transport = httpx.AsyncHTTPTransport()
    transport.handle_async_request = handle  # type: ignore[method-assign]
    cache = JWKSCache(issuer=ISSUER, algorithms=["RS256"], http_client=httpx.AsyncClient(transport=transport))
    assert await cache.refresh()
    assert seen == [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
    ]

    # Metadata that names another issuer is not used (RFC 8414 §3.3): a mix-up must not choose our keys.
    impostor = AuthServerDouble(FakeIssuer("https://other.example.test", AUDIENCE))
    other = JWKSCache(issuer=ISSUER, algorithms=["RS256"], http_client=impostor.http_client())
    assert not await other.refresh()
    assert not other.loaded
    assert impostor.requests == ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]


async def test_a_configured_jwks_url_skips_discovery(issuer: FakeIssuer) -> None:
    double = AuthServerDouble(issuer)
    verifier = make_verifier(double, jwks_url="https://auth.example.test/.well-known/jwks.json")
    await verifier.verify(issuer.token())  # loads on the first token
    assert double.requests == ["/.well-known/jwks.json"]


async def test_a_flood_of_unknown_kids_causes_at_most_one_fetch_per_cooldown(issuer: FakeIssuer) -> None:
    double = AuthServerDouble(issuer)
    clock = Clock()
    verifier = make_verifier(double, clock, jwks_url="https://auth.example.test/.well-known/jwks.json")
    assert await verifier.start()
    assert double.jwks_fetches == 1
    clock.now += 31  # the initial load's cooldown is over

    async def forged() -> str:
        try:
            await verifier.verify(issuer.token("notes:read", key=KeyPair("ES256")))  # a fresh random kid each
        except InvalidToken as exc:
            return exc.reason
        return "accepted"

    reasons = await asyncio.gather(*(forged() for _ in range(300)))
    assert set(reasons) == {"unknown_kid"}
    assert double.jwks_fetches == 2  # one refetch for 300 unknown kids
    reasons = await asyncio.gather(*(forged() for _ in range(100)))
    assert double.jwks_fetches == 2
    clock.now += 29
    await forged()
    assert double.jwks_fetches == 2
    clock.now += 2  # 31 s after the refetch
    await asyncio.gather(*(forged() for _ in range(50)))
    assert double.jwks_fetches == 3
    # And the verifier still verifies good tokens in between, without fetching.
    assert (await verifier.verify(issuer.token("notes:read")))["sub"] == "test-user"
    assert double.jwks_fetches == 3


async def test_an_unknown_kid_refetches_and_finds_a_rotated_key() -> None:
    issuer = FakeIssuer(ISSUER, AUDIENCE)
    double = AuthServerDouble(issuer)
    clock = Clock()
    verifier = make_verifier(double, clock)
    assert await verifier.start()
    new_key = issuer.add_key("EdDSA")
    clock.now += 31
    claims = await verifier.verify(issuer.token("notes:read"))  # signed by the new key
    assert claims["scope"] == "notes:read"
    assert new_key.kid in verifier.keys.kids


async def test_keys_are_kept_while_the_auth_server_is_down(issuer: FakeIssuer) -> None:
    double = AuthServerDouble(issuer)
    clock = Clock()
    verifier = make_verifier(double, clock)
    assert await verifier.start()
    double.up = False
    clock.now += 3600
    assert not await verifier.keys.refresh(force=True)  # a failed periodic refresh keeps the cache
    assert (await verifier.verify(issuer.token("notes:read")))["scope"] == "notes:read"
    with pytest.raises(InvalidToken) as caught:  # an unknown kid is still just an invalid token
        await verifier.verify(issuer.token(key=KeyPair("RS256")))
    assert caught.value.reason == "unknown_kid"


async def test_before_the_first_load_a_token_is_a_503_not_a_401(issuer: FakeIssuer) -> None:
    double = AuthServerDouble(issuer)
    double.up = False
    verifier = make_verifier(double)
    with pytest.raises(KeysUnavailable):
        await verifier.verify(issuer.token("notes:read"))
    async with client(guarded_app(verifier)) as http:
        response = await http.get("/claims", headers=bearer(issuer.token("notes:read")))
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert "www-authenticate" not in response.headers  # not the token's fault: the BFF must not refresh
    double.up = True
    verifier.keys.cooldown = 0
    assert (await verifier.verify(issuer.token("notes:read")))["scope"] == "notes:read"


async def test_the_background_loader_retries_until_the_auth_server_answers(issuer: FakeIssuer) -> None:
    double = AuthServerDouble(issuer)
    double.up = False
    verifier = make_verifier(double)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: verifier.keys.run(first_delay=0.01, max_delay=0.02))
        await anyio.sleep(0.1)
        assert not verifier.ready
        assert double.requests  # it kept trying
        double.up = True
        with anyio.fail_after(2):
            while not verifier.ready:  # noqa: ASYNC110 (polling the state under test)
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    "document",
    [
        {"keys": []},
        {"nokeys": 1},
        [],
        {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]},
    ],
)
async def test_a_bad_jwks_document_keeps_the_cached_keys(issuer: FakeIssuer, document: Any) -> None:
    cache = JWKSCache(issuer=ISSUER, algorithms=["RS256"], jwks=issuer.jwks())
    with pytest.raises(JWKSError):
        cache.load(document)
    assert cache.kids == {issuer.key.kid}


def test_unusable_keys_are_skipped() -> None:
    import jwt.algorithms
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    weak_jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(weak, as_dict=True), "kid": "weak"}
    p384 = {
        **jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True),
        "kid": "p384",
    }
    good = KeyPair("ES256").public_jwk
    cases = {
        "a 1024-bit RSA key": weak_jwk,
        "an HMAC secret": {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        "an encryption key": {**good, "use": "enc"},
        "a key without kid": {k: v for k, v in good.items() if k != "kid"},
        "a P-384 key when ES384 is not allowed": p384,
        "a key whose alg is not allowed": {**good, "alg": "ES384"},
        "garbage coordinates": {**good, "x": "AAAA"},
    }
    for name, jwk in cases.items():
        with pytest.raises(JWKSError):
            parse_jwk(jwk, ["RS256", "ES256", "EdDSA"])
            pytest.fail(name)
    assert parse_jwk(good, ["ES256"]).algorithms == {"ES256"}


def test_discovery_urls_follow_oidc_and_rfc8414_for_issuers_with_a_path() -> None:
    assert discovery_urls("https://auth.example") == (
        "https://auth.example/.well-known/openid-configuration",
        "https://auth.example/.well-known/oauth-authorization-server",
    )
    assert discovery_urls("https://auth.example/tenant/") == (
        "https://auth.example/tenant/.well-known/openid-configuration",
        "https://auth.example/.well-known/oauth-authorization-server/tenant",
    )
