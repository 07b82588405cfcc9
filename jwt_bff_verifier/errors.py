"""Errors of the verifier library, each carrying its RFC 6750 wire format.

The tree (catch ``VerifierError`` to catch them all)::

    VerifierError                     the root; never raised itself
     ├── InvalidRequest               400  error="invalid_request"   (e.g. two token methods, RFC 6750 §2)
     ├── MissingToken                 401  no error code             (RFC 6750 §3.1: none when no credentials)
     ├── InvalidToken                 401  error="invalid_token"
     │    ├── ExpiredToken            401  "The access token provided has expired."
     │    └── RevokedToken            401  "The token was revoked." (its login ended: DESIGN §9)
     ├── InvalidDPoPProof             401  error="invalid_dpop_proof"  (RFC 9449 §7.1)
     │    └── UseDPoPNonce            401  error="use_dpop_nonce", with the nonce to use (RFC 9449 §9)
     ├── InsufficientScope            403  error="insufficient_scope" with scope="…"
     ├── InsufficientUserAuthentication 401 error="insufficient_user_authentication" with acr_values, max_age
     │                                     (RFC 9470 §3: the login is below the level or older than the age asked)
     └── KeysUnavailable              503  the JWKS was never loaded (the auth server has not answered yet)

``reason`` is a short, stable label for metrics and logs (never the token).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ExpiredToken",
    "InsufficientScope",
    "InsufficientUserAuthentication",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidToken",
    "KeysUnavailable",
    "MissingToken",
    "RevokedToken",
    "UseDPoPNonce",
    "VerifierError",
]


class VerifierError(Exception):
    """Root of every error the verifier raises."""

    status_code: ClassVar[int] = 401
    error: ClassVar[str | None] = None
    default_description: ClassVar[str] = "The request could not be authenticated."
    default_reason: ClassVar[str] = "error"

    def __init__(self, description: str | None = None, *, reason: str | None = None) -> None:
        self.description = description or self.default_description
        self.reason = reason or self.default_reason
        super().__init__(self.description)

    @property
    def body_error(self) -> str:
        """The ``error`` member of the JSON body (the header omits it when ``error`` is None)."""
        return self.error or "unauthorized"


class InvalidRequest(VerifierError):
    """The request is malformed: more than one token method, several Authorization headers, an empty token."""

    status_code = 400
    error = "invalid_request"
    default_description = "The request is malformed."
    default_reason = "invalid_request"


class MissingToken(VerifierError):
    """No bearer token at all: 401 with a bare ``Bearer realm`` challenge (RFC 6750 §3.1)."""

    status_code = 401
    error = None
    default_description = "A bearer access token is required."
    default_reason = "missing"


class InvalidToken(VerifierError):
    """The token is malformed, badly signed, for someone else, or not (yet) valid."""

    status_code = 401
    error = "invalid_token"
    default_description = "The access token is invalid."
    default_reason = "invalid"


class ExpiredToken(InvalidToken):
    """The token's ``exp`` (plus leeway) is in the past."""

    default_description = "The access token provided has expired."
    default_reason = "expired"


class RevokedToken(InvalidToken):
    """The token's login (``sid``) has ended: a logout or revocation the auth server published."""

    default_description = "The token was revoked."
    default_reason = "revoked"


class InvalidDPoPProof(VerifierError):
    """The DPoP proof is missing, malformed, for another request or key, too old, or replayed (RFC 9449 §4.3)."""

    status_code = 401
    error = "invalid_dpop_proof"
    default_description = "The DPoP proof is invalid."
    default_reason = "dpop"


class UseDPoPNonce(InvalidDPoPProof):
    """The server wants a proof carrying ``nonce`` (RFC 9449 §9): sent back in the ``DPoP-Nonce`` header."""

    error = "use_dpop_nonce"
    default_description = "Resend the request with a DPoP proof carrying the nonce in the DPoP-Nonce header."
    default_reason = "dpop_nonce"

    def __init__(self, nonce: str, description: str | None = None) -> None:
        self.nonce = nonce
        super().__init__(description)


class InsufficientScope(VerifierError):
    """A valid token that lacks a scope the endpoint requires (RFC 6750 §3.1)."""

    status_code = 403
    error = "insufficient_scope"
    default_description = "The access token does not grant the required scope."
    default_reason = "insufficient_scope"

    def __init__(self, required: str, description: str | None = None) -> None:
        self.required = required
        super().__init__(description)


class InsufficientUserAuthentication(VerifierError):
    """A valid token whose login is below the authentication level (``acr``) or older (``auth_time``) than the endpoint
    asks (RFC 9470 §3). ``acr_values`` and ``max_age`` are the endpoint's requirements, sent in the challenge so that
    the client can ask the authorization server for them."""

    status_code = 401
    error = "insufficient_user_authentication"
    default_description = "A different authentication level is required"  # RFC 9470 §3's wording
    default_reason = "insufficient_user_authentication"

    def __init__(
        self, acr_values: tuple[str, ...] = (), max_age: int | None = None, description: str | None = None
    ) -> None:
        self.acr_values = tuple(acr_values)
        self.max_age = max_age
        super().__init__(description)


class KeysUnavailable(VerifierError):
    """No signing keys were ever loaded (the auth server has not answered yet): a temporary server condition."""

    status_code = 503
    error = "temporarily_unavailable"
    default_description = "The signing keys are not available yet."
    default_reason = "keys_unavailable"
