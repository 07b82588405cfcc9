"""Shared helpers for the auth server tests: settings, PKCE, and a browser-like login through the form."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from auth_server.settings import Settings

BFF_SECRET = "bff-secret-0123456789"
SVC_SECRET = "svc-secret-0123456789"
REDIRECT = "http://app.test/bff/callback"
SCOPE = "openid notes:read notes:write"
USERNAME, PASSWORD = "alice", "correct horse battery"
SSO_COOKIE = "auth-sso"  # the SSO session cookie of a plain-http issuer

CLIENTS = [
    {
        "client_id": "bff",
        "client_secret": BFF_SECRET,
        "redirect_uris": [REDIRECT, "http://app.test/other?x=1"],
        "grant_types": ["authorization_code", "refresh_token"],
        "scope": SCOPE,
        "audience": ["notes"],
    },
    {
        "client_id": "spa",
        "redirect_uris": ["http://spa.test/cb"],
        "grant_types": ["authorization_code"],
        "scope": "openid notes:read",
        "audience": ["notes", "other"],
    },
    {
        "client_id": "other",
        "client_secret": "other-secret-0123456789",
        "redirect_uris": ["http://other.test/cb"],
        "scope": SCOPE,
        "audience": ["notes"],
    },
    {
        "client_id": "svc",
        "client_secret": SVC_SECRET,
        "grant_types": ["client_credentials"],
        "scope": "notes:read notes:write",
        "audience": ["notes"],
    },
]


def make_settings(redis_url: str, keys_dir: Path, issuer: str = "http://auth.test", **env: str) -> Settings:
    return Settings.from_env(
        {
            "AUTH_ISSUER": issuer,
            "REDIS_URL": redis_url,
            "AUTH_KEYS_DIR": str(keys_dir),
            "AUTH_CLIENTS": json.dumps(CLIENTS),
            "AUTH_FORM_SECRET": "x" * 32,
            **env,
        }
    )


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(challenge: str, **overrides: str) -> dict[str, str]:
    params = {
        "client_id": "bff",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": SCOPE,
        "state": "st-" + secrets.token_urlsafe(8),
        "nonce": "n-" + secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


class FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action") or ""
        elif tag == "input" and a.get("name") and a.get("type") == "hidden":
            self.fields[str(a["name"])] = a.get("value") or ""


def form_of(html: str) -> FormParser:
    parser = FormParser()
    parser.feed(html)
    return parser


def location_params(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, (response.status_code, response.text[:300])
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


async def login(
    client: httpx.AsyncClient, params: dict[str, str], username: str = USERNAME, password: str = PASSWORD
) -> httpx.Response:
    """A password login: GET the form, POST it back with the credentials (the client keeps the form cookie).
    The browser's SSO session, if any, is dropped first, or the authorization would skip the form."""
    client.cookies.delete(SSO_COOKIE)
    page = await client.get("/oauth/authorize", params=params)
    assert page.status_code == 200, page.text
    form = form_of(page.text)
    assert form.action is not None
    return await client.post(form.action, data={**form.fields, "username": username, "password": password})


async def get_code(client: httpx.AsyncClient, challenge: str, **overrides: str) -> dict[str, str]:
    params = authorize_params(challenge, **overrides)
    response = await login(client, params)
    got = location_params(response)
    assert got["state"] == params["state"]
    return got


async def exchange(client: httpx.AsyncClient, code: str, verifier: str, **extra: str) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        **extra,
    }
    return await client.post("/oauth/token", data=data, auth=("bff", BFF_SECRET))


async def tokens_for(client: httpx.AsyncClient) -> dict[str, Any]:
    """A login's token response: authorize through the form, then exchange the code."""
    verifier, challenge = pkce()
    got = await get_code(client, challenge)
    response = await exchange(client, got["code"], verifier)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def password_login(client: httpx.AsyncClient) -> dict[str, Any]:
    """A whole login of the ``bff`` client with the password: the token response."""
    verifier, challenge = pkce()
    code = (await get_code(client, challenge))["code"]
    return dict((await exchange(client, code, verifier)).json())


async def refresh(client: httpx.AsyncClient, token: str, **extra: str) -> httpx.Response:
    return await client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token, **extra}, auth=("bff", BFF_SECRET)
    )


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@contextlib.asynccontextmanager
async def serve_in_process(app: Any, base_url: str = "http://auth.test") -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client for ``app``, with its lifespan run (so its Redis client is closed afterwards)."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=base_url) as client,
    ):
        yield client
