"""``REDIS_URL=redis+sentinel://…`` in all three services, on a real master + replica + three sentinels."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from servicekit.redis import RedisURLError, parse_sentinel_url
from tests.conftest import RedisSentinel


def test_the_sentinel_url_form() -> None:
    assert parse_sentinel_url("redis+sentinel://h1:26379,h2:26380/mymaster/2") == (
        [("h1", 26379), ("h2", 26380)],
        "mymaster",
        2,
        None,
        None,
    )
    assert parse_sentinel_url("redis+sentinel://:s%40cret@h1,[::1]:5000/main") == (
        [("h1", 26379), ("::1", 5000)],
        "main",
        0,
        None,
        "s@cret",
    )
    assert parse_sentinel_url("redis+sentinel://app:pw@h1:1/m/0")[3:] == ("app", "pw")
    for bad in (
        "redis+sentinel://h1:26379",  # no master name
        "redis+sentinel:///mymaster",  # no sentinel
        "redis+sentinel://h1:port/mymaster",
        "redis+sentinel://h1:1/mymaster/zero",
        "redis+sentinel://h1:1/a/0/extra",
    ):
        with pytest.raises(RedisURLError):
            parse_sentinel_url(bad)


def test_a_malformed_sentinel_url_stops_every_service_at_start_up() -> None:
    from auth_server.settings import Settings as AuthSettings
    from bff.settings import Settings as BffSettings
    from resource_server.settings import Settings as RsSettings
    from servicekit.settings import SettingsError

    env = {"REDIS_URL": "redis+sentinel://h1:26379", "BFF_CLIENT_SECRET": "x" * 16}
    for settings in (AuthSettings, BffSettings, RsSettings):
        with pytest.raises(SettingsError, match="REDIS_URL"):
            settings.from_env(env)
    assert BffSettings.from_env({**env, "REDIS_URL": "redis+sentinel://h1/m"}).redis_url == "redis+sentinel://h1/m"


def test_all_three_services_run_on_sentinel(redis_sentinel: RedisSentinel, tmp_path: Any, server_factory: Any) -> None:
    from auth_server.app import create_app as auth_app
    from auth_server.settings import Settings as AuthSettings
    from bff.app import create_app as bff_app
    from bff.settings import Settings as BffSettings
    from resource_server.app import create_app as rs_app
    from resource_server.settings import Settings as RsSettings

    env = {
        "REDIS_URL": redis_sentinel.url,
        "AUTH_KEYS_DIR": str(tmp_path),
        "BFF_CLIENT_SECRET": "sentinel-test-secret",
        "BFF_ISSUER": "http://127.0.0.1:9",  # no auth server: only the store matters here
    }
    auth = server_factory(auth_app(AuthSettings.from_env(env))).url
    created = httpx.post(f"{auth}/users", json={"username": "sentinel-user", "password": "long enough password"})
    assert created.status_code == 201, created.text
    assert httpx.get(f"{auth}/readyz").json()["checks"]["redis"] == "ok"
    keys = redis_sentinel.cli(redis_sentinel.master_port(), "--scan", "--pattern", "auth:*")
    assert "sentinel-user" in keys
    rs = server_factory(rs_app(RsSettings.from_env(env))).url
    assert httpx.get(f"{rs}/readyz").json()["redis"] is True
    bff = server_factory(bff_app(BffSettings.from_env(env))).url
    assert httpx.get(f"{bff}/readyz").json()["checks"]["store"] == "ok"
