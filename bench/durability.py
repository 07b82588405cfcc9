"""What durable writes cost (DESIGN §10): login and refresh with and without WAIT, proxied requests unchanged.

    python bench/durability.py            # ~1 minute; needs wrk and redis-server

One Redis master with one replica on loopback, and the services as processes twice over it: once with
``REDIS_WAIT_REPLICAS=0`` (writes answered as soon as the master has them) and once with the default ``auto``
(session creation, refresh saves and refresh-family writes wait until the replica has them). Both runs in one
invocation, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    Proc,
    Stack,
    WrkResult,
    code_flow_tokens,
    free_port,
    login,
    processes,
    redis_commandstats,
    start_redis,
    wait_http,
    wrk,
)
from bench.run import PASSWORD, USER, fmt, start_auth, start_bff, start_rs  # noqa: E402


def start_replica(procs: list[Proc], master_port: int) -> None:
    start_redis(procs, "--replicaof", "127.0.0.1", str(master_port))
    master = redis.Redis(port=master_port)
    deadline = time.monotonic() + 20
    while master.info("replication").get("slave0", {}).get("state") != "online":
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not come online")
        time.sleep(0.05)
    master.close()


def quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


@dataclass
class Figures:
    login: tuple[float, float]  # p50, p95 in ms
    callback: tuple[float, float]
    refresh: tuple[float, float]
    proxied: WrkResult
    waits: int  # WAIT commands the master ran during the run


def measure(args: argparse.Namespace, redis_url: str, redis_port: int, wait: str) -> Figures:
    os.environ["REDIS_WAIT_REPLICAS"] = wait  # every service started below reads it
    waits_before = redis_commandstats(redis_port).get("wait", 0)
    with processes() as procs:
        secret = secrets.token_urlsafe(24)
        bff_port = free_port()
        bff_url = f"http://127.0.0.1:{bff_port}"
        auth_url = start_auth(procs, redis_url, [bff_url], secret, access_ttl=3600)
        rs_url = start_rs(procs, redis_url, auth_url)
        stack = Stack(redis_url, 0, auth_url, rs_url, [bff_url], secret)
        start_bff(procs, stack, bff_port)
        wait_http(bff_url + "/readyz")

        callbacks: list[float] = []
        logins: list[float] = []
        cookie = ""
        for _ in range(args.logins):
            started = time.perf_counter()
            cookie = login(bff_url, USER, PASSWORD, callbacks)
            logins.append(time.perf_counter() - started)

        tokens = code_flow_tokens(auth_url, secret, f"{bff_url}/bff/callback", USER, PASSWORD)
        refresh_token = tokens["refresh_token"]
        refreshes: list[float] = []
        with httpx.Client(timeout=10) as client:
            for _ in range(args.refreshes):
                started = time.perf_counter()
                r = client.post(
                    f"{auth_url}/oauth/token",
                    auth=("bff", secret),
                    data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                )
                refreshes.append(time.perf_counter() - started)
                r.raise_for_status()
                refresh_token = r.json()["refresh_token"]

        headers = {"Cookie": cookie, "X-CSRF": "1"}
        wrk(f"{bff_url}/api/notes/me", headers, seconds=1, connections=args.connections)  # warm-up
        proxied = wrk(f"{bff_url}/api/notes/me", headers, seconds=args.seconds, connections=args.connections)
    waits = redis_commandstats(redis_port).get("wait", 0) - waits_before
    return Figures(quantiles(logins), quantiles(callbacks), quantiles(refreshes), proxied, waits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logins", type=int, default=30)
    parser.add_argument("--refreshes", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with processes() as procs:
        redis_url, master_port = start_redis(procs)
        start_replica(procs, master_port)
        off = measure(args, redis_url, master_port, "0")
        on = measure(args, redis_url, master_port, "auto")
    print("\n| measure | REDIS_WAIT_REPLICAS=0 | auto (WAIT 1 replica) | auto / 0 |")
    print("|---|---|---|---|")
    for what, (a50, a95), (b50, b95) in (
        (f"full browser login, {args.logins}× (p50 / p95)", off.login, on.login),
        ("of which the callback: code exchange + family start + session create", off.callback, on.callback),
        (f"refresh grant at the auth server (family rotation), {args.refreshes}×", off.refresh, on.refresh),
    ):
        print(f"| {what} | {a50:.2f} / {a95:.2f} ms | {b50:.2f} / {b95:.2f} ms | {b50 / a50:.2f}x p50 |")
    a, b = off.proxied, on.proxied
    print(
        f"| BFF `/api/notes/me`, wrk -c{args.connections} -d{args.seconds}s | {fmt(a)} | {fmt(b)} "
        f"| {b.rps / a.rps:.2f}x req/s |"
    )
    print(f"| WAIT commands run by the master | {off.waits} | {on.waits} | |")


if __name__ == "__main__":
    main()
