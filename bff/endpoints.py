"""The BFF's HTTP endpoints (DESIGN §3)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from bff.auth_client import AuthClient
from bff.credentials import Credentials
from bff.errors import (
    AuthServerUnavailable,
    BadRequest,
    InvalidState,
    LoginFailed,
    LoginRequired,
    ProviderRejected,
    ServerMisconfigured,
    SessionGone,
    StepUpRequired,
)
from bff.login_state import LOGIN_TTL, LoginStates
from bff.metrics import Metrics
from bff.pages import is_navigation
from bff.proxy import Proxy
from bff.refresh import Refresher
from bff.session_index import SessionIndex
from bff.session_list import SessionList, clean_user_agent, truncate_ip
from bff.sessions import STATE_RE, Sealed, Session, SessionManager, logout_id, new_state, record_key
from bff.settings import Settings
from bff.step_up import (
    AUTH_TIME_LEEWAY,
    challenge_of,
    login_level,
    meets,
    parse_acr_values,
    parse_max_age,
    return_to_of,
    step_up_error,
)
from servicekit.proxies import TrustedProxies, peer

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
RETURN_TO_MAX = 2048
NO_STORE = {"Cache-Control": "no-store"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
STEP_UP_LOCK_TRIES = 100  # x 50 ms: how long a step-up waits for a refresh of the session in flight
STEP_UP_LOCK_LEASE_MS = 10_000
_warned_no_refresh = False  # the WARNING about a provider that issues no refresh token is said once per process


def cookie(request: HTTPConnection, name: str) -> str | None:
    """One cookie's value, read straight from the raw headers (Starlette's full parse is a measurable share of a
    proxied request). The first occurrence wins, as browsers send the most specific cookie first."""
    wanted = name.encode("latin-1") + b"="
    for key, value in request.scope["headers"]:
        if key == b"cookie":
            for part in value.split(b";"):
                part = part.strip()
                if part.startswith(wanted):
                    return part[len(wanted) :].decode("latin-1")
    return None


def all_cookies(request: Request) -> list[tuple[str, str]]:
    """Every cookie of the request as (name, value), from the raw headers."""
    found = []
    for key, value in request.scope["headers"]:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name, sep, rest = part.strip().partition("=")
                if sep:
                    found.append((name, rest))
    return found


def safe_return_to(value: str | None) -> str:
    """A local path only: no scheme, no host, no ``//`` or ``/\\`` (which browsers read as another host)."""
    if not value:
        return "/"
    if (
        len(value) > RETURN_TO_MAX
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or "\\" in value
        or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value)
    ):
        raise BadRequest("return_to must be a local path.")
    return value


