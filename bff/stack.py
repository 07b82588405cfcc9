"""`bff stack`: the auth server (:9000), the resource server (:9001), a second instance of it for another audience
(the "live" API, :9002) and the BFF (:8000) in one process.

The three services still talk to each other only over HTTP on loopback, exactly as in production; they share one
process, one event loop and (when ``REDIS_URL`` is unset) one embedded in-memory store, whose keys the services'
prefixes (``auth:``, ``rs:``, ``bff:``) keep apart. A ``demo`` user is created through the public sign-up API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import logging.config
import os
import re
import secrets
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from bff.settings import SETTINGS
from servicekit.http import HttpLimits, http_protocol
from servicekit.logs import log_config
from servicekit.settings import SettingsError
from servicekit.websocket import WebSocketProtocol

log = logging.getLogger(__name__)

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"
STARTUP_TIMEOUT = 30.0  # seconds for the three services to answer /readyz


@dataclass(frozen=True)
class StackPorts:
    auth: int = 9000
    resource: int = 9001
    bff: int = 8000
    live: int = 9002  # the sample API again, as a second resource ("live") with a WebSocket endpoint


def stack_environment(ports: StackPorts, env: Mapping[str, str], public_host: str = "localhost") -> dict[str, str]:
    """The settings of the three services, wired to each other; variables already set in ``env`` win."""
    issuer = f"http://{public_host}:{ports.auth}"
    # BFF_PUBLIC_URL given (the stack behind an edge: docs/guides/edge-nginx.md): the client is registered with it, as
    # the BFF will name its redirect URI (a new user's login behind nginx was refused: the port's URI was registered)
    public_url = (SETTINGS.text("BFF_PUBLIC_URL", env) or f"http://{public_host}:{ports.bff}").strip().rstrip("/")
    given = SETTINGS.text("BFF_CLIENT_SECRET", env)  # BFF_CLIENT_SECRET or BFF_CLIENT_SECRET_FILE
    client_secret = given or secrets.token_urlsafe(32)
    client = {
        "client_id": "bff",
        "client_secret": client_secret,
        "redirect_uris": [f"{public_url}/bff/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "scope": "openid notes:read notes:write",
        "audience": ["notes", "live"],
        # DESIGN §6: back to the demo page after the provider's logout; the provider's logouts reach the BFF
        "post_logout_redirect_uris": [f"{public_url}/"],
        "backchannel_logout_uri": f"http://127.0.0.1:{ports.bff}/bff/backchannel",
    }
    defaults = {
        "AUTH_ISSUER": issuer,
        "AUTH_CLIENTS": json.dumps([client]),
        "RS_ISSUER": issuer,
        "RS_AUDIENCE": "notes",
        # Issue #18 item 2: a DPoP proof's htu is compared with these, never the Host header. The BFF calls both
        # sample APIs at these addresses; each API's own audience check keeps the other's tokens out.
        "RS_PUBLIC_URL": f"http://127.0.0.1:{ports.resource},http://127.0.0.1:{ports.live}",
        "BFF_ISSUER": issuer,
        "BFF_CLIENT_ID": "bff",
        "BFF_CLIENT_SECRET": client_secret,
        "BFF_PUBLIC_URL": public_url,
        # No forward auth in front of the stack, and its browsers come over loopback (the default trusted proxies):
        # /bff/auth would hand a page's script the access token that the BFF exists to keep from it.
        "BFF_TRUSTED_PROXIES": "none",
        "BFF_FRONTEND": "demo",  # DESIGN §11: the stack shows the demo page (`bff serve` serves none by default)
        # DESIGN §7: each API gets a token for itself alone (RFC 8707), so neither can replay the other's
        "BFF_ROUTES": json.dumps(
            {
                "notes": {"url": f"http://127.0.0.1:{ports.resource}", "resource": "notes"},
                "live": {"url": f"http://127.0.0.1:{ports.live}", "resource": "live", "websocket": True},
            }
        ),
    }
    if env.get("BFF_CLIENT_SECRET_FILE"):
        del defaults["BFF_CLIENT_SECRET"]  # the BFF reads the file itself; both set would be refused
    return {**defaults, **env}


class _StackServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the stack, which stops all three servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _embedded_redis() -> Any:
    import fakeredis

    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())


def build_apps(env: Mapping[str, str], redis: Any | None) -> dict[str, Any]:
    """The three ASGI apps, built from one environment mapping (imports are local: three separate deployables)."""
    from auth_server.app import create_app as create_auth_app
    from auth_server.settings import Settings as AuthSettings
    from bff.app import create_app as create_bff_app
    from bff.settings import Settings as BffSettings
    from resource_server.app import create_app as create_resource_app
    from resource_server.settings import Settings as ResourceSettings

    return {
        "auth": create_auth_app(AuthSettings.from_env(env), redis=redis),
        "resource": create_resource_app(ResourceSettings.from_env(env), redis=redis),
        "bff": create_bff_app(BffSettings.from_env(env), redis=redis),
        "live": create_resource_app(ResourceSettings.from_env({**env, "RS_AUDIENCE": "live"}), redis=redis),
    }


def _without_credentials(url: str) -> str:
    """``REDIS_URL`` as printed: no password."""
    return re.sub(r"//[^@/]*@", "//", url)


async def _wait_ready(urls: list[str]) -> None:
    async with httpx.AsyncClient(timeout=2.0) as client:
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
        for url in urls:
            while True:
                try:
                    if (await client.get(url)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"{url} did not become ready within {STARTUP_TIMEOUT:.0f}s")
                await asyncio.sleep(0.1)


async def create_demo_user(issuer_url: str) -> bool:
    """Sign up the demo user through the public API; False when it already exists."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(f"{issuer_url}/users", json={"username": DEMO_USERNAME, "password": DEMO_PASSWORD})
    if response.status_code not in (201, 409):
        raise RuntimeError(f"creating the demo user failed: {response.status_code} {response.text[:200]}")
    return response.status_code == 201


