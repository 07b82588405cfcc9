"""The second factor in the browser (DESIGN §14): its step in the authorization flow, and the account page.

``/oauth/authorize`` asks for the second factor (``SecondFactorStep``) when the password is there but the level the
client asked for (``acr_values=mfa``, ``max_age``) is not: the page offers the user's factors — the field ``otp``
for a TOTP code, a passkey (WebAuthn, ``passkey`` holds the browser's JSON answer), a recovery code
(``recovery_code``) — and posts back to ``/oauth/authorize`` with ``step=second_factor``. Guesses are throttled as
passwords are (``throttle.py``, on an account name of their own: ``2fa:<user>``), and a success raises the browser's
SSO session to ``mfa`` (``SSOStore.upgrade``) before any code is issued.

``GET /account`` (after a sign-in, the SSO cookie) shows the user's factors; ``POST /account`` with ``action``:
``login`` (a password sign-in for the page itself), ``totp-start`` / ``totp-confirm`` (a new secret, turned on by
its first code; the first factor also brings recovery codes), ``passkey-add`` (WebAuthn registration),
``recovery-codes`` (a new set), ``totp-off`` and ``passkey-remove`` (``credential``: its id; the last factor
removed takes the recovery codes with it), ``verify`` (a second factor, to change factors). A user who has a second
factor changes factors only within ``REAUTH_WINDOW`` of giving one: a stolen password alone cannot enrol the thief's
own, nor remove the user's.
Every post carries the form token of the page (CSRF, ``forms.FormGuard``).
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .errors import InvalidRequest, LoginThrottled
from .forms import read_form
from .grants import AuthorizationRequest
from .mfa import ACR_MFA, REAUTH_WINDOW, FactorKeyMissing, SecondFactors, amr_with
from .sso import SSOSession
from .throttle import Counter

if TYPE_CHECKING:
    from .endpoints import Endpoints

log = logging.getLogger(__name__)
UNCHECKED = (
    "Codes from your authenticator app cannot be checked right now. Use a passkey or a recovery code if you have one, "
    "or try again later."
)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class SecondFactorStep:
    def __init__(self, ep: Endpoints) -> None:
        self.ep = ep
        self.factors = SecondFactors(ep.redis, ep.settings.issuer, ep.settings.factor_keys)

    async def _passkey_options(self, sub: str) -> str:
        passkeys = await self.factors.passkeys(sub)
        if not passkeys:
            return ""
        challenge = await self.factors.new_challenge(sub, "authenticate")
        return self.factors.authentication_options(challenge, passkeys)

    async def page(
        self,
        request: Request,
        auth: AuthorizationRequest,
        session: SSOSession,
        status: int = 200,
        *,
        error: str = "",
        cookie: str | None = None,
    ) -> Response:
        """The second factor's page of an authorization (``cookie``: a new SSO cookie to set with it)."""
        ep = self.ep
        form_cookie, new = ep.guard.cookie_for(request)
        fields = auth.hidden_fields()
        hidden = {**fields, "step": "second_factor", "form_token": ep.guard.token("mfa", form_cookie, fields)}
        enrolled = await self.factors.enrolled(session.sub)
        response = ep.page(
            "second_factor.html",
            status,
            form_action=ep.form_action(auth),
            cookie=form_cookie if new else None,
            client_id=auth.client.client_id,
            username=session.username,
            error=error,
            enrolled=bool(enrolled["totp"] or enrolled["passkeys"]),
            totp=enrolled["totp"],
            passkey_options=await self._passkey_options(session.sub),
            hidden=hidden,
            action=f"{ep.settings.issuer}/oauth/authorize",
            account_url=f"{ep.settings.issuer}/account",
        )
        if cookie is not None:
            ep.sso.set_cookie(response, cookie)
        return response

    async def verify(self, request: Request, session: SSOSession, form: dict[str, str]) -> tuple[str | None, str]:
        """Check the second factor the form carries: (its ``amr`` value, "") or (None, the user's message). Throttled
        as passwords are; raises LoginThrottled."""
        ep = self.ep
        otp, recovery, passkey = form.get("otp", ""), form.get("recovery_code", ""), form.get("passkey", "")
        if not (otp or recovery or passkey):
            return None, "Enter the code from your authenticator app, or use a passkey."
        throttle = ep.users.throttle
        counters: tuple[Counter, ...] = ()
        if throttle is not None:
            device = ep.devices.device_of(request, session.username)
            counters = throttle.counters(f"2fa:{session.username}", ep.client_address(request), device)
            await throttle.admit(counters)
        method: str | None = None
        unchecked = False
        try:
            if passkey:
                method = await self.factors.verify_passkey(session.sub, passkey)
            elif otp:
                try:
                    method = "otp" if await self.factors.verify_totp(session.sub, otp) else None
                except FactorKeyMissing:  # not the user's doing: no failed guess, and said so
                    ep.metrics.login_failures.labels("factor_key").inc()
                    log.error("the TOTP secret of %s opens with none of AUTH_FACTOR_KEYS: a key removed?", session.sub)
                    unchecked = True
                    return None, UNCHECKED
            else:
                method = "otp" if await self.factors.use_recovery_code(session.sub, recovery) else None
        finally:
            if throttle is not None:
                with anyio.CancelScope(shield=True):  # a dropped connection is no free guess
                    await throttle.settle(counters, failed=None if unchecked else method is None)
        if method is None:
            ep.metrics.login_failures.labels("second_factor").inc()
            log.info("second factor refused for %s", session.sub)
            what = "passkey" if passkey else "code"
            return None, f"That {what} did not work. A code works once; wait for the next one."
        if recovery:
            log.warning("recovery code used by %s", session.sub)
        return method, ""

    async def upgrade(self, session: SSOSession, method: str) -> SSOSession | None:
        return await self.ep.sso.upgrade(session, amr_with(session.amr, method))


