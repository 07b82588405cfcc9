"""Your sessions (DESIGN §14): the list of a user's sessions at this BFF, and ending one from another.

One Redis hash per user (Cluster-safe: one key per command), which is also how a sub-only back-channel logout finds
the user's sessions (``bff.session_index``). An entry comes in one of two forms::

    bff:{bcl-sub:<sha256(sub)>}:list    <record id>    -> the record's key, wrapped (BFF_COMPACT_STORE: 32 + 40 bytes)
                                        <id>           -> the entry, sealed (earlier releases' form: ~300 bytes)
                                        <field>:t      -> last seen, epoch seconds (a few bytes)

The compact form names the record by its id (32 bytes: the SHA-256 of the cookie secret that its key name holds in
hex) and holds nothing but the record's AES key, wrapped (AES key wrap, RFC 3394) under a key derived from
``BFF_CLIENT_SECRET``. What the list shows of it — creation time, the User-Agent (at most ``UA_MAX`` characters) and
address (truncated to /24 or /48) of its login — is in the session record itself, which the unwrapped key opens, and
the list shows only records whose ``sub`` is the list's. Both fields and values stay within Redis's
``hash-max-listpack-value`` (64), so a user's list is a listpack: ~85 bytes a session instead of ~330
(tests/bff/test_your_sessions.py). The sealed form (written while ``BFF_COMPACT_STORE`` is false, for replicas of an
earlier release) holds the record's id in the clear, then that metadata and the record's key, sealed (AES-GCM).

``<id>`` is what ``GET /bff/sessions`` shows: HMAC-SHA256 of the record's id under a key derived from
``BFF_CLIENT_SECRET``, 128 bits. It is neither the cookie nor anything that opens the session: the record's id is
itself a SHA-256 of the cookie secret, and the HMAC needs the BFF's secret besides.

The wrapped record key is what lets one session of a user — or the operator — end another: open its record, revoke
its refresh token at the provider (RFC 7009), delete it. Redis alone opens nothing (the key needs
``BFF_CLIENT_SECRET``); Redis together with ``BFF_CLIENT_SECRET`` opens the records of sessions listed here.

``last_seen_at`` is written at most every ``LAST_SEEN_EVERY`` seconds per session per process, off the request's path
(a task), and only while the entry exists (one Lua script): a session ended meanwhile is not written back. Entries
of sessions that ended in other ways (logout, expiry, back-channel logout) are dropped when the list is read.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from bff.session_index import _key as index_key
from bff.session_index import list_key, record_name
from bff.sessions import Sealed, Session, SessionManager, store_call
from servicekit.durable import Durable, WaitPolicy

log = logging.getLogger(__name__)

LAST_SEEN_EVERY = 300  # seconds: last_seen_at is this coarse, and costs one small write per active session this often
SEEN_CACHE = 65_536  # sessions whose last write time this process remembers
UA_MAX = 200  # characters of User-Agent kept
ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")  # 16 bytes, unpadded base64url
# An entry's value: RECORD_TAG, the record's id (32 bytes), then the sealed entry. The id in the clear is what a
# sub-only back-channel logout needs even when the entry no longer opens (BFF_CLIENT_SECRET rotated); it says no more
# than the record's own key name in Redis. Entries of an earlier release are the sealed part alone.
RECORD_TAG = b"R"
_RECORD_ID = re.compile(r"[0-9a-f]{64}")
SEALED_FIELD = 22  # bytes of a sealed entry's field: its public id
COMPACT_FIELD = 32  # bytes of a compact entry's field: the record's id
SEEN_SUFFIX = b":t"
LIST_INFO = b"jwt-bff session list"
ID_INFO = b"jwt-bff session id"
WRAP_INFO = b"jwt-bff session list key wrap"

# KEYS[1] the list; ARGV[1] and ARGV[2] the entry's field in either form, ARGV[3] the time. Only over a live entry:
# never adds one for a session ended.
_SEEN = """
for i = 1, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i] .. ':t', ARGV[3])
    return 1
  end
