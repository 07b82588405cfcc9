"""Sessions: the cookie secret, the encrypted record, and the byte store under them.

The cookie holds a 256-bit random secret. Redis never sees it: the record lives at ``bff:{sha256(secret)}:s`` and is
sealed with AES-GCM under a key derived from the secret (HKDF-SHA256), with the store key as associated data. A copy
of Redis therefore opens no session and reads no token, and a record cannot be moved to another key.

Two layers (as oauth2-proxy's ``persistence/manager.go``): a :class:`ByteStore` that keeps opaque bytes with a TTL
(:class:`RedisStore`, :class:`MemoryStore`), and the :class:`SessionManager` above it that owns secrets and sealing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import os
import re
import secrets
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Protocol

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bff.errors import SessionGone, StoreUnavailable
from bff.packing import EARLIER_VERSION, VERSION, pack, unpack
from bff.session_reads import FastGetex
from servicekit.durable import Durable, WaitPolicy
from servicekit.redis import store_down

SESSION_INFO = b"jwt-bff session"
NONCE_BYTES = 12
REF_CACHE = 4096  # cookie -> derived key and store key, for busy sessions
OPENED_CACHE = 4096  # store key -> (sealed record, its plaintext): a record unchanged in Redis is not reopened
# 32 random bytes in unpadded base64url are exactly 43 characters; anything else is refused before Redis is asked.
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")
STATE_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")  # what our own new_state() makes, with room


# --- the byte store ---------------------------------------------------------------------------------------------


class ByteStore(Protocol):
    """Opaque bytes under string keys, with millisecond TTLs, plus a leased lock. Every implementation passes
    ``tests/bff/test_store_contract.py``."""

    async def get_touch(self, key: str, ttl_ms: int) -> bytes | None:
        """Return the value and reset its TTL, in one round trip (GETEX)."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        """Write unconditionally: only for a record that is new (a fresh session, a login in flight)."""

    async def replace(self, key: str, value: bytes, ttl_ms: int) -> bool:
        """Write only over a live value (SET XX), atomically; False and nothing written when the key is gone.

        Every save of an existing record goes through here: a delete (logout) is final, so a refresh or token fetch
        that was in flight while the record was deleted cannot write it back (no resurrected sessions)."""

    async def expire(self, key: str, ttl_ms: int) -> None: ...

    async def take(self, key: str) -> bytes | None:
        """Return the value and delete it (GETDEL): single use."""

    async def delete(self, key: str) -> None: ...

    async def acquire(self, key: str, token: str, lease_ms: int) -> bool:
        """Take the lock if free (SET NX PX)."""

    async def renew(self, key: str, token: str, lease_ms: int) -> bool:
        """Extend the lease if ``token`` still owns the lock."""

    async def release(self, key: str, token: str) -> None:
        """Drop the lock if ``token`` still owns it."""

    async def get_and_exists(self, key: str, other: str) -> tuple[bytes | None, bool]:
        """The value of ``key`` and whether ``other`` exists, in one round trip."""

    async def exists_many(self, keys: list[str]) -> list[bool]:
        """Whether each key exists, in one round trip per node (pipelined EXISTS: Cluster-safe across slots)."""

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """The value of each key, in one round trip per node (pipelined GET: Cluster-safe across slots)."""

    async def ping(self) -> None: ...


_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class _Coalescer:
    """Sends the GETEX calls made during one event-loop tick as one pipeline.

    Under load many requests want their session at once; one pipeline for all of them costs a third of the CPU of
    separate commands in redis-py (measured: ~14 against ~45 us per call at 64 concurrent callers). Each request
    still costs one command and waits for one round trip.
    """

    MAX_BATCH = 256

    def __init__(self, client: aioredis.Redis, *, getex: bool = True) -> None:
        self.client = client
        self.use_getex = getex  # else GET + PEXPIRE per key (see RedisStore)
        self.pending: list[tuple[str, int, asyncio.Future[Any]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def getex(self, key: str, ttl_ms: int) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.pending:
            loop.call_soon(self._start)
        self.pending.append((key, ttl_ms, future))
        return future

    def _start(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[: self.MAX_BATCH], self.pending[self.MAX_BATCH :]
            task = asyncio.ensure_future(self._flush(batch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _flush(self, batch: list[tuple[str, int, asyncio.Future[Any]]]) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, ttl_ms, _ in batch:
                    if self.use_getex:
                        pipe.execute_command("GETEX", key, "PX", ttl_ms)
                    else:
                        pipe.get(key)
                        pipe.pexpire(key, ttl_ms)
                results = await pipe.execute()
            if not self.use_getex:
                results = results[::2]
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # every waiter gets the failure (a connection error becomes a 503)
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), value in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(value)


async def store_call(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run a Redis call; every way Redis reports being unavailable becomes StoreUnavailable (503)."""
    try:
        return await make()
    except Exception as exc:
        if store_down(exc) or isinstance(exc, OSError):
            raise StoreUnavailable() from exc
        raise


