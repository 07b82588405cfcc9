"""Which BFF sessions belong to a provider login: the index back-channel logout needs (DESIGN §6).

A logout token names the *provider's* ``sid`` (the one in the ID token of that login), or only the user's ``sub``;
neither is anything the BFF keys its sessions by. So at login the session's record (``bff:{<record id>}:s``, its id
the SHA-256 of the cookie secret, never the cookie) is indexed twice::

    bff:{bcl-sid:<sha256(sid)>}:h      a hash: the sessions of that provider login, each a field (its record id, raw)
    bff:{bcl-sub:<sha256(sub)>}:list   a hash: the user's list of sessions (``bff.session_list``, DESIGN §14), whose
                                       entries name each record: a sub-only token ends them all

Each key has its own hash tag, so every command touches one slot (Redis Cluster-safe); the sessions found are
deleted one key at a time (one slot each). A key expires ``BFF_ABSOLUTE_TTL`` after its last addition, by which time
every session it names has expired too. Members of sessions that ended otherwise stay until then (or, in the list,
until it is next read): deleting a record that is gone is harmless.

Earlier releases indexed a provider login by a set, ``bff:{bcl-sid:<sha256(sid)>}`` (the hash's slot), and found a
user's sessions by another, ``bff:{bcl-sub:<sha256(sub)>}`` (the list's slot). This release reads both, so sessions
logged in before an upgrade are ended by a back-channel logout. It writes them instead of the compact forms (and
the list's entries sealed, ``bff.session_list``) until ``BFF_COMPACT_STORE`` is true, because a replica of an
earlier release — in a rolling upgrade, or after a rollback — reads only the sets, and cannot read the compact list.
Once none runs, true saves ~650 bytes of Redis memory a session: a one-member set is a hash table on Redis 7.0
(~420 bytes) where a one-field hash is a listpack (~260), and the compact list is a listpack too (bench/run.py).

Every write here is durable (``servicekit.durable``, as the session record's own): an index entry lost in a failover
would let a back-channel logout miss a live session, and a lost ``ended`` marker would let a login the provider had
just ended be completed after all.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

from bff.sessions import store_call
from servicekit.durable import Durable, Queue, WaitPolicy

DELETE_CONCURRENCY = 8  # records of one logout deleted at once: well inside any connection pool
ENDED_TTL = 900  # seconds a provider login that ended stays refused: longer than any login can be in flight

_RECORD_KEY = re.compile(r"bff:\{([0-9a-f]{64})\}:s")

# KEYS[1] the sid set (earlier releases), KEYS[2] its "ended" marker, KEYS[3] the sid hash (one hash tag: one slot);
# ARGV[1] the set's member (the record key), ARGV[2] the hash's field (the record id), ARGV[3] ttl, ARGV[4] '1':
# the hash (BFF_COMPACT_STORE), else the set.
_ADD = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local key = KEYS[1]
if ARGV[4] == '1' then
  key = KEYS[3]
  redis.call('HSET', key, ARGV[2], '')
else
  redis.call('SADD', key, ARGV[1])
end
redis.call('EXPIRE', key, tonumber(ARGV[3]))
return 1
"""
# KEYS[1] a sid or sub set, KEYS[2] its "ended" marker, KEYS[3] the sid hash; ARGV[1] marker ttl (0: none). Returns
# the set's members and the hash's fields. Both are left as they are: their members go only once their records are
# deleted (see SessionIndex.end).
_MARK = """
if ARGV[1] ~= '0' then redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[1])) end
return {redis.call('SMEMBERS', KEYS[1]), redis.call('HKEYS', KEYS[3])}
"""


def _key(kind: str, value: str) -> str:
    return f"bff:{{bcl-{kind}:{hashlib.sha256(value.encode()).hexdigest()}}}"


def list_key(sub: str) -> str:
    """The user's list of sessions (``bff.session_list``): the sub index."""
    return _key("sub", sub) + ":list"


def record_field(record: str) -> bytes:
    """The compact indexes' name of record key ``record``: its id, raw (32 bytes: half its hex)."""
    m = _RECORD_KEY.fullmatch(record)
    return bytes.fromhex(m[1]) if m else record.encode()


def record_name(field: bytes) -> str:
    """The record key a compact index's ``field`` names (``record_field`` undone)."""
    return f"bff:{{{field.hex()}}}:s" if len(field) == 32 else field.decode("utf-8", "replace")


# sub -> (field, record key) of each entry of the user's list (SessionList.records)
Listed = Callable[[str], Awaitable[list[tuple[bytes, str]]]]


