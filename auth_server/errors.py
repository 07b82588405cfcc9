"""Errors of the auth server.

::

    AuthServerError
     ├── OAuthError                  RFC 6749 §5.2 body: {"error", "error_description"}
     │    ├── InvalidRequest         400 invalid_request
     │    │    └── PayloadTooLarge   413 invalid_request
     │    ├── InvalidClient          401 invalid_client (+ WWW-Authenticate when Basic auth was used)
     │    ├── InvalidGrant           400 invalid_grant
     │    ├── UnauthorizedClient     400 unauthorized_client
     │    ├── UnsupportedGrantType   400 unsupported_grant_type
     │    ├── UnsupportedTokenType   400 unsupported_token_type (RFC 7009 §2.2.1)
     │    ├── InvalidScope           400 invalid_scope
     │    ├── InvalidTarget          400 invalid_target (RFC 8707 §2: a resource the client may not ask for)
     │    ├── InvalidToken           401 invalid_token (RFC 6750 §3.1, userinfo)
     │    ├── InvalidDPoPProof       400 invalid_dpop_proof (RFC 9449 §5)
     │    │    └── UseDPoPNonce      400 use_dpop_nonce, with a DPoP-Nonce header (RFC 9449 §8)
     │    └── StoreUnavailable       503 temporarily_unavailable (Redis down)
     ├── SignUpError                 400 with the field at fault
     │    ├── UsernameTaken          409
     │    └── SignUpThrottled        429 with Retry-After (too many sign-ups from one address)
     ├── KeyFileError                a key file cannot be read, or no key can be made (start-up fails)
     ├── TokenRejected               one of our own tokens failed a check (callers map it to their RFC's error)
     ├── LoginThrottled              429 with Retry-After
     ├── AuthorizeRequestError       an authorization request we cannot redirect back for (400 page)
     └── AuthorizeRedirect           an error we send back to a verified redirect URI (RFC 6749 §4.1.2.1)
"""

from __future__ import annotations


class AuthServerError(Exception):
    """Root of every error raised by the auth server."""


class OAuthError(AuthServerError):
    error = "server_error"
    status_code = 400
    default_description = ""

    def __init__(self, description: str | None = None) -> None:
        self.description = description if description is not None else self.default_description
        super().__init__(self.description)

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body


class InvalidRequest(OAuthError):
    error = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    default_description = "The request body is too large."


class InvalidClient(OAuthError):
    error = "invalid_client"
    status_code = 401
    default_description = "Client authentication failed."

    def __init__(self, description: str | None = None, *, basic: bool = False) -> None:
        super().__init__(description)
        self.basic = basic


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"
    default_description = "The client may not use this grant type."


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedTokenType(OAuthError):
    error = "unsupported_token_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    error = "invalid_target"
    default_description = "The requested resource is invalid, unknown or not allowed for this client."


class InvalidToken(OAuthError):
    error = "invalid_token"
    status_code = 401


class InvalidDPoPProof(OAuthError):
    error = "invalid_dpop_proof"
    default_description = "The DPoP proof is invalid."


class UseDPoPNonce(InvalidDPoPProof):
    error = "use_dpop_nonce"
    default_description = "Resend the request with a DPoP proof carrying the nonce in the DPoP-Nonce header."

    def __init__(self, nonce: str) -> None:
        super().__init__()
        self.nonce = nonce


class StoreUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status_code = 503
    default_description = "The store is unavailable; retry later."


class SignUpError(AuthServerError):
    status_code = 400
    error = "invalid_request"

    def __init__(self, field: str, description: str) -> None:
        super().__init__(description)
        self.field = field
        self.description = description


class UsernameTaken(SignUpError):
    status_code = 409
    error = "username_taken"

    def __init__(self) -> None:
        super().__init__("username", "This username is taken.")


class SignUpThrottled(SignUpError):
    status_code = 429
    error = "too_many_requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__("", "Too many sign-ups from this address. Please try again later.")
        self.retry_after = max(1, retry_after)


class KeyFileError(AuthServerError):
    """A key file cannot be read or used, or the keys directory cannot hold a new key."""


class TokenRejected(AuthServerError):
    """A token we were handed is not one of ours, or no longer valid (reason for logs only, never for clients)."""


class LoginThrottled(AuthServerError):
    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed logins")
        self.retry_after = max(1, retry_after)


class AuthorizeRequestError(AuthServerError):
    """The client or redirect URI cannot be trusted: show an error page, never redirect (RFC 6749 §4.1.2.1)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class AuthorizeRedirect(AuthServerError):
    """An authorization error for a known client and registered redirect URI: 302 back with ``error``."""

    def __init__(self, error: str, description: str, redirect_uri: str, state: str | None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state
