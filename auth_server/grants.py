"""Authorization requests, authorization codes, client authentication and the three grant types.

Codes are stored by their SHA-256 only (``auth:code:{<hash>}``) for ``AUTH_CODE_TTL`` seconds. A redemption reads
the code, checks it (client, redirect URI, PKCE verifier, resource), and only then takes it with one atomic script
that deletes it if it is still there and leaves a marker (``auth:code:{<hash>}:used``): so a failed attempt (another
client, a wrong verifier) does not burn the code for its rightful client, two concurrent correct redemptions yield
one success, and a second use finds the marker, names the family the first use started, and that family is revoked
(RFC 6749 §4.1.2, RFC 9700 §4.5).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import unquote_plus

from .errors import (
    AuthorizeRedirect,
    AuthorizeRequestError,
    InvalidClient,
    InvalidDPoPProof,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    TokenRejected,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from .forms import ascii_digits
from .mfa import ACR_PWD, parse_acr_values, wanted_level
from .settings import Client, Settings
from .sso import SSOStore
from .tokens import MAX_TOKEN_LENGTH, Family, TokenService
from .users import User

USED_CODE_TTL = 86_400  # how long a redeemed code is remembered, to catch a replay
MAX_PARAM = 1024  # state, nonce: generous, but bounded
CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256 digest, no padding (RFC 7636 §4.2)
VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.1
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 §3.3

# KEYS[1] code, KEYS[2] its used-marker; ARGV[1] marker ttl, ARGV[2] the record the caller checked. Takes the code
# only if it still holds that record (compare-and-delete). Returns {"ok"}, or {"used", sid or "-" or false}.
_REDEEM = """
local v = redis.call('GET', KEYS[1])
if v and v == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '-', 'EX', tonumber(ARGV[1]))
  return {'ok'}
