"""The record's packing (bff/packing.py): JWTs as raw bytes, the rest compressed, whatever the fields; records of the
older form still open; a record that cannot be read is a session gone (401), never a 500."""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict
from typing import Any

import pytest

from bff.packing import pack, unpack
from bff.sessions import MemoryStore, Session, SessionManager
from jwt_bff_verifier.testing import FakeIssuer

pytestmark = pytest.mark.anyio


def tokens() -> tuple[str, str, str]:
    issuer = FakeIssuer("http://localhost:9000", "notes")
    access = issuer.token("openid notes:read", sub="user-1", client_id="bff", sid="family-1")
    refresh = issuer.token("openid notes:read", sub="user-1", client_id="bff", sid="family-1", headers={"typ": "rt"})
    id_token = issuer.token("openid", sub="user-1", client_id="bff", sid="family-1", headers={"typ": "JWT"})
    return access, refresh, id_token


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
    assert packed[0] == 2
    assert unpack(packed) == record
    signatures = sum(len(t.split(".")[2]) * 3 // 4 for t in (access, refresh, id_token, access))
    assert len(packed) < 0.6 * len(json.dumps(record)) and len(packed) > signatures


def test_the_older_form_still_opens() -> None:
    record = {"access_token": tokens()[0], "x": 1}
    assert unpack(zlib.compress(json.dumps(record).encode(), 6)) == record


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
    ],
)
def test_garbage_never_passes_for_a_record(plain: bytes) -> None:
    with pytest.raises((ValueError, TypeError, KeyError, IndexError, zlib.error)):
        unpack(plain)


async def test_a_record_of_the_older_form_opens_and_an_unreadable_one_is_gone() -> None:
    access, refresh, id_token = tokens()
    store = MemoryStore()
    manager = SessionManager(store, idle_ttl=60, absolute_ttl=600)
    secret, session = await manager.create(
        access_token=access,
        refresh_token=refresh,
        access_expires_at=manager.clock() + 300,
        sub="user-1",
        username="alice",
        scope="openid",
        id_token=id_token,
    )
    ref = manager.ref(secret)
    assert ref is not None
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
