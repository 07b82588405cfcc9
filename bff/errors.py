"""The BFF's errors. Each carries its wire format; one handler in app.py turns any of them into JSON.

BFFError                          500 server_error
 ├── ServerMisconfigured          500 server_misconfigured (the provider refuses the BFF's own configuration)
 ├── BadRequest                   400 invalid_request
 │    └── InvalidState            400 invalid_state        (callback: unknown, used or foreign state)
 ├── LoginFailed                  400 login_failed         (the provider refused the login or the code)
 ├── LoginRequired                401 login_required       (no session, or it ended)
 │    └── SessionGone                                        (a save found the session deleted: logout won)
 ├── StepUpRequired               401 insufficient_user_authentication (RFC 9470: with acr_values, max_age and
 │                                                           the step_up_url that upgrades the session)
 ├── CSRFError                    403 csrf
 ├── UntrustedPeer                403 forbidden            (/bff/auth asked by a peer outside BFF_TRUSTED_PROXIES)
 ├── InsufficientClaims           403 insufficient_claims  (the session's claims fail the route's require)
 ├── NotFound                     404 not_found
 ├── MethodNotAllowed             405 method_not_allowed   (outside a route's methods; carries Allow)
 ├── TooManySockets               429 too_many_sockets     (BFF_MAX_SOCKETS_PER_SESSION reached)
 ├── UpstreamUnavailable          502 bad_gateway          (connect failure to a resource server)
 ├── UpstreamTimeout              504 gateway_timeout
 └── TemporarilyUnavailable       503 temporarily_unavailable
      ├── StoreUnavailable              Redis unreachable
      └── AuthServerUnavailable         auth server unreachable, 5xx or unusable answer
"""

from __future__ import annotations


class BFFError(Exception):
    status_code = 500
    error = "server_error"
    description = "Internal error."
    headers: dict[str, str] = {}  # extra response headers of this error (read only)
    extra: dict[str, object] = {}  # extra members of the JSON body (read only)

    def __init__(self, description: str | None = None) -> None:
        super().__init__(description or self.description)
        self.description = description or self.description


class ServerMisconfigured(BFFError):
    """The provider refused the BFF itself (its client credentials, its redirect URI, its issuer, a route's resource):
    nothing the user does will help, the operator must change ``setting`` (DESIGN §12). The user's session is kept.

    ``reason`` is the operator's sentence (the ERROR log line and ``/readyz``); the user's description stays generic.
    """

    status_code = 500
    error = "server_misconfigured"
    description = "This site's sign-in is misconfigured; its operator has been told and must fix it."

    def __init__(self, reason: str = "", setting: str = "") -> None:
        super().__init__()
        self.reason = reason
        self.setting = setting


class BadRequest(BFFError):
    status_code = 400
    error = "invalid_request"
    description = "The request is malformed."


class InvalidState(BadRequest):
    error = "invalid_state"
    description = "The login state is unknown, used, expired or belongs to another browser; start again."


class LoginFailed(BFFError):
    status_code = 400
    error = "login_failed"
    description = "The login did not complete."


class LoginRequired(BFFError):
    status_code = 401
    error = "login_required"
    description = "Log in first."


class SessionGone(LoginRequired):
    description = "The session ended; log in again."


class StepUpRequired(BFFError):
    """The session's login is below the level or older than the age an upstream (or the route) asks (RFC 9470): the
    browser logs in again through ``step_up_url``, which upgrades the same session."""

    status_code = 401
    error = "insufficient_user_authentication"
    description = "This needs a stronger or more recent sign-in: confirm it is you."

    def __init__(
        self, acr_values: tuple[str, ...], max_age: int | None, step_up_url: str, description: str | None = None
    ) -> None:
        super().__init__(description)
        self.acr_values, self.max_age, self.step_up_url = acr_values, max_age, step_up_url
        extra: dict[str, object] = {}
        if acr_values:
            extra["acr_values"] = " ".join(acr_values)
        if max_age is not None:
            extra["max_age"] = max_age
        extra["step_up_url"] = step_up_url
        self.extra = extra


class CSRFError(BFFError):
    status_code = 403
    error = "csrf"
    description = "Missing X-CSRF header, foreign Origin or CORS preflight."


class UntrustedPeer(BFFError):
    """Forward auth asked by a peer outside BFF_TRUSTED_PROXIES: its word on the original request is not taken."""

    status_code = 403
    error = "forbidden"
    description = "Forward auth answers only the proxies in BFF_TRUSTED_PROXIES."
    # what an operator trying forward auth first sees: it is off until they name their proxies (DESIGN §8, opt-in)
    off = "Forward auth is off: set BFF_TRUSTED_PROXIES to the addresses of the proxies that ask /bff/auth."


class InsufficientClaims(BFFError):
    """A route's ``require`` (DESIGN §11) does not hold for the session's claims; the upstream is not called."""

    status_code = 403
    error = "insufficient_claims"
    description = "Your account lacks what this route requires."


class NotFound(BFFError):
    status_code = 404
    error = "not_found"
    description = "No such route."


class MethodNotAllowed(BFFError):
    status_code = 405
    error = "method_not_allowed"
    description = "This route does not accept the method."

    def __init__(self, allow: str, description: str | None = None) -> None:
        super().__init__(description)
        self.headers = {"Allow": allow}  # RFC 9110 §15.5.6: a 405 lists the methods the target supports


class TooManySockets(BFFError):
    """One session holds ``BFF_MAX_SOCKETS_PER_SESSION`` WebSockets and streams in this process already."""

    status_code = 429
    error = "too_many_sockets"
    description = "This session has too many open WebSockets and event streams; close one and try again."
    by_user = "You have too many open WebSockets and event streams on this server; close one and try again."


class UpstreamUnavailable(BFFError):
    status_code = 502
    error = "bad_gateway"
    description = "The upstream service is unreachable."


class UpstreamTimeout(BFFError):
    status_code = 504
    error = "gateway_timeout"
    description = "The upstream service did not answer in time."


class TemporarilyUnavailable(BFFError):
    status_code = 503
    error = "temporarily_unavailable"
    description = "Try again shortly."
    headers = {"Retry-After": "5"}  # RFC 9110 §10.2.3: a passing failure says when to come back (DESIGN §12)


class StoreUnavailable(TemporarilyUnavailable):
    description = "The session store is unreachable; try again shortly."


class AuthServerUnavailable(TemporarilyUnavailable):
    description = "The auth server is unreachable; your session is kept, try again shortly."
    why = ""  # the operator's words for what failed (the auth client's WARNING; `bff check` prints it)


class ProviderRejected(BFFError):
    """The auth server answered a token request with an RFC 6749 §5.2 error (``oauth_error``, e.g. invalid_grant)."""

    status_code = 400
    error = "login_failed"
    description = "The auth server refused the request."

    def __init__(self, oauth_error: str, description: str | None = None) -> None:
        super().__init__(description)
        self.oauth_error = oauth_error
