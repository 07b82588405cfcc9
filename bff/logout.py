"""Logout in both directions (DESIGN §6): the user's, through the provider, and the provider's, on the back channel.

* ``GET /bff/logout?sid=…`` — a page navigation (Duende BFF's way). A cross-site page can make a browser GET any URL,
  so while a session exists the ``sid`` of ``/bff/user``'s ``logout_url`` must come with it (else 400, session kept).
  The session ends (refresh token revoked, RFC 7009) and the browser goes to the provider's
  ``end_session_endpoint`` (RP-Initiated Logout §2) with ``id_token_hint``, ``client_id``,
  ``post_logout_redirect_uri`` = ``BFF_POST_LOGOUT_URL`` and ``state``, so the provider's own session ends too and
  the next login asks for the password; straight to ``BFF_POST_LOGOUT_URL`` when the provider has no such endpoint.
  Without a session (ended by the provider already) the browser still goes there, without a hint: the provider then
  asks the user to confirm.
* ``POST /bff/logout`` (``X-CSRF: 1``) — for scripts: the same end, answered ``200 {"logout_url"}``.
* ``POST /bff/backchannel`` — the provider's Back-Channel Logout 1.0 call (§2.5): no cookie, no CSRF header. A valid
  logout token (``bff.backchannel``) ends every session of its ``sid`` (or of its ``sub``) through the session index;
  200 even when nothing matched, 400 ``invalid_request`` otherwise, always ``Cache-Control: no-store`` (§2.8).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from bff.auth_client import AuthClient
from bff.backchannel import InvalidLogoutToken, LogoutTokens
from bff.endpoints import cookie
from bff.errors import AuthServerUnavailable, BadRequest, ServerMisconfigured, StoreUnavailable
from bff.metrics import Metrics
from bff.session_index import SessionIndex
from bff.sessions import SessionManager, logout_id, new_state
from bff.settings import Settings

log = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store"}
MAX_BODY = 16_384  # a logout token is at most 8 KiB (DESIGN §4)
FORM_TYPE = "application/x-www-form-urlencoded"


class Logout:
    def __init__(
        self,
        settings: Settings,
        manager: SessionManager,
        auth: AuthClient,
        index: SessionIndex,
        tokens: LogoutTokens,
        metrics: Metrics,
        expire_cookie: Callable[[str], str],
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.auth = auth
        self.index = index
        self.tokens = tokens
        self.metrics = metrics
        self.expire_cookie = expire_cookie

    async def _end(self, request: Request, *, check_sid: bool) -> str:
        """End the browser's session, if any; return where the browser goes next (the provider's logout)."""
        secret = cookie(request, self.settings.cookie_name)
        ref = self.manager.ref(secret)
        session = await self.manager.peek(ref) if ref is not None else None
        if secret is not None and ref is not None and session is not None:
            given = request.query_params.get("sid", "")
            if check_sid and not hmac.compare_digest(given.encode(), logout_id(secret).encode()):
                raise BadRequest("The logout link does not belong to this session; use /bff/user's logout_url.")
            if session.refresh_token:
                try:
                    await self.auth.revoke(session.refresh_token)  # RFC 7009: ends the login's family
                except (AuthServerUnavailable, ServerMisconfigured):  # logged by the auth client; the logout goes on
                    log.warning("logout: the auth server could not be told to revoke the refresh token")
            await self.manager.delete(ref)
            self.metrics.sessions.labels("logout").inc()
        return await self.provider_logout_url(session.id_token if session is not None else None)

    async def provider_logout_url(self, id_token: str | None) -> str:
        try:
            endpoint = await self.auth.end_session_endpoint()
        except (AuthServerUnavailable, ServerMisconfigured):  # our session is over; the provider's page is out of reach
            endpoint = None
        if endpoint is None:
            return self.settings.post_logout_url
        params = {"client_id": self.settings.client_id, "post_logout_redirect_uri": self.settings.post_logout_url}
        if id_token:
            params = {"id_token_hint": id_token, **params}
        params["state"] = new_state()
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)

    def _ended(self, response: Response) -> Response:
        response.headers["Clear-Site-Data"] = '"cookies"'
        response.headers.append("set-cookie", self.expire_cookie(self.settings.cookie_name))
        return response

    async def page(self, request: Request) -> Response:
        url = await self._end(request, check_sid=True)
        return self._ended(RedirectResponse(url, 302, headers=NO_STORE))

    async def script(self, request: Request) -> Response:
        url = await self._end(request, check_sid=False)  # X-CSRF: 1 already proved a same-origin script
        return self._ended(JSONResponse({"logout_url": url}, headers=NO_STORE))

    async def backchannel(self, request: Request) -> Response:
        token = await self._logout_token(request)
        found = await self.tokens.validate(token)
        try:
            ended = await self.index.end(sid=found.sid, sub=found.sub)
        except StoreUnavailable:  # 503, and the provider may retry the same token: its jti must not count as used
            await self.tokens.unmark(found)
            raise
        if ended:
            self.metrics.sessions.labels("backchannel_logout").inc(ended)
        log.info("back-channel logout: %d session(s) ended", ended)
        return Response(status_code=200, headers=NO_STORE)

    @staticmethod
    async def _logout_token(request: Request) -> str:
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        length = request.headers.get("content-length")
        too_long = length is not None and (not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY)
        if content_type != FORM_TYPE or too_long:
            raise InvalidLogoutToken("Send logout_token as application/x-www-form-urlencoded (at most 16 KiB).")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise InvalidLogoutToken("The request body is too large.")
        try:
            fields = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=False, max_num_fields=16)
        except (UnicodeDecodeError, ValueError):
            raise InvalidLogoutToken("The request body is not a form.") from None
        tokens = [value for name, value in fields if name == "logout_token"]
        if len(tokens) != 1:
            raise InvalidLogoutToken("Send exactly one logout_token.")
        return tokens[0]