end
return {'used', redis.call('GET', KEYS[2])}
"""


@dataclass(frozen=True)
class AuthorizationRequest:
    client: Client
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str
    resource: str | None = None  # RFC 8707
    acr_values: tuple[str, ...] = ()  # OIDC Core §3.1.2.1, the values we know (auth_server.mfa)
    max_age: int | None = None

    @property
    def level(self) -> str:
        return wanted_level(self.acr_values)

    def hidden_fields(self) -> dict[str, str]:
        """The request as the login form carries it (DESIGN §4)."""
        fields = {
            "client_id": self.client.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": self.scope,
            "state": self.state or "",
            "nonce": self.nonce or "",
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }
        if self.resource is not None:
            fields["resource"] = self.resource
        # Carried by the form and covered by its token's HMAC: a login form edited to ask for less is refused.
        if self.acr_values:
            fields["acr_values"] = " ".join(self.acr_values)
        if self.max_age is not None:
            fields["max_age"] = str(self.max_age)
        return fields


def parse_resource(raw: str | None, allowed: tuple[str, ...]) -> str | None:
    """RFC 8707 §2: the ``resource`` parameter, if any, when it is one of ``allowed`` (the client's ``audience``
    entries, or the one resource its grant was authorized for); anything else is invalid_target. Audiences are the
    registry of resources, so a registered short name (``notes``) counts as well as an absolute URI. One value per
    request: the strict form parser refuses repeated parameters."""
    if raw is None:
        return None
    if not raw or len(raw) > MAX_PARAM or "#" in raw or any(c.isspace() for c in raw):
        raise InvalidTarget("The resource parameter is malformed (RFC 8707 §2: an absolute URI, no fragment).")
    if raw not in allowed:
        raise InvalidTarget("The resource is not one this client may ask for.")
    return raw


def parse_scope(raw: str | None, allowed: tuple[str, ...], default: tuple[str, ...]) -> str:
    """The granted scope: the requested tokens if all are allowed (in the client's order), else invalid_scope."""
    if raw is None or raw.strip() == "":
        return " ".join(default)
    requested = raw.split(" ")
    if any(not SCOPE_TOKEN.fullmatch(s) for s in requested):
        raise InvalidScope("The scope is malformed.")
    unknown = set(requested) - set(allowed)
    if unknown:
        raise InvalidScope("The requested scope exceeds what the client may ask for.")
    return " ".join(s for s in allowed if s in requested)


def parse_authorization_request(settings: Settings, params: Mapping[str, str]) -> AuthorizationRequest:
    client = settings.client(params.get("client_id", ""))
    if client is None:
        raise AuthorizeRequestError("Unknown client.")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:  # exact string match (RFC 9700 §4.1.3)
        raise AuthorizeRequestError("The redirect URI is not registered for this client.")
    state = params.get("state") or None

    def fail(error: str, description: str) -> AuthorizeRedirect:
        return AuthorizeRedirect(error, description, redirect_uri, state)

    if state is not None and len(state) > MAX_PARAM:
        raise AuthorizeRequestError("The state parameter is too long.")
    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "Only response_type=code is supported.")
    if "authorization_code" not in client.grant_types:
        raise fail("unauthorized_client", "The client may not use the authorization code grant.")
    method = params.get("code_challenge_method")
    if method != "S256":  # RFC 7636 §4.4.1; OAuth 2.1 drops "plain"
        raise fail("invalid_request", "PKCE with code_challenge_method=S256 is required; 'plain' is not supported.")
    challenge = params.get("code_challenge", "")
    if not CHALLENGE.fullmatch(challenge):
        raise fail("invalid_request", "The code_challenge must be a base64url SHA-256 digest (43 characters).")
    nonce = params.get("nonce") or None
    if nonce is not None and len(nonce) > MAX_PARAM:
        raise fail("invalid_request", "The nonce is too long.")
    try:
        scope = parse_scope(params.get("scope"), client.scope, client.scope)
    except InvalidScope as exc:
        raise fail("invalid_scope", exc.description) from exc
    try:
        resource = parse_resource(params.get("resource"), client.audience)
    except InvalidTarget as exc:
        raise fail("invalid_target", exc.description) from exc  # RFC 8707 §2: an authorization error response
    # OIDC Core §3.1.2.1, checked here so that a pushed request (RFC 9126 §2.1) is refused at the push, as the
    # authorization endpoint would refuse it, not accepted and then failed when the browser arrives.
    prompt = params.get("prompt", "").split()
    if "none" in prompt and len(prompt) > 1:
        raise fail("invalid_request", "prompt=none stands alone.")
    max_age = params.get("max_age")
    if max_age is not None and (not ascii_digits(max_age) or len(max_age) > 10):
        raise fail("invalid_request", "max_age must be seconds.")
    acr_values = params.get("acr_values")
    if acr_values is not None and len(acr_values) > MAX_PARAM:
        raise fail("invalid_request", "acr_values is too long.")
    return AuthorizationRequest(
        client,
        redirect_uri,
        scope,
        state,
        nonce,
        challenge,
        resource,
        acr_values=parse_acr_values(acr_values),
        max_age=int(max_age) if max_age is not None else None,
    )


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _code_key(code: str) -> str:
    return f"auth:code:{{{hashlib.sha256(code.encode()).hexdigest()}}}"


def authenticate_client(settings: Settings, authorization: str | None, form: Mapping[str, str]) -> Client:
    """``client_secret_basic`` or ``client_secret_post`` (or ``none`` for a public client); RFC 6749 §2.3."""
    basic = authorization is not None and authorization[:6].lower() == "basic "
    if authorization is not None and not basic:
        raise InvalidClient("Unsupported client authentication scheme.")
    if basic:
        assert authorization is not None
        if "client_secret" in form:
            raise InvalidRequest("Use one client authentication method, not two.")
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
            raw_id, _, raw_secret = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidClient("Malformed Basic credentials.", basic=True) from None
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)  # RFC 6749 §2.3.1: form-encoded first
        if form.get("client_id", client_id) != client_id:
            raise InvalidRequest("client_id differs from the authenticated client.")
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    client = settings.client(client_id)
    if client is None:
        raise InvalidClient(basic=basic)
    if client.client_secret is None:
        if secret:
            raise InvalidClient(basic=basic)
        return client
    if not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
        raise InvalidClient(basic=basic)
    return client


def token_type(jkt: str | None) -> str:
    """RFC 9449 §5: a bound access token is of type DPoP, so the client knows to send it with a proof."""
    return "DPoP" if jkt is not None else "Bearer"


def _param(form: Mapping[str, str], name: str, *, limit: int = MAX_TOKEN_LENGTH) -> str:
    value = form.get(name)
    if not value:
        raise InvalidRequest(f"The parameter {name} is required.")
    if len(value) > limit:
        raise InvalidRequest(f"The parameter {name} is too long.")
    return value