class RedisStore:
    """The byte store on Redis (or anything speaking its protocol). Connection failures become StoreUnavailable."""

    def __init__(self, client: aioredis.Redis, durable: Durable | None = None, *, fast_reads: bool = False) -> None:
        self.client = client
        # fast_reads: the session GETEX of every request on a lean connection of its own (bff.session_reads), for a
        # plain redis:// server; the app closes it (aclose) in its lifespan.
        self.fast = FastGetex.for_client(client) if fast_reads else None
        # Session creation, saves and deletes wait for the replicas when there are any (servicekit.durable): an
        # acknowledged login, refresh or logout survives a failover. Without a policy: never wait.
        self.durable = durable or Durable(client, WaitPolicy(replicas=0))
        # fakeredis (the embedded store of `bff stack`) sets GETEX expiries up to a second short; a GET + PEXPIRE
        # pipeline is still one round trip and exact there.
        getex = not type(client).__module__.startswith("fakeredis")
        self._coalescer = _Coalescer(client, getex=getex)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        # told of every call that found Redis unreachable (the app counts and logs them)
        self.on_unavailable: Callable[[BaseException], None] = lambda exc: None

    async def _call(self, make: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await store_call(make)
        except StoreUnavailable as exc:
            self.on_unavailable(exc.__cause__ or exc)
            raise

    async def get_touch(self, key: str, ttl_ms: int) -> bytes | None:
        if self.fast is not None:
            return await self._call(lambda: self.fast.getex(key, ttl_ms))  # type: ignore[union-attr]
        return await self._call(lambda: self._coalescer.getex(key, ttl_ms))

    def close_fast_reads(self) -> None:
        if self.fast is not None:
            self.fast.close()

    async def get(self, key: str) -> bytes | None:
        return await self._call(lambda: self.client.get(key))

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self._call(lambda: self.durable.write(key, lambda pipe: pipe.set(key, value, px=ttl_ms)))

    async def replace(self, key: str, value: bytes, ttl_ms: int) -> bool:
        done = await self._call(lambda: self.durable.write(key, lambda pipe: pipe.set(key, value, px=ttl_ms, xx=True)))
        return bool(done[0])

    async def expire(self, key: str, ttl_ms: int) -> None:
        await self._call(lambda: self.client.pexpire(key, ttl_ms))

    async def take(self, key: str) -> bytes | None:
        return await self._call(lambda: self.client.getdel(key))

    async def delete(self, key: str) -> None:
        await self._call(lambda: self.durable.write(key, lambda pipe: pipe.delete(key)))

    async def acquire(self, key: str, token: str, lease_ms: int) -> bool:
        return bool(await self._call(lambda: self.client.set(key, token, nx=True, px=lease_ms)))

    async def renew(self, key: str, token: str, lease_ms: int) -> bool:
        return bool(await self._call(lambda: self._renew(keys=[key], args=[token, lease_ms])))

    async def release(self, key: str, token: str) -> None:
        await self._call(lambda: self._release(keys=[key], args=[token]))

    async def get_and_exists(self, key: str, other: str) -> tuple[bytes | None, bool]:
        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.exists(other)
                return list(await pipe.execute())

        value, exists = await self._call(run)
        return value, bool(exists)

    async def exists_many(self, keys: list[str]) -> list[bool]:
        return [bool(found) for found in await self._per_key("exists", keys)]

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return await self._per_key("get", keys)

    async def _per_key(self, command: str, keys: list[str]) -> list[Any]:
        """``command`` once per key, pipelined: a multi-key EXISTS or MGET would be a cross-slot error on a cluster,
        while redis-py's cluster pipeline sends each node its share in one round trip."""
        if not keys:
            return []

        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    getattr(pipe, command)(key)
                return list(await pipe.execute())

        return list(await self._call(run))

    async def ping(self) -> None:
        await self._call(lambda: self.client.ping())


class MemoryStore:
    """The byte store in this process's memory: for single-process development and as a second contract subject."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._clock = clock

    def _live(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._data[key]
            return None
        return item[0]

    async def get_touch(self, key: str, ttl_ms: int) -> bytes | None:
        value = self._live(key)
        if value is not None:
            self._data[key] = (value, self._clock() + ttl_ms / 1000)
        return value

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._data[key] = (value, self._clock() + ttl_ms / 1000)

    async def replace(self, key: str, value: bytes, ttl_ms: int) -> bool:
        if self._live(key) is None:
            return False
        await self.set(key, value, ttl_ms)
        return True

    async def expire(self, key: str, ttl_ms: int) -> None:
        value = self._live(key)
        if value is not None:
            self._data[key] = (value, self._clock() + ttl_ms / 1000)

    async def take(self, key: str) -> bytes | None:
        value = self._live(key)
        self._data.pop(key, None)
        return value

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def acquire(self, key: str, token: str, lease_ms: int) -> bool:
        if self._live(key) is not None:
            return False
        await self.set(key, token.encode(), lease_ms)
        return True

    async def renew(self, key: str, token: str, lease_ms: int) -> bool:
        if self._live(key) != token.encode():
            return False
        await self.set(key, token.encode(), lease_ms)
        return True

    async def release(self, key: str, token: str) -> None:
        if self._live(key) == token.encode():
            del self._data[key]

    async def get_and_exists(self, key: str, other: str) -> tuple[bytes | None, bool]:
        return self._live(key), self._live(other) is not None

    async def exists_many(self, keys: list[str]) -> list[bool]:
        return [self._live(key) is not None for key in keys]

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self._live(key) for key in keys]

    async def ping(self) -> None:
        return None


# --- sealing ----------------------------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh 256-bit cookie secret, unpadded base64url."""
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def _decode_secret(value: str | None) -> bytes | None:
    if value is None or not _SECRET_RE.fullmatch(value):
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=")
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


@functools.lru_cache(maxsize=REF_CACHE)
def _session_ref(cookie: str) -> Sealed | None:
    # Cached: the hash and HKDF are a measurable share of a proxied request, and a busy session repeats its cookie.
    raw = _decode_secret(cookie)
    if raw is None:
        return None
    digest = hashlib.sha256(raw).hexdigest()
    return Sealed(digest, f"bff:{{{digest}}}:s", derive(raw, SESSION_INFO))


def record_key(cookie: str) -> bytes:
    """The raw AES key of the record of session cookie ``cookie`` (what ``_session_ref`` derives): ``bff.session_list``
    keeps it wrapped, so that another session of the user, or the operator, can end this one (DESIGN §14)."""
    raw = _decode_secret(cookie)
    if raw is None:
        raise ValueError("not a session cookie")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SESSION_INFO).derive(raw)


