"""A real token from the real auth server, over real sockets, verified by the resource server — also after the
auth server has stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth_server.app import create_app as create_auth_app
from auth_server.settings import Settings as AuthSettings
from resource_server.app import create_app
from resource_server.settings import Settings

from ..conftest import free_port
from .helpers import wait_ready

SECRET = "svc-secret-0123456789"
CLIENTS = [
    {
        "client_id": "svc",
        "client_secret": SECRET,
        "grant_types": ["client_credentials"],
        "scope": "notes:read notes:write",
        "audience": ["notes"],
    }
]


def client_credentials_token(auth_url: str, scope: str) -> str:
    response = httpx.post(
        auth_url + "/oauth/token",
        auth=("svc", SECRET),
        data={"grant_type": "client_credentials", "scope": scope},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_a_real_access_token_verifies_and_keeps_verifying_with_the_auth_server_stopped(
    alg: str, redis_url: str, server_factory: Any, tmp_path: Path
) -> None:
    auth_port = free_port()
    issuer = f"http://127.0.0.1:{auth_port}"
    auth_settings = AuthSettings.from_env(
        {
            "AUTH_ISSUER": issuer,
            "REDIS_URL": redis_url,
            "AUTH_KEYS_DIR": str(tmp_path / "keys"),
            "AUTH_SIGNING_ALG": alg,
            "AUTH_CLIENTS": json.dumps(CLIENTS),
            "AUTH_FORM_SECRET": "x" * 32,
        }
    )
    auth = server_factory(create_auth_app(auth_settings), port=auth_port)
    rs = server_factory(create_app(Settings.from_env({"RS_ISSUER": issuer, "REDIS_URL": redis_url})))
    assert wait_ready(rs.url).status_code == 200  # keys discovered from the auth server's metadata and loaded

    token = client_credentials_token(auth.url, "notes:read notes:write")
    me = httpx.get(rs.url + "/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert me.status_code == 200, me.text
    assert me.json() == {"sub": "svc", "scope": "notes:read notes:write", "client_id": "svc", "aud": "notes"}
    read_only = client_credentials_token(auth.url, "notes:read")  # first used after the auth server is gone

    auth.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(auth.url + "/.well-known/jwks.json", timeout=1)
    headers = {"Authorization": f"Bearer {read_only}"}
    assert httpx.get(rs.url + "/notes", headers=headers, timeout=5).json() == {"notes": []}
    created = httpx.post(rs.url + "/notes", headers=headers, json={"text": "x"}, timeout=5)
    assert created.status_code == 403
    assert created.headers["www-authenticate"].endswith('scope="notes:write"')
    assert httpx.get(rs.url + "/readyz", timeout=5).status_code == 200  # cached keys keep it ready
    metrics = httpx.get(rs.url + "/metrics", timeout=5).text
    assert 'rs_jwks_fetches_total{outcome="ok"} 1.0' in metrics
