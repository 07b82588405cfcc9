"""Weak client secrets stop `bff serve` and `auth-server serve` unless a development flag says so (issue #10 9c)."""

from __future__ import annotations

import json

import pytest

from auth_server.settings import Settings as AuthSettings
from bff.settings import Settings as BffSettings
from servicekit.client_secret import weakness
from servicekit.settings import SettingsError


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("", "empty"),
        ("dev-only-change-me-0123456789abcdef", "a well-known placeholder"),  # docker-compose.yml's fallback
        ("Replace-With-A-Long-Random-Secret", "a well-known placeholder"),  # deploy/k8s/secrets.example.yaml's
        ("fifteen-chars!!", "shorter than 16 characters"),
        ("x7Gq2LmP9vR4tW8z", None),
    ],
)
def test_weakness(secret: str, reason: str | None) -> None:
    assert weakness(secret) == reason


def test_the_bff_refuses_a_weak_secret_unless_allowed() -> None:
    with pytest.raises(SettingsError, match=r"BFF_CLIENT_SECRET is shorter than 16 .*BFF_ALLOW_DEV_SECRET=1"):
        BffSettings.from_env({"BFF_CLIENT_SECRET": "short"}).check_client_secret()
    BffSettings.from_env({"BFF_CLIENT_SECRET": "short", "BFF_ALLOW_DEV_SECRET": "1"}).check_client_secret()
    BffSettings.from_env({"BFF_CLIENT_SECRET": "x7Gq2LmP9vR4tW8z-long-enough"}).check_client_secret()
    with pytest.raises(SettingsError, match="BFF_CLIENT_SECRET is required"):  # empty: not even with the flag
        BffSettings.from_env({"BFF_CLIENT_SECRET": "", "BFF_ALLOW_DEV_SECRET": "1"})


def test_the_auth_server_refuses_a_client_with_a_weak_secret_unless_allowed() -> None:
    clients = [
        {"client_id": "pkce-only", "redirect_uris": ["http://app.test/cb"]},  # a public client has no secret
        {"client_id": "svc", "client_secret": "changeme", "grant_types": ["client_credentials"]},
    ]
    env = {"AUTH_CLIENTS": json.dumps(clients)}
    with pytest.raises(SettingsError, match=r"client 'svc' client_secret is a well-known placeholder"):
        AuthSettings.from_env(env).check_client_secrets()
    AuthSettings.from_env({**env, "AUTH_ALLOW_DEV_SECRET": "true"}).check_client_secrets()
