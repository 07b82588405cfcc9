"""Settings: defaults from DESIGN §4, named failures, the plain-http cookie name, no secret in a repr."""

from __future__ import annotations

import pytest

from bff.settings import Settings, SettingsError


def test_defaults() -> None:
    s = Settings.from_env({"BFF_CLIENT_SECRET": "sekrit-value-123"})
    assert (
        s.issuer,
        s.client_id,
        s.public_url,
        {name: route.url for name, route in s.routes.items()},
        s.scopes,
        s.cookie_name,
        s.cookie_secure,
        s.idle_ttl,
        s.absolute_ttl,
        s.refresh_skew,
        s.redis_url,
    ) == (
        "http://localhost:9000",
        "bff",
        "http://localhost:8000",
        {"notes": "http://localhost:9001"},
        "openid notes:read notes:write",
        "__Host-session",
        True,
        1800,
        43200,
        30,
        "redis://localhost:6379/0",
    )
    assert s.redirect_uri == "http://localhost:8000/bff/callback"
    assert "sekrit" not in repr(s) and "sekrit" not in str(s)


def test_plain_http_drops_the_host_prefix() -> None:
    s = Settings.from_env({"BFF_CLIENT_SECRET": "x", "BFF_COOKIE_SECURE": "false"})
    assert s.cookie_name == "session" and s.login_cookie_name == "bff-login"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({}, "BFF_CLIENT_SECRET"),
        ({"BFF_ROUTES": "not json"}, "BFF_ROUTES"),
        ({"BFF_ROUTES": '{"a": "ftp://x"}'}, "BFF_ROUTES[a]"),
        ({"BFF_ROUTES": '{"a/b": "http://x"}'}, "BFF_ROUTES"),
        ({"BFF_IDLE_TTL": "soon"}, "BFF_IDLE_TTL"),
        ({"BFF_COOKIE_SECURE": "maybe"}, "BFF_COOKIE_SECURE"),
        ({"BFF_ISSUER": "localhost"}, "BFF_ISSUER"),
        ({"BFF_AUTH_TIMEOUT": "-1"}, "BFF_AUTH_TIMEOUT"),
        ({"BFF_COOKIE_NAME": "a;b"}, "BFF_COOKIE_NAME"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    base = {} if name == "BFF_CLIENT_SECRET" else {"BFF_CLIENT_SECRET": "x"}
    with pytest.raises(SettingsError, match=name.replace("[", r"\[")):
        Settings.from_env({**base, **env})


def test_serve_fails_fast_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bff.__main__ import main

    monkeypatch.delenv("BFF_CLIENT_SECRET", raising=False)
    with pytest.raises(SystemExit):
        main(["serve", "--port", "1"])
    assert "BFF_CLIENT_SECRET" in capsys.readouterr().err
