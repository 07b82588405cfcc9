"""Health, readiness, metrics, a Redis outage, and the commands (`python -m auth_server ...`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth_server.app import create_app

from .helpers import (
    CLIENTS,
    SVC_SECRET,
    authorize_params,
    location_params,
    login,
    make_settings,
    pkce,
    serve_in_process,
)

pytestmark = pytest.mark.anyio


async def test_health_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "signing_key": "ok"}
    await client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("svc", SVC_SECRET))
    await client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("svc", "wrong"))
    await client.get("/no/such/path")
    assert (await client.delete("/oauth/token")).status_code == 405
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'auth_token_grants_total{grant_type="client_credentials",outcome="ok"} 1.0' in text
    assert 'auth_token_grants_total{grant_type="client_credentials",outcome="invalid_client"} 1.0' in text
    assert 'auth_http_requests_total{method="POST",route="/oauth/token",status="200"} 1.0' in text
    assert 'route="unmatched",status="404"' in text and "/no/such/path" not in text
    assert 'auth_http_requests_total{method="DELETE",route="/oauth/token",status="405"} 1.0' in text
    assert "auth_http_request_duration_seconds_bucket" in text


async def test_a_redis_outage_is_a_503_and_recovers(redis_factory: Any, keys_dir: Path) -> None:
    server = redis_factory()
    app = create_app(make_settings(server.url, keys_dir))
    async with serve_in_process(app) as client:
        created = await client.post("/users", json={"username": "alice", "password": "alice-password"})
        assert created.status_code == 201
        server.stop()
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200
        down = await client.post("/users", json={"username": "bob", "password": "bob-password"})
        assert down.status_code == 503 and down.json()["error"] == "temporarily_unavailable"
        params = authorize_params(pkce()[1])
        assert (await login(client, params, "alice", "alice-password")).status_code == 503
        token = await client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": "x"},
            auth=("bff", "bff-secret-0123456789"),
        )
        assert token.status_code in (400, 503)
        server.start()
        assert (await client.get("/readyz")).status_code == 200
        assert location_params(await login(client, params, "alice", "alice-password"))["code"]


def test_the_app_starts_while_redis_is_down(keys_dir: Path) -> None:
    from tests.conftest import free_port

    app = create_app(make_settings(f"redis://127.0.0.1:{free_port()}/0", keys_dir))
    assert app is not None


def _env(redis_url: str, keys_dir: Path) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "AUTH_KEYS_DIR": str(keys_dir), "AUTH_CLIENTS": json.dumps(CLIENTS)}


def _run(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auth_server", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_commands(redis_url: str, tmp_path: Path, process_factory: Any) -> None:
    keys_dir = tmp_path / "keys"
    env = _env(redis_url, keys_dir)
    added = _run(["users", "add", "henry", "--password", "henry-password"], env)
    assert added.returncode == 0, added.stderr
    from_stdin = _run(["users", "add", "ivy"], env, stdin="ivy-password\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    taken = _run(["users", "add", "ivy", "--password", "x" * 10], env)
    assert taken.returncode == 1 and "username" in taken.stderr
    rotated = _run(["keys", "rotate"], env)
    assert rotated.returncode == 0 and "new signing key" in rotated.stdout
    assert len(list(keys_dir.glob("*.pem"))) == 1
    bad = _run([], {**env, "AUTH_SIGNING_ALG": "HS256"})
    assert bad.returncode == 2 and "AUTH_SIGNING_ALG" in bad.stderr

    proc = process_factory(["-m", "auth_server"], env)
    assert httpx.get(proc.url + "/readyz").status_code == 200
    assert len(httpx.get(proc.url + "/.well-known/jwks.json").json()["keys"]) == 1
    # The users added by the command can log in.
    form = httpx.get(proc.url + "/oauth/authorize", params=authorize_params(pkce()[1]))
    assert form.status_code == 200


def test_a_keys_directory_that_cannot_be_made_fails_start_up_clearly(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    result = _run([], {"AUTH_KEYS_DIR": str(tmp_path / "a-file" / "keys")})
    assert result.returncode == 2 and "none can be made there" in result.stderr and "Traceback" not in result.stderr


def test_host_and_port_go_before_or_after_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    import auth_server.__main__ as cli

    seen: list[tuple[str, int, int]] = []
    monkeypatch.setattr(
        cli, "_serve", lambda settings, host, port, limits: seen.append((host, port, limits.max_header_bytes)) or 0
    )
    monkeypatch.setenv("AUTH_CLIENTS", "[]")
    monkeypatch.setenv("HTTP_MAX_HEADER_BYTES", "4096")
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "9100", "--max-header-bytes", "2048"]) == 0
    assert cli.main(["--host", "10.0.0.1", "--port", "9200", "--max-header-bytes", "3000", "serve"]) == 0
    assert cli.main(["--port", "9300"]) == 0
    assert seen == [("0.0.0.0", 9100, 2048), ("10.0.0.1", 9200, 3000), ("127.0.0.1", 9300, 4096)]
