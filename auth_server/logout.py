"""Ending logins: OIDC RP-Initiated Logout 1.0 at ``/oauth/logout``, and the ends that notify clients (DESIGN §6).

:class:`Logouts` ends an SSO session with every family born of it, or everything one user has (the CLI's
``sessions revoke``); each family that was alive is reported to its client by back-channel logout
(``TokenService.on_family_ended``).

``/oauth/logout`` (GET or POST, RP-Initiated Logout §2) takes ``id_token_hint``, ``client_id``,
``post_logout_redirect_uri`` and ``state``. A redirect URI must match one the client registered exactly (§3), and is
refused, never followed, otherwise. With a valid hint the logout happens at once: the SSO session and every login
born of it when the browser holds that session's cookie, else only the hint's own login (issue #18 item 3: an ID
token alone must not end the user's whole sign-in). Without a hint (or with one we cannot verify) a bare GET could be
any cross-site page, so the user confirms on a CSRF-protected form first (§2: "the OP SHOULD ask the End-User whether
to log out"), and the confirming browser's own SSO session ends.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .errors import InvalidRequest, TokenRejected
from .forms import query_params, read_form
from .sso import SSOStore
from .tokens import ID_TYP, MAX_TOKEN_LENGTH, TokenService

if TYPE_CHECKING:
    from .endpoints import Endpoints

log = logging.getLogger(__name__)

MAX_STATE = 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class Logouts:
    def __init__(self, tokens: TokenService, sso: SSOStore) -> None:
        self.tokens = tokens
        self.sso = sso

    async def end_sso(self, sso_id: str) -> int:
        """End SSO session ``sso_id`` and the families born of it; returns how many families were alive."""
        await self.sso.end(sso_id)
        ended = 0
        for sid in await self.sso.families(sso_id):
            ended += await self.tokens.revoke_family(sid)
        await self.sso.forget_families(sso_id)
        return ended

    async def revoke_user(self, sub: str) -> tuple[int, int]:
        """End every SSO session and family of the user: (SSO sessions, families) that were alive."""
        ssos, sids = await self.sso.of_user(sub)
        sessions = families = 0
        for sso_id in ssos:
            sessions += await self.sso.get(sso_id, touch=False) is not None
            families += await self.end_sso(sso_id)
        for sid in sids:
            families += await self.tokens.revoke_family(sid)
        await self.sso.forget_user(sub)
        return sessions, families


class LogoutEndpoint:
    def __init__(self, ep: Endpoints) -> None:
        self.ep = ep
        self.settings = ep.settings

    def _hint(self, token: str) -> dict[str, Any] | None:
        """The claims of an ID token we issued, expired or not (RP-Initiated Logout §2: an expired hint is still a
        good hint; our published keys bound how old it can be). None for anything else."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            claims = self.ep.tokens.decode(token, ID_TYP, verify_exp=False, require=("iss", "sub", "aud", "iat"))
        except TokenRejected:
            return None
        return claims if isinstance(claims.get("aud"), str) and isinstance(claims.get("sid"), str) else None

    async def handle(self, request: Request) -> Response:
        ep = self.ep
        try:
            params = await read_form(request, self.settings.max_body) if request.method == "POST" else None
            params = params if params is not None else query_params(request)
        except InvalidRequest as exc:
            return ep.error_page(exc.description, exc.status_code)
        hint = self._hint(params.get("id_token_hint", ""))
        client_id = params.get("client_id") or (hint["aud"] if hint else "")
        if hint is not None and client_id != hint["aud"]:
            return ep.error_page("The id_token_hint was issued to another client.")
        client = self.settings.client(client_id) if client_id else None
        if client_id and client is None:
            return ep.error_page("Unknown client.")
        redirect_uri = params.get("post_logout_redirect_uri", "")
        if redirect_uri:
            if client is None:  # §3: without client_id or a hint the URI cannot be checked
                return ep.error_page("post_logout_redirect_uri needs client_id or id_token_hint.")
            if redirect_uri not in client.post_logout_redirect_uris:  # exact string match
                return ep.error_page("The post-logout redirect URI is not registered for this client.")
        state = params.get("state", "")
        if len(state) > MAX_STATE:
            return ep.error_page("The state parameter is too long.")
        fields = {"client_id": client_id, "post_logout_redirect_uri": redirect_uri, "state": state}
        browser = ep.sso.browser_id(request)
        born_of = await ep.sso.of_family(hint["sid"]) if hint is not None else None
        # An ID token is no credential for the user's whole sign-in: another relying party, a log or a proxy may hold
        # one (issue #18 item 3: a bare GET with a hint ended every login of the user). The SSO session, and every
        # login born of it, ends only in the browser holding that session's cookie; elsewhere a hint ends what its
        # client could end itself (RFC 7009): the one login it names. That keeps an RP's logout smooth where its
        # Clear-Site-Data wiped our cookie (a shared registrable domain), and bounds what a leaked ID token can do.
        own_session = hint is not None and browser is not None and born_of == browser
        current = await ep.sso.get(browser, touch=False) if browser and hint is not None and not own_session else None
        if hint is not None and current is not None and current.sub != hint["sub"]:
            hint = None  # §2: the OP MUST ask when the hint is not of the user signed in here
        if hint is None:
            token = params.get("form_token", "")
            if request.method != "POST" or not ep.guard.check(request, "logout", token, fields):
                return self._confirm_page(request, fields, 400 if token else 200)

        ending: set[str] = {browser} if browser is not None and (hint is None or own_session) else set()
        for sso_id in ending:
            await ep.logouts.end_sso(sso_id)
        if hint is not None:
            await ep.tokens.revoke_family(hint["sid"])  # the hint's own login (not born of this session, too)
        log.info("rp-initiated logout: %d SSO session(s) ended", len(ending))

        response: Response
        if redirect_uri and state:
            response = ep.redirect(redirect_uri, {"state": state})
        elif redirect_uri:
            response = RedirectResponse(redirect_uri, status_code=302, headers=NO_STORE)
        else:
            response = ep.page("signed_out.html", title="Signed out")
        if ending:  # a browser whose session lives on keeps its cookie
            ep.sso.clear_cookie(response)
        return response

    def _confirm_page(self, request: Request, fields: dict[str, str], status: int) -> Response:
        ep = self.ep
        cookie, new = ep.guard.cookie_for(request)
        form_action = "'self'"
        if fields["post_logout_redirect_uri"]:
            target = urlsplit(fields["post_logout_redirect_uri"])
            form_action += f" {target.scheme}://{target.netloc}"  # browsers check the redirect after the post too
        return ep.page(
            "logout.html",
            status,
            form_action=form_action,
            cookie=cookie if new else None,
            hidden={**fields, "form_token": ep.guard.token("logout", cookie, fields)},
            client_id=fields["client_id"],
            action=f"{self.settings.issuer}/oauth/logout",
            title="Sign out",
        )
