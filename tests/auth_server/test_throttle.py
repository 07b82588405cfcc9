"""Login and sign-up throttling per client address (issue #10 item 8): an attacker's failures lock out only the
attacker's address, spraying from one address is capped, X-Forwarded-For is believed only from trusted proxies,
only failures count, and sign-ups are limited per address."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from auth_server.app import create_app
from auth_server.throttle import address_bucket
from servicekit.proxies import TrustedProxies, networks
from servicekit.settings import SettingsError

from .helpers import PASSWORD, USERNAME, authorize_params, form_of, login, make_settings, pkce

pytestmark = pytest.mark.anyio

ClientAt = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
async def served(redis_url: str, keys_dir: Path) -> AsyncIterator[Callable[..., Any]]:
    """``served(**env)`` → an app with its lifespan running, and ``at(address, xff=None)`` clients for it: each
    connects from ``address`` (the ASGI scope's client), optionally sending ``X-Forwarded-For``."""
    async with contextlib.AsyncExitStack() as stack:

        async def serve(**env: str) -> ClientAt:
            app = create_app(make_settings(redis_url, keys_dir, **env))
            await stack.enter_async_context(app.router.lifespan_context(app))

            @contextlib.asynccontextmanager
            async def at(address: str, xff: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
                transport = httpx.ASGITransport(app, client=(address, 40000))
                headers = {"X-Forwarded-For": xff} if xff is not None else {}
                async with httpx.AsyncClient(transport=transport, base_url="http://auth.test", headers=headers) as c:
                    yield c

            return at

        yield serve


async def sign_up(client: httpx.AsyncClient, username: str = USERNAME, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/users", json={"username": username, "password": password})


async def test_an_attackers_failures_lock_out_only_the_attackers_address(served: Any) -> None:
    at = await served()
    params = authorize_params(pkce()[1])
    async with at("203.0.113.66") as attacker, at("198.51.100.7") as user:
        assert (await sign_up(user)).status_code == 201
        for _ in range(10):
            assert (await login(attacker, params, USERNAME, "wrong-password")).status_code == 400
        locked = await login(attacker, params, USERNAME, PASSWORD)  # even the right password, from there
        assert locked.status_code == 429
        assert 0 < int(locked.headers["retry-after"]) <= 900
        assert (await attacker.get("/oauth/authorize", params=params)).status_code == 200  # the form stays up
        assert (await login(user, params)).status_code == 302  # the user, elsewhere, is not locked out


async def test_concurrent_correct_logins_all_succeed(served: Any) -> None:
    """Only failures count: 20 correct logins in flight at once are not 10 × 429 (they were: attempts counted)."""
    at = await served()
    params = authorize_params(pkce()[1])
    async with at("198.51.100.7") as user:
        assert (await sign_up(user)).status_code == 201
        page = await user.get("/oauth/authorize", params=params)
        fields = {**form_of(page.text).fields, "username": USERNAME, "password": PASSWORD}
        responses = await asyncio.gather(*(user.post("/oauth/authorize", data=fields) for _ in range(20)))
        assert [r.status_code for r in responses] == [302] * 20


async def test_parallel_guesses_from_many_addresses_stop_at_each_limit(served: Any) -> None:
    """In-flight attempts are held within the limit, from one address and across the per-account backstop."""
    at = await served(AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT="14")
    params = authorize_params(pkce()[1])
    async with at("203.0.113.1") as a, at("203.0.113.2") as b, at("198.51.100.7") as user:
        assert (await sign_up(user)).status_code == 201
        fields_a = {**form_of((await a.get("/oauth/authorize", params=params)).text).fields, "username": USERNAME}
        fields_b = {**form_of((await b.get("/oauth/authorize", params=params)).text).fields, "username": USERNAME}
        guesses = [a.post("/oauth/authorize", data={**fields_a, "password": f"guess-a{i}"}) for i in range(12)]
        guesses += [b.post("/oauth/authorize", data={**fields_b, "password": f"guess-b{i}"}) for i in range(12)]
        codes = [r.status_code for r in await asyncio.gather(*guesses)]
        assert codes.count(400) == 14 and codes.count(429) == 10, codes  # 14 checked: the backstop, never more
        assert codes[:12].count(400) <= 10 and codes[12:].count(400) <= 10  # and at most 10 from each address
        # The backstop is reached: the account is closed from everywhere until the window ends (or a success).
        assert (await login(user, params)).status_code == 429


async def test_spraying_many_accounts_from_one_address_is_capped(served: Any) -> None:
    at = await served(AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS="5")
    params = authorize_params(pkce()[1])
    async with at("203.0.113.66") as sprayer, at("198.51.100.7") as user:
        assert (await sign_up(user)).status_code == 201
        assert (await sign_up(user, "sprayer", "sprayer-password")).status_code == 201
        for i in range(5):  # one guess per account: no per-account lock is ever reached
            assert (await login(sprayer, params, f"victim{i}", "Summer2026!")).status_code == 400
        # A success of the sprayer's own account does not clear the address's count...
        refused = await login(sprayer, params, "sprayer", "sprayer-password")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert (await login(sprayer, params, USERNAME, "Summer2026!")).status_code == 429
        assert (await login(user, params)).status_code == 302  # ...and other addresses are not affected


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(served: Any) -> None:
    """Without AUTH_TRUSTED_PROXIES (the default), a rotating X-Forwarded-For buys an attacker nothing."""
    at = await served()
    params = authorize_params(pkce()[1])
    async with at("198.51.100.7") as user:
        assert (await sign_up(user)).status_code == 201
    for i in range(10):
        async with at("203.0.113.66", xff=f"192.0.2.{i}") as attacker:
            assert (await login(attacker, params, USERNAME, "wrong-password")).status_code == 400
    async with at("203.0.113.66", xff="192.0.2.200") as attacker:
        assert (await login(attacker, params)).status_code == 429


async def test_forwarded_for_is_believed_from_a_trusted_proxy(served: Any) -> None:
    at = await served(AUTH_TRUSTED_PROXIES="10.0.0.0/8")
    params = authorize_params(pkce()[1])
    async with at("10.0.0.5", xff="198.51.100.7") as user:
        assert (await sign_up(user)).status_code == 201
    # The attacker forges the left part of the chain; the proxy appends the address it really saw.
    for i in range(10):
        async with at("10.0.0.5", xff=f"192.0.2.{i}, 203.0.113.66") as attacker:
            assert (await login(attacker, params, USERNAME, "wrong-password")).status_code == 400
    async with at("10.0.0.5", xff="192.0.2.250, 203.0.113.66") as attacker:
        assert (await login(attacker, params)).status_code == 429
    async with at("10.0.0.5", xff="198.51.100.7") as user:  # another client behind the same proxy
        assert (await login(user, params)).status_code == 302


async def test_sign_ups_are_limited_per_address(served: Any) -> None:
    at = await served(AUTH_SIGNUP_MAX_PER_ADDRESS="3")
    async with at("203.0.113.66") as flood, at("198.51.100.7") as other:
        form = form_of((await flood.get("/register")).text)  # fetched while still allowed
        # Malformed attempts and taken names cost no hash and are not counted.
        assert (await flood.post("/users", json={"username": "x", "password": "short"})).status_code == 400
        assert (await sign_up(other, "taken")).status_code == 201
        for _ in range(4):
            assert (await sign_up(flood, "taken")).status_code == 409
        for i in range(3):
            assert (await sign_up(flood, f"bulk{i}")).status_code == 201
        refused = await sign_up(flood, "bulk3")
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"] == "too_many_requests"
        assert 0 < int(refused.headers["retry-after"]) <= 3600
        assert (await sign_up(flood, "bulk0")).status_code == 429  # used up: no probing for taken names either
        page = await flood.get("/register")
        assert page.status_code == 429 and "Retry-After" in page.headers
        assert "Too many sign-ups" in page.text
        posted = await flood.post("/register", data={**form.fields, "username": "bulk4", "password": PASSWORD})
        assert posted.status_code == 429 and "Retry-After" in posted.headers
        assert (await sign_up(other, "elsewhere")).status_code == 201  # other addresses still sign up


async def test_throttle_keys_are_small_and_expire(served: Any, redis_url: str) -> None:
    at = await served()
    params = authorize_params(pkce()[1])
    async with at("203.0.113.66") as attacker, at("2001:db8::1") as user:
        assert (await sign_up(user)).status_code == 201
        for _ in range(3):
            await login(attacker, params, USERNAME, "wrong-password")
        assert (await login(user, params)).status_code == 302
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = sorted([k.decode() async for k in client.scan_iter("auth:throttle:*")])
        assert keys == [
            "auth:throttle:addr:203.0.113.66",
            f"auth:throttle:pair:203.0.113.66 {USERNAME}",
            "auth:throttle:signup:2001:db8::/64",
        ]  # the user's success cleared the account's count; its address had no failures
        for key in keys:
            assert 0 < await client.ttl(key) <= 3600
        assert await client.hgetall(f"auth:throttle:pair:203.0.113.66 {USERNAME}") == {b"f": b"3"}  # none in flight
    finally:
        await client.aclose()


def test_client_address_walks_the_forwarded_chain_from_the_right() -> None:
    proxies = TrustedProxies(networks("AUTH_TRUSTED_PROXIES", "10.0.0.0/8, ::1/128"))
    xff = [(b"x-forwarded-for", b"192.0.2.1, 203.0.113.9"), (b"x-forwarded-for", b"10.1.1.1")]
    assert proxies.client_address("10.0.0.5", xff) == "203.0.113.9"  # skips the trusted hop, stops at a stranger
    assert proxies.client_address("203.0.113.1", xff) == "203.0.113.1"  # untrusted peer: its header is ignored
    assert proxies.client_address("::1", [(b"x-forwarded-for", b"::ffff:198.51.100.2")]) == "198.51.100.2"
    assert proxies.client_address("10.0.0.5", [(b"x-forwarded-for", b"not-an-ip, 10.2.2.2")]) == "10.2.2.2"
    assert proxies.client_address("10.0.0.5", []) == "10.0.0.5"
    assert TrustedProxies(()).client_address("10.0.0.5", xff) == "10.0.0.5"  # none trusted: the default
    assert address_bucket("2001:db8:1:2:aaaa::1") == address_bucket("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert address_bucket("/run/auth.sock") == "-"
    with pytest.raises(SettingsError, match="AUTH_TRUSTED_PROXIES"):
        networks("AUTH_TRUSTED_PROXIES", "10.0.0.1/8")


def test_client_address_survives_any_forwarded_for() -> None:
    """Whatever a trusted proxy passes on (it copies the client's own header in front of its entry), the answer is
    the peer or an address some trusted hop vouched for — never an exception, never a non-address."""
    rng = random.Random(10)
    proxies = TrustedProxies(networks("AUTH_TRUSTED_PROXIES", "10.0.0.0/8,::1/128"))
    pieces = [b"10.0.0.7", b"203.0.113.5", b"::1", b"fe80::1%eth0", b"::ffff:10.1.2.3", b"[::1]:80", b"1.2.3.4:5",
              b"unknown", b"_hidden", b"\xff\xfe", b"", b" ", b",", b"\x00", b"9.9.9.999", b"::" * 9]  # fmt: skip
    for _ in range(3000):
        value = b",".join(rng.choice(pieces) for _ in range(rng.randint(0, 80)))
        answer = proxies.client_address(rng.choice(["10.0.0.5", "::1", "203.0.113.9"]), [(b"x-forwarded-for", value)])
        assert ipaddress.ip_address(answer)  # an address, always
        assert address_bucket(answer) != "-"


async def test_a_browser_that_signed_in_before_is_not_locked_out_by_guesses_from_elsewhere(served: Any) -> None:
    """Issue #18 item 4: 100 wrong passwords from 10 addresses locked the real user out for 900 s, from anywhere.
    The backstop stays for unknown browsers; the user's own browser, holding the device cookie of a successful
    sign-in, signs in with the right password, and its cookie has a small failure budget of its own."""
    at = await served(AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT="20", AUTH_DEVICE_MAX_FAILURES="3")
    params = authorize_params(pkce()[1])
    async with at("198.51.100.7") as user, at("198.51.100.8") as stranger:
        assert (await sign_up(user)).status_code == 201
        assert (await login(user, params)).status_code == 302  # the device cookie is set now
        device = [name for name in user.cookies if name.startswith("auth-device-")]
        assert len(device) == 1
        for n in range(2):  # the distributed guessing: 20 failures from two addresses close the account
            async with at(f"203.0.113.{n + 1}") as attacker:
                for _ in range(10):
                    assert (await login(attacker, params, USERNAME, "wrong-password")).status_code == 400
        assert (await login(stranger, params)).status_code == 429  # an unknown browser: the backstop holds
        assert (await login(user, params)).status_code == 302  # the user's own browser is not locked out
        # a forged or another account's device cookie is no exemption
        forged = {device[0]: user.cookies[device[0]][:-3] + "AAA"}
        async with at("198.51.100.9") as other:
            other.cookies.update(forged)
            assert (await login(other, params)).status_code == 429
        # the device's own budget: 3 failures, then that cookie is throttled too (a stolen cookie buys 3 guesses)
        for _ in range(3):
            assert (await login(user, params, USERNAME, "wrong-password")).status_code == 400
        assert (await login(user, params)).status_code == 429
