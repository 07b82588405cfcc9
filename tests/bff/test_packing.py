"""The record's packing (bff/packing.py): JWTs as raw bytes, the rest compressed, whatever the fields; records of the
older form still open; a record that cannot be read is a session gone (401), never a 500."""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, fields
from typing import Any

import pytest

from bff import packing
from bff.packing import pack, unpack
from bff.sessions import UNKNOWN_TO_EARLIER, MemoryStore, Sealed, Session, SessionManager
from jwt_bff_verifier.testing import FakeIssuer

pytestmark = pytest.mark.anyio


def tokens() -> tuple[str, str, str]:
    issuer = FakeIssuer("http://localhost:9000", "notes")
    access = issuer.token("openid notes:read", sub="user-1", client_id="bff", sid="family-1")
    refresh = issuer.token("openid notes:read", sub="user-1", client_id="bff", sid="family-1", headers={"typ": "rt"})
    id_token = issuer.token("openid", sub="user-1", client_id="bff", sid="family-1", headers={"typ": "JWT"})
    return access, refresh, id_token


async def created(manager: SessionManager, made: tuple[str, str, str], **extra: Any) -> tuple[Sealed, Session]:
    """A session of the three tokens ``made`` (``tokens()``), as a login makes it."""
    access, refresh, id_token = made
    secret, session = await manager.create(
        access_token=access,
        refresh_token=refresh,
        access_expires_at=manager.clock() + 300,
        sub="user-1",
        username="alice",
        scope="openid",
        id_token=id_token,
        **extra,
    )
    ref = manager.ref(secret)
    assert ref is not None
    return ref, session


def test_jwts_are_packed_as_bytes_and_come_back_exactly() -> None:
    access, refresh, id_token = tokens()
    record = {
        "access_token": access,
        "refresh_token": refresh,
        "id_token": id_token,
        "tokens": {"https://orders.example": [access, 1.5, 2]},  # route tokens, nested in lists
        "claims": {"groups": ["a", "b"], "email_verified": True, "n": None},
        "a_field_added_later": {"deep": [{"x": "y.z.w"}]},  # not a JWS: kept as text
        "not_canonical": access + "=",  # does not match: kept as text
    }
    packed = pack(record)
    assert packed[0] == packing.VERSION == 3
    assert unpack(packed) == record
    signatures = sum(len(t.split(".")[2]) * 3 // 4 for t in (access, refresh, id_token, access))
    assert len(packed) < 0.6 * len(json.dumps(record)) and len(packed) > signatures


def test_the_older_form_still_opens() -> None:
    record = {"access_token": tokens()[0], "x": 1}
    assert unpack(zlib.compress(json.dumps(record).encode(), 6)) == record


def test_a_record_of_version_2_still_opens() -> None:
    """Records written before the dictionary knew User-Agents (version 2) open with their own dictionary."""
    record = {"access_token": tokens()[0], "user_agent": CHROME}
    older = pack(record, packing.EARLIER_VERSION)
    assert older[0] == 2 and pack(record)[0] == 3
    assert unpack(older) == record


CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/161.0.0.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:147.0) Gecko/20100101 Firefox/147.0"
SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 19_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/19.2 "
    "Mobile/15E148 Safari/604.1"
)


@pytest.mark.parametrize("agent", [CHROME, FIREFOX, SAFARI])
def test_a_browsers_user_agent_costs_a_record_few_bytes(agent: str) -> None:
    """The record keeps its login's User-Agent for the list of sessions (DESIGN §14): browsers' are a few fixed
    forms, which the preset dictionary holds (versions other than the dictionary's included)."""
    record = {"access_token": tokens()[0], "sub": "user-1"}
    assert len(pack({**record, "user_agent": agent})) - len(pack(record)) <= 30


@pytest.mark.parametrize("value", [{"\x00": 0}, ["\x00"], "\x00"])
def test_a_record_holding_the_placeholder_is_kept_as_it_is(value: Any) -> None:
    record = {"access_token": tokens()[0], "odd": value}
    assert unpack(pack(record)) == record


@pytest.mark.parametrize(
    "plain",
    [
        b"",
        b"\x02",
        b"\x02\xff\xff\xff\xff\xff\xff",
        b"\x02\x05abc",
        b"garbage",
        os.urandom(64),
        b"\x02" + os.urandom(64),
        b"\x03\x05abc",
        b"\x03" + os.urandom(64),
    ],
)
def test_garbage_never_passes_for_a_record(plain: bytes) -> None:
    with pytest.raises((ValueError, TypeError, KeyError, IndexError, zlib.error)):
        unpack(plain)


async def test_a_record_of_the_older_form_opens_and_an_unreadable_one_is_gone() -> None:
    access, refresh, id_token = tokens()
    store = MemoryStore()
    manager = SessionManager(store, idle_ttl=60, absolute_ttl=600)
    ref, session = await created(manager, (access, refresh, id_token))
    # As the BFF wrote it before this packing: zlib-compressed JSON, sealed the same way.
    nonce = os.urandom(12)
    older = zlib.compress(json.dumps(asdict(session)).encode(), 6)
    await store.set(ref.key, nonce + ref.aead.encrypt(nonce, older, ref.key.encode()), 60_000)
    loaded = await manager.load(ref)
    assert loaded is not None and loaded.id_token == id_token and loaded.access_token == access
    # Sealed right but not a record: the session is gone (None: a 401 upstream of here), never an exception.
    await store.set(ref.key, nonce + ref.aead.encrypt(nonce, b"\x02\x03abc", ref.key.encode()), 60_000)
    assert await manager.load(ref) is None


async def test_new_fields_need_no_change_to_the_packing() -> None:
    access, refresh, id_token = tokens()
    session = Session(access, refresh, 1e10, "s", "u", "openid", 1.0, 1e10, 1.0, id_token=id_token)
    data = {**asdict(session), "acr": "mfa", "auth_time": 1234, "metadata": {"ua": "Firefox"}}
    assert unpack(pack(data)) == data


@pytest.mark.parametrize("compact", [False, True])
async def test_records_stay_readable_by_an_earlier_release_until_the_store_is_compact(compact: bool) -> None:
    """BFF_COMPACT_STORE false (the default): a replica of an earlier release may share the store, so a record is
    packed as it packs (version 2) and holds no field its Session lacks (it would refuse the record: a 401). True:
    this release's packing, and the login's User-Agent and network, which the compact list of sessions shows."""
    manager = SessionManager(MemoryStore(), idle_ttl=60, absolute_ttl=600, compact=compact)
    ref, _ = await created(manager, tokens(), user_agent=CHROME, ip="192.0.2.0/24")
    blob = await manager.store.get(ref.key)
    assert blob is not None
    plain = ref.aead.decrypt(blob[:12], blob[12:], ref.key.encode())
    assert plain[0] == (3 if compact else 2)
    earlier = {f.name for f in fields(Session)} - set(UNKNOWN_TO_EARLIER)
    assert (set(unpack(plain)) <= earlier) != compact
    loaded = await manager.load(ref)
    assert loaded is not None and loaded.user_agent == (CHROME if compact else "")
