"""Over real sockets: keys fetched from a running issuer keep verifying after it stops; huge tokens never 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from resource_server.verifier import InvalidToken, TokenVerifier
from resource_server.verifier.testing import FakeIssuer, KeyPair

from .helpers import AUDIENCE, guarded_app

pytestmark = pytest.mark.anyio


async def test_verification_keeps_working_with_the_auth_server_stopped(server_factory: Any) -> None:
    issuer = FakeIssuer("http://127.0.0.1", AUDIENCE, "ES256")
    auth = server_factory(issuer.asgi_app())
    issuer.issuer = auth.url  # the issuer URL is where its metadata is served
    verifier = TokenVerifier(issuer.issuer, AUDIENCE, cooldown=0)
    async with verifier:
        assert await verifier.start()
        assert (await verifier.verify(issuer.token("notes:read")))["scope"] == "notes:read"
        auth.stop()
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as http:
                await http.get(auth.url + "/.well-known/jwks.json", timeout=1)
        assert not await verifier.keys.refresh(force=True)
        for _ in range(3):
            assert (await verifier.verify(issuer.token("notes:write")))["scope"] == "notes:write"
        with pytest.raises(InvalidToken) as caught:  # an unknown kid tries the dead server and fails cleanly
            await verifier.verify(issuer.token(key=KeyPair("ES256")))
        assert caught.value.reason == "unknown_kid"


def test_a_200_kb_token_over_a_real_socket_is_401_or_431(server_factory: Any) -> None:
    issuer = FakeIssuer("https://auth.example.test", AUDIENCE)
    server = server_factory(guarded_app(issuer.verifier()))
    with httpx.Client(base_url=server.url, timeout=5) as http:
        for token in ("A" * 200_000, issuer.token(padding="x" * 9000), "a.b.c"):
            response = http.get("/claims", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code in (401, 431), response.text
            if response.status_code == 401:
                assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert http.get("/claims", headers={"Authorization": f"Bearer {issuer.token()}"}).status_code == 200
