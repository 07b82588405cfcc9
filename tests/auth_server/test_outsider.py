"""Found attacking the whole stack on loopback as an outsider: each case failed (a 500, or worse) before its fix."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .helpers import BFF_SECRET, tokens_for

pytestmark = pytest.mark.anyio

U64 = 2**64 - 1


@pytest.mark.parametrize(
    "since",
    [f"{U64 + 1}-0", f"0-{U64 + 1}", "9" * 20 + "-0", f"{U64}-{U64 + 1}"],
    ids=["ms_past_64_bits", "seq_past_64_bits", "twenty_nines", "both"],
)
async def test_a_revocation_cursor_past_64_bits_is_400_not_500(client: httpx.AsyncClient, since: str) -> None:
    response = await client.get("/oauth/revocations", params={"since": since})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


async def test_the_last_possible_cursor_reads_nothing_and_the_feed_still_works(
    client: httpx.AsyncClient, user: Any
) -> None:
    last = f"{U64}-{U64}"
    response = await client.get("/oauth/revocations", params={"since": last})
    assert response.status_code == 200, response.text
    assert response.json() == {"revocations": [], "cursor": last, "more": False}
    tokens = await tokens_for(client)
    await client.post("/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=("bff", BFF_SECRET))
    assert len((await client.get("/oauth/revocations", params={"since": f"{U64 - 1}-0"})).json()["revocations"]) == 0
    assert len((await client.get("/oauth/revocations")).json()["revocations"]) == 1
