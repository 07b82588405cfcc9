"""What a resource server must check in a jwt-bff access token (RFC 9068 §4, RFC 8725), spelled out with a general
JWT library (PyJWT) rather than jwt-bff-verifier: the same list applies in any language and library."""

from __future__ import annotations

from typing import Any

import jwt

# The algorithms you accept, fixed in your code: never taken from the token. Never "none"; never HS256 and kin
# (the JWKS holds public keys: an HMAC "signed" with a public key is forged by anyone).
ALLOWED_ALGORITHMS = {"RS256", "ES256", "EdDSA"}
LEEWAY = 30  # seconds of clock skew allowed for exp, nbf and iat


class Refused(Exception):
    """401 with WWW-Authenticate: Bearer error="invalid_token" (RFC 6750 §3.1)."""


class InsufficientScope(Exception):
    """403 with WWW-Authenticate: Bearer error="insufficient_scope", scope="..." (RFC 6750 §3.1)."""


def check_access_token(
    token: str, *, scheme: str, jwks: dict[str, Any], issuer: str, audience: str, scope: str | None = None
) -> dict[str, Any]:
    """The claims of ``token`` if every check passes; raises ``Refused`` or ``InsufficientScope`` otherwise.

    ``jwks`` is the auth server's key set (``jwks_uri`` of ``{issuer}/.well-known/openid-configuration``), fetched
    and cached by your code; ``scheme`` the Authorization header's scheme (``Bearer`` or ``DPoP``).
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Refused("not a JWS") from exc
    # 1. typ: RFC 9068 §4 — an access token says so; an ID token (typ JWT) must not pass as one.
    if str(header.get("typ", "")).lower() not in ("at+jwt", "application/at+jwt"):
        raise Refused("typ is not at+jwt")
    # 2. alg: from your allow-list (RFC 8725 §3.1).
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise Refused("alg not allowed")
    # 3. The key: the JWKS entry with the header's kid, and only that (RFC 8725 §3.10: ignore jku, x5u and jwk
    #    headers — a token must not name its own key). An unknown kid: refetch the JWKS, at most once per cooldown
    #    (the auth server rotates keys), then refuse.
    entry = next((key for key in jwks["keys"] if key.get("kid") == header.get("kid")), None)
    if entry is None:
        raise Refused("unknown kid")
    try:
        key = jwt.PyJWK(entry, algorithm=alg)  # the key's type must fit alg: an RSA key cannot check an ES256 token
        # 4. The signature, then the claims: iss exactly; your audience in aud (a string or a list); exp required
        #    and in the future, nbf and iat not in the future (with the leeway); sub, jti, client_id present.
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            issuer=issuer,
            audience=audience,
            leeway=LEEWAY,
            options={"require": ["iss", "aud", "exp", "iat", "sub", "jti", "client_id"]},
        )
    except jwt.PyJWTError as exc:
        raise Refused(str(exc)) from exc
    # 5. DPoP (RFC 9449 §7): a token bound to a key (cnf.jkt) is never a bearer token; with the DPoP scheme, also
    #    check the proof in the DPoP header (its signature by that key, htm, htu, iat, jti once, ath).
    if "cnf" in claims and scheme.lower() != "dpop":
        raise Refused("a DPoP-bound token sent as a bearer token")
    # 6. The scope your endpoint needs, among the token's space-separated scopes.
    if scope is not None and scope not in str(claims.get("scope", "")).split():
        raise InsufficientScope(scope)
    return claims