class SessionIndex:
    def __init__(
        self,
        client: Any,
        *,
        ttl: int,
        durable: Durable | None = None,
        listed: Listed | None = None,
        compact: bool = False,
    ) -> None:
        self.ttl = ttl
        self.compact = compact  # BFF_COMPACT_STORE: the sid hash, and no per-user set (module docstring)
        self.durable = durable or Durable(client, WaitPolicy(replicas=0))  # without a policy: never wait
        self.listed = listed  # how a sub-only logout finds the user's sessions (set by the app, bff.app)

    async def add(self, record: str, *, sid: str | None, sub: str, listed: tuple[bytes, bytes] | None = None) -> bool:
        """Index a new session. False (nothing indexed) when its provider login ``sid`` already ended: a logout
        token that arrived while this login was being completed must still win. ``listed``: its entry in the user's
        list of sessions (``bff.session_list``), which is how a sub-only logout finds it, written with the per-user
        set of earlier releases (unless ``compact``) in one durable write."""
        if sid:
            key = _key("sid", sid)
            keys = (key, f"{key}:ended", f"{key}:h")
            args = (record, record_field(record), self.ttl, int(self.compact))
            added = await self._write(key, lambda pipe: pipe.eval(_ADD, 3, *keys, *args))
            if not added[0]:
                return False
        if listed is not None or not self.compact:
            key = list_key(sub)
            members = _key("sub", sub)  # the set of earlier releases: the list's slot (one hash tag)

            def index_sub(pipe: Any) -> None:
                if listed is not None:
                    pipe.hset(key, listed[0], listed[1])
                    pipe.expire(key, self.ttl)
                if not self.compact:
                    pipe.sadd(members, record)
                    pipe.expire(members, self.ttl)

            await self._write(key, index_sub)
        return True

    async def forget(self, record: str, *, sid: str) -> None:
        """Record ``record`` no longer belongs to provider login ``sid`` (a step-up moved it to a new login, DESIGN
        §14): the old login's end, announced when its refresh token is revoked, must not end the session."""
        key = _key("sid", sid)

        def queue(pipe: Any) -> None:
            pipe.srem(key, record)
            pipe.hdel(f"{key}:h", record_field(record))

        await self._write(key, queue)

    async def end(self, *, sid: str | None, sub: str | None) -> int:
        """Delete every session of provider login ``sid`` — or, with no ``sid``, of user ``sub``. Returns how many
        records were deleted. The next request of any of them, on any replica, finds no record: 401. A provider
        login that ended stays marked for ``ENDED_TTL``, so a session of it still being created is refused (``add``);
        a user (``sub``) is not marked: a sub-only token ends the sessions there are, not the user's next login."""
        key = _key("sid", sid) if sid else _key("sub", sub or "")
        marker = ENDED_TTL if sid else 0
        # the sid's set and hash; for a sub, the set of earlier releases (module docstring)
        keys = (key, f"{key}:ended", f"{key}:h")
        ((members, hashed),) = await self._write(key, lambda pipe: pipe.eval(_MARK, 3, *keys, marker))
        records = {m.decode() if isinstance(m, bytes) else str(m) for m in members}
        records |= {record_name(f if isinstance(f, bytes) else str(f).encode()) for f in hashed}
        fields: list[bytes] = []
        if not sid and sub and self.listed is not None:
            for field, record in await self.listed(sub):
                fields.append(field)
                records.add(record)
        if not records:
            return 0
        # One write per record: each is in a slot of its own (a durable write stays on one slot). Only then are they
        # dropped from the index, and only they (a login indexed meanwhile stays): a logout that fails half-way
        # (503, even one whose writes landed but were not replicated in time) leaves the index whole for the retry.
        deleted = await self._delete_all(sorted(records))
        if members or hashed:

            def drop(pipe: Any) -> None:
                if members:
                    pipe.srem(key, *members)
                if hashed:
                    pipe.hdel(f"{key}:h", *hashed)

            await self._write(key, drop)
        if fields:
            listing = list_key(sub or "")
            await self._write(listing, lambda pipe: pipe.hdel(listing, *fields, *(f + b":t" for f in fields)))
        return deleted

    async def _delete_all(self, records: list[str]) -> int:
        """Delete ``records``, at most ``DELETE_CONCURRENCY`` at a time, and every one attempted before an error is
        raised. Found attacking it: all at once, a user with a few hundred sessions in the index (ended ones count
        until the list is next read) took more connections than the client's pool holds (redis-py: 100), and the
        first error left the other deletes running, holding the connections the jti's release then needed: 503, some
        sessions alive, and the provider's retry refused as a replay."""
        gate = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def one(record: str) -> int:
            async with gate:
                return await self._delete(record)

        results = await asyncio.gather(*(one(record) for record in records), return_exceptions=True)
        deleted = 0
        for result in results:
            if isinstance(result, BaseException):
                raise result
            deleted += result
        return deleted

    async def _delete(self, record: str) -> int:
        (deleted,) = await self._write(record, lambda pipe: pipe.delete(record))
        return int(deleted)

    async def _write(self, key: str, queue: Queue) -> list[Any]:
        return list(await store_call(lambda: self.durable.write(key, queue)))
