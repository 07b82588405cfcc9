from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from auth_server.app import create_app
from auth_server.keys import write_key

from .helpers import PASSWORD, USERNAME, make_settings, serve_in_process


@pytest.fixture(scope="session")
def _shared_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RSA key for the whole run (key generation is the slow part of app start-up)."""
    path = tmp_path_factory.mktemp("auth-keys")
    write_key(path, "RS256")
    return path


@pytest.fixture
def keys_dir(_shared_keys: Path, tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    shutil.copytree(_shared_keys, path)
    return path


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def app(redis_url: str, keys_dir: Path) -> Any:
    return create_app(make_settings(redis_url, keys_dir))


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_in_process(app) as c:
        yield c


@pytest.fixture
async def user(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/users", json={"username": USERNAME, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return dict(response.json())
