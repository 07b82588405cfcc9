"""Which BFF sessions belong to a provider login: the index back-channel logout needs (DESIGN §6).

A logout token names the *provider's* ``sid`` (the one in the ID token of that login), or only the user's ``sub``;
neither is anything the BFF keys its sessions by. So at login the session's record key (``bff:{<sha256 of the
cookie>}:s``, never the cookie) is added to two Redis sets::

    bff:{bcl-sid:<sha256(sid)>}   the sessions of that provider login
    bff:{bcl-sub:<sha256(sub)>}   every session of that user (a sub-only token ends them all)

Each set is one key with its own hash tag, so every command touches one slot (Redis Cluster-safe); the sessions it
names are deleted one key at a time (one slot each). A set expires ``BFF_ABSOLUTE_TTL`` after its last addition, by
which time every session it names has expired too. Members of sessions that ended otherwise stay until then:
deleting a record that is gone is harmless.
"""

from __future__ import annotations

import hashlib
from typing import Any

from bff.sessions import store_call


def _key(kind: str, value: str) -> str:
    return f"bff:{{bcl-{kind}:{hashlib.sha256(value.encode()).hexdigest()}}}"


class SessionIndex:
    def __init__(self, client: Any, *, ttl: int) -> None:
        self.client = client
        self.ttl = ttl

    async def add(self, record: str, *, sid: str | None, sub: str) -> None:
        keys = [_key("sub", sub)] + ([_key("sid", sid)] if sid else [])

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.sadd(key, record)
                    pipe.expire(key, self.ttl)
                await pipe.execute()

        await store_call(run)

    async def end(self, *, sid: str | None, sub: str | None) -> int:
        """Delete every session of provider login ``sid`` — or, with no ``sid``, of user ``sub``. Returns how many
        records were deleted. The next request of any of them, on any replica, finds no record: 401."""
        key = _key("sid", sid) if sid else _key("sub", sub or "")
        members = await store_call(lambda: self.client.smembers(key))
        records = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        if not records:
            return 0

        async def run() -> int:
            async with self.client.pipeline(transaction=False) as pipe:
                for record in records:
                    pipe.delete(record)
                pipe.srem(key, *records)
                results = await pipe.execute()
            return sum(int(r) for r in results[:-1])

        ended: int = await store_call(run)
        return ended
