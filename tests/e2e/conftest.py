"""The three services on real sockets with a real Redis: auth server and resource server in threads (the auth
server wrapped in a gate that counts and can delay refresh grants), the BFF in a thread or as processes."""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.auth_server.helpers import form_of
from tests.bff.doubles import Browser
from tests.conftest import ServerThread, free_port

CLIENT_SECRET = "e2e-bff-client-secret"
PASSWORD = "correct horse battery"


class TokenGate:
    """ASGI middleware in front of the auth server: counts ``refresh_token`` grants and can delay them (``delay``:
    before the grant runs; ``answer_delay``: after it ran, before its answer leaves; ``hold``: after it ran, until the
    test sets ``released``, telling it by ``held``). Counts revocations too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.refreshes = 0
        self.answered = 0
        self.revocations = 0
        self.delay = 0.0
        self.answer_delay = 0.0
        self.hold = False
        self.held = threading.Event()  # set once a held refresh has been answered (rotated) by the auth server
        self.released = threading.Event()  # set by the test: the held answer may go (to whoever still listens)
        self.paths: Counter[str] = Counter()  # every request, by path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths[scope["path"]] += 1
        if scope["type"] == "http" and scope["path"] == "/oauth/revoke":
            self.revocations += 1
        if scope["type"] != "http" or scope["path"] != "/oauth/token":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        refresh = parse_qs(body.decode("latin-1")).get("grant_type") == ["refresh_token"]
        if refresh:
            self.refreshes += 1
            if self.delay:
                await asyncio.sleep(self.delay)
        sent = False
        answer_delay = self.answer_delay if refresh else 0.0
        hold = self.hold and refresh

        async def late_send(message: Message) -> None:
            if message["type"] == "http.response.start" and answer_delay:
                await asyncio.sleep(answer_delay)
            if message["type"] == "http.response.start" and hold:
                self.held.set()
                await asyncio.to_thread(self.released.wait, 30)
            await send(message)

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, late_send)
        if refresh:
            self.answered += 1


@dataclass
class Stack:
    redis_url: str
    auth_url: str
    rs_url: str
    bff_url: str
    bff_env: dict[str, str]
    gate: TokenGate
    auth_server: ServerThread
    restart_auth: Callable[[], ServerThread]
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    auth_env: dict[str, str] = field(default_factory=dict)  # the auth server's settings (for its CLI)

    def browser(self, base_url: str | None = None) -> Browser:
        client = httpx.AsyncClient(base_url=base_url or self.bff_url, timeout=30)
        self.clients.append(client)
        return Browser(client)

    async def login(self, browser: Browser, username: str = "alice", return_to: str = "/") -> httpx.Response:
        """Sign up (once), then log in through the real login form, as a browser does."""
        async with httpx.AsyncClient(timeout=30) as idp:
            created = await idp.post(self.auth_url + "/users", json={"username": username, "password": PASSWORD})
            assert created.status_code in (201, 409), created.text
            start = await browser.request("GET", "/bff/login", params={"return_to": return_to}, csrf=False)
            assert start.status_code == 302, start.text
            page = await idp.get(start.headers["location"])
            assert page.status_code == 200, page.text
            form = form_of(page.text)
            assert form.action is not None, page.text
            posted = await idp.post(
                urljoin(str(page.url), form.action), data={**form.fields, "username": username, "password": PASSWORD}
            )
            assert posted.status_code in (302, 303), posted.text
            callback = httpx.URL(posted.headers["location"])
            assert str(callback).startswith(self.bff_url + "/bff/callback")
            return await browser.request("GET", callback.raw_path.decode(), csrf=False)


def auth_env(issuer: str, bff_url: str, redis_url: str, keys_dir: str, access_ttl: int) -> dict[str, str]:
    return {
        "AUTH_ISSUER": issuer,
        "AUTH_KEYS_DIR": keys_dir,
        "AUTH_ACCESS_TTL": str(access_ttl),
        "REDIS_URL": redis_url,
        "AUTH_CLIENTS": json.dumps(
            [
                {
                    "client_id": "bff",
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": [f"{bff_url}/bff/callback"],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "scope": "openid notes:read notes:write",
                    "audience": ["notes"],
                    "post_logout_redirect_uris": [f"{bff_url}/"],
                    "backchannel_logout_uri": f"{bff_url}/bff/backchannel",
                }
            ]
        ),
    }


def wait_ready(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(url + "/readyz", timeout=2).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready")
        time.sleep(0.05)


@pytest.fixture
async def stack_factory(redis_url: str, server_factory: Any) -> AsyncIterator[Callable[..., Stack]]:
    from auth_server.app import create_app as create_auth
    from auth_server.settings import Settings as AuthSettings
    from resource_server.app import create_app as create_rs
    from resource_server.settings import Settings as RSSettings

    keys_dir = tempfile.mkdtemp(prefix="jwt-bff-e2e-keys-")

    def make(
        *,
        access_ttl: int = 300,
        bff_thread: bool = True,
        redis: str | None = None,
        extra_routes: dict[str, dict[str, Any]] | None = None,
        **bff_extra: str,
    ) -> Stack:
        """``extra_routes``: route objects beside ``notes``, whose ``url`` defaults to the resource server's."""
        store = redis or redis_url
        auth_port, bff_port = free_port(), free_port()
        auth_url, bff_url = f"http://127.0.0.1:{auth_port}", f"http://127.0.0.1:{bff_port}"
        auth_vars = auth_env(auth_url, bff_url, store, keys_dir, access_ttl)
        auth_settings = AuthSettings.from_env(auth_vars)
        gate = TokenGate(create_auth(auth_settings))
        auth = server_factory(gate, auth_port)

        def restart_auth() -> ServerThread:
            gate.app = create_auth(auth_settings)
            return server_factory(gate, auth_port)

        rs = server_factory(
            create_rs(RSSettings.from_env({"RS_ISSUER": auth_url, "RS_AUDIENCE": "notes", "REDIS_URL": store}))
        )
        wait_ready(rs.url)
        env = {
            "BFF_ISSUER": auth_url,
            "BFF_CLIENT_ID": "bff",
            "BFF_CLIENT_SECRET": CLIENT_SECRET,
            "BFF_PUBLIC_URL": bff_url,
            "BFF_ROUTES": json.dumps(
                {"notes": rs.url, **{name: {"url": rs.url, **spec} for name, spec in (extra_routes or {}).items()}}
            ),
            "REDIS_URL": store,
            **bff_extra,
        }
        if bff_thread:
            from bff.app import create_app as create_bff
            from bff.settings import Settings as BffSettings

            server_factory(create_bff(BffSettings.from_env(env)), bff_port)
            wait_ready(bff_url)
        stack = Stack(store, auth_url, rs.url, bff_url, env, gate, auth, restart_auth, auth_env=auth_vars)
        stacks.append(stack)
        return stack

    stacks: list[Stack] = []
    yield make
    for stack in stacks:
        for client in stack.clients:
            await client.aclose()
