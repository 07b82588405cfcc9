"""Signing keys: generated on first start, published with kid/alg/use, rotated with the old key kept alive."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import httpx
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from auth_server import keys as keys_module
from auth_server.app import create_app
from auth_server.keys import KeyRing, read_keys, rotate

from .helpers import SVC_SECRET, make_settings, serve_in_process

pytestmark = pytest.mark.anyio


async def cc_token(client: httpx.AsyncClient) -> str:
    response = await client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("svc", SVC_SECRET))
    return str(response.json()["access_token"])


async def test_first_start_makes_a_private_key_and_publishes_it(redis_url: str, tmp_path: Path) -> None:
    keys_dir = tmp_path / "new" / "keys"
    app = create_app(make_settings(redis_url, keys_dir))
    files = list(keys_dir.glob("*.pem"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    async with serve_in_process(app) as client:
        response = await client.get("/.well-known/jwks.json")
        assert "max-age=" in response.headers["cache-control"]
        [jwk] = response.json()["keys"]
        assert jwk["use"] == "sig" and jwk["alg"] == "RS256" and jwk["kty"] == "RSA" and jwk["kid"]
        assert "d" not in jwk and "p" not in jwk
        assert files[0].name.endswith(f"-{jwk['kid']}.pem")
    # A second start reuses the key.
    create_app(make_settings(redis_url, keys_dir))
    assert list(keys_dir.glob("*.pem")) == files


async def test_rotation_publishes_first_then_signs_and_keeps_old_tokens_verifiable(
    redis_url: str, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_module, "RELOAD_INTERVAL", 0.0)
    settings = make_settings(redis_url, keys_dir)
    assert settings.key_activation_delay == settings.jwks_max_age == 300
    app = create_app(settings)
    async with serve_in_process(app) as client:
        old_token = await cc_token(client)
        old_kid = jose_jwt.decode(
            old_token, KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())
        ).header["kid"]
        new, removed = rotate(keys_dir, "RS256", 300, 300)  # what `auth-server keys rotate` does
        assert removed == []
        await asyncio.sleep(0.01)
        os.utime(keys_dir)  # make sure the directory stamp changes even on coarse-mtime filesystems
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert [k["kid"] for k in jwks["keys"]] == [new.kid, old_kid]  # the new key is published at once ...
        key_set = KeySet.import_key_set(jwks)
        assert jose_jwt.decode(await cc_token(client), key_set).header["kid"] == old_kid  # ... but signs later
    # Once the activation delay has passed, the new key signs; the old one stays published for its tokens.
    # (rotate dates a key made in the old key's second one second later, so that names sort by age: wait for it.)
    await asyncio.sleep(max(0.0, new.created - time.time()))
    app = create_app(make_settings(redis_url, keys_dir, AUTH_KEY_ACTIVATION_DELAY="0"))
    async with serve_in_process(app) as client:
        new_token = await cc_token(client)
        jwks = (await client.get("/.well-known/jwks.json")).json()
        assert [k["kid"] for k in jwks["keys"]] == [new.kid, old_kid]
        key_set = KeySet.import_key_set(jwks)
        assert jose_jwt.decode(new_token, key_set).header["kid"] == new.kid
        assert jose_jwt.decode(old_token, key_set).header["kid"] == old_kid


def test_rotation_prunes_keys_whose_tokens_have_all_expired(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    now = int(time.time())
    keys_module.write_key(keys_dir, "ES256", now - 1000)
    keys_module.write_key(keys_dir, "ES256", now - 500)  # retired the oldest 500 s ago
    new, removed = rotate(keys_dir, "ES256", retention=300)
    assert len(removed) == 1 and not removed[0].exists()
    assert [k.created for k in read_keys(keys_dir)] == [now - 500, new.created]
    ring = KeyRing(keys_dir, "ES256", 300)
    assert ring.signing_key is not None and ring.signing_key.kid == new.kid
    # With an activation delay, retirement counts from when the successor starts signing.
    keys_module.write_key(keys_dir, "ES256", now - 5000)
    assert len(keys_module.live_keys(read_keys(keys_dir), 300, now, delay=0)) == 2
    assert len(keys_module.live_keys(read_keys(keys_dir), 300, now, delay=5000)) == 3
    assert len(ring.jwks()["keys"]) == 2


def test_a_broken_key_file_fails_start_up_with_its_name(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / "1700000000-abc.pem").write_text("not a key")
    with pytest.raises(keys_module.KeyFileError, match="1700000000-abc.pem"):
        KeyRing(keys_dir, "RS256", 300)


async def test_discovery_documents(client: httpx.AsyncClient) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        meta = (await client.get(path)).json()
        assert meta["issuer"] == "http://auth.test"
        for name in ("authorization", "token", "revocation", "introspection"):
            assert meta[f"{name}_endpoint"].startswith("http://auth.test/oauth/")
        assert meta["jwks_uri"] == "http://auth.test/.well-known/jwks.json"
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert "password" not in meta["grant_types_supported"]
        assert meta["id_token_signing_alg_values_supported"] == ["RS256"]
