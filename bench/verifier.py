"""What JWT verification costs the resource server: verified req/s over unauthenticated req/s, in one run.

    python bench/verifier.py [--seconds 5] [--connections 32] [--rounds 2]

Starts the real service (`python -m resource_server`, one uvicorn process on loopback) with its JWKS served from
this process by a throw-away ``FakeIssuer`` key set, and a private redis-server (only for readiness). Then drives
``wrk`` against ``GET /ping`` — public, and verifying the bearer token when one is sent — alternately without and
with a valid RS256 token, ``--rounds`` times each; once with the default verified-token cache and once with it off.
Finally it prints the in-process cost of one ``TokenVerifier.verify`` for RS256, ES256 and EdDSA.
Not a test: pytest never runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Proc, free_port, processes, service, start_redis, wait_http, wrk  # noqa: E402
from jwt_bff_verifier.testing import FakeIssuer  # noqa: E402


@contextmanager
def jwks_server(issuer: FakeIssuer, port: int) -> Iterator[None]:
    """The issuer's discovery document and JWKS, on loopback, in a thread of this process."""
    server = uvicorn.Server(uvicorn.Config(issuer.asgi_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(5)


def rps(url: str, seconds: float, connections: int, token: str | None = None) -> float:
    result = wrk(
        url, {"Authorization": f"Bearer {token}"} if token else {}, seconds=int(seconds), connections=connections
    )
    if result.errors:
        raise RuntimeError(f"wrk saw {result.errors} errors or non-2xx answers on {url}")
    return result.rps


def measure(url: str, token: str, seconds: float, connections: int, rounds: int) -> tuple[float, float]:
    """Mean req/s of GET /ping without and with the token, alternating so that drift hits both alike."""
    assert httpx.get(url + "/ping", headers={"Authorization": f"Bearer {token}"}).json()["sub"] == "bench-user"
    assert httpx.get(url + "/ping", headers={"Authorization": "Bearer x.y.z"}).status_code == 401
    rps(url + "/ping", 1, connections)  # warm-up, both ways
    rps(url + "/ping", 1, connections, token)
    plain, verified = [], []
    for _ in range(rounds):
        plain.append(rps(url + "/ping", seconds, connections))
        verified.append(rps(url + "/ping", seconds, connections, token))
    return statistics.mean(plain), statistics.mean(verified)


async def verify_cost(alg: str, n: int, cache_size: int = 0) -> float:
    """Microseconds per ``TokenVerifier.verify`` of a valid token, in this process (full check unless cached)."""
    issuer = FakeIssuer(audience="bench", alg=alg)
    verifier = issuer.verifier(cache_size=cache_size)
    token = issuer.token("notes:read")
    for _ in range(50):
        await verifier.verify(token)
    start = time.perf_counter()
    for _ in range(n):
        await verifier.verify(token)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--verifications", type=int, default=3000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")

    jwks_port, rs_port = free_port(), free_port()
    issuer = FakeIssuer(f"http://127.0.0.1:{jwks_port}", "notes", "RS256")
    token = issuer.token("notes:read notes:write", sub="bench-user")
    url = f"http://127.0.0.1:{rs_port}"

    print(f"GET /ping, 1 uvicorn process, wrk -t1 -c{args.connections}, {args.seconds} s x {args.rounds} rounds each")
    print(f"{'service':<34}{'unauth req/s':>14}{'verified req/s':>16}{'ratio':>8}")
    with jwks_server(issuer, jwks_port), processes() as procs:
        redis_url, _ = start_redis(procs)
        env = {"RS_ISSUER": issuer.issuer, "RS_AUDIENCE": "notes", "REDIS_URL": redis_url}
        variants = (("default (verified-token cache)", "4096"), ("cache off: RS256 on every request", "0"))
        for label, cache_size in variants:
            rs = Proc(
                service("resource_server", rs_port, "--log-level", "warning", "--no-access-log"),
                {**env, "RS_VERIFY_CACHE_SIZE": cache_size},
            )
            try:
                wait_http(url + "/readyz", rs)
                plain, verified = measure(url, token, args.seconds, args.connections, args.rounds)
            finally:
                rs.stop()
            print(f"{label:<34}{plain:>14.0f}{verified:>16.0f}{verified / plain:>8.3f}")
    print("target: ratio >= 0.85 (verified / unauthenticated, same endpoint, same run)")
    print()
    print("in-process TokenVerifier.verify of a valid token (signature and claims):")
    for alg in ("RS256", "ES256", "EdDSA"):
        print(f"  {alg:<6} {asyncio.run(verify_cost(alg, args.verifications)):7.1f} µs/verify")
    cached = asyncio.run(verify_cost("RS256", args.verifications, 4096))
    print(f"  cached {cached:7.1f} µs/verify (a token seen before)")


if __name__ == "__main__":
    main()
