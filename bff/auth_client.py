"""The back channel to the auth server over httpx: discovery, code exchange, refresh, revocation.

Any standard OAuth 2.0 / OIDC provider works: endpoints come from its discovery document, the client authenticates
with client_secret_basic (RFC 6749 §2.3.1), and only RFC 6749 / 7009 / OIDC Core wire formats are assumed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import jwt

from bff.dpop import DPoPSigner, credential_headers
from bff.errors import AuthServerUnavailable, ProviderRejected
from bff.settings import Settings

log = logging.getLogger(__name__)

BROWSER_ENDPOINTS = ("authorization_endpoint", "end_session_endpoint")  # navigated to by the browser: stay public
JWKS_REFETCH_COOLDOWN = 10.0  # seconds: an unknown kid refetches the JWKS at most this often (no fetch per bad token)
DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
ID_TOKEN_LEEWAY = 60
# OIDC Core §3.1.3.7 (7): the provider's advertised algorithm; never "none", never HMAC with a public key.
ID_TOKEN_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_at: float
    scope: str
    id_token: str | None


class AuthClient:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self.metadata: dict[str, Any] | None = None
        self.public_token_endpoint = ""
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._keys_fetched = float("-inf")
        # RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
        self._auth = httpx.BasicAuth(quote(settings.client_id, safe=""), quote(settings.client_secret, safe=""))
        self.dpop: DPoPSigner | None = None  # BFF_DPOP_KEY_FILE: every token request carries a proof (RFC 9449)
        self._userinfo_warned = False

    async def discover(self) -> dict[str, Any]:
        """The provider's metadata, fetched once (RFC 8414 / OIDC Discovery)."""
        if self.metadata is not None:
            return self.metadata
        last: Exception | None = None
        for path in DISCOVERY_PATHS:
            try:
                response = await self.http.get(self.settings.back_channel_url + path)
            except httpx.HTTPError as exc:
                raise AuthServerUnavailable("The auth server's discovery document cannot be fetched.") from exc
            if response.status_code != 200:
                last = AuthServerUnavailable(f"Discovery answered {response.status_code}.")
                continue
            try:
                data = response.json()
            except ValueError as exc:
                raise AuthServerUnavailable("The discovery document is not JSON.") from exc
            # RFC 8414 §3.3: the issuer in the document must be the one we asked.
            if not isinstance(data, dict) or data.get("issuer", "").rstrip("/") != self.settings.issuer:
                raise AuthServerUnavailable("The discovery document names another issuer.")
            if "authorization_endpoint" not in data or "token_endpoint" not in data:
                raise AuthServerUnavailable("The discovery document lacks the authorization or token endpoint.")
            self.metadata = {key: self._internal(key, value) for key, value in data.items()}
            # A DPoP proof names the advertised endpoint, whatever address we reach it at (issue #18 item 2: the
            # auth server compares htu with its issuer's endpoints only).
            self.public_token_endpoint = str(data["token_endpoint"])
            return data
        raise last or AuthServerUnavailable()

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
            auth, form = self._client_auth(metadata, "token_endpoint_auth_methods_supported", params)
            try:
                response = await self.http.post(par, data=form, auth=auth, headers={"Accept": "application/json"})
                body = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise AuthServerUnavailable("The pushed authorization request failed.") from exc
            request_uri = body.get("request_uri") if isinstance(body, dict) else None
            if response.status_code not in (200, 201) or not isinstance(request_uri, str):
                raise AuthServerUnavailable(f"The pushed authorization request was answered {response.status_code}.")
            params = {"client_id": self.settings.client_id, "request_uri": request_uri}
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)

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

    async def _token_request(self, form: dict[str, str], http_timeout: float | None = None) -> dict[str, Any]:
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
                raise AuthServerUnavailable() from exc
            try:
                body = response.json()
            except ValueError:
                body = None
            nonce_of = self.public_token_endpoint or endpoint
            if self.dpop is None or not self.dpop.remember_nonce(nonce_of, response.headers.get("DPoP-Nonce")):
                break
            if response.status_code != 400 or not isinstance(body, dict) or body.get("error") != "use_dpop_nonce":
                break
        if response.status_code >= 500 or not isinstance(body, dict):
            raise AuthServerUnavailable(f"The auth server answered {response.status_code}.")
        if response.status_code != 200:
            # RFC 6749 §5.2
            raise ProviderRejected(str(body.get("error", "invalid_request")))
        # With a DPoP key, only a bound token will do: a provider that ignores DPoP must not downgrade us silently.
        expected = "dpop" if self.dpop is not None else "bearer"
        if not isinstance(body.get("access_token"), str) or str(body.get("token_type", "")).lower() != expected:
            raise AuthServerUnavailable(f"The token response lacks a {expected} access token.")
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
        """RFC 7009. Raises AuthServerUnavailable when the server cannot be told."""
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
            raise AuthServerUnavailable() from exc
        if response.status_code != 200:
            raise AuthServerUnavailable(f"Revocation answered {response.status_code}.")

    async def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        """The provider's public key ``kid`` from its JWKS, fetched once and again when an unknown kid appears."""
        if kid in self._keys:
            return self._keys[kid]
        if time.monotonic() - self._keys_fetched < JWKS_REFETCH_COOLDOWN:
            raise ProviderRejected("invalid_id_token", "The token is signed with an unknown key.")
        uri = (await self.discover()).get("jwks_uri")
        if not uri:
            raise AuthServerUnavailable("The discovery document has no jwks_uri.")
        try:
            response = await self.http.get(uri)
            keys = response.json().get("keys", []) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise AuthServerUnavailable("The provider's JWKS cannot be fetched.") from exc
        if not isinstance(keys, list):
            raise AuthServerUnavailable("The provider's JWKS cannot be fetched.")
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
        if kid not in loaded:
            raise ProviderRejected("invalid_id_token", "The ID token is signed with an unknown key.")
        return loaded[kid]

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
        return {name: body[name] for name in wanted if name in body}

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
        return claims
