"""An auth server slower than BFF_AUTH_TIMEOUT during a refresh must not log the user out.

The BFF stops waiting (503, fine), but the auth server still completes the grant and rotates the family; if the BFF
dropped that answer, its next refresh would present a consumed jti -> reuse -> family revoked -> 401. The refresh
therefore runs on after its requests gave up, and saves the late answer (bff/refresh.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.anyio


async def test_auth_server_slower_than_the_timeout_does_not_log_out(stack_factory: Any) -> None:
    stack: Stack = stack_factory(access_ttl=2, BFF_REFRESH_SKEW="0", BFF_AUTH_TIMEOUT="1")
    browser = stack.browser()
    await stack.login(browser)
    await asyncio.sleep(2.1)  # the access token has expired: the next request refreshes
    stack.gate.delay = 1.5  # the auth server answers after the BFF's 1 s timeout
    slow = await browser.request("GET", "/api/notes/me")
    assert slow.status_code == 503  # temporary: fine
    stack.gate.delay = 0
    await asyncio.sleep(1.0)  # the auth server has rotated the family meanwhile
    after = await browser.request("GET", "/api/notes/me")
    assert after.status_code == 200, after.text  # not 401 login_required (refresh-token reuse)
