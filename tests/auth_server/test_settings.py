"""Settings: defaults from DESIGN §4, bad values named, secrets kept out of repr."""

from __future__ import annotations

import json

import pytest

from auth_server.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.issuer == "http://localhost:9000" and str(settings.keys_dir) == "keys"
    assert (settings.signing_alg, settings.access_ttl, settings.refresh_ttl, settings.family_ttl) == (
        "RS256",
        300,
        1_209_600,
        2_592_000,
    )
    assert settings.clients == () and settings.code_ttl == 60 and settings.login_max_failures == 10


def test_clients_exactly_as_design_shows_and_secrets_out_of_repr() -> None:
    raw = [
        {
            "client_id": "bff",
            "client_secret": "s3cret-value",
            "redirect_uris": ["http://localhost:8000/bff/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": "openid notes:read notes:write",
            "audience": ["notes"],
        }
    ]
    settings = Settings.from_env({"AUTH_CLIENTS": json.dumps(raw), "AUTH_FORM_SECRET": "form-secret-value-123"})
    [client] = settings.clients
    assert client.scope == ("openid", "notes:read", "notes:write") and client.audience == ("notes",)
    assert "s3cret-value" not in repr(settings) and "form-secret-value" not in repr(settings)
    assert settings.client("bff") is client and settings.client("nope") is None


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"AUTH_ISSUER": "ftp://x"}, "AUTH_ISSUER"),
        ({"AUTH_ISSUER": "http://x/?a=1"}, "AUTH_ISSUER"),
        ({"AUTH_SIGNING_ALG": "none"}, "AUTH_SIGNING_ALG"),
        ({"AUTH_SIGNING_ALG": "HS256"}, "AUTH_SIGNING_ALG"),
        ({"AUTH_ACCESS_TTL": "soon"}, "AUTH_ACCESS_TTL"),
        ({"AUTH_REFRESH_TTL": "0"}, "AUTH_REFRESH_TTL"),
        ({"AUTH_CODE_TTL": "3600"}, "AUTH_CODE_TTL"),
        ({"AUTH_FORM_SECRET": "short"}, "AUTH_FORM_SECRET"),
        ({"AUTH_CLIENTS": "{"}, "AUTH_CLIENTS"),
        ({"AUTH_CLIENTS": "{}"}, "AUTH_CLIENTS"),
        ({"AUTH_CLIENTS": '[{"client_id": ""}]'}, "AUTH_CLIENTS"),
        (
            {"AUTH_CLIENTS": '[{"client_id": "a", "redirect_uris": ["http://a/cb"], "grant_types": ["password"]}]'},
            "AUTH_CLIENTS",
        ),
        ({"AUTH_CLIENTS": '[{"client_id": "a", "grant_types": ["authorization_code"]}]'}, "AUTH_CLIENTS"),
        ({"AUTH_CLIENTS": '[{"client_id": "a", "grant_types": ["client_credentials"]}]'}, "AUTH_CLIENTS"),
        ({"AUTH_CLIENTS": '[{"client_id": "a", "redirect_uris": ["/relative"]}]'}, "AUTH_CLIENTS"),
        ({"AUTH_CLIENTS": '[{"client_id": "a", "redirect_uris": ["http://a/cb"], "typo": 1}]'}, "AUTH_CLIENTS"),
        (
            {
                "AUTH_CLIENTS": '[{"client_id": "a", "redirect_uris": ["http://a/cb"]}, '
                '{"client_id": "a", "redirect_uris": ["http://a/cb"]}]'
            },
            "AUTH_CLIENTS",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)
