"""Your sessions (DESIGN §14), in-process against a real Redis: listing, ending one or all others, and the attacks
on it — another user's id, CSRF, ids guessed or derived from a cookie."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest
import redis.asyncio as aioredis

from bff.errors import StoreUnavailable
from bff.session_list import LAST_SEEN_EVERY, Entry, SessionList, list_key, truncate_ip
from tests.bff.conftest import PUBLIC_URL, Rig
from tests.bff.doubles import Browser

pytestmark = pytest.mark.anyio


async def logged_in(rig: Rig, user: str = "alice", agent: str = "TestBrowser/1.0") -> Browser:
    rig.provider.user = user
    browser = rig.browser()
    browser.client.headers["User-Agent"] = agent
    response = await browser.login(rig.provider_client)
    assert response.status_code == 302, response.text
    return browser


async def listing(browser: Browser) -> list[dict[str, object]]:
    response = await browser.request("GET", "/bff/sessions")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return list(response.json()["sessions"])


async def alive(browser: Browser) -> bool:
    return (await browser.request("GET", "/bff/user")).status_code == 200


COMPACT = pytest.param("compact", marks=pytest.mark.bff_env(BFF_COMPACT_STORE="true"))  # the rig's BFF with it


@pytest.mark.parametrize("form", ["sealed", COMPACT])
async def test_two_browsers_list_and_end_each_other(rig: Rig, form: str) -> None:
    laptop = await logged_in(rig, agent="Laptop/1.0")
    phone = await logged_in(rig, agent="Phone/2.0")
    bob = await logged_in(rig, "bob")
    seen = await listing(laptop)
    assert [s["user_agent"] for s in seen] == ["Laptop/1.0", "Phone/2.0"]
    assert [s["current"] for s in seen] == [True, False]
    assert {s["ip"] for s in seen} == {truncate_ip("127.0.0.1")} == {"127.0.0.0/24"}
    for shown in seen:
        assert set(shown) == {"id", "created_at", "last_seen_at", "user_agent", "ip", "current"}
        assert shown["last_seen_at"] >= shown["created_at"]  # type: ignore[operator]
    assert [s["current"] for s in await listing(phone)] == [False, True]
    assert [s["id"] for s in await listing(phone)] == [s["id"] for s in seen]
    assert len(await listing(bob)) == 1

    phone_id = seen[1]["id"]
    revoked = len(rig.provider.revoked)
    ended = await laptop.request("DELETE", f"/bff/sessions/{phone_id}")
    assert ended.status_code == 204, ended.text
    assert len(rig.provider.revoked) == revoked + 1  # RFC 7009 at the provider
    assert not await alive(phone) and await alive(laptop) and await alive(bob)
    assert [s["user_agent"] for s in await listing(laptop)] == ["Laptop/1.0"]
    again = await laptop.request("DELETE", f"/bff/sessions/{phone_id}")  # ended: unknown now
    assert again.status_code == 404 and again.json()["error"] == "not_found"


async def test_sign_out_other_devices_keeps_the_calling_one(rig: Rig) -> None:
    browsers = [await logged_in(rig, agent=f"Device/{i}") for i in range(3)]
    bob = await logged_in(rig, "bob")
    response = await browsers[1].request("DELETE", "/bff/sessions")
    assert response.status_code == 204
    assert [await alive(b) for b in browsers] == [False, True, False]
    assert await alive(bob)
    assert [s["user_agent"] for s in await listing(browsers[1])] == ["Device/1"]


async def test_ending_the_calling_session_clears_its_cookie(rig: Rig) -> None:
    browser = await logged_in(rig)
    (mine,) = await listing(browser)
    response = await browser.request("DELETE", f"/bff/sessions/{mine['id']}")
    assert response.status_code == 204 and "max-age=0" in response.headers["set-cookie"].lower()
    assert (await browser.request("GET", "/bff/sessions")).status_code == 401


async def test_another_users_session_is_404_like_an_unknown_one(rig: Rig) -> None:
    alice = await logged_in(rig)
    bob = await logged_in(rig, "bob")
    (bobs,) = await listing(bob)
    for victim in (bobs["id"], "A" * 22, "not-an-id", "x" * 300, "%2e%2e"):
        refused = await alice.request("DELETE", f"/bff/sessions/{victim}")
        assert refused.status_code == 404, (victim, refused.text)
        assert refused.json() == {"error": "not_found", "error_description": "No such session."}
    assert await alive(bob)
    anonymous = rig.browser()
    assert (await anonymous.request("DELETE", f"/bff/sessions/{bobs['id']}")).status_code == 401
    assert await alive(bob)


async def test_csrf_on_the_sessions_api(rig: Rig) -> None:
    alice = await logged_in(rig)
    other = await logged_in(rig, agent="Other/1")
    other_id = (await listing(alice))[1]["id"]
    attempts = [
        ("GET", "/bff/sessions", {}, False),  # no X-CSRF: a cross-site page cannot read the list
        ("DELETE", f"/bff/sessions/{other_id}", {}, False),
        ("DELETE", "/bff/sessions", {}, False),
        ("DELETE", f"/bff/sessions/{other_id}", {"Origin": "https://evil.example"}, True),  # cross-site Origin
        ("DELETE", "/bff/sessions", {"Origin": "null"}, True),
        ("OPTIONS", "/bff/sessions", {"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"}, 0),
    ]
    for method, path, headers, csrf in attempts:
        refused = await alice.request(method, path, headers=headers, csrf=bool(csrf))
        assert refused.status_code == 403 and refused.json()["error"] == "csrf", (method, path, headers)
    assert await alive(other)
    own = await alice.request("DELETE", f"/bff/sessions/{other_id}", headers={"Origin": PUBLIC_URL})
    assert own.status_code == 204


async def test_ids_are_neither_the_cookie_nor_derived_from_it_openly(rig: Rig) -> None:
    alice = await logged_in(rig)
    victim = await logged_in(rig, agent="Victim/1")
    cookie = victim.cookies["__Host-session"]
    raw = base64.urlsafe_b64decode(cookie + "=")
    record = hashlib.sha256(raw).hexdigest()
    ids = [str(s["id"]) for s in await listing(alice)]
    for guess in (
        cookie,
        record,
        record[:22],
        base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:16]).rstrip(b"=").decode(),
        base64.urlsafe_b64encode(hashlib.sha256(cookie.encode()).digest()[:16]).rstrip(b"=").decode(),
    ):
        assert guess not in ids
        refused = await alice.request("DELETE", f"/bff/sessions/{guess}")
        assert refused.status_code == 404
    assert all(cookie not in str(v) and record not in str(v) for v in await listing(alice))
    assert await alive(victim)


DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


@pytest.mark.parametrize("form", ["sealed", COMPACT])
async def test_what_is_stored_per_session_and_its_bytes(rig: Rig, form: str) -> None:
    browser = await logged_in(rig, agent=DESKTOP)
    (mine,) = await listing(browser)
    assert mine["user_agent"] == DESKTOP
    redis = aioredis.Redis.from_url(rig.settings.redis_url)
    try:
        key = list_key("sub-alice")
        fields = await redis.hgetall(key)
        (field,) = fields  # no last_seen yet: the login was its first sighting
        value = fields[field]
        if form == "compact":  # the record's id and its key, wrapped: what the list shows is in the record
            assert len(field) == 32 and len(value) == 40
        else:
            assert field == str(mine["id"]).encode()
        assert b"Mozilla" not in value and b"127.0.0" not in value  # sealed
        size = len(value) + len(field)
        one = await redis.memory_usage(key) or 0
        for _ in range(20):
            await logged_in(rig, agent=DESKTOP)
        each = ((await redis.memory_usage(key) or 0) - one) / 20
        print(f"per session in the list: {size} bytes of field and value, {each:.0f} B of Redis memory each")
        if form == "compact":  # a listpack: no hash table
            assert size == 72 and each < 100
            assert await redis.object("encoding", key) == b"listpack"
        else:
            assert size < 400 and each < 600
        assert 0 < await redis.ttl(key) <= rig.settings.absolute_ttl
    finally:
        await redis.aclose()


async def test_last_seen_is_written_at_most_every_few_minutes(rig: Rig) -> None:
    browser = await logged_in(rig)
    list_ = next(r.endpoint.__self__ for r in rig.app.routes if getattr(r, "path", "") == "/bff/sessions").list
    redis = aioredis.Redis.from_url(rig.settings.redis_url)
    try:
        key = list_key("sub-alice")
        (mine,) = await listing(browser)
        for _ in range(20):
            assert (await browser.request("GET", "/api/notes/x")).status_code == 200
        assert await redis.hlen(key) == 1  # no last_seen write: the login was a sighting a moment ago
        start = list_.clock
        later = start() + LAST_SEEN_EVERY + 1  # one instant: a listing that reads the clock a second on agrees
        list_.clock = lambda: later
        try:
            for _ in range(20):
                assert (await browser.request("GET", "/api/notes/x")).status_code == 200
            await list_.settle()  # the write's task has run
            seen = await redis.hget(key, f"{mine['id']}:t")
            assert seen is not None and int(seen) == int(later)
            assert (await listing(browser))[0]["last_seen_at"] == int(seen)
        finally:
            list_.clock = start
    finally:
        await redis.aclose()


async def test_last_seen_never_writes_back_an_ended_session(rig: Rig) -> None:
    laptop = await logged_in(rig)
    phone = await logged_in(rig, agent="Phone")
    list_ = next(r.endpoint.__self__ for r in rig.app.routes if getattr(r, "path", "") == "/bff/sessions").list
    phone_id = (await listing(laptop))[1]["id"]
    assert (await laptop.request("DELETE", f"/bff/sessions/{phone_id}")).status_code == 204
    await list_._write_seen("sub-alice", str(phone_id), 123)  # a write that was in flight when it ended
    redis = aioredis.Redis.from_url(rig.settings.redis_url)
    try:
        assert not await redis.hexists(list_key("sub-alice"), f"{phone_id}:t")
    finally:
        await redis.aclose()
    assert not await alive(phone)


async def test_sessions_ended_otherwise_drop_out_of_the_list(rig: Rig) -> None:
    laptop = await logged_in(rig)
    phone = await logged_in(rig, agent="Phone")
    assert (await phone.request("POST", "/bff/logout")).status_code == 200
    assert [s["current"] for s in await listing(laptop)] == [True]


@pytest.mark.bff_env(BFF_MAX_SESSIONS_PER_USER="3")
async def test_a_login_beyond_the_limit_ends_the_users_oldest_session(rig: Rig) -> None:
    """Each login through the provider's SSO session makes a session: without a limit one user could fill Redis. The
    fourth login ends the oldest (its refresh token revoked at the provider, as ending it on /bff/sessions does)."""
    browsers = [await logged_in(rig, agent=f"Browser/{i}") for i in range(3)]
    bob = await logged_in(rig, "bob")
    revoked = len(rig.provider.revoked)
    newest = await logged_in(rig, agent="Browser/3")
    assert [await alive(b) for b in browsers] == [False, True, True] and await alive(newest) and await alive(bob)
    assert [s["user_agent"] for s in await listing(newest)] == ["Browser/1", "Browser/2", "Browser/3"]
    assert len(rig.provider.revoked) == revoked + 1
    assert 'bff_sessions_total{event="ended_by_limit"} 1.0' in (await rig.browser().request("GET", "/metrics")).text


@pytest.mark.bff_env(BFF_MAX_SESSIONS_PER_USER="1")
async def test_a_limit_that_cannot_be_enforced_is_logged_and_counted(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis fails while a login ends the user's oldest: the login stands, and the failure is a WARNING naming the
    setting and a count of its own (the next login tries again)."""
    first = await logged_in(rig, agent="Old/1")

    async def unreachable(self: SessionList, sub: str) -> list[Entry]:
        raise StoreUnavailable()

    monkeypatch.setattr(SessionList, "entries", unreachable)
    second = await logged_in(rig, agent="New/1")
    assert await alive(second) and await alive(first)
    assert "BFF_MAX_SESSIONS_PER_USER" in caplog.text
    assert 'bff_sessions_total{event="limit_failed"} 1.0' in (await rig.browser().request("GET", "/metrics")).text
    monkeypatch.undo()
    await logged_in(rig, agent="Next/1")  # the next login ends both older ones
    assert not await alive(first) and not await alive(second)


@pytest.mark.bff_env(BFF_MAX_SESSIONS_PER_USER="1")
async def test_logins_at_the_same_time_never_end_the_newest(rig: Rig) -> None:
    """Each login ends only sessions older than itself: two at once must not end each other's new session."""
    first = await logged_in(rig, agent="Old/1")
    browsers = await asyncio.gather(*(logged_in(rig, agent=f"Now/{i}") for i in range(2)))
    states = [await alive(b) for b in browsers]
    assert not await alive(first) and any(states), states  # the oldest went; the newest of the two stayed
