"""The back channel to the auth server over httpx: discovery, code exchange, refresh, revocation.

Any standard OAuth 2.0 / OIDC provider works: endpoints come from its discovery document, the client authenticates
with client_secret_basic (RFC 6749 §2.3.1), and only RFC 6749 / 7009 / OIDC Core wire formats are assumed.

Every answer is one of three kinds (DESIGN §12), each with its log line and its ``bff_provider_requests_total``
outcome:

* passing — unreachable, a timeout, a 5xx: ``AuthServerUnavailable`` (503, the session kept), a WARNING naming the
  endpoint and the cause;
* the provider refusing *the BFF itself* — its client credentials, its redirect URI, its issuer, a route's
  resource: ``ServerMisconfigured`` (500), one ERROR line quoting the provider's ``error`` and
  ``error_description`` and naming the setting to check, and ``/readyz`` misconfigured (``ProviderHealth``) until a
  later call succeeds. Meanwhile the refused kind of call is not repeated for ``MISCONFIGURED_BACKOFF`` seconds: a
  wrong secret must not turn every API call into a token request;
* the provider refusing the *request* (``invalid_grant``: a login revoked or expired): ``ProviderRejected``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import jwt

from bff.claims import keep
from bff.dpop import DPoPSigner, credential_headers
from bff.errors import AuthServerUnavailable, ProviderRejected, ServerMisconfigured
from bff.settings import Settings

log = logging.getLogger(__name__)

_SUB = re.compile(r"[^\x00-\x1f\x7f]{1,255}")  # OIDC Core §2: a locally unique identifier of up to 255 characters
_HEADER_SAFE_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: a superset of b64token (RFC 6750 §2.1)

BROWSER_ENDPOINTS = ("authorization_endpoint", "end_session_endpoint")  # navigated to by the browser: stay public
JWKS_REFETCH_COOLDOWN = 10.0  # seconds: an unknown kid refetches the JWKS at most this often (no fetch per bad token)
DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
ID_TOKEN_LEEWAY = 60
# OIDC Core §3.1.3.7 (7): the provider's advertised algorithm; never "none", never HMAC with a public key.
ID_TOKEN_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MISCONFIGURED_BACKOFF = 30.0  # seconds a refused kind of call waits before it is tried again (one call, then again)
RECHECK_INTERVAL = 10.0  # seconds: /readyz asks the provider again at most this often while misconfigured
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
CREDENTIALS = "BFF_CLIENT_ID and BFF_CLIENT_SECRET"


def said(value: Any, limit: int = 300) -> str:
    """A provider's ``error`` or ``error_description``, fit for one log line (no control characters, bounded)."""
    text = value if isinstance(value, str) else ""
    return _UNPRINTABLE.sub(" ", text)[:limit]


