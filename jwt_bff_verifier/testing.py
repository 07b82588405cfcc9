"""Test helpers for resource teams: a throw-away key pair, its JWKS, and tokens good and bad — no auth server.

::

    from jwt_bff_verifier.testing import FakeIssuer

    issuer = FakeIssuer(audience="notes")                 # RS256 by default; FakeIssuer(alg="ES256"/"EdDSA")
    verifier = issuer.verifier()                           # a TokenVerifier that already holds the JWKS
    good = issuer.token(scope="notes:read", sub="alice")  # valid for 5 minutes
    issuer.expired_token(), issuer.wrong_audience_token(), issuer.wrong_issuer_token(),
    issuer.wrong_type_token(), issuer.unsigned_token()     # each is refused with 401 invalid_token

Any claim or header can be overridden (``issuer.token(aud=["a", "notes"])``) or removed with None
(``issuer.token(exp=None)``). ``issuer.jwks()`` and ``issuer.asgi_app()`` serve the keys and the discovery
document for tests that go through a real ``TokenVerifier`` fetching over HTTP.

DPoP (RFC 9449): ``key = DPoPKey()`` is a client's proof key; ``issuer.dpop_token(key, scope=...)`` a token bound to
it (``cnf.jkt``); ``key.proof("GET", "http://rs.test/notes", token)`` a proof for one request (any claim or header
can be overridden, to test refusals).

Revocation (DESIGN §9): ``issuer.revoke(sid)`` ends a login; ``issuer.verifier(revocations=True)`` learns it at once
(no polling), and ``asgi_app()`` serves it on ``/oauth/revocations`` for a verifier that polls over HTTP.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from .dpop import DPOP_TYP, access_token_hash, jwk_thumbprint
from .keys import JWKSCache
from .revocations import RevocationList
from .verifier import DEFAULT_ALGORITHMS, TokenVerifier

__all__ = ["DPoPKey", "FakeIssuer", "KeyPair", "b64url"]


def b64url(data: bytes | str | Mapping[str, Any]) -> str:
    """base64url without padding (RFC 7515 §2) of bytes, a string, or a JSON object."""
    if isinstance(data, Mapping):
        data = json.dumps(data, separators=(",", ":"))
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class KeyPair:
    """A fresh signing key for ``alg`` (RS256: RSA 2048, ES256: P-256, EdDSA: Ed25519) and its public JWK."""

    def __init__(self, alg: str = "RS256", kid: str | None = None) -> None:
        self.alg = alg
        self.kid = kid or f"test-{alg.lower()}-{secrets.token_hex(4)}"
        self.private_key: Any
        if alg.startswith(("RS", "PS")):
            self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        elif alg == "ES256":
            self.private_key = ec.generate_private_key(ec.SECP256R1())
            jwk = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        elif alg == "EdDSA":
            self.private_key = ed25519.Ed25519PrivateKey.generate()
            jwk = OKPAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        else:
            raise ValueError(f"no test keys for {alg!r}: use RS256, PS256, ES256 or EdDSA")
        self.public_jwk: dict[str, Any] = {**jwk, "kid": self.kid, "alg": alg, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return bytes(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, payload: Mapping[str, Any], headers: Mapping[str, Any]) -> str:
        """A JWS of exactly this header and payload (no claim checks: tests need broken tokens too)."""
        signing_input = f"{b64url({'alg': self.alg, **headers})}.{b64url(payload)}"
        signature = jwt.get_algorithm_by_name(self.alg).sign(signing_input.encode(), self.private_key)
        return f"{signing_input}.{b64url(signature)}"


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


class DPoPKey:
    """A DPoP client's key pair (ES256 by default) and the proofs it makes (RFC 9449 §4.2)."""

    def __init__(self, alg: str = "ES256") -> None:
        self.pair = KeyPair(alg)
        self.jwk = {k: v for k, v in self.pair.public_jwk.items() if k not in ("kid", "alg", "use")}
        self.jkt = jwk_thumbprint(self.jwk)  # what a bound token's cnf.jkt holds

    def proof(
        self,
        method: str,
        url: str,
        access_token: str | None = None,
        *,
        nonce: str | None = None,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A fresh proof for one ``method`` request of ``url`` (with ``ath`` when ``access_token`` is given);
        ``claims``/``headers`` override (None removes), e.g. ``iat=0`` or ``headers={"typ": "JWT"}``."""
        payload: dict[str, Any] = {"jti": secrets.token_urlsafe(12), "htm": method, "htu": url, "iat": int(time.time())}
        if access_token is not None:
            payload["ath"] = access_token_hash(access_token)
        if nonce is not None:
            payload["nonce"] = nonce
        payload.update(claims)
        header = _without_none({"typ": DPOP_TYP, "jwk": self.jwk, **(headers or {})})
        return self.pair.sign(_without_none(payload), header)


class FakeIssuer:
    """Mints RFC 9068 access tokens for ``audience`` with its own key pair, as an auth server would."""

    def __init__(
        self,
        issuer: str = "https://auth.example.test",
        audience: str = "api",
        alg: str = "RS256",
        *,
        key: KeyPair | None = None,
        lifetime: int = 300,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.key = key or KeyPair(alg)
        self.keys: list[KeyPair] = [self.key]
        self.lifetime = lifetime
        self.revoked: list[tuple[str, int]] = []  # (sid, exp): the revocation feed, in order
        self.revocation_list = RevocationList()  # what verifier(revocations=True) consults, fed by revoke()

    # -- what the auth server publishes -------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        """The JWKS document with every public key of this issuer."""
        return {"keys": [pair.public_jwk for pair in self.keys]}

    def metadata(self, base_url: str | None = None) -> dict[str, Any]:
        """An RFC 8414 / OIDC discovery document whose ``jwks_uri`` is under ``base_url`` (default: the issuer)."""
        base = (base_url or self.issuer).rstrip("/")
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "revocation_feed_endpoint": f"{base}/oauth/revocations",  # as our auth server advertises its feed
        }

    def asgi_app(self, base_url: str | None = None) -> Any:
        """A Starlette app serving the discovery document and the JWKS (to test fetching and discovery)."""
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def metadata(request: Request) -> JSONResponse:
            return JSONResponse(self.metadata(base_url or str(request.base_url)))

        async def jwks(request: Request) -> JSONResponse:
            return JSONResponse(self.jwks())

        async def revocations(request: Request) -> JSONResponse:
            # The auth server's feed format; the cursor is simply the number of entries already read.
            since = request.query_params.get("since", "0")
            start = int(since) if since.isdigit() else 0
            entries = [{"sid": sid, "exp": exp} for sid, exp in self.revoked[start:]]
            return JSONResponse({"revocations": entries, "cursor": str(len(self.revoked)), "more": False})

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", metadata),
                Route("/.well-known/oauth-authorization-server", metadata),
                Route("/.well-known/jwks.json", jwks),
                Route("/oauth/revocations", revocations),
            ]
        )

    def add_key(self, alg: str | None = None, kid: str | None = None) -> KeyPair:
        """Add (and start signing with) a new key, as a key rotation does; the old ones stay published."""
        self.key = KeyPair(alg or self.key.alg, kid)
        self.keys.append(self.key)
        return self.key

    def revoke(self, sid: str) -> None:
        """End the login ``sid``, as a logout at the auth server does: its tokens are refused from now on."""
        exp = int(time.time()) + self.lifetime + 60
        self.revoked.append((sid, exp))
        self.revocation_list.add(sid, exp)

    def verifier(self, **kwargs: Any) -> TokenVerifier:
        """A ``TokenVerifier`` for this issuer and audience that already holds the JWKS (no network at all);
        ``revocations=True`` makes it refuse the logins ``revoke()`` ended, at once (with ``revocations_url``, it
        polls that URL instead, e.g. ``asgi_app()`` served on a socket)."""
        if kwargs.get("revocations") is True and "revocations_url" not in kwargs:
            kwargs["revocations"] = self.revocation_list
        algorithms = kwargs.pop("algorithms", DEFAULT_ALGORITHMS)
        cache = JWKSCache(issuer=self.issuer, algorithms=algorithms, jwks=self.jwks())
        return TokenVerifier(self.issuer, self.audience, algorithms, kwargs.pop("leeway", 30), keys=cache, **kwargs)

    # -- tokens -------------------------------------------------------------------------------------------------

    def claims(self, scope: str | None = "", **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "test-user",
            "aud": self.audience,
            "exp": now + self.lifetime,
            "iat": now,
            "nbf": now,
            "jti": secrets.token_urlsafe(16),
            "client_id": "test-client",
            "scope": scope,
        }
        claims.update(overrides)
        return _without_none(claims)

    def token(
        self,
        scope: str | None = "",
        *,
        headers: Mapping[str, Any] | None = None,
        key: KeyPair | None = None,
        **claims: Any,
    ) -> str:
        """A valid access token; ``claims``/``headers`` override (None removes), ``key`` signs with another pair."""
        signer = key or self.key
        header = _without_none({"typ": "at+jwt", "kid": signer.kid, **(headers or {})})
        return signer.sign(self.claims(scope, **claims), header)

    def dpop_token(self, key: DPoPKey, scope: str | None = "", **claims: Any) -> str:
        """An access token bound to ``key`` (``cnf.jkt``, RFC 9449 §6.1): usable only with a proof by that key."""
        return self.token(scope, cnf={"jkt": key.jkt}, **claims)

    def expired_token(self, scope: str | None = "", **claims: Any) -> str:
        now = int(time.time())
        return self.token(scope, **{"exp": now - 3600, "iat": now - 3900, "nbf": now - 3900, **claims})

    def wrong_audience_token(self, scope: str | None = "", **claims: Any) -> str:
        return self.token(scope, **{"aud": "another-api", **claims})

    def wrong_issuer_token(self, scope: str | None = "", **claims: Any) -> str:
        return self.token(scope, **{"iss": "https://evil.example.test", **claims})

    def wrong_type_token(self, scope: str | None = "", **claims: Any) -> str:
        """An ID-token-like JWT (``typ: JWT``): right key and claims, but not an access token (RFC 9068 §4)."""
        return self.token(scope, headers={"typ": "JWT"}, **claims)

    def unsigned_token(self, scope: str | None = "", alg: str = "none", **claims: Any) -> str:
        """``alg: none`` with an empty signature (RFC 7519 §6): must never be accepted."""
        header = {"alg": alg, "typ": "at+jwt", "kid": self.key.kid}
        return f"{b64url(header)}.{b64url(self.claims(scope, **claims))}."