async def run_stack(
    host: str,
    ports: StackPorts,
    env: Mapping[str, str],
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    limits: HttpLimits | None = None,
) -> None:
    """Run the three services until ``stop`` is set (or SIGINT/SIGTERM)."""
    embedded = not env.get("REDIS_URL")
    redis = _embedded_redis() if embedded else None
    apps = build_apps(env, redis)
    protocol = http_protocol(limits or HttpLimits.from_env(env))
    servers = {
        name: _StackServer(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                ws=WebSocketProtocol,  # the BFF and the live API take WebSockets (servicekit.websocket)
                timeout_graceful_shutdown=10,
                http=protocol,
                # X-Forwarded-* is never uvicorn's to believe (its default trusts loopback's): as `bff serve`, the
                # services decide whom to trust (BFF_TRUSTED_PROXIES). Believed, any local process named itself a
                # trusted proxy to /bff/auth and got a token, and behind nginx a browser not on 127.0.0.1 got 403.
                proxy_headers=False,
            )
        )
        for (name, app), port in zip(apps.items(), (ports.auth, ports.resource, ports.bff, ports.live), strict=True)
    }
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)

    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    port_of = {"auth": ports.auth, "resource": ports.resource, "bff": ports.bff, "live": ports.live}
    tasks: list[asyncio.Task[None]] = []
    try:
        # The auth server first: the others fetch its discovery document and keys as they start, and would warn.
        for group in (["auth"], ["resource", "live", "bff"]):
            tasks += [asyncio.create_task(servers[name].serve(), name=f"stack-{name}") for name in group]
            await _wait_ready([f"http://{local}:{port_of[name]}/readyz" for name in group])
        created = await create_demo_user(f"http://{local}:{ports.auth}")
        public = env["BFF_PUBLIC_URL"].rsplit(":", 1)[0]  # one host name in everything printed
        store = "an embedded in-memory store (nothing persists)" if embedded else _without_credentials(env["REDIS_URL"])
        from bff.frontend import describe

        print(
            f"\njwt-bff stack is up on {store}.\n"
            f"  auth server      {env['AUTH_ISSUER']}\n"
            f"  resource server  {public}:{ports.resource} (audience notes), {public}:{ports.live} (audience live)\n"
            f"  BFF              {env['BFF_PUBLIC_URL']}\n"
            f"  {describe(apps['bff'].state.settings)}\n"
            f"Demo user: {DEMO_USERNAME} / {DEMO_PASSWORD}{'' if created else ' (already there)'}; "
            f"its second factors (a passkey, an authenticator app): {env['AUTH_ISSUER']}/account\n\n"
            f"Open {env['BFF_PUBLIC_URL']}/ in your browser. Ctrl-C stops.\n",
            flush=True,
        )
        if ready is not None:
            ready.set()
        done, _ = await asyncio.wait([asyncio.create_task(stop.wait()), *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in tasks and task.exception() is not None:
                raise RuntimeError(f"{task.get_name()} stopped") from task.exception()
    finally:
        # The auth server last, as it came first: the others poll it until they stop.
        for name, server in servers.items():
            server.should_exit = name != "auth"
        await asyncio.gather(*(t for t in tasks if t.get_name() != "stack-auth"), return_exceptions=True)
        servers["auth"].should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        if redis is not None:
            await redis.aclose()


def main(args: argparse.Namespace | None = None) -> None:
    host = getattr(args, "host", None) or "127.0.0.1"
    port = getattr(args, "port", None) or 8000
    ports = StackPorts(
        auth=getattr(args, "auth_port", None) or 9000,
        resource=getattr(args, "resource_port", None) or 9001,
        bff=port,
        live=getattr(args, "live_port", None) or 9002,
    )
    # DESIGN §12: the same JSON lines as each service alone (ts, level, logger, message, request_id, trace_id, and
    # the access fields with --access-log)
    logging.config.dictConfig(log_config("info"))
    # Quiet by default: no line per request (the stack's own readiness polls included) unless --access-log, and
    # never one per back-channel call (httpx logs each request at INFO).
    access = logging.INFO if getattr(args, "access_log", False) else logging.WARNING
    for name in ("auth_server.access", "resource_server.access", "bff.access"):
        logging.getLogger(name).setLevel(access)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        env = stack_environment(ports, os.environ)
        limits = HttpLimits.from_arguments(args or argparse.Namespace(), env)
        asyncio.run(run_stack(host, ports, env, limits=limits))
    except (RuntimeError, SettingsError) as exc:
        print(f"bff stack: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
