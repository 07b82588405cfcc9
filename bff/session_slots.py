"""Long-lived connections per session and per user (issue #18 item 1): open WebSockets plus open streamed answers
(SSE, downloads) in this process, at most ``BFF_MAX_SOCKETS_PER_SESSION`` of one session and at most
``BFF_MAX_SOCKETS_PER_USER`` of one user (``sub``, all their sessions together).

``BFF_MAX_WEBSOCKETS`` and ``HTTP_MAX_CONCURRENCY`` bound a process as a whole, so one session could take all of
either and leave every other user a 503; and a user who logs in many times gets many sessions. These caps are per
process: in-memory counts, taken when a handshake or a stream starts and given back when it ends, at no cost per
proxied request and no Redis round trip. Why not across replicas: ``docs/guides/sessions.md`` ("Sockets per
session").
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class SessionSlots:
    def __init__(
        self,
        limit: int,
        user_limit: int | None = None,
        *,
        on_refused: Callable[[str, str], None] = lambda kind, scope: None,
    ) -> None:
        self.limit = limit
        self.user_limit = user_limit if user_limit is not None else 1 << 30
        self.on_refused = on_refused  # the metric: kind "websocket" or "stream", scope "session" or "user"
        self._held: dict[str, int] = {}  # session record key -> open sockets and streams
        self._owner: dict[str, str | None] = {}  # session record key -> its user, while it holds any
        self._users: dict[str, int] = {}  # user -> open sockets and streams of all their sessions

    def take(self, session: str, kind: str, user: str | None = None) -> str | None:
        """One more socket or stream for ``session`` of ``user``: None when granted, else the cap that refuses it
        ("session" or "user"; counted and logged)."""
        held = self._held.get(session, 0)
        refused = None
        if held >= self.limit:
            refused, name, count = "session", "BFF_MAX_SOCKETS_PER_SESSION", held
        elif user is not None and self._users.get(user, 0) >= self.user_limit:
            refused, name, count = "user", "BFF_MAX_SOCKETS_PER_USER", self._users[user]
        if refused is not None:
            self.on_refused(kind, refused)
            log.warning(
                "a %s holds %d open WebSockets and streams in this process (%s): its new %s is refused with 429",
                refused,
                count,
                name,
                kind,
            )
            return refused
        self._held[session] = held + 1
        owner = self._owner.setdefault(session, user)
        if owner is not None:
            self._users[owner] = self._users.get(owner, 0) + 1
        return None

    def give(self, session: str) -> None:
        held = self._held.get(session, 0) - 1
        owner = self._owner.get(session)
        if held > 0:
            self._held[session] = held
        else:
            self._held.pop(session, None)
            self._owner.pop(session, None)
        if owner is not None:
            left = self._users.get(owner, 0) - 1
            if left > 0:
                self._users[owner] = left
            else:
                self._users.pop(owner, None)

    def held(self, session: str) -> int:
        return self._held.get(session, 0)
