"""The back channel to the auth server over httpx: discovery, code exchange, refresh, revocation.

Any standard OAuth 2.0 / OIDC provider works: endpoints come from its discovery document, the client authenticates
with client_secret_basic (RFC 6749 §2.3.1), and only RFC 6749 / 7009 / OIDC Core wire formats are assumed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jwt

from bff.errors import AuthServerUnavailable, ProviderRejected
from bff.settings import Settings

log = logging.getLogger(__name__)

DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
ID_TOKEN_LEEWAY = 60


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
        # RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
        self._auth = httpx.BasicAuth(quote(settings.client_id, safe=""), quote(settings.client_secret, safe=""))

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
            return data
        raise last or AuthServerUnavailable()

    def _internal(self, key: str, value: Any) -> Any:
        # Back-channel endpoints go to the internal address; the browser's authorization endpoint stays public.
        internal = self.settings.auth_internal_url
        if (internal and key.endswith("_endpoint") and key != "authorization_endpoint" and isinstance(value, str)
                and value.startswith(self.settings.issuer + "/")):
            return internal + value[len(self.settings.issuer):]
        return value

    async def authorization_endpoint(self) -> str:
        return str((await self.discover())["authorization_endpoint"])

    async def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        endpoint = (await self.discover())["token_endpoint"]
        try:
            response = await self.http.post(endpoint, data=form, auth=self._auth,
                                            headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise AuthServerUnavailable() from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 500 or not isinstance(body, dict):
            raise AuthServerUnavailable(f"The auth server answered {response.status_code}.")
        if response.status_code != 200:
            # RFC 6749 §5.2
            raise ProviderRejected(str(body.get("error", "invalid_request")))
        if not isinstance(body.get("access_token"), str) or str(body.get("token_type", "")).lower() != "bearer":
            raise AuthServerUnavailable("The token response lacks a bearer access token.")
        return body

    def _token_set(self, body: dict[str, Any], previous_refresh: str | None = None,
                   previous_scope: str = "") -> TokenSet:
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
        body = await self._token_request({
            "grant_type": "authorization_code", "code": code, "redirect_uri": self.settings.redirect_uri,
            "code_verifier": verifier,
        })
        return self._token_set(body)

    async def refresh(self, refresh_token: str, scope: str) -> TokenSet:
        body = await self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})
        return self._token_set(body, refresh_token, scope)

    async def revoke(self, refresh_token: str) -> None:
        """RFC 7009. Raises AuthServerUnavailable when the server cannot be told."""
        endpoint = (await self.discover()).get("revocation_endpoint")
        if not endpoint:
            return
        try:
            response = await self.http.post(endpoint, auth=self._auth,
                                             data={"token": refresh_token, "token_type_hint": "refresh_token"})
        except httpx.HTTPError as exc:
            raise AuthServerUnavailable() from exc
        if response.status_code != 200:
            raise AuthServerUnavailable(f"Revocation answered {response.status_code}.")

    def id_claims(self, id_token: str | None, nonce: str) -> dict[str, Any]:
        """Check the ID token of a code exchange (OIDC Core §3.1.3.7) and return its claims.

        It came straight from the token endpoint over the back channel, so, as §3.1.3.7 (6) allows, the TLS
        connection stands in for the signature check; iss, aud, exp and nonce are still checked.
        """
        if not id_token:
            raise ProviderRejected("invalid_id_token", "The provider sent no ID token; request the openid scope.")
        try:
            claims = jwt.decode(id_token, options={
                "verify_signature": False, "verify_exp": True, "verify_aud": True, "verify_iss": True,
                "require": ["iss", "sub", "aud", "exp"]},
                                audience=self.settings.client_id, issuer=self.settings.issuer,
                                leeway=ID_TOKEN_LEEWAY)
        except jwt.PyJWTError as exc:
            raise ProviderRejected("invalid_id_token", "The ID token is not valid.") from exc
        if claims.get("nonce") != nonce:
            raise ProviderRejected("invalid_id_token", "The ID token's nonce does not match the login.")
        return claims
