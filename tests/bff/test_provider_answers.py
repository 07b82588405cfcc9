"""How the auth client reads each kind of provider answer (DESIGN §12), one answer at a time over httpx's mock
transport: passing (AuthServerUnavailable, a WARNING, outcome unavailable), the BFF refused (ServerMisconfigured
naming the setting, one ERROR, outcome misconfigured), the request refused (ProviderRejected, outcome refused)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from bff.auth_client import AuthClient
from bff.errors import AuthServerUnavailable, ProviderRejected, ServerMisconfigured
from bff.settings import Settings

pytestmark = pytest.mark.anyio

ISSUER = "http://auth.test"
DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": ISSUER + "/authorize",
    "token_endpoint": ISSUER + "/token",
    "pushed_authorization_request_endpoint": ISSUER + "/par",
    "revocation_endpoint": ISSUER + "/revoke",
    "jwks_uri": ISSUER + "/jwks",
}


def client(answer: httpx.Response, discovery: Any = None, **env: str) -> tuple[AuthClient, list[tuple[str, str]]]:
    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/.well-known/"):
            return httpx.Response(200, json=DISCOVERY if discovery is None else discovery)
        return answer

    calls: list[tuple[str, str]] = []
    settings = Settings.from_env({"BFF_CLIENT_SECRET": "s" * 40, "BFF_ISSUER": ISSUER, **env})
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider))
    return AuthClient(settings, http, on_call=lambda e, o: calls.append((e, o))), calls


REFUSED_BFF = [
    ("token", httpx.Response(401, json={"error": "invalid_client"}), "BFF_CLIENT_SECRET"),
    ("token", httpx.Response(400, json={"error": "unauthorized_client"}), "grant types"),
    ("token", httpx.Response(400, json={"error": "invalid_scope"}), "BFF_SCOPES"),
    ("token", httpx.Response(404, text="no such page"), "BFF_AUTH_INTERNAL_URL"),
    ("par", httpx.Response(401, json={"error": "invalid_client", "error_description": "bad"}), "BFF_CLIENT_SECRET"),
    ("par", httpx.Response(400, json={"error": "invalid_redirect_uri"}), "BFF_PUBLIC_URL"),
    (
        "par",
        httpx.Response(400, json={"error": "invalid_request", "error_description": "unknown redirect_uri"}),
        "BFF_PUBLIC_URL",
    ),  # fmt: skip
    ("revocation", httpx.Response(401, json={"error": "invalid_client"}), "BFF_CLIENT_SECRET"),
]


async def call(auth: AuthClient, endpoint: str) -> Any:
    if endpoint == "token":
        return await auth.refresh("rt", "openid")
    if endpoint == "par":
        return await auth.authorization_url(auth.probe_params())
    return await auth.revoke("rt")


@pytest.mark.parametrize(("endpoint", "answer", "setting"), REFUSED_BFF)
async def test_the_provider_refusing_the_bff_names_the_setting(
    endpoint: str, answer: httpx.Response, setting: str, caplog: pytest.LogCaptureFixture
) -> None:
    auth, calls = client(answer)
    caplog.set_level(logging.INFO)
    with pytest.raises(ServerMisconfigured) as raised:
        await call(auth, endpoint)
    assert setting in raised.value.reason and auth.health.reason == raised.value.reason
    assert raised.value.status_code == 500 and raised.value.error == "server_misconfigured"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and setting in errors[0] and f"{endpoint} endpoint" in errors[0]
    assert calls[-1] == (endpoint, "misconfigured")


@pytest.mark.parametrize("endpoint", ["token", "par", "revocation"])
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_5xx_is_passing(endpoint: str, status: int, caplog: pytest.LogCaptureFixture) -> None:
    auth, calls = client(httpx.Response(status, json={"error": "temporarily_unavailable"}))
    caplog.set_level(logging.INFO)
    with pytest.raises(AuthServerUnavailable) as raised:
        await call(auth, endpoint)
    assert raised.value.headers["Retry-After"] and auth.health.reason is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{endpoint} endpoint unavailable" in w and str(status) in w for w in warnings), warnings
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert calls[-1] == (endpoint, "unavailable")


async def test_invalid_grant_is_the_request_refused(caplog: pytest.LogCaptureFixture) -> None:
    auth, calls = client(httpx.Response(400, json={"error": "invalid_grant"}))
    caplog.set_level(logging.INFO)
    with pytest.raises(ProviderRejected):
        await auth.refresh("rt", "openid")
    assert auth.health.reason is None and calls[-1] == ("token", "refused")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a session ending is not a failure


@pytest.mark.parametrize(
    ("discovery", "words"),
    [
        ({**DISCOVERY, "issuer": "http://elsewhere.test"}, "http://elsewhere.test"),
        ({"issuer": ISSUER}, "lacks the authorization or token endpoint"),
        (["not", "an", "object"], "no JSON document"),
    ],
)
async def test_a_discovery_document_that_does_not_fit_is_misconfigured(discovery: Any, words: str) -> None:
    auth, calls = client(httpx.Response(200), discovery)
    with pytest.raises(ServerMisconfigured) as raised:
        await auth.discover()
    assert "BFF_ISSUER" in raised.value.reason and words in raised.value.reason
    assert calls == [("discovery", "misconfigured")]
    with pytest.raises(ServerMisconfigured):  # backed off: no second fetch
        await auth.discover()
    assert len(calls) == 1


async def test_the_backoff_sends_no_token_request_per_call() -> None:
    auth, calls = client(httpx.Response(401, json={"error": "invalid_client"}))
    for _ in range(5):
        with pytest.raises(ServerMisconfigured):
            await auth.refresh("rt", "openid")
    assert [c for c in calls if c[0] == "token"] == [("token", "misconfigured")]
