"""The verified-token cache skips only the signature check: expiry and key removal still apply."""

from __future__ import annotations

import pytest

from resource_server.verifier import ExpiredToken, InvalidToken
from resource_server.verifier.testing import FakeIssuer

from .helpers import AUDIENCE, ISSUER, Clock

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def issuer() -> FakeIssuer:
    return FakeIssuer(ISSUER, AUDIENCE, "ES256")


async def test_a_cached_token_still_expires(issuer: FakeIssuer) -> None:
    clock = Clock()
    verifier = issuer.verifier(clock=clock)
    token = issuer.token("notes:read", exp=int(clock.now) + 60)
    await verifier.verify(token)
    assert token in verifier._verified
    clock.now += 60 + 29
    assert (await verifier.verify(token))["scope"] == "notes:read"  # within the leeway
    clock.now += 2
    with pytest.raises(ExpiredToken):
        await verifier.verify(token)
    with pytest.raises(ExpiredToken):
        await verifier.verify(token)  # and again, now from scratch


async def test_a_cached_token_is_refused_once_its_key_leaves_the_jwks() -> None:
    issuer = FakeIssuer(ISSUER, AUDIENCE, "EdDSA")
    verifier = issuer.verifier()
    token = issuer.token("notes:read")
    await verifier.verify(token)
    old = issuer.key
    issuer.add_key()
    issuer.keys.remove(old)  # the old key is withdrawn (e.g. compromised)
    verifier.keys.load(issuer.jwks())
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    assert caught.value.reason == "unknown_kid"


async def test_callers_get_their_own_copy_of_the_claims(issuer: FakeIssuer) -> None:
    verifier = issuer.verifier()
    token = issuer.token("notes:read")
    first = await verifier.verify(token)
    first["scope"] = "notes:write admin"
    assert (await verifier.verify(token))["scope"] == "notes:read"
    again = await verifier.verify(token)
    again["sub"] = "mallory"
    assert (await verifier.verify(token))["sub"] == "test-user"


async def test_the_cache_is_bounded_and_can_be_disabled(issuer: FakeIssuer) -> None:
    verifier = issuer.verifier(cache_size=2)
    tokens = [issuer.token(jti=str(i)) for i in range(5)]
    for token in tokens:
        await verifier.verify(token)
    assert list(verifier._verified) == tokens[-2:]
    uncached = issuer.verifier(cache_size=0)
    await uncached.verify(tokens[0])
    assert not uncached._verified


async def test_invalid_tokens_never_enter_the_cache(issuer: FakeIssuer) -> None:
    verifier = issuer.verifier()
    for token in (issuer.expired_token(), issuer.wrong_audience_token(), issuer.unsigned_token(), "a.b.c"):
        with pytest.raises(InvalidToken):
            await verifier.verify(token)
    assert not verifier._verified
