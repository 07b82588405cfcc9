"""The check list holds: a good token passes, and each way a token can be wrong is refused."""

from __future__ import annotations

import pytest
from check_token import InsufficientScope, Refused, check_access_token

from jwt_bff_verifier.testing import DPoPKey, FakeIssuer

ISSUER = "https://auth.example.com"


def check(issuer: FakeIssuer, token: str, scheme: str = "Bearer", scope: str | None = "orders:read") -> dict:
    return check_access_token(token, scheme=scheme, jwks=issuer.jwks(), issuer=ISSUER, audience="orders", scope=scope)


def test_a_good_token_passes_and_every_bad_one_is_refused() -> None:
    issuer = FakeIssuer(ISSUER, audience="orders")
    assert check(issuer, issuer.token("orders:read", sub="ann"))["sub"] == "ann"
    stranger = FakeIssuer(ISSUER, audience="orders")  # same names, another key: its kid is unknown here
    for bad in (
        issuer.wrong_type_token("orders:read"),  # typ JWT: an ID token is not an access token
        issuer.unsigned_token("orders:read"),  # alg none
        issuer.token("orders:read", headers={"alg": "HS256"}),  # not on the allow-list
        stranger.token("orders:read"),  # unknown kid
        issuer.token("orders:read", headers={"kid": stranger.key.kid}),  # a kid from elsewhere
        issuer.wrong_issuer_token("orders:read"),
        issuer.wrong_audience_token("orders:read"),
        issuer.expired_token("orders:read"),
        issuer.token("orders:read", exp=None),  # exp is required
        issuer.token("orders:read", nbf=issuer.claims()["iat"] + 3600),  # not valid yet
        issuer.token("orders:read", client_id=None),
        issuer.token("orders:read")[:-4] + "AAAA",  # the signature does not match
        issuer.dpop_token(DPoPKey(), "orders:read"),  # bound to a key, sent as a bearer token
    ):
        with pytest.raises(Refused):
            check(issuer, bad)
    with pytest.raises(InsufficientScope):
        check(issuer, issuer.token("orders:write"))
    # the bound token passes when it comes with the DPoP scheme (its proof is checked next, not shown here)
    assert check(issuer, issuer.dpop_token(DPoPKey(), "orders:read"), scheme="DPoP")["cnf"]["jkt"]