def logout_id(session_cookie: str) -> str:
    """The ``sid`` of ``/bff/user``'s ``logout_url``: derived from the cookie secret, which only the browser and this
    BFF know, so a cross-site page cannot guess it, and nothing needs storing."""
    digest = hashlib.sha256(b"jwt-bff logout id|" + session_cookie.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def derive(secret: bytes, info: bytes) -> AESGCM:
    """An AES-GCM key for ``info`` from a high-entropy secret (HKDF-SHA256, RFC 5869)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)
    return AESGCM(key)


@dataclass(frozen=True)
class Sealed:
    """Where a record lives and the key that opens it; derived from a secret the store never sees."""

    id: str
    key: str
    aead: AESGCM

    @property
    def lock_key(self) -> str:
        return f"bff:{{{self.id}}}:lock"

    def seal(self, data: dict[str, Any], version: int = EARLIER_VERSION) -> bytes:
        # Packed before sealing (bff.packing): JWTs as raw bytes, their headers and claims compressed with the rest,
        # so a session takes less Redis memory (bench/run.py, section 5). No length oracle: only Redis sees the
        # ciphertext, and a record holds one user's data. ``version``: the packing's; by default one an earlier
        # release opens too (a login cookie sealed here may come back to a replica of one in a rolling upgrade).
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self.aead.encrypt(nonce, pack(data, version), self.key.encode())

    def open(self, blob: bytes | None) -> dict[str, Any] | None:
        if blob is None or len(blob) <= NONCE_BYTES:
            return None
        try:
            plain = self.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], self.key.encode())
            data = unpack(plain)  # authenticated first: only our own records are inflated
        except (InvalidTag, ValueError, TypeError, KeyError, IndexError, zlib.error):  # a record we cannot read is gone
            return None
        return data if isinstance(data, dict) else None


@dataclass
class Session:
    """The session record: tokens and what /bff/user shows. Times are epoch seconds."""

    access_token: str
    refresh_token: str | None
    access_expires_at: float
    sub: str
    username: str
    scope: str
    created_at: float
    expires_at: float
    access_issued_at: float = 0.0  # when the access token was obtained: its lifetime bounds the refresh skew
    # RFC 8707 route tokens (DESIGN §7): resource -> [access token, expires at, issued at], sealed like the rest
    tokens: dict[str, list[Any]] = field(default_factory=dict)
    # DESIGN §6: the ID token, sent back as id_token_hint at logout (sealed like the tokens), and the provider's sid
    # of this login, which its back-channel logout token names.
    id_token: str | None = None
    sid: str | None = None
    # DESIGN §11: the user's claims kept at login (BFF_USER_CLAIMS and those the routes' require name), never a token
    claims: dict[str, Any] = field(default_factory=dict)
    # DESIGN §14: the login's level (the ID token's acr, amr, auth_time), which routes' acr/max_age are checked
    # against, and which a step-up login raises in place
    acr: str | None = None
    amr: list[str] = field(default_factory=list)
    auth_time: float | None = None
    # DESIGN §14: the browser (User-Agent, printable ASCII, at most 200 characters) and network (/24 or /48) of the
    # login, which the user's list of sessions shows (bff.session_list)
    user_agent: str = ""
    ip: str = ""


class SessionManager:
    """Creates, loads, saves and ends sessions; enforces the idle (sliding) and absolute lifetimes."""

    def __init__(
        self,
        store: ByteStore,
        *,
        idle_ttl: int,
        absolute_ttl: int,
        clock: Callable[[], float] = time.time,
        compact: bool = False,
    ) -> None:
        self.store = store
        self.idle_ttl = idle_ttl
        self.absolute_ttl = absolute_ttl
        self.clock = clock
        # BFF_COMPACT_STORE: records in this release's packing, with the fields earlier releases do not know; else
        # in the form an earlier release reads (a replica of one may share the store: a rolling upgrade, a rollback)
        self.compact = compact
        self._version = VERSION if compact else EARLIER_VERSION
        self._opened: dict[str, tuple[bytes, dict[str, Any]]] = {}

    @staticmethod
    def ref(cookie: str | None) -> Sealed | None:
        """The record location for a cookie value, or None for anything that is not a secret we could have made."""
        if cookie is None or not _SECRET_RE.fullmatch(cookie):
            return None
        return _session_ref(cookie)

    def _ttl_ms(self, session: Session) -> int:
        return max(1, int(min(self.idle_ttl, session.expires_at - self.clock()) * 1000))

    def idle_expires_at(self, session: Session) -> float:
        return min(self.clock() + self.idle_ttl, session.expires_at)

    def _open(self, ref: Sealed, blob: bytes | None) -> dict[str, Any] | None:
        """The record's plaintext. Decrypting, inflating and parsing is a tenth of a proxied request, and a record
        changes only on login and refresh: while Redis returns the very bytes we opened last, reuse that."""
        if blob is None:
            return None
        opened = self._opened.get(ref.key)
        if opened is not None and opened[0] == blob:
            return opened[1]
        data = ref.open(blob)
        if data is not None:
            if len(self._opened) >= OPENED_CACHE:
                del self._opened[next(iter(self._opened))]  # the oldest entry
            self._opened[ref.key] = (blob, data)
        return data

    def _decode(self, ref: Sealed, blob: bytes | None) -> Session | None:
        data = self._open(ref, blob)
        if data is None:
            return None
        try:
            session = Session(**data)
        except TypeError:
            return None
        return session if session.expires_at > self.clock() else None

    async def create(
        self,
        *,
        access_token: str,
        refresh_token: str | None,
        access_expires_at: float,
        sub: str,
        username: str,
        scope: str,
        id_token: str | None = None,
        sid: str | None = None,
        claims: dict[str, Any] | None = None,
        acr: str | None = None,
        amr: list[str] | None = None,
        auth_time: float | None = None,
        user_agent: str = "",
        ip: str = "",
    ) -> tuple[str, Session]:
        """Store a new session under a new secret (never one the browser offered: fixation-safe).

        Without a refresh token the session cannot outlive its access token: it ends when that does (DESIGN §11),
        and its ``expires_at`` says so."""
        now = self.clock()
        ends = now + self.absolute_ttl if refresh_token else min(now + self.absolute_ttl, access_expires_at)
        session = Session(access_token, refresh_token, access_expires_at, sub, username, scope, now, ends, now)
        session.id_token, session.sid, session.claims = id_token, sid, claims or {}
        session.acr, session.amr, session.auth_time = acr, amr or [], auth_time
        session.user_agent, session.ip = user_agent, ip
        secret = new_secret()
        ref = self.ref(secret)
        assert ref is not None
        await self.store.set(ref.key, self._seal(ref, session, new=True), self._ttl_ms(session))
        return secret, session

    async def load(self, ref: Sealed) -> Session | None:
        """Load and renew the idle lifetime, in one round trip in the common case."""
        blob = await self.store.get_touch(ref.key, self.idle_ttl * 1000)
        session = self._decode(ref, blob)
        if session is None:
            return None
        if session.expires_at - self.clock() < self.idle_ttl:
            # The last idle window before the absolute expiry: cap Redis's TTL (rare, one more round trip).
            await self.store.expire(ref.key, self._ttl_ms(session))
        return session

    async def peek(self, ref: Sealed) -> Session | None:
        return self._decode(ref, await self.store.get(ref.key))

    async def peek_locked(self, ref: Sealed) -> tuple[Session | None, bool, bool]:
        """(session, record exists, lock held) in one round trip: what a refresh waiter polls."""
        blob, locked = await self.store.get_and_exists(ref.key, ref.lock_key)
        return self._decode(ref, blob), blob is not None, locked

    async def save(self, ref: Sealed, session: Session) -> None:
        """Write back an existing session. Raises SessionGone if it was deleted (logout) or expired meanwhile: a
        delete is final on every replica, whatever was in flight when it happened (the store's ``replace``)."""
        if not await self.store.replace(ref.key, self._seal(ref, session), self._ttl_ms(session)):
            self._opened.pop(ref.key, None)
            raise SessionGone()

    async def delete(self, ref: Sealed) -> None:
        self._opened.pop(ref.key, None)
        await self.store.delete(ref.key)

    def _seal(self, ref: Sealed, session: Session, *, new: bool = False) -> bytes:
        record = _record(session)
        if new and not self.compact:
            # Session(**record) of an earlier release refuses a field it lacks. Only a new record is made without
            # them: one rewritten keeps what it had (a replica with BFF_COMPACT_STORE wrote it, which an earlier
            # release could not read anyway), so the list of sessions still shows its browser.
            for name in UNKNOWN_TO_EARLIER:
                record.pop(name, None)
        return ref.seal(record, self._version)


# Fields an earlier release's Session lacks: left out of records written for it (BFF_COMPACT_STORE false), which only
# the user's list of sessions misses (its sealed entries keep them themselves)
UNKNOWN_TO_EARLIER = ("user_agent", "ip")
_OPTIONAL = {f.name: f for f in fields(Session) if f.default is not MISSING or f.default_factory is not MISSING}


def _record(session: Session) -> dict[str, Any]:
    """The record to seal: every field but those still at their default (``Session(**record)`` restores them), so
    that optional fields — route tokens, claims, the login's level — cost nothing in Redis until they are used."""
    record = asdict(session)
    for name, spec in _OPTIONAL.items():
        default = spec.default if spec.default is not MISSING else spec.default_factory()  # type: ignore[operator]
        if record[name] == default:
            del record[name]
    return record


def new_state() -> str:
    return secrets.token_urlsafe(32)