def pkce_challenge(verifier: str) -> str:
    # RFC 7636 §4.2: S256
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class Endpoints:
    settings: Settings
    manager: SessionManager
    auth: AuthClient
    refresher: Refresher
    proxy: Proxy
    metrics: Metrics
    credentials: Credentials
    session_index: SessionIndex  # provider sid/sub -> sessions, for back-channel logout (DESIGN §6)
    session_list: SessionList | None = None  # a user's sessions, for "Your sessions" (DESIGN §14)
    # after a login: (sub, its session, when made) -> the user's oldest beyond BFF_MAX_SESSIONS_PER_USER ended
    after_login: Callable[[str, Sealed, float], Awaitable[None]] | None = None

    # --- cookies ------------------------------------------------------------------------------------------------

    def _cookie(self, name: str, value: str, max_age: int | None = None) -> str:
        # Written by hand so the attributes are exactly these: HttpOnly; Secure; SameSite=Lax; Path=/, no Domain.
        parts = [f"{name}={value}", "Path=/"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if self.settings.cookie_secure:
            parts.append("Secure")
        parts += ["HttpOnly", "SameSite=Lax"]
        return "; ".join(parts)

    def expire_cookie(self, name: str) -> str:
        return self._cookie(name, "", 0) + "; Expires=Thu, 01 Jan 1970 00:00:00 GMT"

    # --- sessions -----------------------------------------------------------------------------------------------

    async def session(self, request: Request) -> tuple[Sealed, Session]:
        ref = self.manager.ref(cookie(request, self.settings.cookie_name))
        if ref is None:
            raise LoginRequired()
        session = await self.manager.load(ref)
        if session is None:
            raise LoginRequired()
        if self.session_list is not None:
            self.session_list.seen(ref, session)
        return ref, session

    @functools.cached_property
    def proxies(self) -> TrustedProxies:
        return TrustedProxies(self.settings.trusted_proxies)

    # --- login ----------------------------------------------------------------------------------------------------

    @functools.cached_property
    def logins(self) -> LoginStates:
        return LoginStates(self.settings.client_secret, self.settings.login_cookie_name, self.manager.store)

    async def login(self, request: Request) -> Response:
        return_to = safe_return_to(request.query_params.get("return_to"))
        # DESIGN §14: a step-up login (the step_up_url of a 401 insufficient_user_authentication) asks the provider
        # for a level and a freshness, and upgrades this browser's session in place at the callback.
        acr_values = parse_acr_values(request.query_params.get("acr_values"))
        max_age = parse_max_age(request.query_params.get("max_age"))
        state, nonce, verifier = new_state(), new_state(), secrets.token_urlsafe(48)
        # The login in flight lives sealed in a cookie of its own, not in Redis: an anonymous flood costs no memory.
        login = self.logins.new(state, nonce, verifier, return_to, " ".join(acr_values), max_age)
        login_cookie, sealed = self.logins.seal(login)
        params = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.settings.redirect_uri,
            "scope": self.settings.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        if acr_values and (await self.auth.discover()).get("claims_parameter_supported") is True:
            # OIDC Core §5.5.1.1: acr_values is a voluntary request; a provider that takes the claims parameter is
            # asked for an essential acr instead (not both: acr_values would override it as a voluntary one), so it
            # prompts rather than answer with the level its session has.
            params["claims"] = json.dumps({"id_token": {"acr": {"essential": True, "values": list(acr_values)}}})
        elif acr_values:
            params["acr_values"] = " ".join(acr_values)
        if max_age is not None:
            params["max_age"] = str(max_age)
        location = await self.auth.authorization_url(params)
        response = RedirectResponse(location, 302, headers=NO_STORE)
        for stale in self.logins.stale(all_cookies(request), sealed):
            response.headers.append("set-cookie", self.expire_cookie(stale))
        response.headers.append("set-cookie", self._cookie(login_cookie, sealed, LOGIN_TTL))
        return response

    async def callback(self, request: Request) -> Response:
        params = request.query_params
        state = params.get("state")
        if state is None or not STATE_RE.fullmatch(state):
            raise InvalidState()
        login_cookie = self.logins.cookie_name(state)
        login = self.logins.open(login_cookie, cookie(request, login_cookie))
        if login is None or login.state != state:  # bound to this browser
            raise InvalidState()
        try:
            await self.auth.check_issuer(params.get("iss"))  # RFC 9207, before anything else of the answer is used
        except ProviderRejected as exc:
            raise LoginFailed(exc.description) from exc
        error = params.get("error")
        if error is not None:
            shown = error if _ERROR_CODE.fullmatch(error) else "an error"
            raise LoginFailed(f"The auth server answered {shown}.")
        code = params.get("code")
        if not code or len(code) > 4096:
            raise BadRequest("The callback has no code.")
        try:
            tokens = await self.auth.exchange_code(code, login.verifier)
            claims = await self.auth.id_claims(tokens.id_token, login.nonce)
        except ProviderRejected as exc:
            raise LoginFailed(f"The auth server refused the login ({exc.oauth_error}).") from exc
        # Single use, marked only now that the provider has vouched for the login (a code it exchanged, an ID token
        # with our nonce): an anonymous /bff/login + /bff/callback pair writes nothing to Redis (issue #18 item 5).
        # A second callback of the same login never gets here with the same code (the provider refuses a code twice).
        if not await self.logins.claim(login):
            if tokens.refresh_token:
                with contextlib.suppress(AuthServerUnavailable):
                    await self.auth.revoke(tokens.refresh_token)  # RFC 7009: no family left behind
            raise InvalidState()
        acr, amr, auth_time = login_level(claims)
        wanted = parse_acr_values(login.acr_values)
        if (wanted or login.max_age is not None) and not meets(
            acr, auth_time, wanted, login.max_age, leeway=AUTH_TIME_LEEWAY
        ):
            # RFC 9470 §4 / OIDC Core §3.1.2.1: a provider may ignore acr_values; what it did is in the ID token.
            self.metrics.step_ups.labels("refused").inc()
            log.warning(
                "step-up login of %s came back at acr %r (auth_time %s), below the asked %s / max_age %s: refused",
                claims.get("sub"),
                acr,
                auth_time,
                login.acr_values or "-",
                login.max_age,
            )
            if tokens.refresh_token:
                with contextlib.suppress(AuthServerUnavailable):
                    await self.auth.revoke(tokens.refresh_token)
            raise LoginFailed(
                "The sign-in did not reach the level this action needs (a second factor, or a more recent sign-in)."
            )
        kept = await self.auth.user_claims(claims, tokens.access_token, self.settings.kept_claims)
        if not tokens.refresh_token:
            self.metrics.no_refresh_token_logins.inc()
            self._no_refresh_token_warning()
        old = self.manager.ref(cookie(request, self.settings.cookie_name))
        sid = claims.get("sid")  # the provider's login: its back-channel logout token names it (DESIGN §6)
        level = {"acr": acr, "amr": amr, "auth_time": auth_time}
        if old is not None and (wanted or login.max_age is not None):
            upgraded = await self._step_up(old, tokens, claims, kept, level)
            if upgraded:
                response = RedirectResponse(login.return_to, 302, headers=NO_STORE)
                response.headers.append("set-cookie", self.expire_cookie(login_cookie))
                return response
        if old is not None:
            await self.manager.delete(old)  # a new id on every login; the old one dies (fixation)
        user_agent = address = ""
        if self.session_list is not None:  # DESIGN §14: the browser and network it logged in from, minimally
            found = self.proxies.client_address(peer(request.scope), request.scope["headers"])
            user_agent, address = clean_user_agent(request.headers.get("user-agent")), truncate_ip(found or "")
        secret, session = await self.manager.create(
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            access_expires_at=tokens.expires_at,
            sub=str(claims["sub"]),
            username=str(claims.get("preferred_username") or claims["sub"]),
            scope=tokens.scope,
            id_token=tokens.id_token,
            sid=sid if isinstance(sid, str) else None,
            claims=kept,
            acr=acr,
            amr=amr,
            auth_time=auth_time,
            user_agent=user_agent,
            ip=address,
        )
        ref = self.manager.ref(secret)
        assert ref is not None
        listed = None
        if self.session_list is not None:
            listed = self.session_list.new_entry(ref, record_key(secret), session)
        if not await self.session_index.add(ref.key, sid=session.sid, sub=session.sub, listed=listed):
            await self.manager.delete(ref)  # the provider ended this login while we completed it (back channel)
            raise LoginFailed("The provider ended this login already; log in again.")
        self.metrics.sessions.labels("created").inc()
        if self.after_login is not None:
            await self.after_login(session.sub, ref, session.created_at)
        response = RedirectResponse(login.return_to, 302, headers=NO_STORE)
        response.headers.append("set-cookie", self._cookie(self.settings.cookie_name, secret))
        response.headers.append("set-cookie", self.expire_cookie(login_cookie))
        return response

    async def _step_up(
        self, ref: Sealed, tokens: Any, claims: dict[str, Any], kept: dict[str, Any], level: dict[str, Any]
    ) -> bool:
        """Raise the browser's session ``ref`` in place with a step-up login's tokens (DESIGN §14): same cookie, same
        record (its sockets stay open). False when there is no session of this user to raise (a normal login then
        follows). Under the session's refresh lock, so a refresh of the old login cannot land over the new tokens;
        written with the conditional save, so a logout that won the race stays a logout (LoginRequired)."""
        current = await self.manager.peek(ref)
        if current is None or current.sub != str(claims["sub"]):
            return False
        store, owner = self.manager.store, secrets.token_urlsafe(16)
        for _ in range(STEP_UP_LOCK_TRIES):  # a refresh in flight holds it for one token request at most
            if await store.acquire(ref.lock_key, owner, STEP_UP_LOCK_LEASE_MS):
                break
            await asyncio.sleep(0.05)
        else:
            raise AuthServerUnavailable("A refresh of this session is under way; try the step-up again.")
        new_sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None
        try:
            current = await self.manager.peek(ref)
            if current is None:
                raise SessionGone()
            old_refresh, old_sid = current.refresh_token, current.sid
            now = time.time()
            upgraded = dataclasses.replace(
                current,
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                access_expires_at=tokens.expires_at,
                access_issued_at=now,
                scope=tokens.scope,
                tokens={},  # route tokens of the old login: fetched again for the new one
                id_token=tokens.id_token,
                sid=new_sid,
                claims=kept,
                acr=level["acr"],
                amr=level["amr"],
                auth_time=level["auth_time"],
            )
            try:
                await self.manager.save(ref, upgraded)
            except SessionGone:
                if tokens.refresh_token:
                    with contextlib.suppress(AuthServerUnavailable):
                        await self.auth.revoke(tokens.refresh_token)  # no family left behind
                raise
        finally:
            await store.release(ref.lock_key, owner)
        if not await self.session_index.add(ref.key, sid=new_sid, sub=current.sub):
            await self.manager.delete(ref)  # the provider ended the new login while we completed it
            raise LoginFailed("The provider ended this login already; log in again.")
        if old_sid and old_sid != new_sid:
            await self.session_index.forget(ref.key, sid=old_sid)
        if old_refresh and old_refresh != tokens.refresh_token:
            with contextlib.suppress(AuthServerUnavailable, ProviderRejected):
                await self.auth.revoke(old_refresh)  # the old login is done with (RFC 7009)
        self.metrics.step_ups.labels("upgraded").inc()
        log.info("session of %s stepped up to acr %s", current.sub, level["acr"])
        return True

    def _no_refresh_token_warning(self) -> None:
        # Once per process: it is how the provider is set up, and every login would say it again.
        global _warned_no_refresh
        if _warned_no_refresh:
            return
        _warned_no_refresh = True
        log.warning(
            "the provider issued no refresh token: each session ends when its access token does. Allow the "
            "refresh_token grant for the client %r at the provider, and add offline_access to BFF_SCOPES if the "
            "provider needs it (docs/guides/your-provider.md)",
            self.settings.client_id,
        )

    async def user(self, request: Request) -> Response:
        _, session = await self.session(request)
        secret = cookie(request, self.settings.cookie_name) or ""
        return JSONResponse(
            {
                "sub": session.sub,
                "username": session.username,
                "scope": session.scope,
                "claims": session.claims,
                "acr": session.acr,  # DESIGN §14: the login's level, raised in place by a step-up
                "amr": session.amr,
                "auth_time": session.auth_time,
                "expires_at": int(session.expires_at),
                "idle_expires_at": int(self.manager.idle_expires_at(session)),
                "logout_url": "/bff/logout?" + urlencode({"sid": logout_id(secret)}),
            },
            headers=NO_STORE,
        )

    # --- the proxy ------------------------------------------------------------------------------------------------

    async def api(self, request: Request) -> Response:
        route = self.settings.routes.lookup(request.scope["path"])
        route.check_method(request.method)  # 405 before anything else: the upstream is not called
        try:
            credential = await self.credentials.for_route(route, cookie(request, self.settings.cookie_name))
        except StepUpRequired as exc:  # the route's own acr/max_age (DESIGN §14): back to this page afterwards
            raise step_up_error(exc.acr_values, exc.max_age, self._return_to(request)) from None
        out = await self.proxy.outbound(request, route)
        upstream = await self.proxy.send(out, credential.token)
        if upstream.status == 401 and credential.token is not None:
            challenge = upstream.headers.get("WWW-Authenticate", "")
            stepping = challenge_of(challenge)
            if stepping is not None:
                # RFC 9470: the login itself is too weak or too old; a new token of it would not help, so no retry.
                upstream.release()
                self.metrics.step_ups.labels("asked_by_upstream").inc()
                log.info("upstream %s asks session of %s for a step-up", route.name, credential.sub)
                raise step_up_error(*stepping, self._return_to(request))
            if out.replayable and "invalid_token" in challenge:
                # RFC 6750 §3.1: the token was refused (revoked keys, clock skew): renew once, replay once.
                upstream.release()
                credential = await self.credentials.renew(route, credential)
                upstream = await self.proxy.send(out, credential.token)
        session = credential.ref.key if credential.ref is not None else None
        user = credential.session.sub if credential.session is not None else None
        return self.proxy.response(upstream, out.headers["X-Request-ID"], session, route.name, user)

    def _return_to(self, request: Request) -> str:
        # Only on a step-up: reading Referer and the navigation headers costs nothing on the hot path then.
        return return_to_of(request.scope, self.settings.public_origin, is_navigation(request.scope))

    # --- the page and operations ------------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """200 ready; 503 ``not ready`` while Redis or the provider cannot be reached (passing), 503 ``misconfigured``
        with the reason while the provider refuses the BFF's own configuration (DESIGN §12)."""
        checks: dict[str, str] = {}
        try:
            await self.manager.store.ping()
            checks["store"] = "ok"
        except Exception:  # noqa: BLE001 - any failure means not ready
            checks["store"] = "unavailable"
        try:
            await self.auth.discover()
            checks["auth_server"] = "ok"
        except AuthServerUnavailable:
            checks["auth_server"] = "unavailable"
        except ServerMisconfigured:
            checks["auth_server"] = "misconfigured"
        await self.auth.recheck()  # while misconfigured: has the operator fixed it? (rate-limited)
        reason = self.auth.health.reason
        if reason is not None:
            checks["auth_server"] = "misconfigured"
            return JSONResponse({"status": "misconfigured", "reason": reason, "checks": checks}, status_code=503)
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
        )
