"""Long-lived connections per session (issue #18 item 1): open WebSockets plus open streamed answers (SSE,
downloads) of one session in this process, at most ``BFF_MAX_SOCKETS_PER_SESSION``.

``BFF_MAX_WEBSOCKETS`` and ``HTTP_MAX_CONCURRENCY`` bound a process as a whole, so one session could take all of
either and leave every other user a 503. This cap is per session and per process: an in-memory count, taken when a
handshake or a stream starts and given back when it ends, at no cost per proxied request and no Redis round trip.
Why not per user across replicas: ``docs/guides/sessions.md`` ("Sockets per session").
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class SessionSlots:
    def __init__(self, limit: int, *, on_refused: Callable[[str], None] = lambda kind: None) -> None:
        self.limit = limit
        self.on_refused = on_refused  # the metric: kind is "websocket" or "stream"
        self._held: dict[str, int] = {}  # session record key -> open sockets and streams

    def take(self, session: str, kind: str) -> bool:
        """One more socket or stream for ``session``; False (and counted, logged) when it holds ``limit`` already."""
        held = self._held.get(session, 0)
        if held >= self.limit:
            self.on_refused(kind)
            log.warning(
                "a session holds %d open WebSockets and streams in this process (BFF_MAX_SOCKETS_PER_SESSION): "
                "its new %s is refused with 429",
                held,
                kind,
            )
            return False
        self._held[session] = held + 1
        return True

    def give(self, session: str) -> None:
        held = self._held.get(session, 0) - 1
        if held > 0:
            self._held[session] = held
        else:
            self._held.pop(session, None)

    def held(self, session: str) -> int:
        return self._held.get(session, 0)
