"""HTTP endpoints of the auth server (DESIGN §1)."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from servicekit.proxies import TrustedProxies

from .account import AccountPage, SecondFactorStep
from .backchannel import LogoutNotifier
from .devices import DeviceCookies
from .dpop import DPOP_ALGORITHMS, DPoPCheck
from .errors import (
    AuthorizeRedirect,
    AuthorizeRequestError,
    InvalidClient,
    InvalidRequest,
    InvalidToken,
    LoginThrottled,
    OAuthError,
    SignUpError,
    SignUpThrottled,
    TokenRejected,
    UseDPoPNonce,
)
from .forms import FormGuard, query_params, read_body, read_form
from .grants import AuthorizationRequest, Grants, authenticate_client, parse_authorization_request
from .keys import KeyRing
from .logout import LogoutEndpoint, Logouts
from .metrics import Metrics
from .mfa import ACR_VALUES, missing
from .par import PushedRequests
from .settings import Settings
from .sso import SSOSession, SSOStore
from .throttle import LoginThrottle, SignUpLimit
from .tokens import AT_TYP, MAX_TOKEN_LENGTH, RT_TYP, TokenService
from .users import User, UserStore

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1


def oauth_error_response(exc: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if isinstance(exc, InvalidClient) and exc.basic:
        headers["WWW-Authenticate"] = 'Basic realm="auth-server"'  # RFC 6749 §5.2
    if isinstance(exc, InvalidToken):
        headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{exc.description}"'
    if isinstance(exc, UseDPoPNonce):
        headers["DPoP-Nonce"] = exc.nonce  # RFC 9449 §8
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


class Endpoints:
    def __init__(self, settings: Settings, redis: Any, keys: KeyRing, metrics: Metrics) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.metrics = metrics
        throttle = LoginThrottle(
            redis,
            max_failures=settings.login_max_failures,
            per_address=settings.login_max_failures_per_address,
            per_account=settings.login_max_failures_per_account,
            window=settings.login_window,
            per_device=settings.device_max_failures,
        )
        self.users = UserStore(redis, throttle)
        self.signups = SignUpLimit(redis, limit=settings.signup_max_per_address, window=settings.signup_window)
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.tokens = TokenService(settings, keys, redis)
        self.notifier = LogoutNotifier(
            settings, self.tokens, lambda outcome: metrics.backchannel_logouts.labels(outcome).inc()
        )
        self.tokens.on_family_ended = self.notifier.family_ended  # back-channel logout (DESIGN §6)
        self.sso = SSOStore(settings, redis, self.tokens.durable)
        self.logouts = Logouts(self.tokens, self.sso)
        self.dpop = DPoPCheck(settings, redis, keys)
        self.grants = Grants(settings, self.tokens, redis, self.sso)
        fixed = settings.form_secret
        spare = [secrets.token_bytes(32)]  # only if the keys directory were emptied under a running server
        form_secrets = (lambda: [fixed]) if fixed else (lambda: keys.derived_secrets(b"form-token") or spare)
        self.par = PushedRequests(settings, redis, form_secrets)  # its own key, derived from the form's secret
        self.guard = FormGuard(form_secrets, secure=settings.issuer.startswith("https://"))
        fixed_device = [fixed] if fixed else None
        self.devices = DeviceCookies(
            (lambda: fixed_device) if fixed_device else (lambda: keys.derived_secrets(b"device-cookie") or spare),
            secure=settings.issuer.startswith("https://"),
            ttl=settings.device_cookie_ttl,
        )
        self.jinja = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
        self.logout = LogoutEndpoint(self)
        self.second_factor = SecondFactorStep(self)
        self.account = AccountPage(self, self.second_factor)

    # --- HTML ---------------------------------------------------------------------------------------------

    def page(
        self,
        template: str,
        status: int = 200,
        *,
        form_action: str = "'self'",
        cookie: str | None = None,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        html = self.jinja.get_template(template).render(style_nonce=nonce, **context)
        response = HTMLResponse(
            html,
            status_code=status,
            headers={
                **NO_STORE,
                "Content-Security-Policy": f"default-src 'none'; style-src 'nonce-{nonce}'; "
                f"script-src 'nonce-{nonce}'; form-action {form_action}; "
                "frame-ancestors 'none'; base-uri 'none'",
                "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                **(headers or {}),
            },
        )
        if cookie is not None:
            response.set_cookie(
                self.guard.cookie_name,
                cookie,
                max_age=3600,
                path="/",
                secure=self.guard.secure,
                httponly=True,
                samesite="lax",
            )
        return response

    def error_page(self, message: str, status: int = 400) -> HTMLResponse:
        return self.page("error.html", status, message=message)

    @staticmethod
    def redirect(uri: str, params: dict[str, str]) -> RedirectResponse:
        sep = "&" if urlsplit(uri).query else "?"
        return RedirectResponse(f"{uri}{sep}{urlencode(params)}", status_code=302, headers=NO_STORE)

    def redirect_error(self, exc: AuthorizeRedirect) -> RedirectResponse:
        params = {"error": exc.error, "error_description": exc.description, "iss": self.settings.issuer}
        if exc.state:
            params["state"] = exc.state
        return self.redirect(exc.redirect_uri, params)

    @staticmethod
    def form_action(auth: AuthorizationRequest) -> str:
        # Browsers apply form-action to the redirect that follows the post (to the client's redirect URI).
        origin = urlsplit(auth.redirect_uri)
        return f"'self' {origin.scheme}://{origin.netloc}"

    def login_page(
        self,
        request: Request,
        auth: AuthorizationRequest,
        status: int = 200,
        *,
        error: str = "",
        username: str = "",
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        cookie, new = self.guard.cookie_for(request)
        fields = auth.hidden_fields()
        hidden = {**fields, "form_token": self.guard.token("login", cookie, fields)}
        register_url = "/register?" + urlencode({"next": "/oauth/authorize?" + urlencode(fields)})
        return self.page(
            "login.html",
            status,
            form_action=self.form_action(auth),
            cookie=cookie if new else None,
            headers=headers,
            client_id=auth.client.client_id,
            hidden=hidden,
            error=error,
            username=username,
            action=f"{self.settings.issuer}/oauth/authorize",
            register_url=register_url,
        )

    # --- discovery and keys -------------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        issuer = self.settings.issuer
        scopes = sorted({s for c in self.settings.clients for s in c.scope} | {"openid"})
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/oauth/authorize",
            "token_endpoint": f"{issuer}/oauth/token",
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            # Our extension (DESIGN §11): where resource servers poll the sids of ended logins (DESIGN §9). A verifier
            # polls a feed only when the issuer advertises one, never a guessed path at a foreign provider.
            "revocation_feed_endpoint": f"{issuer}/oauth/revocations",
            "introspection_endpoint": f"{issuer}/oauth/introspect",
            "userinfo_endpoint": f"{issuer}/userinfo",
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "scopes_supported": scopes,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.settings.signing_alg],
            "claims_supported": [
                *("iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "preferred_username", "sid"),
                *("acr", "amr"),
            ],
            "acr_values_supported": list(ACR_VALUES),  # DESIGN §14: pwd, mfa
            "authorization_response_iss_parameter_supported": True,  # RFC 9207
            "dpop_signing_alg_values_supported": DPOP_ALGORITHMS,  # RFC 9449 §5.1
            "pushed_authorization_request_endpoint": f"{issuer}/oauth/par",  # RFC 9126 §5
            "require_pushed_authorization_requests": False,
            "end_session_endpoint": f"{issuer}/oauth/logout",  # OIDC RP-Initiated Logout §2.1
            "backchannel_logout_supported": True,  # OIDC Back-Channel Logout §2.1
            "backchannel_logout_session_supported": True,
            "prompt_values_supported": ["none", "login"],
        }

    async def discovery(self, request: Request) -> JSONResponse:
        return JSONResponse(self.metadata(), headers={"Cache-Control": "public, max-age=300"})

    async def jwks(self, request: Request) -> JSONResponse:
        return JSONResponse(
            self.keys.jwks(), headers={"Cache-Control": f"public, max-age={self.settings.jwks_max_age}"}
        )

    def client_address(self, request: Request) -> str:
        """The client's address: the peer's, or from X-Forwarded-For when the peer is in AUTH_TRUSTED_PROXIES."""
        peer = request.client.host if request.client else None
        return self.proxies.client_address(peer, request.scope["headers"])

    # --- authorization endpoint ---------------------------------------------------------------------------

    async def authorize_get(self, request: Request) -> Response:
        try:
            params = await self.par.resolve(query_params(request))  # RFC 9126 §4: a pushed request, taken once
            auth = parse_authorization_request(self.settings, params)
            prompt = params.get("prompt", "").split()  # checked by parse_authorization_request
            sso = await self.sso.get(self.sso.browser_id(request))
            # OIDC Core §3.1.2.1: prompt=login demands a fresh password; otherwise only what the session lacks for
            # the level asked (acr_values) within max_age is asked for (DESIGN §14, auth_server.mfa.missing).
            fresh = "login" in prompt or "select_account" in prompt
            need = "password" if fresh else missing(sso, auth.level, auth.max_age)
            if need is None and sso is not None:
                return await self._code_response(auth, sso)
            if "none" in prompt:  # OIDC Core §3.1.2.6: no usable login and no UI allowed
                raise AuthorizeRedirect("login_required", "The user must sign in.", auth.redirect_uri, auth.state)
        except InvalidRequest as exc:
            return self.error_page(exc.description)
        except AuthorizeRequestError as exc:
            return self.error_page(exc.description)
        except AuthorizeRedirect as exc:
            return self.redirect_error(exc)
        if need == "second_factor" and sso is not None:
            return await self.second_factor.page(request, auth, sso)
        return self.login_page(request, auth)

    async def _code_response(
        self, auth: AuthorizationRequest, sso: SSOSession, cookie: str | None = None
    ) -> RedirectResponse:
        user = User(sub=sso.sub, username=sso.username)
        code = await self.grants.issue_code(
            auth, user, auth_time=sso.auth_time, sso_id=sso.id, acr=sso.acr, amr=sso.amr
        )
        response = self.redirect(auth.redirect_uri, self._code_params(auth, code))
        if cookie is not None:
            self.sso.set_cookie(response, cookie)
        return response

    def _code_params(self, auth: AuthorizationRequest, code: str) -> dict[str, str]:
        params = {"code": code, "iss": self.settings.issuer}
        if auth.state:
            params["state"] = auth.state
        return params

    async def authorize_post(self, request: Request) -> Response:
        try:
            form = await read_form(request, self.settings.max_body)
            auth = parse_authorization_request(self.settings, form)
        except InvalidRequest as exc:
            return self.error_page(exc.description, exc.status_code)
        except AuthorizeRequestError as exc:
            return self.error_page(exc.description)
        except AuthorizeRedirect as exc:
            return self.redirect_error(exc)
        if form.get("step") == "second_factor":
            return await self._second_factor_post(request, auth, form)
        username, password = form.get("username", ""), form.get("password", "")
        if not self.guard.check(request, "login", form.get("form_token", ""), auth.hidden_fields()):
            return self.login_page(
                request, auth, 400, username=username[:64], error="This sign-in form has expired. Please sign in again."
            )
        if not username or not password:
            return self.login_page(
                request, auth, 400, username=username[:64], error="Enter your username and password."
            )
        try:
            device = self.devices.device_of(request, username)
            user = await self.users.authenticate(username, password, self.client_address(request), device)
        except LoginThrottled as exc:
            self.metrics.login_failures.labels("throttled").inc()
            return self.login_page(
                request,
                auth,
                429,
                username=username[:64],
                headers={"Retry-After": str(exc.retry_after)},
                error="Too many failed sign-in attempts. Please try again later.",
            )
        if user is None:
            self.metrics.login_failures.labels("credentials").inc()
            # One message for an unknown user and a wrong password: no user enumeration.
            return self.login_page(request, auth, 400, username=username[:64], error="Invalid username or password.")
        # A password login starts the browser's SSO session (DESIGN §6): the next authorization needs no form.
        cookie, sso = await self.sso.start(sub=user.sub, username=user.username, previous=self.sso.browser_id(request))
        response: Response
        if missing(sso, auth.level, auth.max_age) == "second_factor":
            # DESIGN §14: the password alone is below the level asked; no code until the second factor is given, so
            # replaying this form only ever brings back the second factor's page.
            response = await self.second_factor.page(request, auth, sso, cookie=cookie)
        else:
            response = await self._code_response(auth, sso, cookie)
        self.devices.set_cookie(response, user.username)  # this browser is known now (issue #18 item 4)
        return response

    async def _second_factor_post(self, request: Request, auth: AuthorizationRequest, form: dict[str, str]) -> Response:
        sso = await self.sso.get(self.sso.browser_id(request))
        if sso is None:  # no password step in this browser, or it ended (a logout): start over
            return self.login_page(request, auth, 400, error="Your sign-in has ended. Please sign in again.")
        if not self.guard.check(request, "mfa", form.get("form_token", ""), auth.hidden_fields()):
            return await self.second_factor.page(request, auth, sso, 400, error="This form has expired. Try again.")
        try:
            method, error = await self.second_factor.verify(request, sso, form)
        except LoginThrottled as exc:
            self.metrics.login_failures.labels("throttled").inc()
            response = await self.second_factor.page(
                request, auth, sso, 429, error="Too many failed attempts. Please try again later."
            )
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if method is None:
            return await self.second_factor.page(request, auth, sso, 400, error=error)
        upgraded = await self.second_factor.upgrade(sso, method)
        if upgraded is None:
            return self.login_page(request, auth, 400, error="Your sign-in has ended. Please sign in again.")
        return await self._code_response(auth, upgraded)

    # --- sign-up ------------------------------------------------------------------------------------------

    @staticmethod
    def _safe_next(value: str) -> str:
        # Only back to our own authorization endpoint: no open redirect.
        return value if value.startswith("/oauth/authorize?") and "\\" not in value else ""

    def register_page(
        self,
        request: Request,
        status: int = 200,
        *,
        next_url: str = "",
        error: str = "",
        username: str = "",
        created: str = "",
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        cookie, new = self.guard.cookie_for(request)
        token = self.guard.token("register", cookie, {})
        return self.page(
            "register.html",
            status,
            cookie=cookie if new else None,
            form_token=token,
            next=next_url,
            error=error,
            username=username,
            created=created,
            action=f"{self.settings.issuer}/register",
            headers=headers,
        )

    async def register_get(self, request: Request) -> Response:
        try:
            params = query_params(request)
        except InvalidRequest as exc:
            return self.error_page(exc.description)
        next_url = self._safe_next(params.get("next", ""))
        try:
            await self.signups.check(self.client_address(request))
        except SignUpThrottled as exc:
            return self.register_page(
                request, 429, next_url=next_url, error=exc.description, headers={"Retry-After": str(exc.retry_after)}
            )
        return self.register_page(request, next_url=next_url)

    async def register_post(self, request: Request) -> Response:
        try:
            form = await read_form(request, self.settings.max_body)
        except InvalidRequest as exc:
            return self.error_page(exc.description, exc.status_code)
        next_url = self._safe_next(form.get("next", ""))
        username = form.get("username", "")
        if not self.guard.check(request, "register", form.get("form_token", ""), {}):
            return self.register_page(
                request,
                400,
                next_url=next_url,
                username=username[:64],
                error="This form has expired. Please try again.",
            )
        try:
            address = self.client_address(request)
            await self.signups.check(address)  # used up: no more probing for taken names either
            user = await self.users.create(username, form.get("password"), admit=lambda: self.signups.count(address))
        except SignUpError as exc:
            retry = {"Retry-After": str(exc.retry_after)} if isinstance(exc, SignUpThrottled) else None
            return self.register_page(
                request,
                exc.status_code,
                next_url=next_url,
                username=username[:64],
                error=exc.description,
                headers=retry,
            )
        if next_url:
            return RedirectResponse(f"{self.settings.issuer}{next_url}", status_code=303, headers=NO_STORE)
        return self.register_page(request, 201, created=user.username)

    async def create_user(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        body = await read_body(request, self.settings.max_body)
        if content_type != "application/json":
            raise InvalidRequest("The request body must be application/json.")
        try:
            data = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack
            raise InvalidRequest("The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        address = self.client_address(request)
        await self.signups.check(address)  # used up: no more probing for taken names either
        user = await self.users.create(
            data.get("username"), data.get("password"), admit=lambda: self.signups.count(address)
        )
        return JSONResponse({"sub": user.sub, "username": user.username}, status_code=201, headers=NO_STORE)

    # --- token, revocation, introspection -----------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        grant_type = "unknown"
        try:
            form = await read_form(request, self.settings.max_body)
            raw = form.get("grant_type", "")
            grant_type = raw if raw in ("authorization_code", "refresh_token", "client_credentials") else "other"
            client = authenticate_client(self.settings, request.headers.get("authorization"), form)
            # RFC 9449 §5: the proof is checked (and a nonce demanded) before the grant uses up a code or a rotation
            jkt = await self.dpop.key_of(request, "/oauth/token")
            body = await self.grants.token(client, form, jkt=jkt)
        except OAuthError as exc:
            self.metrics.grants.labels(grant_type, exc.error).inc()
            raise
        self.metrics.grants.labels(grant_type, "ok").inc()
        nonce = self.dpop.fresh_nonce() if jkt is not None else None
        return JSONResponse(body, headers={**NO_STORE, "DPoP-Nonce": nonce} if nonce else NO_STORE)

    def _claims(self, token: str) -> tuple[str, dict[str, Any]] | None:
        """(typ, claims) of a token we issued, whatever its type; None if it is not ours or not valid."""
        for typ in (AT_TYP, RT_TYP):
            try:
                return typ, self.tokens.decode(token, typ, audience=self.settings.issuer if typ == RT_TYP else None)
            except TokenRejected:
                continue
        return None

    async def revoke(self, request: Request) -> Response:
        form = await read_form(request, self.settings.max_body)
        client = authenticate_client(self.settings, request.headers.get("authorization"), form)
        token = form.get("token", "")
        if not token:
            raise InvalidRequest("The parameter token is required.")
        found = self._claims(token) if len(token) <= MAX_TOKEN_LENGTH else None
        # RFC 7009 §2.2: 200 whether or not the token was valid; tokens of other clients are left alone.
        if found is not None:
            _, claims = found
            if claims.get("client_id") == client.client_id and isinstance(claims.get("sid"), str):
                await self.tokens.revoke_family(claims["sid"])  # the whole login ends (logout)
        return Response(status_code=200, headers=NO_STORE)

    async def revocations(self, request: Request) -> Response:
        """DESIGN §9: the sids of ended logins after ``since`` (a cursor from the previous answer; none: all)."""
        if self.settings.revocations_clients:  # issue #18 item 8c: the feed lists ended sids; readers authenticate
            try:
                client = authenticate_client(self.settings, request.headers.get("authorization"), {})
            except OAuthError:
                self.metrics.revocation_feed_refused.labels("credentials").inc()
                log.warning("revocation feed: a read without valid client credentials refused")
                raise
            if client.client_id not in self.settings.revocations_clients:
                self.metrics.revocation_feed_refused.labels("not_listed").inc()
                log.warning("revocation feed: client %s is not in AUTH_REVOCATIONS_CLIENTS", client.client_id)
                raise InvalidClient("This client may not read the revocation feed (AUTH_REVOCATIONS_CLIENTS).")
        since = query_params(request).get("since") or "0"
        entries, cursor, more = await self.tokens.revocations.since(since)
        return JSONResponse({"revocations": entries, "cursor": cursor, "more": more}, headers=NO_STORE)

    async def introspect(self, request: Request) -> Response:
        form = await read_form(request, self.settings.max_body)
        client = authenticate_client(self.settings, request.headers.get("authorization"), form)
        if not client.confidential:
            raise InvalidClient("Introspection is for confidential clients.")
        token = form.get("token", "")
        if not token:
            raise InvalidRequest("The parameter token is required.")
        inactive = JSONResponse({"active": False}, headers=NO_STORE)  # RFC 7662 §2.2: no reasons given
        found = self._claims(token) if len(token) <= MAX_TOKEN_LENGTH else None
        if found is None:
            return inactive
        typ, claims = found
        sid = claims.get("sid")
        family = await self.tokens.family(sid) if isinstance(sid, str) else None
        if isinstance(sid, str) and family is None:
            return inactive
        if typ == RT_TYP:
            if (
                claims.get("client_id") != client.client_id
                or await self.tokens.current_jti(claims["sid"]) != claims["jti"]
            ):
                return inactive
        elif not self._may_introspect(client.client_id, claims):
            return inactive  # RFC 7662 §4: another client's token is not its business, not even its existence
        body: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer" if typ == AT_TYP else "refresh_token",
            **{
                k: claims[k]
                for k in ("scope", "client_id", "sub", "exp", "iat", "nbf", "aud", "iss", "jti", "sid", "cnf")
                + ("acr", "amr", "auth_time")  # DESIGN §14: the login's level, for a resource server that introspects
                if k in claims
            },
        }
        if family is not None:
            body["username"] = family.username
        return JSONResponse(body, headers=NO_STORE)

    @staticmethod
    def _may_introspect(client_id: str, claims: dict[str, Any]) -> bool:
        """An access token is shown to the client it was issued to, or to a client in its audience (a resource server
        registered under its audience name); to any other client it is inactive."""
        aud = claims.get("aud")
        audience = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        return claims.get("client_id") == client_id or client_id in audience

    async def userinfo(self, request: Request) -> Response:
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "dpop") or not token:
            return Response(status_code=401, headers={**NO_STORE, "WWW-Authenticate": 'Bearer realm="auth-server"'})
        try:
            claims = self.tokens.decode(token, AT_TYP)
        except TokenRejected:
            raise InvalidToken("The access token is invalid or expired.") from None
        cnf = claims.get("cnf")
        if scheme.lower() == "dpop":  # RFC 9449 §7: a proof by the token's key, for this request
            try:
                jkt = await self.dpop.key_of(request, "/userinfo", token, nonce=False)
            except OAuthError as exc:
                raise InvalidToken(exc.description) from None
            if jkt is None or not isinstance(cnf, dict) or cnf.get("jkt") != jkt:
                raise InvalidToken("The DPoP proof does not match the access token.")
        elif cnf is not None:  # RFC 9449 §7.2: a bound token is never a bearer token
            raise InvalidToken("The access token is bound to a DPoP key.")
        if "openid" not in str(claims.get("scope", "")).split() or not isinstance(claims.get("sid"), str):
            return JSONResponse(
                {"error": "insufficient_scope"},
                status_code=403,
                headers={**NO_STORE, "WWW-Authenticate": 'Bearer error="insufficient_scope", scope="openid"'},
            )
        family = await self.tokens.family(claims["sid"])
        if family is None:
            raise InvalidToken("The login of this access token has ended.")
        return JSONResponse({"sub": family.sub, "preferred_username": family.username}, headers=NO_STORE)

    # --- operations ---------------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            await self.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            log.warning("readiness: redis unavailable: %s", type(exc).__name__)
            checks["redis"] = "unavailable"
        checks["signing_key"] = "ok" if self.keys.signing_key is not None else "missing"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)
