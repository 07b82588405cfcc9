"""The revocation feed (DESIGN §9): the ``sid`` of every login that ended, for resource servers to poll.

Access tokens are stateless, so a logout alone leaves them valid until they expire. Every ended login (logout or
revocation, refresh-token reuse, a replayed code, and whatever else calls ``TokenService.end_login``) is appended
to one Redis stream, ``auth:revocations``, and kept there until the last access token of that login has expired:
``AUTH_ACCESS_TTL`` plus a margin for the verifiers' leeway. Verifiers poll ``GET /oauth/revocations?since=<cursor>``
and refuse tokens of those sids, with no call to us per request.

A stream, because Redis assigns its entry ids in strictly increasing order: a cursor (the last id read) can never
skip an entry that another replica appended meanwhile, which client-side timestamps in a sorted set could. One key
lives in one slot, so it works unchanged on Redis Cluster; ``MINID`` trimming on each append prunes it (Redis 6.2).
"""

from __future__ import annotations

import re
import time
from typing import Any, TypedDict

from servicekit.durable import Durable, WaitPolicy

from .errors import InvalidRequest

STREAM = "auth:revocations"
LEEWAY_MARGIN = 60  # seconds beyond the access-token life: verifiers accept tokens up to their leeway past exp
PAGE = 1000  # entries per answer; a verifier asks again while `more` is true
CURSOR = re.compile(r"^(0|[0-9]{1,20}-[0-9]{1,20})$")
MAX_ID_PART = 2**64 - 1  # a stream id is two unsigned 64-bit numbers
LAST_ID = f"{MAX_ID_PART}-{MAX_ID_PART}"


class Revocation(TypedDict):
    sid: str
    exp: int  # until when the verifier must remember it (every token of the login has expired by then)


class RevocationFeed:
    def __init__(self, redis: Any, access_ttl: int, durable: Durable | None = None) -> None:
        self.redis = redis
        self.retention = access_ttl + LEEWAY_MARGIN
        # An entry lost in a failover would leave the login's access tokens good at every verifier until they
        # expire: it waits for the replicas, as the revocation of the family itself does (servicekit.durable).
        self.durable = durable or Durable(redis, WaitPolicy(replicas=0))

    async def publish(self, sid: str) -> None:
        oldest = int((time.time() - self.retention) * 1000)
        await self.durable.write(STREAM, lambda pipe: pipe.xadd(STREAM, {"sid": sid}, minid=oldest, approximate=False))

    async def since(self, cursor: str) -> tuple[list[Revocation], str, bool]:
        """Entries after ``cursor`` ("0": all), the new cursor, and whether more are waiting."""
        if not CURSOR.fullmatch(cursor) or any(int(part) > MAX_ID_PART for part in cursor.split("-")):
            raise InvalidRequest("The cursor is malformed.")  # Redis refuses stream ids past 64 bits (a 500)
        if cursor == LAST_ID:  # nothing can come after it, and Redis refuses "(" before it as a range start
            return [], cursor, False
        now_ms = int(time.time() * 1000)
        rows = await self.redis.xrange(STREAM, min=f"({cursor}" if cursor != "0" else "-", count=PAGE)
        entries: list[Revocation] = []
        for entry_id, fields in rows:
            cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            raw = fields.get(b"sid", fields.get("sid"))
            added_ms = int(cursor.split("-", 1)[0])
            if raw is None or added_ms + self.retention * 1000 <= now_ms:
                continue  # not yet trimmed, but every token of that login has expired
            sid = raw.decode() if isinstance(raw, bytes) else raw
            entries.append({"sid": sid, "exp": (added_ms // 1000) + self.retention})
        return entries, cursor, len(rows) == PAGE