def describe(exc: BaseException) -> str:
    """Why an HTTP call failed, for an operator: the exception's kind and text (httpx names the host, never a body)."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout ({type(exc).__name__})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ProviderHealth:
    """What the provider last said about the BFF's own configuration, by kind of problem (``client``, ``redirect``,
    ``issuer``, ``jwks``, ``scope``, ``resource:<r>``, ``endpoint``, ``par``): readiness is misconfigured while any is
    there, and a kind of call refused for one waits until ``MISCONFIGURED_BACKOFF`` has passed."""

    def __init__(self) -> None:
        self.problems: dict[str, ServerMisconfigured] = {}
        self._until: dict[str, float] = {}
        self.checked = float("-inf")  # when /readyz last asked the provider again

    @property
    def reason(self) -> str | None:
        return next((problem.reason for problem in self.problems.values()), None)

    def blocked(self, *keys: str) -> ServerMisconfigured | None:
        now = time.monotonic()
        for key in keys:
            problem = self.problems.get(key)
            if problem is not None and now < self._until.get(key, 0.0):
                return problem
        return None

    def fail(self, key: str, problem: ServerMisconfigured) -> bool:
        """Record ``problem``; True when it is news (another reason than the one known for ``key``)."""
        known = self.problems.get(key)
        self.problems[key] = problem
        self._until[key] = time.monotonic() + MISCONFIGURED_BACKOFF
        return known is None or known.reason != problem.reason

    def ok(self, *keys: str) -> None:
        for key in keys:
            if self.problems.pop(key, None) is not None:
                log.info("the provider accepts the BFF's %s again", key)
            self._until.pop(key, None)


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_at: float
    scope: str
    id_token: str | None


class AuthClient:
    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        on_call: Callable[[str, str], None] = lambda endpoint, outcome: None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.on_call = on_call  # (endpoint, outcome) of every call: bff_provider_requests_total
        self.health = ProviderHealth()
        self.metadata: dict[str, Any] | None = None
        self.public_token_endpoint = ""
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._keys_fetched = float("-inf")
        # RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
        self._auth = httpx.BasicAuth(quote(settings.client_id, safe=""), quote(settings.client_secret, safe=""))
        self.dpop: DPoPSigner | None = None  # BFF_DPOP_KEY_FILE: every token request carries a proof (RFC 9449)
        self._userinfo_warned = False

    # --- the three kinds of answer (module docstring) ---------------------------------------------------------------

    def _unavailable(
        self, endpoint: str, why: str, body: Any = None, *, user: str | None = None
    ) -> AuthServerUnavailable:
        """A passing failure: a WARNING naming the endpoint and the cause (or status and the provider's error)."""
        error = said(body.get("error")) if isinstance(body, dict) else ""
        description = said(body.get("error_description")) if isinstance(body, dict) else ""
        log.warning(
            "provider %s endpoint unavailable: %s%s",
            endpoint,
            why,
            f" ({error}: {description})" if error else "",
            extra={"fields": {"endpoint": endpoint, "provider_error": error or None, "cause": why}},
        )
        self.on_call(endpoint, "unavailable")
        unavailable = AuthServerUnavailable(user)
        unavailable.why = f"the provider's {endpoint} endpoint: {why}"
        return unavailable

    def misconfigured(self, key: str, endpoint: str, what: str, setting: str) -> ServerMisconfigured:
        """The provider refused the BFF itself: one ERROR line (per new reason) naming the setting to check."""
        reason = f"{what}; check {setting}"
        problem = ServerMisconfigured(reason, setting)
        if self.health.fail(key, problem):
            log.error(
                "provider misconfiguration at the %s endpoint: %s",
                endpoint,
                reason,
                extra={"fields": {"endpoint": endpoint, "setting": setting}},
            )
        self.on_call(endpoint, "misconfigured")
        return problem

    def _refusal(
        self, endpoint: str, status: int, body: Any, resource: str | None = None
    ) -> ServerMisconfigured | None:
        """The ServerMisconfigured of a refusal that is about the BFF's own configuration, else None."""
        error = said(body.get("error"), 64) if isinstance(body, dict) else ""
        description = said(body.get("error_description")) if isinstance(body, dict) else ""
        answered = f"the provider's {endpoint} endpoint answered {status} {error or '(no error code)'}" + (
            f' "{description}"' if description else ""
        )
        if status == 401 or error == "invalid_client":
            return self.misconfigured(
                "client", endpoint, f"{answered}: it refused the BFF's client credentials", CREDENTIALS
            )
        if error == "unauthorized_client":
            return self.misconfigured(
                "client", endpoint, answered, "the grant types the provider allows BFF_CLIENT_ID (its registration)"
            )
        if error == "invalid_target":
            return self.misconfigured(
                f"resource:{resource}",
                endpoint,
                answered,
                f"the route's resource {resource!r} in BFF_ROUTES and the audiences BFF_CLIENT_ID may ask for",
            )
        if error == "invalid_scope":
            return self.misconfigured(
                "scope", endpoint, answered, "BFF_SCOPES and the scopes BFF_CLIENT_ID may ask for"
            )
        if endpoint == "par":
            if error == "invalid_redirect_uri" or "redirect" in description.lower():
                return self.misconfigured(
                    "redirect",
                    endpoint,
                    answered,
                    f"BFF_PUBLIC_URL: the redirect URI {self.settings.redirect_uri} must be registered for "
                    "BFF_CLIENT_ID at the provider",
                )
            return self.misconfigured("par", endpoint, answered, "the registration of BFF_CLIENT_ID at the provider")
        if status in (404, 405):
            return self.misconfigured(
                "endpoint", endpoint, f"{answered}: no such endpoint there", "BFF_ISSUER and BFF_AUTH_INTERNAL_URL"
            )
        return None

    def _refused(self, endpoint: str, status: int, body: Any) -> None:
        """A request refused on its own merits (invalid_grant: a login revoked or expired): an INFO line."""
        error = said(body.get("error"), 64) if isinstance(body, dict) else ""
        log.info(
            "provider %s endpoint refused the request: %s %s",
            endpoint,
            status,
            error,
            extra={"fields": {"endpoint": endpoint, "status": status, "provider_error": error}},
        )
        self.on_call(endpoint, "refused")

    def _ok(self, endpoint: str, *keys: str) -> None:
        self.on_call(endpoint, "ok")
        self.health.ok(*keys)

    # --- discovery ------------------------------------------------------------------------------------------------

    async def discover(self, *, again: bool = False) -> dict[str, Any]:
        """The provider's metadata, fetched once (RFC 8414 / OIDC Discovery); ``again``: fetch it anew."""
        if self.metadata is not None and not again:
            return self.metadata
        blocked = None if again else self.health.blocked("issuer")
        if blocked is not None:
            raise blocked
        answers: list[str] = []
        for path in DISCOVERY_PATHS:
            url = self.settings.back_channel_url + path
            try:
                response = await self.http.get(url)
            except httpx.HTTPError as exc:
                raise self._unavailable("discovery", f"{url} cannot be reached: {describe(exc)}") from exc
            if response.status_code >= 500:
                raise self._unavailable("discovery", f"{url} answered {response.status_code}")
            if response.status_code != 200:
                answers.append(f"{url} answered {response.status_code}")
                continue
            try:
                data = response.json()
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise self.misconfigured(
                    "issuer", "discovery", f"{url} answered 200 with no JSON document", "BFF_ISSUER"
                )
            # RFC 8414 §3.3: the issuer in the document must be the one we asked.
            named = data.get("issuer")
            if not isinstance(named, str) or named.rstrip("/") != self.settings.issuer:
                raise self.misconfigured(
                    "issuer",
                    "discovery",
                    f"BFF_ISSUER is {self.settings.issuer!r} but the discovery document at {url} names the issuer "
                    f"{said(named, 200)!r}",
                    "BFF_ISSUER: it must be the provider's issuer exactly",
                )
            if "authorization_endpoint" not in data or "token_endpoint" not in data:
                raise self.misconfigured(
                    "issuer",
                    "discovery",
                    f"the discovery document at {url} lacks the authorization or token endpoint",
                    "BFF_ISSUER",
                )
            self._ok("discovery", "issuer")
            self.metadata = {key: self._internal(key, value) for key, value in data.items()}
            # A DPoP proof names the advertised endpoint, whatever address we reach it at (issue #18 item 2: the
            # auth server compares htu with its issuer's endpoints only).
            self.public_token_endpoint = str(data["token_endpoint"])
            return self.metadata
        raise self.misconfigured(
            "issuer",
            "discovery",
            "no discovery document: " + "; ".join(answers),
            "BFF_ISSUER (and BFF_AUTH_INTERNAL_URL when set)",
        )

    def _internal(self, key: str, value: Any) -> Any:
        # Back-channel endpoints go to the internal address; the browser's authorization endpoint stays public.
        internal = self.settings.auth_internal_url
        back_channel = key.endswith("_endpoint") or key == "jwks_uri"
        if (
            internal
            and back_channel
            and key not in BROWSER_ENDPOINTS
            and isinstance(value, str)
            and value.startswith(self.settings.issuer + "/")
        ):
            return internal + value[len(self.settings.issuer) :]
        return value

    async def authorization_endpoint(self) -> str:
        return str((await self.discover())["authorization_endpoint"])

    async def authorization_url(self, params: dict[str, str]) -> str:
        """Where to send the browser for the authorization request ``params``. When the provider advertises
        PAR (RFC 9126), the request is pushed over the back channel first and the browser carries only
        ``client_id`` and ``request_uri``: nothing of the request can be read or altered on its way."""
        metadata = await self.discover()
        endpoint = str(metadata["authorization_endpoint"])
        par = metadata.get("pushed_authorization_request_endpoint")
        if isinstance(par, str) and par:
            request_uri = await self.push(par, params)
            params = {"client_id": self.settings.client_id, "request_uri": request_uri}
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)

    async def push(self, par: str, params: dict[str, str]) -> str:
        """RFC 9126 §2: push ``params``; the ``request_uri`` the browser carries instead."""
        blocked = self.health.blocked("client", "redirect", "par", "scope")
        if blocked is not None:
            raise blocked
        metadata = await self.discover()
        auth, form = self._client_auth(metadata, "token_endpoint_auth_methods_supported", params)
        try:
            response = await self.http.post(par, data=form, auth=auth, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise self._unavailable("par", f"{par} cannot be reached: {describe(exc)}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 500:
            raise self._unavailable("par", f"{par} answered {response.status_code}", body)
        request_uri = body.get("request_uri") if isinstance(body, dict) else None
        if response.status_code in (200, 201) and isinstance(request_uri, str):
            self._ok("par", "client", "redirect", "par", "scope")
            return request_uri
        # RFC 9126 §2.3: every refusal of a request the BFF made up itself is about the BFF's configuration
        problem = self._refusal("par", response.status_code, body)
        if problem is None:  # a 2xx without a request_uri
            problem = self.misconfigured(
                "par",
                "par",
                f"the provider's par endpoint answered {response.status_code} without a request_uri",
                "the provider's PAR support",
            )
        raise problem

    def probe_params(self) -> dict[str, str]:
        """An authorization request as a login makes one (fresh state, nonce and PKCE), for a probe push."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        return {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.settings.redirect_uri,
            "scope": self.settings.scopes,
            "state": secrets.token_urlsafe(16),
            "nonce": secrets.token_urlsafe(16),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }

    async def probe_client(self) -> str:
        """Ask the provider something it answers ``invalid_client`` to when the BFF's credentials are wrong, and
        nothing else: with PAR a push (which also shows the redirect URI is registered), else a code exchange with a
        code that does not exist (``invalid_grant`` means the credentials passed). Returns what was asked ("par" or
        "token"); raises ServerMisconfigured or AuthServerUnavailable."""
        metadata = await self.discover()
        par = metadata.get("pushed_authorization_request_endpoint")
        if isinstance(par, str) and par:
            await self.push(par, self.probe_params())
            return "par"
        form = {
            "grant_type": "authorization_code",
            "code": "bff-check-" + secrets.token_urlsafe(16),
            "redirect_uri": self.settings.redirect_uri,
            "code_verifier": secrets.token_urlsafe(48),
        }
        try:
            await self._token_request(form, probe=True)
        except ProviderRejected:  # invalid_grant: the endpoint is there and the credentials passed
            self.health.ok("client", "endpoint")
        return "token"

    async def recheck(self) -> None:
        """While misconfigured, ask the provider again (at most every RECHECK_INTERVAL seconds): a problem the
        operator fixed at the provider clears readiness without waiting for a user (who cannot come while the
        instance is out of the load balancer)."""
        health = self.health
        if not health.problems or time.monotonic() - health.checked < RECHECK_INTERVAL:
            return
        health.checked = time.monotonic()
        try:
            if "issuer" in health.problems:
                await self.discover(again=True)
            if health.problems.keys() & {"client", "redirect", "par", "scope", "endpoint"}:
                await self.probe_client()
            if "jwks" in health.problems:
                await self.fetch_keys()
        except (ServerMisconfigured, AuthServerUnavailable, ProviderRejected):
            pass  # logged where it was found

    async def check_issuer(self, iss: str | None) -> None:
        """RFC 9207 §2.4: an authorization response's ``iss`` must be our provider's (a mix-up attack otherwise
        sends us another provider's code); required when the provider says it sends one."""
        metadata = await self.discover()
        if iss is None:
            if metadata.get("authorization_response_iss_parameter_supported") is True:
                raise ProviderRejected("invalid_request", "The authorization response has no iss.")
            return
        if iss != metadata.get("issuer"):
            raise ProviderRejected("invalid_request", "The authorization response comes from another issuer.")

    async def end_session_endpoint(self) -> str | None:
        """OIDC RP-Initiated Logout §2.1: where the browser goes to end its session at the provider, if anywhere."""
        endpoint = (await self.discover()).get("end_session_endpoint")
        return endpoint if isinstance(endpoint, str) and endpoint.startswith(("https://", "http://")) else None

    def _client_auth(
        self, metadata: dict[str, Any], key: str, form: dict[str, str]
    ) -> tuple[httpx.Auth, dict[str, str]]:
        """client_secret_basic unless the provider lists only client_secret_post (RFC 8414 §2)."""
        methods = metadata.get(key) or ["client_secret_basic"]
        if "client_secret_basic" not in methods and "client_secret_post" in methods:
            no_header = httpx.Auth()
            return no_header, {
                **form,
                "client_id": self.settings.client_id,
                "client_secret": self.settings.client_secret,
            }
        return self._auth, form

    async def _token_request(
        self, form: dict[str, str], http_timeout: float | None = None, *, probe: bool = False
    ) -> dict[str, Any]:
        resource = form.get("resource")
        keys = ("client", "scope") if resource is None else ("client", "scope", f"resource:{resource}")
        blocked = None if probe else self.health.blocked(*keys)
        if blocked is not None:
            raise blocked  # no token request per API call while the provider refuses the BFF (module docstring)
        metadata = await self.discover()
        auth, form = self._client_auth(metadata, "token_endpoint_auth_methods_supported", form)
        endpoint = metadata["token_endpoint"]
        for _ in range(2):  # RFC 9449 §8: a nonce challenge is answered once, with the nonce it names
            headers = {"Accept": "application/json"}
            if self.dpop is not None:
                headers["DPoP"] = self.dpop.proof("POST", self.public_token_endpoint or endpoint)
            try:
                response = await self.http.post(
                    endpoint,
                    data=form,
                    auth=auth,
                    headers=headers,
                    timeout=httpx.USE_CLIENT_DEFAULT if http_timeout is None else http_timeout,
                )
            except httpx.HTTPError as exc:
                raise self._unavailable("token", f"{endpoint} cannot be reached: {describe(exc)}") from exc
            try:
                body = response.json()
            except ValueError:
                body = None
            nonce_of = self.public_token_endpoint or endpoint
            if self.dpop is None or not self.dpop.remember_nonce(nonce_of, response.headers.get("DPoP-Nonce")):
                break
            if response.status_code != 400 or not isinstance(body, dict) or body.get("error") != "use_dpop_nonce":
                break
        if response.status_code >= 500:
            raise self._unavailable("token", f"{endpoint} answered {response.status_code}", body)
        if response.status_code != 200:
            problem = self._refusal("token", response.status_code, body, resource)
            if problem is not None:
                raise problem
            if not isinstance(body, dict):
                raise self._unavailable("token", f"{endpoint} answered {response.status_code} with no JSON")
            # RFC 6749 §5.2
            self._refused("token", response.status_code, body)
            raise ProviderRejected(str(body.get("error", "invalid_request")))
        if not isinstance(body, dict):
            raise self._unavailable("token", f"{endpoint} answered 200 with no JSON")
        # With a DPoP key, only a bound token will do: a provider that ignores DPoP must not downgrade us silently.
        expected = "dpop" if self.dpop is not None else "bearer"
        if not isinstance(body.get("access_token"), str) or str(body.get("token_type", "")).lower() != expected:
            why = f"the token response lacks a {expected} access token"
            raise self._unavailable("token", why, user=f"The auth server's answer is unusable: {why}.")
        if not _HEADER_SAFE_TOKEN.fullmatch(body["access_token"]):
            # RFC 6750 §2.1 (and RFC 9449 §7.1): a token goes out in an Authorization header. One with a space, a
            # control character (CR, LF: a split answer to nginx) or beyond ASCII cannot, to any upstream.
            why = "its access token holds characters an Authorization header cannot carry (RFC 6750 §2.1)"
            raise self._unavailable("token", why, user=f"The auth server's answer is unusable: {why}.")
        self._ok("token", *keys, "endpoint")
        return body

    def _token_set(
        self, body: dict[str, Any], previous_refresh: str | None = None, previous_scope: str = ""
    ) -> TokenSet:
        try:
            expires_in = float(body.get("expires_in", 300))
        except (TypeError, ValueError):
            expires_in = 300.0
        return TokenSet(
            access_token=body["access_token"],
            # RFC 6749 §6: the server may keep the old refresh token by not sending a new one.
            refresh_token=body.get("refresh_token") or previous_refresh,
            expires_at=time.time() + expires_in,
            scope=str(body.get("scope") or previous_scope or self.settings.scopes),
            id_token=body.get("id_token"),
        )

    async def exchange_code(self, code: str, verifier: str) -> TokenSet:
        body = await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.settings.redirect_uri,
                "code_verifier": verifier,
            }
        )
        return self._token_set(body)

    async def refresh(
        self, refresh_token: str, scope: str, *, resource: str | None = None, http_timeout: float | None = None
    ) -> TokenSet:
        """``resource``: RFC 8707, a token for that resource alone. ``http_timeout``: how long the answer may take,
        beyond the client's default (a late answer still counts)."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if resource is not None:
            form["resource"] = resource
        body = await self._token_request(form, http_timeout)
        return self._token_set(body, refresh_token, scope)

    async def client_credentials(self, resource: str | None) -> TokenSet:
        """The BFF's own token (RFC 6749 §4.4), for ``resource`` (RFC 8707) when given."""
        form = {"grant_type": "client_credentials"}
        if resource is not None:
            form["resource"] = resource
        return self._token_set(await self._token_request(form))

    async def revoke(self, refresh_token: str) -> None:
        """RFC 7009. Raises AuthServerUnavailable when the server cannot be told, ServerMisconfigured when it refuses
        the BFF's credentials."""
        metadata = await self.discover()
        endpoint = metadata.get("revocation_endpoint")
        if not endpoint:
            return
        auth, form = self._client_auth(
            metadata,
            "revocation_endpoint_auth_methods_supported",
            {"token": refresh_token, "token_type_hint": "refresh_token"},
        )
        try:
            response = await self.http.post(endpoint, auth=auth, data=form)
        except httpx.HTTPError as exc:
            raise self._unavailable("revocation", f"{endpoint} cannot be reached: {describe(exc)}") from exc
        if response.status_code == 200:
            self._ok("revocation", "client")
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code < 500:
            problem = self._refusal("revocation", response.status_code, body)
            if problem is not None:
                raise problem
        raise self._unavailable("revocation", f"{endpoint} answered {response.status_code}", body)

    async def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        """The provider's public key ``kid`` from its JWKS, fetched once and again when an unknown kid appears."""
        if kid in self._keys:
            return self._keys[kid]
        if time.monotonic() - self._keys_fetched < JWKS_REFETCH_COOLDOWN:
            raise ProviderRejected("invalid_id_token", "The token is signed with an unknown key.")
        keys = await self.fetch_keys()
        loaded: dict[str | None, jwt.PyJWK] = {}
        for data in keys:
            try:
                key = jwt.PyJWK(data)
            except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError):
                continue  # a key type this library cannot use
            if key.algorithm_name in ID_TOKEN_ALGORITHMS:
                loaded[data.get("kid")] = key
        self._keys = loaded
        self._keys_fetched = time.monotonic()
        if not loaded:
            raise self.misconfigured(
                "jwks",
                "jwks",
                "the provider's JWKS holds no key the BFF can verify ID tokens with",
                "the provider's keys",
            )
        self.health.ok("jwks")
        if kid not in loaded:
            raise ProviderRejected("invalid_id_token", "The ID token is signed with an unknown key.")
        return loaded[kid]

    async def fetch_keys(self) -> list[Any]:
        """The provider's JWKS ``keys``: 5xx or unreachable is passing, any other failure a misconfiguration."""
        uri = (await self.discover()).get("jwks_uri")
        if not uri:
            raise self.misconfigured("jwks", "discovery", "the discovery document has no jwks_uri", "BFF_ISSUER")
        try:
            response = await self.http.get(uri)
        except httpx.HTTPError as exc:
            raise self._unavailable("jwks", f"{uri} cannot be reached: {describe(exc)}") from exc
        if response.status_code >= 500:
            raise self._unavailable("jwks", f"{uri} answered {response.status_code}")
        try:
            keys = response.json().get("keys") if response.status_code == 200 else None
        except (ValueError, AttributeError):
            keys = None
        if not isinstance(keys, list):
            raise self.misconfigured(
                "jwks",
                "jwks",
                f"{uri} answered {response.status_code} with no JWKS",
                "the provider's jwks_uri (and BFF_AUTH_INTERNAL_URL when set)",
            )
        self._ok("jwks")
        return keys

    async def verify(self, token: str, *, what: str, require: list[str], leeway: float) -> dict[str, Any]:
        """Claims of a JWT the provider signed for us (OIDC Core §3.1.3.7): signature by a key in its JWKS
        (asymmetric algorithms only: never "none", never HMAC), ``iss`` = the provider, ``aud`` holds our client id,
        ``exp``; raises ProviderRejected naming ``what`` the token is."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise ProviderRejected("invalid_id_token", f"The {what} is not a JWT.") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ID_TOKEN_ALGORITHMS:  # a list or object is unhashable: not a 500
            raise ProviderRejected("invalid_id_token", f"The {what}'s algorithm is not allowed.")
        key = await self._signing_key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.settings.client_id,
                issuer=(await self.discover())["issuer"],
                leeway=leeway,
                options={"require": require},
            )
        except jwt.PyJWTError as exc:
            raise ProviderRejected("invalid_id_token", f"The {what} is not valid.") from exc
        return claims

    async def userinfo(self, access_token: str, sub: str, wanted: tuple[str, ...]) -> dict[str, Any]:
        """Claims of ``wanted`` the provider's userinfo endpoint (OIDC Core §5.3) has for the login's access token, or
        nothing: when it has no such endpoint, when its ``claims_supported`` lists none of them, or when the answer is
        unusable (a WARNING; the login goes on with the ID token's claims). OIDC Core §5.3.2: an answer about another
        ``sub`` than the ID token's is not used."""
        metadata = await self.discover()
        endpoint = metadata.get("userinfo_endpoint")
        supported = metadata.get("claims_supported")
        if isinstance(supported, list):
            wanted = tuple(name for name in wanted if name in supported)
        if not wanted or not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            return {}
        headers = dict(credential_headers(self.dpop, access_token, "GET", endpoint))
        headers["Accept"] = "application/json"
        try:
            response = await self.http.get(endpoint, headers=headers)
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            body = None
            response = None
        if not isinstance(body, dict) or body.get("sub") != sub:
            status = response.status_code if response is not None else "nothing"
            passing = response is None or response.status_code >= 500
            self.on_call("userinfo", "unavailable" if passing else "refused")  # bff_provider_requests_total
            if self._userinfo_warned:  # once per process: it is the provider's setup, not this login
                return {}
            self._userinfo_warned = True
            log.warning(
                "userinfo answered %s without usable claims for this login: only the ID token's claims are kept "
                "(BFF_USER_CLAIMS names %s)",
                status,
                ", ".join(wanted),
            )
            return {}
        self.on_call("userinfo", "ok")
        return {name: body[name] for name in wanted if name in body}

    async def user_claims(self, id_claims: dict[str, Any], access_token: str, names: tuple[str, ...]) -> dict[str, Any]:
        """The claims ``names`` of a login (DESIGN §11): from the verified ID token's ``id_claims``, then from
        userinfo for those it lacks (``userinfo``); each capped (``bff.claims.keep``)."""
        kept = keep(id_claims, names)
        missing = tuple(name for name in names if name not in kept)
        if missing:
            kept.update(keep(await self.userinfo(access_token, str(id_claims["sub"]), missing), missing))
        return kept

    async def refreshed_claims(
        self, id_token: str, sub: str, access_token: str, names: tuple[str, ...]
    ) -> dict[str, Any] | None:
        """The claims of the ID token a refresh answered with (OIDC Core §12.2: same ``iss`` and ``sub``, its own
        ``aud``), or None when it cannot be used (a WARNING; the session keeps the claims it had)."""
        try:
            claims = await self.verify(id_token, what="ID token", require=["iss", "sub", "aud", "exp"], leeway=60)
            if claims.get("sub") != sub:
                raise ProviderRejected("invalid_id_token", "The refreshed ID token names another subject.")
            return await self.user_claims(claims, access_token, names)
        except (ProviderRejected, AuthServerUnavailable) as exc:
            log.warning("the ID token of a refresh was not used (%s): the session keeps its claims", exc.description)
            return None

    async def id_claims(self, id_token: str | None, nonce: str) -> dict[str, Any]:
        """Verify the ID token of a code exchange (OIDC Core §3.1.3.7) and return its claims: signature with the
        provider's published key, iss, aud, exp and the login's nonce."""
        if not id_token:
            raise ProviderRejected("invalid_id_token", "The provider sent no ID token; request the openid scope.")
        claims = await self.verify(
            id_token, what="ID token", require=["iss", "sub", "aud", "exp"], leeway=ID_TOKEN_LEEWAY
        )
        if claims.get("nonce") != nonce:
            raise ProviderRejected("invalid_id_token", "The ID token's nonce does not match the login.")
        if not isinstance(claims["sub"], str) or not _SUB.fullmatch(claims["sub"]):
            # the user's identity, which forward auth hands nginx in a header (X-Auth-Request-Sub): a CR or LF in it
            # would split that answer, and OIDC Core §2 allows no more than 255 characters
            log.warning(
                "login refused: the provider's ID token names a sub with control characters or over 255 characters",
                extra={"fields": {"endpoint": "token", "cause": "sub"}},
            )
            raise ProviderRejected("invalid_id_token", "The ID token's sub is not an identifier (OIDC Core §2).")
        return claims
