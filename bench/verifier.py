"""What JWT verification costs the resource server: verified req/s over unauthenticated req/s, in one run.

    python bench/verifier.py [--seconds 5] [--connections 32] [--rounds 2]

Starts the real service (`python -m resource_server`, one uvicorn process on loopback) with its JWKS served from
this process by a throw-away ``FakeIssuer`` key set, and a private redis-server (only for readiness). Then drives
``wrk`` against ``GET /ping`` — public, and verifying the bearer token when one is sent — alternately without and
with a valid RS256 token, ``--rounds`` times each, and prints req/s and the ratio. Finally it prints the in-process
cost of one ``TokenVerifier.verify`` for RS256, ES256 and EdDSA. Not a test: pytest never runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from resource_server.verifier.testing import FakeIssuer  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=REPO, stdout=log, stderr=log)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def jwks_server(issuer: FakeIssuer, port: int) -> Iterator[None]:
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


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the service did not become ready")


def wrk(url: str, seconds: float, connections: int, token: str | None = None) -> float:
    """Requests per second that answered 200 (wrk counts non-2xx separately: any is an error here)."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", url]
    if token is not None:
        args[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return float(match.group(1))


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


def measure(url: str, token: str, seconds: float, connections: int, rounds: int) -> tuple[float, float]:
    """Mean req/s of GET /ping without and with the token, alternating so that drift hits both alike."""
    assert httpx.get(url + "/ping", headers={"Authorization": f"Bearer {token}"}).json()["sub"] == "bench-user"
    assert httpx.get(url + "/ping", headers={"Authorization": "Bearer x.y.z"}).status_code == 401
    wrk(url + "/ping", 1, connections)  # warm-up, both ways
    wrk(url + "/ping", 1, connections, token)
    plain, verified = [], []
    for _ in range(rounds):
        plain.append(wrk(url + "/ping", seconds, connections))
        verified.append(wrk(url + "/ping", seconds, connections, token))
    return statistics.mean(plain), statistics.mean(verified)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--verifications", type=int, default=3000)
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("redis-server") is None:
        sys.exit("needs wrk and redis-server on PATH")

    jwks_port, redis_port, rs_port = free_port(), free_port(), free_port()
    issuer = FakeIssuer(f"http://127.0.0.1:{jwks_port}", "notes", "RS256")
    token = issuer.token("notes:read notes:write", sub="bench-user")
    env = {"RS_ISSUER": issuer.issuer, "RS_AUDIENCE": "notes", "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
    url = f"http://127.0.0.1:{rs_port}"
    redis_args = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    rs_args = [sys.executable, "-m", "resource_server", "--host", "127.0.0.1", "--port", str(rs_port),
               "--log-level", "warning", "--no-access-log"]

    print(f"GET /ping, 1 uvicorn process, wrk -t1 -c{args.connections}, {args.seconds:g} s x {args.rounds} rounds each")
    print(f"{'service':<34}{'unauth req/s':>14}{'verified req/s':>16}{'ratio':>8}")
    with jwks_server(issuer, jwks_port), process(redis_args):
        variants = (("default (verified-token cache)", "4096"), ("cache off: RS256 on every request", "0"))
        for label, cache_size in variants:
            with process(rs_args, {**env, "RS_VERIFY_CACHE_SIZE": cache_size}) as service:
                wait_ready(url, service)
                plain, verified = measure(url, token, args.seconds, args.connections, args.rounds)
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
