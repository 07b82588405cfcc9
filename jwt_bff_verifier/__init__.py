"""A JWT access-token verifier for resource servers (RFC 9068, RFC 8725, RFC 6750 errors).

Importable alone: it depends on PyJWT, cryptography and httpx (and Starlette for ``.starlette``), never on the
rest of jwt-bff. ``TokenVerifier`` checks tokens against the issuer's JWKS, cached by ``kid``;
``jwt_bff_verifier.starlette`` has the ASGI middleware and ``requires_scope``;
``jwt_bff_verifier.testing`` mints tokens for your own tests.
"""

from .errors import (
    ExpiredToken,
    InsufficientScope,
    InsufficientUserAuthentication,
    InvalidRequest,
    InvalidToken,
    KeysUnavailable,
    MissingToken,
    RevokedToken,
    VerifierError,
)
from .keys import SUPPORTED_ALGORITHMS, JWKSCache, VerificationKey
from .revocations import RevocationList
from .verifier import (
    DEFAULT_ALGORITHMS,
    MAX_TOKEN_LENGTH,
    AccessTokenClaims,
    TokenVerifier,
    check_authentication,
    scopes_of,
)

__all__ = [
    "DEFAULT_ALGORITHMS",
    "MAX_TOKEN_LENGTH",
    "SUPPORTED_ALGORITHMS",
    "AccessTokenClaims",
    "ExpiredToken",
    "InsufficientScope",
    "InsufficientUserAuthentication",
    "InvalidRequest",
    "InvalidToken",
    "JWKSCache",
    "KeysUnavailable",
    "MissingToken",
    "RevocationList",
    "RevokedToken",
    "TokenVerifier",
    "VerificationKey",
    "VerifierError",
    "check_authentication",
    "scopes_of",
]