class Grants:
    def __init__(self, settings: Settings, tokens: TokenService, redis: Any, sso: SSOStore) -> None:
        self.settings = settings
        self.tokens = tokens
        self.redis = redis
        self.sso = sso
        self._redeem = redis.register_script(_REDEEM)

    async def issue_code(
        self,
        request: AuthorizationRequest,
        user: User,
        *,
        auth_time: int,
        sso_id: str,
        acr: str = ACR_PWD,
        amr: tuple[str, ...] = ("pwd",),
    ) -> str:
        """``auth_time``: when the user last authenticated (OIDC Core §2); ``sso_id``: the SSO session; ``acr``,
        ``amr``: the level the session reached and how (DESIGN §14)."""
        code = secrets.token_urlsafe(32)
        record = {
            "client_id": request.client.client_id,
            "redirect_uri": request.redirect_uri,
            "code_challenge": request.code_challenge,
            "scope": request.scope,
            "nonce": request.nonce,
            "sub": user.sub,
            "username": user.username,
            "auth_time": auth_time,
            "sso": sso_id,
            "resource": request.resource,
            "acr": acr,
            "amr": list(amr),
        }
        await self.redis.set(_code_key(code), json.dumps(record), ex=self.settings.code_ttl)
        return code

    async def token(self, client: Client, form: Mapping[str, str], *, jkt: str | None = None) -> dict[str, Any]:
        """The token response of a grant; ``jkt``: the key of the request's checked DPoP proof (RFC 9449 §5)."""
        grant_type = form.get("grant_type", "")
        if not grant_type:
            raise InvalidRequest("The parameter grant_type is required.")
        handler = {
            "authorization_code": self._authorization_code,
            "refresh_token": self._refresh_token,
            "client_credentials": self._client_credentials,
        }.get(grant_type)
        if handler is None:  # notably "password": RFC 9700 §2.4 says it must not be used
            raise UnsupportedGrantType(f"The grant type {grant_type[:64]!r} is not supported.")
        if grant_type not in client.grant_types:
            raise UnauthorizedClient()
        return await handler(client, form, jkt)

    async def _authorization_code(self, client: Client, form: Mapping[str, str], jkt: str | None) -> dict[str, Any]:
        code = _param(form, "code")
        redirect_uri = _param(form, "redirect_uri")
        verifier = _param(form, "code_verifier")
        if not VERIFIER.fullmatch(verifier):
            raise InvalidRequest("The code_verifier is malformed (RFC 7636 §4.1).")
        # Checked before the code is redeemed, so a bad resource does not burn it; within the authorized resource
        # once the code exists (below).
        requested = parse_resource(form.get("resource"), client.audience)
        key = _code_key(code)
        raw = await self.redis.get(key)
        if raw is None:
            await self._replayed(key)
        record = json.loads(raw)
        # Checked before the code is taken: a failed attempt (another client, a wrong verifier, a wrong redirect URI)
        # must not burn the code, or anyone who sees a code could block that login.
        if (
            record["client_id"] != client.client_id
            or record["redirect_uri"] != redirect_uri
            or not hmac.compare_digest(s256(verifier), record["code_challenge"])
        ):
            raise InvalidGrant("The authorization code does not match the client, redirect URI or code verifier.")
        authorized = record.get("resource")
        if requested is not None and authorized is not None and requested != authorized:
            raise InvalidTarget("The resource differs from the one the code was authorized for.")
        status, *_ = await self._redeem(keys=[key, f"{key}:used"], args=[USED_CODE_TTL, raw])
        if status not in (b"ok", "ok"):  # a concurrent redemption took it between our read and now
            await self._replayed(key)
        if record.get("sso") and await self.sso.get(record["sso"], touch=False) is None:
            # DESIGN §6: the browser's sign-in ended (a logout) between the code and its redemption; a login born of
            # it now would outlive the logout.
            raise InvalidGrant("The sign-in this code came from has ended.")
        family, refresh_token = await self.tokens.start_family(
            sub=record["sub"],
            username=record["username"],
            client_id=client.client_id,
            scope=record["scope"],
            auth_time=record["auth_time"],
            resource=authorized,
            jkt=None if client.confidential else jkt,  # RFC 9449 §5: a public client's refresh tokens are bound
            acr=record.get("acr", ACR_PWD),
            amr=tuple(record.get("amr", ["pwd"])),
        )
        await self.redis.set(f"{key}:used", family.sid, xx=True, keepttl=True)
        if record.get("sso"):
            await self.sso.attach(record["sso"], family.sid, family.sub)  # an RP logout ends it with the SSO session
        access_token, expires_in = self.tokens.access_token(
            sub=family.sub,
            client=client,
            scope=family.scope,
            sid=family.sid,
            resource=requested or authorized,
            jkt=jkt,
            login=family,
        )
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": token_type(jkt),
            "expires_in": expires_in,
            "scope": family.scope,
        }
        if "refresh_token" in client.grant_types:
            body["refresh_token"] = refresh_token
        if "openid" in family.scope.split():
            body["id_token"] = self.tokens.id_token(family=family, nonce=record.get("nonce"))
        return body

    async def _replayed(self, key: str) -> NoReturn:
        """The code is gone: expired, unknown, or redeemed already. A redeemed one names the family it started, and a
        replay revokes it (RFC 6749 §4.1.2)."""
        sid = await self.redis.get(f"{key}:used")
        if sid and sid not in (b"-", "-"):
            await self.tokens.revoke_family(sid.decode() if isinstance(sid, bytes) else sid)
        raise InvalidGrant("The authorization code is invalid, expired or already used.")

    async def _refresh_token(self, client: Client, form: Mapping[str, str], jkt: str | None) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        if not token:
            raise InvalidRequest("The parameter refresh_token is required.")
        try:
            claims = self.tokens.decode_refresh(token)
        except TokenRejected as exc:
            raise InvalidGrant("The refresh token is invalid or expired.") from exc
        if claims["client_id"] != client.client_id:
            raise InvalidGrant("The refresh token was issued to another client.")
        bound = claims.get("cnf", {}).get("jkt") if isinstance(claims.get("cnf"), dict) else None
        if bound is not None and bound != jkt:  # RFC 9449 §5: a bound refresh token needs a proof by its key
            raise InvalidDPoPProof("The refresh token is bound to a DPoP key: send a proof made with it.")
        # RFC 8707 §2.2: within the grant's resource, else the client's audiences; checked before the rotation, so a
        # refused resource leaves the refresh token usable.
        authorized = claims.get("resource")
        resource = parse_resource(form.get("resource"), (authorized,) if authorized else client.audience)
        scope = claims.get("scope", "")
        requested = form.get("scope")
        if requested is not None:
            granted = tuple(scope.split())
            scope = parse_scope(requested, granted, granted)  # RFC 6749 §6: a subset of the original grant

        def issue(family: Family, refresh_token: str) -> dict[str, Any]:
            access_token, expires_in = self.tokens.access_token(
                sub=family.sub,
                client=client,
                scope=scope,
                sid=family.sid,
                resource=resource or family.resource,
                jkt=jkt,
                login=family,
            )
            return {
                "access_token": access_token,
                "token_type": token_type(jkt),
                "expires_in": expires_in,
                "refresh_token": refresh_token,
                "scope": scope,
            }

        try:
            # A retry within the grace that asks for another scope, resource or DPoP key gets its own access token.
            request = f"{scope}\x00{resource or ''}\x00{jkt or ''}"
            # Issue #18 item 6: the grace hands the live pair to whoever presents the rotated token, so only a client
            # that proves it is the same one gets it: one that authenticated, or that proved the refresh token's DPoP
            # key. A public client without DPoP gets reuse detection, as before the grace existed.
            same_client = client.confidential or bound is not None
            return await self.tokens.rotate(claims, token, issue, request=request, grace=same_client)
        except TokenRejected as exc:
            raise InvalidGrant("The refresh token is invalid, expired or revoked.") from exc

    async def _client_credentials(self, client: Client, form: Mapping[str, str], jkt: str | None) -> dict[str, Any]:
        if not client.confidential:
            raise UnauthorizedClient("A public client may not use client_credentials.")
        allowed = tuple(s for s in client.scope if s != "openid")  # no user, so no OpenID scope
        scope = parse_scope(form.get("scope"), allowed, allowed)
        resource = parse_resource(form.get("resource"), client.audience)
        access_token, expires_in = self.tokens.access_token(
            sub=client.client_id, client=client, scope=scope, sid=None, resource=resource, jkt=jkt
        )
        return {"access_token": access_token, "token_type": token_type(jkt), "expires_in": expires_in, "scope": scope}
