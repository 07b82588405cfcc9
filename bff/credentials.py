"""Which credential a route's upstream gets (DESIGN §7): the decision shared by ``/api/*``, WebSocket upgrades and
forward auth (``/bff/auth``).

=========  ====================  =============================================================================
token      session               the upstream gets
=========  ====================  =============================================================================
user       required (else 401)   the user's token; with ``resource``, one whose ``aud`` is exactly that resource
optional   used when there       the user's token as for ``user``, or no ``Authorization`` without a session
client     required (else 401)   the BFF's own client-credentials token (never the user's, never a ``sub``)
none       never read            nothing: no token, and (like every route) never the browser's cookie
=========  ====================  =============================================================================

A route's token is only ever the one for its own resource, so a token handed to one upstream is useless at another.
A route with ``require`` (DESIGN §11) is refused 403 ``insufficient_claims`` here, before any token is sought, when
the session's kept claims fail it: the proxy, WebSocket handshakes and ``/bff/auth`` all ask this one place.
The common case costs one Redis command (the session's GETEX); ``none`` routes cost none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bff.client_tokens import ClientTokens
from bff.errors import InsufficientClaims, LoginRequired
from bff.refresh import Refresher, access_token
from bff.routes import Route
from bff.sessions import Sealed, Session, SessionManager
from bff.step_up import meets, step_up_error


@dataclass(frozen=True)
class Credential:
    """What to send upstream for one request of a route."""

    token: str | None  # the bearer token; None: no Authorization header
    sub: str | None  # the user the token speaks for (None for client and none routes, and anonymous calls)
    ref: Sealed | None = None  # the session, when one was used (a WebSocket follows it to close on logout)
    session: Session | None = None


ANONYMOUS = Credential(None, None)
log = logging.getLogger(__name__)


class Credentials:
    def __init__(
        self,
        manager: SessionManager,
        refresher: Refresher,
        client_tokens: ClientTokens,
        on_refused: Callable[[str], None] = lambda route: None,
    ) -> None:
        self.manager = manager
        self.refresher = refresher
        self.client_tokens = client_tokens
        self.on_refused = on_refused  # a route's require refused a session (the metric)
        self.on_step_up: Callable[[str], None] = lambda route: None  # a route's acr/max_age asked for a step-up
        # "Your sessions" (DESIGN §14): a use of a session, noted (a dict lookup; a write every few minutes at most)
        self.on_use: Callable[[Sealed, Session], None] | None = None

    async def for_route(self, route: Route, cookie: str | None) -> Credential:
        """The credential for a request of ``route`` carrying session cookie value ``cookie``.

        Raises LoginRequired (401) when the route needs a session and there is none, AuthServerUnavailable or
        StoreUnavailable (503) when a token cannot be obtained right now."""
        if route.token == "none":
            return ANONYMOUS
        ref = self.manager.ref(cookie)
        session = await self.manager.load(ref) if ref is not None else None
        if ref is None or session is None:
            if route.token == "optional":
                return ANONYMOUS
            raise LoginRequired()
        if self.on_use is not None:
            self.on_use(ref, session)
        if route.rules is not None and not route.rules.allows(session.claims):
            self.on_refused(route.name)
            log.info("route %s refused a session of %s: its claims fail the route's require", route.name, session.sub)
            raise InsufficientClaims()
        if (route.acr or route.max_age is not None) and not meets(
            session.acr, session.auth_time, route.acr, route.max_age
        ):
            # DESIGN §14: the route's level is checked before the upstream is called; the browser steps up
            log.info("route %s asks session of %s for a step-up (acr %s)", route.name, session.sub, session.acr)
            self.on_step_up(route.name)
            raise step_up_error(route.acr, route.max_age, "/")  # the proxy puts the calling page in its step_up_url
        if route.token == "client":
            return Credential(await self.client_tokens.token(route.resource), None, ref, session)
        try:
            session = await self.refresher.fresh(ref, session, resource=route.resource)
        except LoginRequired:
            if route.token == "optional":
                return ANONYMOUS  # the session ended just now: the call goes out without a user
            raise
        return Credential(access_token(session, route.resource), session.sub, ref, session)

    async def renew(self, route: Route, refused: Credential) -> Credential:
        """A new credential after the upstream refused ``refused.token`` (RFC 6750 §3.1 ``invalid_token``)."""
        if refused.token is None or refused.session is None or refused.ref is None:
            return refused
        if route.token == "client":
            token = await self.client_tokens.token(route.resource, refused=refused.token)
            return Credential(token, None, refused.ref, refused.session)
        session = await self.refresher.fresh(refused.ref, refused.session, resource=route.resource, force=True)
        return Credential(access_token(session, route.resource), session.sub, refused.ref, session)
