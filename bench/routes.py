"""Section 8 of bench/run.py: routes as policies (DESIGN §7).

* a ``resource`` route (the token sealed in the session is one for that resource alone) against the plain route, and
  the Redis commands per proxied request on it (goal: still one);
* many concurrent WebSockets through one BFF process: the process's memory per socket, and the echo round trip's
  p50/p99 through the BFF against a direct connection to the same upstream.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from bench.harness import (
    Proc,
    Stack,
    bff_env,
    client_credentials_token,
    free_port,
    login,
    processes,
    redis_commandstats,
    service,
    start_redis,
    wrk,
)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _open_sockets(
    url: str, n: int, headers: Callable[[int], dict[str, str]]
) -> tuple[aiohttp.ClientSession, list[aiohttp.ClientWebSocketResponse]]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    for start in range(0, n, 100):  # 100 handshakes at a time
        batch = await asyncio.gather(
            *(session.ws_connect(url, headers=headers(i)) for i in range(start, min(n, start + 100)))
        )
        for ws in batch:
            hello = await ws.receive_json(timeout=10)  # the sample API greets first
            assert hello["type"] == "hello", hello
        sockets.extend(batch)
    return session, sockets


async def _round_trips(sockets: list[aiohttp.ClientWebSocketResponse], rounds: int) -> list[float]:
    """Each socket sends a message and waits for its echo, all sockets at once, ``rounds`` times; seconds each."""

    async def one(ws: aiohttp.ClientWebSocketResponse, i: int) -> float:
        text = f"m{i}"
        started = time.perf_counter()
        await ws.send_str(text)
        while True:
            message = await ws.receive_json(timeout=30)
            if message.get("type") == "echo" and message.get("text") == text:
                return time.perf_counter() - started

    times: list[float] = []
    for r in range(rounds):
        times += await asyncio.gather(*(one(ws, r) for ws in sockets))
    return times


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _measure_sockets(
    url: str, n: int, headers: Callable[[int], dict[str, str]], pid: int | None
) -> tuple[float, list[float], list[float]]:
    """(KiB of RSS per socket in ``pid``, one-at-a-time round trips, all-at-once round trips) with ``n`` open."""
    before = rss_kib(pid) if pid else 0
    session, sockets = await _open_sockets(url, n, headers)
    try:
        await asyncio.sleep(1.0)
        during = rss_kib(pid) if pid else 0
        await _round_trips(sockets[:50], 1)  # warm-up
        single: list[float] = []
        for i in range(400):  # one message in flight at a time, over sockets spread across all n
            single += await _round_trips([sockets[(i * 7919) % n]], 1)
        burst = await _round_trips(sockets, 3)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        await session.close()
    return (during - before) / n, single, burst


def route_costs(
    args: object,
    row: Callable[..., None],
    fmt: Callable[..., str],
    start_auth: Callable[..., str],
    user: tuple[str, str],
) -> None:
    """Resource-route throughput and Redis commands; concurrent WebSockets through one BFF process. ``start_auth``
    and ``user``: the auth server set-up and the user of bench/run.py's other sections."""
    seconds = getattr(args, "seconds", 5)
    connections = getattr(args, "connections", 32)
    n_sockets = getattr(args, "sockets", 1000)
    print(f"\n8. Routes as policies (wrk -c{connections} -d{seconds}s; {n_sockets} WebSockets)", flush=True)
    with processes() as procs:
        redis_url, redis_port = start_redis(procs)
        rs_port, bff_port = free_port(), free_port()
        bff_url = f"http://127.0.0.1:{bff_port}"
        secret = secrets.token_urlsafe(24)
        auth_url = start_auth(procs, redis_url, [bff_url], secret, access_ttl=3600)
        rs_url = f"http://127.0.0.1:{rs_port}"
        procs.append(
            Proc(
                service("resource_server", rs_port),
                {"REDIS_URL": redis_url, "RS_ISSUER": auth_url, "RS_AUDIENCE": "notes"},
                health=rs_url + "/readyz",
            )
        )
        stack = Stack(redis_url, redis_port, auth_url, rs_url, [bff_url], secret)
        routes = {
            "notes": rs_url,
            "scoped": {"url": rs_url, "resource": "notes"},
            "live": {"url": rs_url, "resource": "notes", "websocket": True},
            # DESIGN §11: a rule the user passes, so the request goes all the way (the check's cost, not a 403's)
            "ruled": {"url": rs_url, "require": {"preferred_username": [user[0]]}},
        }
        bff = Proc(
            service("bff", bff_port, "serve"),
            bff_env(
                stack,
                bff_url,
                BFF_ROUTES=json.dumps(routes),
                BFF_MAX_WEBSOCKETS=str(n_sockets + 10),
                BFF_MAX_SOCKETS_PER_SESSION=str(n_sockets + 10),  # one session opens them all
                BFF_MAX_SOCKETS_PER_USER=str(n_sockets + 10),  # of one user
            ),
            health=bff_url + "/readyz",
        )
        procs.append(bff)
        cookie = login(bff_url, *user)
        headers = {"Cookie": cookie, "X-CSRF": "1"}

        wrk(f"{bff_url}/api/notes/me", headers, seconds=1, connections=connections)
        wrk(f"{bff_url}/api/ruled/me", headers, seconds=1, connections=connections)
        # The rule's cost is small beside the noise of a shared machine: plain and ruled runs alternate, three each,
        # and the medians are compared (the first run of a series is no longer always the plain one).
        plains, ruleds = [], []
        for _ in range(3):
            plains.append(wrk(f"{bff_url}/api/notes/me", headers, seconds=seconds, connections=connections))
            ruleds.append(wrk(f"{bff_url}/api/ruled/me", headers, seconds=seconds, connections=connections))
        plain = sorted(plains, key=lambda r: r.rps)[1]
        ruled = sorted(ruleds, key=lambda r: r.rps)[1]
        wrk(f"{bff_url}/api/scoped/me", headers, seconds=1, connections=connections)  # warm-up: gets the route token
        before = redis_commandstats(redis_port)
        scoped = wrk(f"{bff_url}/api/scoped/me", headers, seconds=seconds, connections=connections)
        after = redis_commandstats(redis_port)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if k != "info"}
        delta = {k: v for k, v in delta.items() if v > 0}
        row("BFF plain route /api/notes/me (median of 3)", fmt(plain))
        row("BFF route with require /api/ruled/me (a rule that holds; median of 3)", fmt(ruled))
        row("require route / plain route", f"{ruled.rps / plain.rps:.2f}x", "target ~1.0 (a set lookup per claim)")
        row("BFF resource route /api/scoped/me (its own aud)", fmt(scoped))
        row("resource route / plain route", f"{scoped.rps / plain.rps:.2f}x", "target ~1.0")
        row(
            "Redis commands per request on a resource route",
            f"{sum(delta.values()) / max(scoped.requests, 1):.3f}",
            "target 1",
        )

        token = client_credentials_token(auth_url, secret)
        origin = bff_url
        through = asyncio.run(
            _measure_sockets(
                bff_url.replace("http", "ws") + "/api/live/ws/echo",
                n_sockets,
                lambda i: {"Cookie": cookie, "Origin": origin},
                bff.proc.pid,
            )
        )
        direct = asyncio.run(
            _measure_sockets(
                rs_url.replace("http", "ws") + "/ws/echo",
                n_sockets,
                lambda i: {"Authorization": f"Bearer {token}"},
                None,
            )
        )
        row(f"{n_sockets} WebSockets through one BFF: RSS per socket", f"{through[0]:.1f} KiB")
        for label, i in (("one message at a time", 1), (f"all {n_sockets} at once", 2)):
            via, bare = through[i], direct[i]
            row(f"WS echo via BFF, {label}", f"p50 {_pct(via, 0.5):.2f} ms  p99 {_pct(via, 0.99):.2f} ms")
            row(f"WS echo direct, {label}", f"p50 {_pct(bare, 0.5):.2f} ms  p99 {_pct(bare, 0.99):.2f} ms")
            row(f"WS echo p99 via BFF / direct, {label}", f"{_pct(via, 0.99) / _pct(bare, 0.99):.2f}x")