class AccountPage:
    """``GET/POST /account``."""

    def __init__(self, ep: Endpoints, step: SecondFactorStep) -> None:
        self.ep = ep
        self.step = step
        self.factors = step.factors

    async def _session(self, request: Request) -> SSOSession | None:
        return await self.ep.sso.get(self.ep.sso.browser_id(request))

    @staticmethod
    def _recent(session: SSOSession) -> bool:
        import time

        return session.acr == ACR_MFA and time.time() - session.mfa_time <= REAUTH_WINDOW

    async def render(
        self,
        request: Request,
        session: SSOSession | None,
        status: int = 200,
        *,
        error: str = "",
        message: str = "",
        totp_secret: str = "",
        recovery_codes: list[str] | None = None,
        cookie: str | None = None,
    ) -> Response:
        ep = self.ep
        form_cookie, new = ep.guard.cookie_for(request)
        token = ep.guard.token("account", form_cookie, {})
        context: dict[str, Any] = {
            "form_token": token,
            "action": f"{ep.settings.issuer}/account",
            "error": error,
            "message": message,
            "username": "",
        }
        if session is not None:
            enrolled = await self.factors.enrolled(session.sub)
            has_any = bool(enrolled["totp"] or enrolled["passkeys"])
            needs_verify = has_any and not self._recent(session) and not recovery_codes
            registration = ""
            if not needs_verify:
                challenge = await self.factors.new_challenge(session.sub, "register")
                registration = self.factors.registration_options(
                    session.sub, session.username, challenge, enrolled["passkeys"]
                )
            context.update(
                username=session.username,
                acr=session.acr,
                amr=" ".join(session.amr),
                totp=enrolled["totp"],
                passkeys=enrolled["passkeys"],
                recovery_left=enrolled["recovery_codes"],
                needs_verify=needs_verify,
                passkey_options=await self.step._passkey_options(session.sub) if needs_verify else "",
                registration_options=registration,
                totp_secret=totp_secret,
                totp_uri=self.factors.uri(totp_secret, session.username) if totp_secret else "",
                recovery_codes=recovery_codes or [],
            )
        response = ep.page("account.html", status, cookie=form_cookie if new else None, **context)
        if cookie is not None:
            ep.sso.set_cookie(response, cookie)
        return response

    async def get(self, request: Request) -> Response:
        return await self.render(request, await self._session(request))

    async def post(self, request: Request) -> Response:
        ep = self.ep
        try:
            form = await read_form(request, ep.settings.max_body)
        except InvalidRequest as exc:
            return ep.error_page(exc.description, exc.status_code)
        session = await self._session(request)
        if not ep.guard.check(request, "account", form.get("form_token", ""), {}):
            return await self.render(request, session, 400, error="This form has expired. Please try again.")
        action = form.get("action", "")
        if action == "login":
            return await self._login(request, form)
        if session is None:
            return await self.render(request, None, 401, error="Your sign-in has ended. Please sign in again.")
        try:
            if action == "verify":
                method, error = await self.step.verify(request, session, form)
                if method is None:
                    return await self.render(request, session, 400, error=error)
                if await self.step.upgrade(session, method) is None:
                    return await self.render(request, None, 401, error="Your sign-in has ended. Please sign in again.")
                return RedirectResponse(f"{ep.settings.issuer}/account", status_code=303, headers=NO_STORE)
        except LoginThrottled as exc:
            return await self.render(
                request, session, 429, error=f"Too many attempts. Try again in {exc.retry_after} seconds."
            )
        enrolled = await self.factors.enrolled(session.sub)
        if (enrolled["totp"] or enrolled["passkeys"]) and not self._recent(session):
            return await self.render(request, session, 403, error="Confirm with your second factor first.")
        if action == "totp-start":
            secret = await self.factors.start_totp(session.sub)
            return await self.render(request, session, totp_secret=secret)
        if action == "totp-confirm":
            first = not (enrolled["totp"] or enrolled["passkeys"])
            if not await self.factors.confirm_totp(session.sub, form.get("otp", "")):
                pending = await self.factors.pending_totp(session.sub)
                if pending is None:  # expired, or sealed under a key the server no longer has
                    return await self.render(
                        request, session, 400, error="That set-up is no longer pending: start again."
                    )
                return await self.render(
                    request, session, 400, error="That code did not match. Try the next one.", totp_secret=pending
                )
            log.info("TOTP enrolled for %s", session.sub)
            codes = await self.factors.new_recovery_codes(session.sub) if first else None
            return await self.render(request, session, message="Authenticator app turned on.", recovery_codes=codes)
        if action == "passkey-add":
            first = not (enrolled["totp"] or enrolled["passkeys"])
            if not await self.factors.register_passkey(session.sub, form.get("credential", "")):
                ep.metrics.login_failures.labels("passkey_registration").inc()
                log.info("passkey registration refused for %s", session.sub)
                return await self.render(request, session, 400, error="The passkey could not be added. Try again.")
            log.info("passkey enrolled for %s", session.sub)
            codes = await self.factors.new_recovery_codes(session.sub) if first else None
            return await self.render(request, session, message="Passkey added.", recovery_codes=codes)
        if action == "totp-off":
            if not await self.factors.remove_totp(session.sub):
                return await self.render(request, session, 400, error="The authenticator app is not on.")
            log.info("TOTP removed for %s", session.sub)
            return await self.render(request, session, message="Authenticator app turned off.")
        if action == "passkey-remove":
            if not await self.factors.remove_passkey(session.sub, form.get("credential", "")):
                return await self.render(request, session, 400, error="No such passkey.")
            log.info("passkey removed for %s", session.sub)
            return await self.render(request, session, message="Passkey removed.")
        if action == "recovery-codes":
            codes = await self.factors.new_recovery_codes(session.sub)
            return await self.render(request, session, message="New recovery codes made.", recovery_codes=codes)
        return await self.render(request, session, 400, error=f"Unknown action {html.escape(action[:32])!r}.")

    async def _login(self, request: Request, form: dict[str, str]) -> Response:
        ep = self.ep
        username, password = form.get("username", ""), form.get("password", "")
        if not username or not password:
            return await self.render(request, None, 400, error="Enter your username and password.")
        try:
            device = ep.devices.device_of(request, username)
            user = await ep.users.authenticate(username, password, ep.client_address(request), device)
        except LoginThrottled as exc:
            ep.metrics.login_failures.labels("throttled").inc()
            response = await self.render(request, None, 429, error="Too many failed sign-in attempts. Try later.")
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if user is None:
            ep.metrics.login_failures.labels("credentials").inc()
            return await self.render(request, None, 400, error="Invalid username or password.")
        cookie, _ = await ep.sso.start(sub=user.sub, username=user.username, previous=ep.sso.browser_id(request))
        response = RedirectResponse(f"{ep.settings.issuer}/account", status_code=303, headers=NO_STORE)
        ep.sso.set_cookie(response, cookie)
        ep.devices.set_cookie(response, user.username)
        return response