end
return 0
"""


def truncate_ip(address: str) -> str:
    """The network of ``address``: /24 for IPv4, /48 for IPv6 (DESIGN §14); empty when it is no address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return ""
    mapped = getattr(ip, "ipv4_mapped", None)
    ip = mapped or ip
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def clean_user_agent(value: str | None) -> str:
    """Printable ASCII only, at most ``UA_MAX`` characters: it is shown to the user and to the operator."""
    return "".join(c for c in (value or "") if " " <= c <= "~")[:UA_MAX]


@dataclass(frozen=True)
class Entry:
    id: str
    record: str  # the record's id (the hash in its key)
    key: bytes  # the record's AES-GCM key
    created_at: float
    last_seen_at: float
    user_agent: str
    ip: str
    field: bytes = b""  # its field in the user's list: the id (sealed form) or the record's id, raw (compact form)

    @property
    def ref(self) -> Sealed:
        return Sealed(self.record, f"bff:{{{self.record}}}:s", AESGCM(self.key))

    def shown(self, current: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": int(self.created_at),
            "last_seen_at": int(self.last_seen_at),
            "user_agent": self.user_agent,
            "ip": self.ip,
            "current": self.id == current,
        }


class SessionList:
    def __init__(
        self,
        client: Any,
        manager: SessionManager,
        *,
        secret: str,
        durable: Durable | None = None,
        every: float = LAST_SEEN_EVERY,
        clock: Callable[[], float] = time.time,
        compact: bool = False,
    ) -> None:
        self.client = client
        self.manager = manager
        self.durable = durable or Durable(client, WaitPolicy(replicas=0))
        self.every = every
        self.clock = clock
        self.compact = compact  # BFF_COMPACT_STORE: new entries in the compact form
        self._aead = AESGCM(_hkdf(secret.encode(), LIST_INFO))
        self._id_key = _hkdf(secret.encode(), ID_INFO)
        self._kek = _hkdf(secret.encode(), WRAP_INFO)
        self._seen: dict[str, float] = {}  # record key -> when this process last wrote its last_seen_at
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen_script = client.register_script(_SEEN)

    # --- ids and entries ------------------------------------------------------------------------------------------

    def public_id(self, record: str) -> str:
        digest = hmac.new(self._id_key, record.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()

    def _sealer(self, sub: str, id: str) -> Sealed:
        return Sealed(id, f"{list_key(sub)}/{id}", self._aead)  # the list and the id are the associated data

    def new_entry(self, ref: Sealed, record_key: bytes, session: Session) -> tuple[bytes, bytes]:
        """The (field, value) that lists a new session (``record_key``: its record's AES key, ``record_key()``),
        written with its index entry (``SessionIndex.add``). What the list shows of it (its login's User-Agent and
        network) is the session's own ``user_agent`` and ``ip``, which its record keeps."""
        self._seen[ref.key] = self.clock()  # its login is its first sighting: no write on its first request
        if self.compact and _RECORD_ID.fullmatch(ref.id):
            return bytes.fromhex(ref.id), aes_key_wrap(self._kek, record_key)
        id = self.public_id(ref.id)
        data = {
            "r": ref.id,
            "k": base64.b64encode(record_key).decode(),
            "c": round(session.created_at, 3),  # ms: the list is in login order
            "ua": session.user_agent,
            "ip": session.ip,
        }
        sealed = self._sealer(session.sub, id).seal(data)
        return id.encode(), (RECORD_TAG + bytes.fromhex(ref.id) + sealed if _RECORD_ID.fullmatch(ref.id) else sealed)

    def _open(self, sub: str, id: str, blob: bytes, seen: bytes | None) -> Entry | None:
        sealer = self._sealer(sub, id)
        data = sealer.open(blob[len(RECORD_TAG) + 32 :]) if blob.startswith(RECORD_TAG) else None
        if data is None:
            data = sealer.open(blob)  # an entry of an earlier release: the sealed part alone
        if data is None:
            return None
        try:
            created = float(data["c"])
            entry = Entry(id, str(data["r"]), base64.b64decode(data["k"]), created, 0.0, str(data["ua"]), data["ip"])
        except (KeyError, TypeError, ValueError):
            return None
        return replace(entry, field=id.encode(), last_seen_at=_seen_at(seen, created))

    def _unwrap(self, field: bytes, blob: bytes, seen: bytes | None) -> Entry | None:
        """A compact entry whose key unwraps: what the list shows of it comes from its record (``_described``)."""
        try:
            key = aes_key_unwrap(self._kek, blob)
        except (InvalidUnwrap, ValueError):
            return None
        record = field.hex()
        return Entry(self.public_id(record), record, key, 0.0, _seen_at(seen, 0.0), "", "", field)

    def _described(self, sub: str, entry: Entry, blob: bytes) -> Entry | bool:
        """A compact entry with what its record says; False when the record belongs to another user (an entry moved
        into this list by someone with write access to Redis: shown to nobody, dropped), True when it does not open
        or says too little here (written by a later release, say: hidden, but kept, since in the compact form it is
        its session's only index for a sub-only back-channel logout)."""
        data = entry.ref.open(blob)
        if data is None:
            return True
        if data.get("sub") != sub:
            return False
        try:
            created = round(float(data["created_at"]), 3)
        except (KeyError, TypeError, ValueError):
            return True
        last = entry.last_seen_at or created
        ua, ip = str(data.get("user_agent", "")), str(data.get("ip", ""))
        return replace(entry, created_at=created, last_seen_at=last, user_agent=ua, ip=ip)

    # --- reading ----------------------------------------------------------------------------------------------------

    async def _read(self, sub: str) -> tuple[list[Entry], dict[bytes, str], list[bytes]]:
        """The user's list as it stands: (the entries that open, live or not — compact ones not yet described by
        their record; field -> record key of the entries that do not open (sealed or wrapped under another
        BFF_CLIENT_SECRET), named in the clear; the fields that are no entry's)."""
        raw: dict[Any, Any] = await store_call(lambda: self.client.hgetall(list_key(sub)))
        fields = {(k if isinstance(k, bytes) else str(k).encode()): v for k, v in raw.items()}
        found: list[Entry] = []
        unopened: dict[bytes, str] = {}
        dead: list[bytes] = []
        for field, blob in fields.items():
            if len(field) in (SEALED_FIELD + 2, COMPACT_FIELD + 2) and field.endswith(SEEN_SUFFIX):
                if field[:-2] not in fields:
                    dead.append(field)
                continue
            seen = fields.get(field + SEEN_SUFFIX)
            entry = None
            if len(field) == COMPACT_FIELD:
                entry = self._unwrap(field, blob, seen)
                record: str | None = record_name(field)
            elif len(field) == SEALED_FIELD and ID_RE.fullmatch(public := field.decode("latin-1")):
                entry = self._open(sub, public, blob, seen)
                record = _record_of(blob)
            else:
                record = None
            if entry is not None:
                found.append(entry)
            elif record is not None:
                unopened[field] = record
            else:
                dead += [field, field + SEEN_SUFFIX]
        return found, unopened, dead

    async def entries(self, sub: str) -> list[Entry]:
        """The user's live sessions, oldest first. Entries whose record is gone (ended in any way) are dropped."""
        found, unopened, dead = await self._read(sub)
        # Entries that do not open (BFF_CLIENT_SECRET rotated since): not shown, yet while their record lives they
        # are its index for a sub-only back-channel logout (bff.session_index), so they stay.
        opened = len(found)
        blobs = await self.manager.store.get_many([entry.ref.key for entry in found] + list(unopened.values()))
        live: list[Entry] = []
        for entry, blob in zip(found, blobs[:opened], strict=True):
            shown: Entry | bool = entry if blob is not None else False
            if blob is not None and len(entry.field) == COMPACT_FIELD:
                shown = self._described(sub, entry, blob)
            if isinstance(shown, Entry):
                live.append(shown)
            elif not shown:  # its record is gone, or is another user's
                dead += [entry.field, entry.field + SEEN_SUFFIX]
        for field, blob in zip(list(unopened), blobs[opened:], strict=True):
            if blob is None:
                dead += [field, field + SEEN_SUFFIX]
        if dead:  # housekeeping, best effort: the next read drops them again
            key = list_key(sub)
            await store_call(lambda: self.client.hdel(key, *dead))
        return sorted(live, key=lambda e: (e.created_at, e.id))

    async def size(self, sub: str) -> int:
        """The fields of the user's list (an entry and its last-use time are two): at least its live sessions."""
        return int(await store_call(lambda: self.client.hlen(list_key(sub))))

    async def records(self, sub: str) -> list[tuple[bytes, str]]:
        """(field, record key) of every entry of the user's list, live or not, whether it opens or not: what a
        sub-only logout ends (``SessionIndex.end``)."""
        found, unopened, _ = await self._read(sub)
        return [(entry.field, entry.ref.key) for entry in found] + list(unopened.items())

    async def entry(self, sub: str, id: str) -> Entry | None:
        """The live session ``id`` (its public id) of ``sub``, or None."""
        if not ID_RE.fullmatch(id):
            return None
        return next((entry for entry in await self.entries(sub) if entry.id == id), None)

    # --- writing ----------------------------------------------------------------------------------------------------

    async def forget(self, sub: str, entry: Entry) -> None:
        """Drop an ended session from the list (its record is deleted already), and from the user's index set of an
        earlier release (``bff.session_index``)."""
        key = list_key(sub)
        members = index_key("sub", sub)

        def queue(pipe: Any) -> None:
            pipe.hdel(key, entry.field, entry.field + SEEN_SUFFIX)
            pipe.srem(members, entry.ref.key)

        await store_call(lambda: self.durable.write(key, queue))

    def seen(self, ref: Sealed, session: Session) -> None:
        """Note a use of the session: at most every ``every`` seconds per session per process, a task writes its
        ``last_seen_at``. Costs a dictionary lookup otherwise (the hot path)."""
        now = self.clock()
        last = self._seen.get(ref.key)
        if last is not None and now - last < self.every:
            return
        if last is None and len(self._seen) >= SEEN_CACHE:
            del self._seen[next(iter(self._seen))]  # the oldest
        self._seen[ref.key] = now
        task = asyncio.ensure_future(self._write_seen(session.sub, ref.id, int(now)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_seen(self, sub: str, record: str, now: int) -> None:
        # the entry's field in whichever form it was written (BFF_COMPACT_STORE may have changed since its login)
        fields = [self.public_id(record).encode(), bytes.fromhex(record) if _RECORD_ID.fullmatch(record) else b""]
        try:
            await self._seen_script(keys=[list_key(sub)], args=[*fields, now])
        except Exception as exc:  # noqa: BLE001 - a lost last_seen_at is harmless; the next use writes it again
            log.warning("could not note a session's last use (%s): Redis unreachable?", type(exc).__name__)

    async def settle(self) -> None:
        """Wait for the last-use writes under way (tests; a shutdown just cancels them, :meth:`close`)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _seen_at(value: bytes | None, otherwise: float) -> float:
    """A ``<field>:t`` value (epoch seconds), or ``otherwise`` for none or one that is no finite time."""
    try:
        seen = float(value) if value is not None else otherwise
    except ValueError:
        return otherwise
    return seen if math.isfinite(seen) and 0 <= seen < 1e11 else otherwise


def _record_of(blob: bytes) -> str | None:
    """The record key an entry names in the clear (``RECORD_TAG``), whether or not it opens; None for an entry of an
    earlier release."""
    if blob.startswith(RECORD_TAG) and len(blob) > len(RECORD_TAG) + 32:
        return f"bff:{{{blob[len(RECORD_TAG) : len(RECORD_TAG) + 32].hex()}}}:s"
    return None


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)
