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

ENDED_TTL = 900  # seconds a provider login that ended stays refused: longer than any login can be in flight

# KEYS[1] the sid set, KEYS[2] its "ended" marker (one hash tag: one slot); ARGV[1] record key, ARGV[2] set ttl.
_ADD = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
# KEYS[1] a sid or sub set, KEYS[2] its "ended" marker; ARGV[1] marker ttl (0: none). Returns the set's members.
_TAKE = """
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
if ARGV[1] ~= '0' then redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[1])) end
return members
"""


def _key(kind: str, value: str) -> str:
    return f"bff:{{bcl-{kind}:{hashlib.sha256(value.encode()).hexdigest()}}}"


class SessionIndex:
    def __init__(self, client: Any, *, ttl: int) -> None:
        self.client = client
        self.ttl = ttl
        self._add = client.register_script(_ADD)
        self._take = client.register_script(_TAKE)

    async def add(self, record: str, *, sid: str | None, sub: str) -> bool:
        """Index a new session. False (nothing indexed) when its provider login ``sid`` already ended: a logout
        token that arrived while this login was being completed must still win."""
        if sid:
            key = _key("sid", sid)
            if not await store_call(lambda: self._add(keys=[key, f"{key}:ended"], args=[record, self.ttl])):
                return False

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.sadd(_key("sub", sub), record)
                pipe.expire(_key("sub", sub), self.ttl)
                await pipe.execute()

        await store_call(run)
        return True

    async def end(self, *, sid: str | None, sub: str | None) -> int:
        """Delete every session of provider login ``sid`` — or, with no ``sid``, of user ``sub``. Returns how many
        records were deleted. The next request of any of them, on any replica, finds no record: 401. A provider
        login that ended stays marked for ``ENDED_TTL``, so a session of it still being created is refused (``add``);
        a user (``sub``) is not marked: a sub-only token ends the sessions there are, not the user's next login."""
        key = _key("sid", sid) if sid else _key("sub", sub or "")
        marker = ENDED_TTL if sid else 0
        members = await store_call(lambda: self._take(keys=[key, f"{key}:ended"], args=[marker]))
        records = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        if not records:
            return 0

        async def run() -> int:
            async with self.client.pipeline(transaction=False) as pipe:
                for record in records:
                    pipe.delete(record)
                results = await pipe.execute()
            return sum(int(r) for r in results)

        ended: int = await store_call(run)
        return ended
