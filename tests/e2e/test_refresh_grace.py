"""DESIGN §9, the known gap of the last round: a BFF killed between the auth server's rotation of a refresh token
and saving the new pair loses no session, thanks to the auth server's refresh retry grace."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.anyio


async def test_a_bff_killed_between_rotation_and_save_loses_no_session(
    stack_factory: Any, process_factory: Any
) -> None:
    stack: Stack = stack_factory(access_ttl=2, bff_thread=False, BFF_REFRESH_SKEW="0", BFF_LOCK_LEASE="1")
    port = int(stack.bff_url.rsplit(":", 1)[1])
    doomed = process_factory(["-m", "bff", "serve"], stack.bff_env, port=port)
    survivor = process_factory(["-m", "bff", "serve"], stack.bff_env)
    browser = stack.browser()
    assert (await stack.login(browser)).status_code == 302
    cookie = {"Cookie": "; ".join(f"{k}={v}" for k, v in browser.cookies.items()), "X-CSRF": "1"}
    await asyncio.sleep(2.1)  # the access token has expired: the next request refreshes

    stack.gate.hold = True  # the auth server rotates the family, but its answer does not reach the BFF yet ...
    async with httpx.AsyncClient(timeout=30) as client:
        dying = asyncio.ensure_future(client.get(doomed.url + "/api/notes/me", headers=cookie))
        assert await asyncio.to_thread(stack.gate.held.wait, 15), "the refresh never reached the auth server"
        assert doomed.proc is not None
        doomed.proc.send_signal(signal.SIGKILL)  # ... and the BFF dies before it could save the new pair
        doomed.proc.wait(10)
        stack.gate.hold = False
        stack.gate.released.set()
        with pytest.raises(httpx.HTTPError):
            await dying
        assert stack.gate.refreshes == 1

        # The other replica: the dead one's lock lapses (1 s lease), it refreshes with the rotated token within the
        # grace, gets the very pair the dead one lost, and the user never notices.
        after = await client.get(survivor.url + "/api/notes/me", headers=cookie)
        assert after.status_code == 200, after.text
        assert stack.gate.refreshes == 2
        # the login is whole: the next expiry refreshes with the recovered refresh token, no reuse detected
        await asyncio.sleep(2.1)
        again = await client.get(survivor.url + "/api/notes/me", headers=cookie)
        assert again.status_code == 200, again.text
        assert stack.gate.refreshes == 3
        feed = (await client.get(stack.auth_url + "/oauth/revocations")).json()
        assert feed["revocations"] == []  # no family was revoked on the way
