"""jwt-bff benchmarks: every figure is a ratio against a baseline measured in the same run.

    python bench/run.py                 # all sections, ~2 minutes
    python bench/run.py --seconds 10    # longer wrk runs

Starts a private redis-server and the services on loopback (nothing else is touched), drives load with wrk, and
prints one table. Not a test: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    Proc,
    Stack,
    WrkResult,
    auth_clients,
    bff_env,
    client_credentials_token,
    code_flow_tokens,
    cpu_seconds,
    free_port,
    login,
    processes,
    redis_commandstats,
    service,
    start_redis,
    wrk,
)
from bench.routes import route_costs  # noqa: E402

USER, PASSWORD = "bench-user", "bench-password-1"
rows: list[tuple[str, str, str]] = []


def row(what: str, figure: str, target: str = "") -> None:
    rows.append((what, figure, target))
    print(f"  {what:<58} {figure:<32} {target}", flush=True)


def fmt(r: WrkResult) -> str:
    return f"{r.rps:,.0f} req/s  p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms" + (
        f"  ({r.errors} errors)" if r.errors else ""
    )


def start_auth(
    procs: list[Proc], redis_url: str, bff_urls: list[str], secret: str, access_ttl: int, alg: str = "RS256"
) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "REDIS_URL": redis_url,
        "AUTH_ISSUER": url,
        "AUTH_KEYS_DIR": tempfile.mkdtemp(prefix="bench-keys-"),
        "AUTH_CLIENTS": auth_clients(bff_urls, secret),
        "AUTH_ACCESS_TTL": str(access_ttl),
        "AUTH_SIGNING_ALG": alg,
    }
    procs.append(Proc(service("auth_server", port), env, health=url + "/readyz"))
    r = httpx.post(url + "/users", json={"username": USER, "password": PASSWORD}, timeout=10)
    assert r.status_code in (201, 409), r.text
    return url


def start_rs(procs: list[Proc], redis_url: str, auth_url: str) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"REDIS_URL": redis_url, "RS_ISSUER": auth_url, "RS_AUDIENCE": "notes"}
    procs.append(Proc(service("resource_server", port), env, health=url + "/readyz"))
    return url


def start_bff(procs: list[Proc], stack: Stack, port: int, *extra: str, **env: str) -> str:
    url = f"http://127.0.0.1:{port}"
    procs.append(Proc(service("bff", port, "serve", *extra), bff_env(stack, url, **env), health=url + "/readyz"))
    return url


def proxy_throughput(args: argparse.Namespace) -> None:
    """Sections 1, 2 and 6: BFF vs the resource server direct vs a bare proxy; Redis commands; workers."""
    print(f"\n1. Proxy throughput (GET /me through each path, wrk -c{args.connections} -d{args.seconds}s)", flush=True)
    with processes() as procs:
        redis_url, redis_port = start_redis(procs)
        secret = secrets.token_urlsafe(24)
        bff_ports = [free_port(), free_port(), free_port()]  # plain, with --access-log, with --workers 2
        bff_urls = [f"http://127.0.0.1:{p}" for p in bff_ports]
        auth_url = start_auth(procs, redis_url, bff_urls, secret, access_ttl=3600)
        rs_url = start_rs(procs, redis_url, auth_url)
        stack = Stack(redis_url, redis_port, auth_url, rs_url, bff_urls, secret)
        bff_url = start_bff(procs, stack, bff_ports[0])
        bff_pid = procs[-1].proc.pid
        token = client_credentials_token(auth_url, secret)
        bare_port = free_port()
        procs.append(
            Proc(
                [
                    sys.executable,
                    "bench/bare_proxy.py",
                    "--port",
                    str(bare_port),
                    "--upstream",
                    rs_url,
                    "--token",
                    token,
                ],
                health=f"http://127.0.0.1:{bare_port}/healthz",
            )
        )
        bare_pid = procs[-1].proc.pid
        cookie = login(bff_url, USER, PASSWORD)

        stats: dict[str, dict[str, int]] = {}
        cpu: dict[str, float] = {}  # CPU microseconds per request of the process measured (user + system, /proc)

        def measure(url: str, headers: dict[str, str], count_redis: bool = False, pid: int = 0) -> WrkResult:
            wrk(url, headers, seconds=1, connections=args.connections)  # warm-up: pools, caches
            if count_redis:
                stats["before"] = redis_commandstats(redis_port)
            cpu_before = cpu_seconds([pid]) if pid else 0.0
            result = wrk(url, headers, seconds=args.seconds, connections=args.connections)
            if pid:
                cpu[url] = (cpu_seconds([pid]) - cpu_before) / max(result.requests, 1) * 1e6
            if count_redis:
                stats["after"] = redis_commandstats(redis_port)
            return result

        def measure_bff(url: str, cookie: str, count_redis: bool = False, pid: int = 0) -> WrkResult:
            return measure(f"{url}/api/notes/me", {"Cookie": cookie, "X-CSRF": "1"}, count_redis, pid)

        direct = measure(f"{rs_url}/me", {"Authorization": f"Bearer {token}"})
        bare = measure(f"http://127.0.0.1:{bare_port}/me", {}, pid=bare_pid)
        bff = measure_bff(bff_url, cookie, count_redis=True, pid=bff_pid)
        before, after = stats["before"], stats["after"]
        row("resource server direct (verifies the JWT)", fmt(direct))
        row("bare aiohttp pass-through proxy -> resource server", fmt(bare))
        row("BFF /api/notes/me (cookie -> session -> JWT)", fmt(bff))
        row("BFF / bare proxy", f"{bff.rps / bare.rps:.2f}x", "target >= 1.0")
        bare_cpu, bff_cpu = cpu[f"http://127.0.0.1:{bare_port}/me"], cpu[f"{bff_url}/api/notes/me"]
        row("CPU us per request: bare proxy, BFF", f"{bare_cpu:.0f}, {bff_cpu:.0f}", "BFF target <= 100")
        row("CPU per request, bare proxy / BFF", f"{bare_cpu / bff_cpu:.2f}x", "target >= 1.0")
        row("BFF / resource server direct", f"{bff.rps / direct.rps:.2f}x")
        row("BFF p99 / bare proxy p99", f"{bff.p99_ms / bare.p99_ms:.2f}x")

        print("\n2. Redis commands per proxied request (INFO commandstats delta)", flush=True)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        delta = {k: v for k, v in delta.items() if v > 0 and k not in ("info",)}
        # The resource server's notes use Redis too, but GET /me does not touch it; count everything anyway.
        total = sum(delta.values())
        row("Redis commands per BFF request", f"{total / max(bff.requests, 1):.3f}", "target 1")
        row("  by command", ", ".join(f"{k}={v / max(bff.requests, 1):.3f}" for k, v in sorted(delta.items())))

        logged = start_bff(procs, stack, bff_ports[1], "--access-log")
        with_log = measure_bff(logged, login(logged, USER, PASSWORD))
        row("BFF --access-log (JSON line per request, as compose runs it)", fmt(with_log))
        row("BFF --access-log / BFF", f"{with_log.rps / bff.rps:.2f}x")

        print("\n6. Multi-worker BFF", flush=True)
        two = start_bff(procs, stack, bff_ports[2], "--workers", "2")
        w2 = measure_bff(two, login(two, USER, PASSWORD))
        row("BFF --workers 2", fmt(w2))
        row("BFF --workers 2 / --workers 1", f"{w2.rps / bff.rps:.2f}x", "2 cores shared with wrk, Redis, the RS")


def grants(auth_url: str) -> float:
    """Successful refresh grants so far, from the auth server's Prometheus metrics."""
    text = httpx.get(f"{auth_url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("auth_token_grants_total{")
            and 'grant_type="refresh_token"' in line
            and 'outcome="ok"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def storm(urls: list[str], cookie: str, n: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            async with session.get(
                f"{urls[i % len(urls)]}/api/notes/me", headers={"Cookie": cookie, "X-CSRF": "1"}
            ) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return statuses


def refresh_storm(args: argparse.Namespace) -> None:
    """Section 3: N concurrent requests over 2 BFF replicas right after expiry: refreshes made, logouts."""
    print(f"\n3. Refresh storm: {args.storm} concurrent requests over 2 BFF replicas right after expiry", flush=True)
    for delay in (0.0, args.slow):
        with processes() as procs:
            redis_url, redis_port = start_redis(procs)
            secret = secrets.token_urlsafe(24)
            ports = [free_port(), free_port()]
            urls = [f"http://127.0.0.1:{p}" for p in ports]
            auth_url = start_auth(procs, redis_url, urls, secret, access_ttl=3)
            rs_url = start_rs(procs, redis_url, auth_url)
            stack = Stack(redis_url, redis_port, auth_url, rs_url, urls, secret)
            extra = {"BFF_REFRESH_SKEW": "1"}
            if delay:
                slow_port = free_port()
                procs.append(
                    Proc(
                        [
                            sys.executable,
                            "bench/slow_proxy.py",
                            "--port",
                            str(slow_port),
                            "--upstream",
                            auth_url,
                            "--delay",
                            str(delay),
                        ]
                    )
                )
                time.sleep(1)
                extra["BFF_AUTH_INTERNAL_URL"] = f"http://127.0.0.1:{slow_port}"
            for port in ports:
                start_bff(procs, stack, port, **extra)
            cookie = login(urls[0], USER, PASSWORD)
            time.sleep(3.2)  # the access token has expired now
            before = grants(auth_url)
            statuses = asyncio.run(storm(urls, cookie, args.storm))
            refreshes = grants(auth_url) - before
            alive = httpx.get(f"{urls[1]}/bff/user", headers={"Cookie": cookie, "X-CSRF": "1"}).status_code == 200
            label = f"auth server slowed by {delay:.0f}s (lease 5 s)" if delay else "auth server at full speed"
            row(f"{label}: refresh calls", f"{refreshes:.0f}", "target 1")
            row(f"{label}: statuses", json.dumps(statuses), f"all 200; session alive: {alive}")


def verifier_cost(args: argparse.Namespace) -> None:
    """Section 4: the resource server's own benchmark (verified vs unauthenticated req/s; RS256/ES256/EdDSA)."""
    print(
        "\n4. Resource server: verified vs unauthenticated requests, verify cost per alg (bench/verifier.py)",
        flush=True,
    )
    out = subprocess.run(
        [sys.executable, "bench/verifier.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    print(out, flush=True)
    for line in out.splitlines():
        if m := re.match(r"(\S.*?)\s+(\d+)\s+(\d+)\s+([\d.]+)$", line):
            row(f"verified / unauthenticated: {m.group(1)}", m.group(4), "target >= 0.85")
        elif m := re.match(r"\s+(RS256|ES256|EdDSA|cached)\s+([\d.]+ µs)", line):
            row(f"in-process verify, {m.group(1)}", m.group(2))


USER_AGENT = (  # a desktop browser's, as the session list keeps it (bff.session_list: at most 200 characters)
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
)


async def _fill_sessions(
    redis_url: str, n: int, tokens: dict[str, str], logout: bool = True, compact: bool = False
) -> None:
    """n sessions as a login makes them (bff.endpoints.callback): the record (with the ID token kept for logout's
    id_token_hint, and the login's User-Agent and network), its back-channel-logout index entries (DESIGN §6) and its
    entry in the user's list of sessions (DESIGN §14); ``logout=False``: the record alone, without the ID token;
    ``compact``: BFF_COMPACT_STORE."""
    from redis import asyncio as aioredis

    from bff.session_index import SessionIndex
    from bff.session_list import SessionList
    from bff.sessions import RedisStore, SessionManager, record_key

    client = aioredis.Redis.from_url(redis_url)
    manager = SessionManager(RedisStore(client), idle_ttl=1800, absolute_ttl=43200, compact=compact)
    index = SessionIndex(client, ttl=43200, compact=compact)
    listing = SessionList(client, manager, secret="memory-bench-secret-0123456789", compact=compact)

    async def login(i: int) -> None:
        secret, session = await manager.create(
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            access_expires_at=time.time() + 300,
            sub=f"user-{i:08d}",
            username=f"user{i}",
            scope="openid notes:read notes:write",
            id_token=tokens.get("id_token") if logout else None,
            sid=f"sid-{i:08d}" if logout else None,
            user_agent=USER_AGENT if logout else "",
            ip="203.0.113.0/24" if logout else "",
        )
        ref = manager.ref(secret)
        assert ref is not None
        if logout:
            listed = listing.new_entry(ref, record_key(secret), session)
            await index.add(ref.key, sid=session.sid, sub=session.sub, listed=listed)

    batch = 50
    for start in range(0, n, batch):
        await asyncio.gather(*(login(start + i) for i in range(min(batch, n - start))))
    await client.aclose()


def _used_memory(port: int) -> int:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", "memory"], capture_output=True, text=True, check=True
    ).stdout
    return int(re.search(r"used_memory:(\d+)", out).group(1))  # type: ignore[union-attr]


def _bytes_per_session(
    tokens: dict[str, str], n: int, logout: bool = True, compact: bool = False, redis_options: tuple[str, ...] = ()
) -> float:
    with processes() as procs:
        redis_url, port = start_redis(procs, *redis_options)
        before = _used_memory(port)
        asyncio.run(_fill_sessions(redis_url, n, tokens, logout, compact))
        return (_used_memory(port) - before) / n


def session_memory(args: argparse.Namespace) -> None:
    """Section 5: Redis memory per BFF session at 10k and 100k sessions (real tokens, encrypted records), for each
    signing algorithm of the auth server (AUTH_SIGNING_ALG): an RS256 signature is 256 bytes, ES256's and EdDSA's 64."""
    print("\n5. Redis memory per session (INFO memory used_memory delta; tokens from a real login)", flush=True)
    callback = "http://127.0.0.1:9/bff/callback"  # never called: the code is taken from the redirect
    for alg in ("RS256", "ES256", "EdDSA"):
        with processes() as procs:
            redis_url, _ = start_redis(procs)
            auth_url = start_auth(
                procs, redis_url, ["http://127.0.0.1:9"], "memory-secret-0123456789", access_ttl=300, alg=alg
            )
            tokens = code_flow_tokens(auth_url, "memory-secret-0123456789", callback, USER, PASSWORD)
        sizes = ", ".join(str(len(tokens.get(k, ""))) for k in ("access_token", "refresh_token", "id_token"))
        row(f"{alg}: token sizes (access, refresh, ID) in bytes", sizes)
        sessions = (10_000, 100_000) if alg == "RS256" else (10_000,)
        per = {n: _bytes_per_session(tokens, n) for n in sessions}
        for n in sessions:
            row(f"{alg}: {n:,} sessions, bytes per session", f"{per[n]:,.0f}", "target <= 1.5 KB")
        compact = _bytes_per_session(tokens, 10_000, compact=True)
        row(f"{alg}: 10,000 sessions, BFF_COMPACT_STORE=true", f"{compact:,.0f}", "target <= 1.5 KB")
        if alg == "RS256":
            row("RS256: 100k / 10k per-session bytes (1.00 = linear)", f"{per[100_000] / per[10_000]:.2f}")
            bare = _bytes_per_session(tokens, 10_000, logout=False)
            row("RS256: the record alone (no ID token, index or list entry)", f"{bare:,.0f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--storm", type=int, default=64)
    parser.add_argument(
        "--slow",
        type=float,
        default=8.0,
        help="auth server delay in the slow storm (s): beyond the BFF's 5 s lock lease, "
        "within its 10 s back-channel timeout",
    )
    parser.add_argument("--sockets", type=int, default=1000, help="concurrent WebSockets in the routes section")
    parser.add_argument(
        "--only", default="", help="comma-separated section names: proxy,storm,verify,memory,edge,routes,dpop"
    )
    return parser.parse_args()


def edge_throughput(args: argparse.Namespace) -> None:
    """Section 7: nginx + /bff/auth against the BFF's own proxy and nginx alone (bench/edge.py)."""
    from bench.edge import measure_edge

    measure_edge(args)


def dpop_section(args: argparse.Namespace) -> None:
    """Section 9: what DPoP costs the BFF's proxy and the verifier (bench/dpop.py)."""
    from bench.dpop import bff_with_and_without, verifier_with_dpop_and_revocations

    print("\n9. DPoP (bench/dpop.py)", flush=True)
    args.rounds = getattr(args, "rounds", 2)
    bff_with_and_without(args)
    verifier_with_dpop_and_revocations(args)


def routes_section(args: argparse.Namespace) -> None:
    route_costs(args, row, fmt, start_auth, (USER, PASSWORD))


SECTIONS = {
    "proxy": proxy_throughput,
    "storm": refresh_storm,
    "verify": verifier_cost,
    "memory": session_memory,
    "edge": edge_throughput,
    "routes": routes_section,
    "dpop": dpop_section,
}


def main() -> None:
    args = parse_args()
    only = [s for s in re.split(r"[, ]+", args.only) if s] or list(SECTIONS)
    for name in only:
        SECTIONS[name](args)
    print("\n| measure | figure | target |\n|---|---|---|")
    for what, figure, target in rows:
        print(f"| {what.strip()} | {figure} | {target} |")


if __name__ == "__main__":
    main()
