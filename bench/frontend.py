"""Does serving a frontend cost the /api/ proxy path anything? (DESIGN §11, docs/guides/your-spa.md)

    python bench/frontend.py                  # 4 alternating rounds of 5 s each, ~1 minute
    python bench/frontend.py --seconds 10 --rounds 5

Two BFFs, alike but for BFF_FRONTEND (``none``, and the built SPA of docs_src/your_spa/dist), proxy GET /me of the same
resource server. wrk drives /api/notes/me through each in turn (none, directory, directory, none, ...), so that load
from elsewhere on the machine falls on both alike. Two figures per BFF: requests per second, and the BFF process's
CPU time per request (from /proc, user + system), which other load on a shared machine disturbs far less; each is
given as the median ratio directory / none. Then a hashed static asset
(/assets/index-BdX3k9aZ.js) is read through the BFF beside the same /api/ call, for scale. Not a test: nothing here
asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Stack, WrkResult, free_port, login, processes, start_redis, wrk  # noqa: E402
from bench.run import PASSWORD, USER, start_auth, start_bff, start_rs  # noqa: E402

SPA = Path(__file__).resolve().parent.parent / "docs_src" / "your_spa" / "dist"
ASSET = "/assets/index-BdX3k9aZ.js"


def fmt(r: WrkResult) -> str:
    return f"{r.rps:8.0f} req/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  errors {r.errors}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (proc(5): fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with processes() as procs:
        redis_url, redis_port = start_redis(procs)
        secret = secrets.token_urlsafe(24)
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        auth_url = start_auth(procs, redis_url, urls, secret, access_ttl=3600)
        rs_url = start_rs(procs, redis_url, auth_url)
        stack = Stack(redis_url, redis_port, auth_url, rs_url, urls, secret)
        none = start_bff(procs, stack, ports[0], BFF_FRONTEND="none")
        spa = start_bff(procs, stack, ports[1], BFF_FRONTEND=str(SPA))
        pids = {none: procs[-2].proc.pid, spa: procs[-1].proc.pid}
        cookies = {none: login(none, USER, PASSWORD), spa: login(spa, USER, PASSWORD)}

        def api(url: str) -> tuple[WrkResult, float]:
            """wrk's result and the BFF's CPU microseconds per request."""
            headers = {"Cookie": cookies[url], "X-CSRF": "1"}
            before = cpu_seconds(pids[url])
            result = wrk(f"{url}/api/notes/me", headers, seconds=args.seconds, connections=args.connections)
            return result, (cpu_seconds(pids[url]) - before) * 1e6 / max(result.requests, 1)

        for url in (none, spa):  # warm-up: pools, caches
            wrk(f"{url}/api/notes/me", {"Cookie": cookies[url], "X-CSRF": "1"}, seconds=1)
        print(
            f"/api/notes/me, wrk -c{args.connections} -d{args.seconds}s, {args.rounds} alternating rounds", flush=True
        )
        rps, cpu = [], []
        for n in range(args.rounds):
            order = (none, spa) if n % 2 == 0 else (spa, none)
            got = {url: api(url) for url in order}
            (a, a_cpu), (b, b_cpu) = got[none], got[spa]
            rps.append(b.rps / a.rps)
            cpu.append(b_cpu / a_cpu)
            print(f"  round {n + 1}  BFF_FRONTEND=none       {fmt(a)}  CPU {a_cpu:5.0f} us/req", flush=True)
            print(f"  round {n + 1}  BFF_FRONTEND=directory  {fmt(b)}  CPU {b_cpu:5.0f} us/req", flush=True)
        print(f"/api/ with a directory frontend / with none: {statistics.median(rps):.3f}x req/s, "
              f"{statistics.median(cpu):.3f}x CPU per request (medians of {args.rounds})")  # fmt: skip
        asset = wrk(spa + ASSET, {}, seconds=args.seconds, connections=args.connections)
        call, _ = api(spa)
        print(f"static asset {ASSET}: {fmt(asset)}")
        print(f"/api/notes/me (same BFF, right after): {fmt(call)}")
        print(f"static asset / proxied API call: {asset.rps / call.rps:.2f}x req/s")


if __name__ == "__main__":
    main()
