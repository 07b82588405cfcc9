"""What DPoP costs (DESIGN §9), as ratios measured in one run.

    python bench/dpop.py [--seconds 5] [--connections 32] [--rounds 2]

1. The BFF's proxy with ``BFF_DPOP_KEY_FILE`` (an ES256 proof signed per request, checked by the resource server)
   against the same BFF without it (bearer tokens): real auth server, resource server and two BFF processes on
   loopback, ``wrk`` on ``/api/notes/me`` with a session cookie, the two alternating round by round. Goal >= 0.8.
2. The resource server with DPoP and revocations on (``RS_DPOP=allowed``, ``RS_REVOCATION_POLL=2``, a revoked login
   in its list): a DPoP-bound token with a fresh proof on every request — pre-signed, one per line, sent by
   ``bench/proofs.lua`` — against unauthenticated requests to the same endpoint (``GET /ping``). Goal >= 0.85.
Not a test: pytest never runs it.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    Proc,
    Stack,
    WrkResult,
    auth_clients,
    bff_env,
    free_port,
    login,
    processes,
    service,
    start_redis,
    wait_http,
    wrk,
)
from bench.verifier import jwks_server  # noqa: E402
from bff.dpop import DPoPSigner  # noqa: E402
from jwt_bff_verifier.testing import FakeIssuer  # noqa: E402

USER, PASSWORD = "bench-user", "bench-password-1"
# An upstream that checks nothing and answers {} at once: behind it, what is measured is the BFF's own cost.
TINY_UPSTREAM = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""
LUA = str(Path(__file__).resolve().parent / "proofs.lua")
PROOFS_PER_SECOND = 20_000  # more than one resource-server process answers here: a proof is never reused


def key_file() -> str:
    path = Path(tempfile.mkdtemp(prefix="bench-dpop-")) / "dpop.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(path)


def alternate(rounds: int, runs: dict[str, Callable[[], WrkResult]]) -> dict[str, WrkResult]:
    """Each run once as warm-up, then ``rounds`` times in turn; the mean req/s and the last latencies of each."""
    results: dict[str, list[WrkResult]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(rounds):
        for name, run in runs.items():
            results[name].append(run())
    return {
        name: WrkResult(
            sum(r.requests for r in rs),
            statistics.mean(r.rps for r in rs),
            rs[-1].p50_ms,
            rs[-1].p99_ms,
            sum(r.errors for r in rs),
        )
        for name, rs in results.items()
    }


def fmt(r: WrkResult) -> str:
    errors = f"  ({r.errors} errors)" if r.errors else ""
    return f"{r.rps:>8,.0f} req/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms{errors}"


def bff_with_and_without(args: argparse.Namespace) -> None:
    print(
        f"1. BFF /api/notes/me, wrk -t1 -c{args.connections}, {args.seconds} s x {args.rounds} rounds each", flush=True
    )
    with processes() as procs:
        redis_url, redis_port = start_redis(procs)
        secret = secrets.token_urlsafe(24)
        ports = [free_port(), free_port()]
        bff_urls = [f"http://127.0.0.1:{p}" for p in ports]
        auth_port, rs_port = free_port(), free_port()
        auth_url, rs_url = f"http://127.0.0.1:{auth_port}", f"http://127.0.0.1:{rs_port}"
        auth_env = {
            "REDIS_URL": redis_url,
            "AUTH_ISSUER": auth_url,
            "AUTH_KEYS_DIR": tempfile.mkdtemp(prefix="bench-keys-"),
            "AUTH_CLIENTS": auth_clients(bff_urls, secret),
            "AUTH_ACCESS_TTL": "3600",
        }
        procs.append(Proc(service("auth_server", auth_port), auth_env, health=auth_url + "/readyz"))
        assert httpx.post(auth_url + "/users", json={"username": USER, "password": PASSWORD}).status_code == 201
        rs_env = {"REDIS_URL": redis_url, "RS_ISSUER": auth_url, "RS_AUDIENCE": "notes"}
        procs.append(Proc(service("resource_server", rs_port, "--no-access-log"), rs_env, health=rs_url + "/readyz"))
        tiny_port = free_port()
        tiny_url = f"http://127.0.0.1:{tiny_port}"
        procs.append(Proc([sys.executable, "-c", TINY_UPSTREAM, str(tiny_port)], health=tiny_url + "/"))
        stack = Stack(redis_url, redis_port, auth_url, rs_url, bff_urls, secret)
        routes = {"BFF_ROUTES": json.dumps({"notes": rs_url, "tiny": tiny_url})}
        dpop_env = {**routes, "BFF_DPOP_KEY_FILE": key_file()}
        for url, port, extra in ((bff_urls[0], ports[0], routes), (bff_urls[1], ports[1], dpop_env)):
            procs.append(Proc(service("bff", port, "serve"), bff_env(stack, url, **extra), health=url + "/readyz"))
        cookies = [login(url, USER, PASSWORD) for url in bff_urls]

        def run(i: int, path: str) -> Callable[[], WrkResult]:
            headers = {"Cookie": cookies[i], "X-CSRF": "1"}
            return lambda: wrk(f"{bff_urls[i]}{path}", headers, args.seconds, args.connections)

        got = alternate(
            args.rounds,
            {
                "bearer": run(0, "/api/notes/me"),
                "dpop": run(1, "/api/notes/me"),
                "tiny bearer": run(0, "/api/tiny/x"),
                "tiny dpop": run(1, "/api/tiny/x"),
            },
        )
        print("  -> the resource server (it verifies the token, and with DPoP the proof):")
        print(f"  BFF, bearer tokens            {fmt(got['bearer'])}")
        print(f"  BFF, DPoP (BFF_DPOP_KEY_FILE) {fmt(got['dpop'])}")
        print(f"  BFF with DPoP / without       {got['dpop'].rps / got['bearer'].rps:.2f}x   (goal >= 0.80)")
        print("  -> an upstream that checks nothing (the BFF's own cost: a proof signed per request):")
        print(f"  BFF, bearer tokens            {fmt(got['tiny bearer'])}")
        print(f"  BFF, DPoP (BFF_DPOP_KEY_FILE) {fmt(got['tiny dpop'])}")
        ratio = got["tiny dpop"].rps / got["tiny bearer"].rps
        print(f"  BFF with DPoP / without       {ratio:.2f}x   (goal >= 0.80)", flush=True)


def verifier_with_dpop_and_revocations(args: argparse.Namespace) -> None:
    print(f"\n2. Resource server GET /ping, wrk -t1 -c{args.connections}, {args.seconds} s x {args.rounds} rounds each")
    jwks_port, rs_port = free_port(), free_port()
    issuer = FakeIssuer(f"http://127.0.0.1:{jwks_port}", "notes", "RS256")
    issuer.revoke("a-login-that-ended")  # the verifier's revocation list is not empty
    signer = DPoPSigner(ec.generate_private_key(ec.SECP256R1()))
    bound = issuer.token("notes:read", sub="bench-user", sid="bench-login", cnf={"jkt": signer.jkt})
    bearer = issuer.token("notes:read", sub="bench-user", sid="bench-login")
    url = f"http://127.0.0.1:{rs_port}/ping"
    proofs = Path(tempfile.mkdtemp(prefix="bench-proofs-")) / "proofs.txt"

    def with_proofs() -> WrkResult:
        # signed just before each run: fresh (iat) and unused (jti), one per request
        count = PROOFS_PER_SECOND * args.seconds
        proofs.write_text("\n".join(signer.proof("GET", url, bound) for _ in range(count)) + "\n")
        return wrk(url, {}, args.seconds, args.connections, script=(LUA, str(proofs), bound))

    with jwks_server(issuer, jwks_port), processes() as procs:
        redis_url, _ = start_redis(procs)
        env = {
            "RS_ISSUER": issuer.issuer,
            "RS_AUDIENCE": "notes",
            "REDIS_URL": redis_url,
            "RS_DPOP": "allowed",
            "RS_REVOCATION_POLL": "2",
        }
        rs = Proc(service("resource_server", rs_port, "--log-level", "warning", "--no-access-log"), env)
        procs.append(rs)
        wait_http(url.replace("/ping", "/readyz"), rs)
        got = alternate(
            args.rounds,
            {
                "plain": lambda: wrk(url, {}, args.seconds, args.connections),
                "bearer": lambda: wrk(url, {"Authorization": f"Bearer {bearer}"}, args.seconds, args.connections),
                "dpop": with_proofs,
            },
        )
    print(f"  unauthenticated                         {fmt(got['plain'])}")
    print(f"  bearer token, revocations on            {fmt(got['bearer'])}")
    print(f"  DPoP token + fresh proof, revocations on {fmt(got['dpop'])}")
    print(f"  bearer + revocations / unauthenticated  {got['bearer'].rps / got['plain'].rps:.2f}x")
    ratio = got["dpop"].rps / got["plain"].rps
    print(f"  DPoP + revocations / unauthenticated    {ratio:.2f}x   (goal >= 0.85)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="bff,verifier", help="bff, verifier or both")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")
    if "bff" in args.only:
        bff_with_and_without(args)
    if "verifier" in args.only:
        verifier_with_dpop_and_revocations(args)


if __name__ == "__main__":
    main()
