"""Readiness comes back by itself once the operator fixes the provider's side (DESIGN §12: misconfigured "until a
later call to the provider succeeds"): /readyz asks the provider again, at most every RECHECK_INTERVAL seconds,
because an instance out of its load balancer gets no user whose call could succeed."""

from __future__ import annotations

import logging

import pytest

import bff.auth_client
from tests.bff.conftest import Rig

pytestmark = pytest.mark.anyio


async def test_readiness_recovers_when_the_provider_accepts_the_client_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    browser = await rig.logged_in()
    caplog.set_level(logging.INFO)
    rig.provider.refuse_client = True  # the client's secret was rotated at the provider, not at the BFF
    refused = await rig.browser().login(rig.provider_client)
    assert refused.status_code == 500 and refused.json()["error"] == "server_misconfigured"
    client = rig.browser().client
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "misconfigured"
    assert "BFF_CLIENT_SECRET" in ready.json()["reason"]
    assert (await client.get("/readyz")).json()["status"] == "misconfigured"  # no new probe within the interval
    rig.provider.refuse_client = False  # the operator puts the secret back at the provider
    monkeypatch.setattr(bff.auth_client, "RECHECK_INTERVAL", 0.0)
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    assert any("accepts the BFF's client again" in r.getMessage() for r in caplog.records)
    assert (await browser.request("GET", "/bff/user")).status_code == 200  # the session lived through it
    assert (await rig.browser().login(rig.provider_client)).status_code == 302  # no back-off left over
