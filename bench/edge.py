"""Forward auth (DESIGN §8): nginx + ``/bff/auth`` against the BFF's own proxy, and against nginx alone.

    python bench/edge.py                 # ~1 minute; needs nginx, wrk and redis-server
    python bench/run.py --only edge      # the same, as a section of the whole table

One run, one upstream: a static nginx serving a small JSON answer and a 1 MiB file. Three paths to it:

* the BFF's own proxy (``/api/notes/…`` on ``bff serve``: cookie → session → token, aiohttp relays the body);
* nginx with deploy/nginx's edge configuration: ``auth_request`` to ``/bff/auth`` (one Redis command), then
  nginx relays the body itself, with the token from the answer;
* nginx alone: the same server with ``auth_request off`` and a fixed ``Authorization`` header — the ceiling.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    Proc,
    Stack,
    WrkResult,
    cpu_seconds,
    free_port,
    login,
    processes,
    redis_commandstats,
    start_redis,
    wait_http,
    wrk,
)
from bench.run import PASSWORD, USER, fmt, row, rows, start_auth, start_bff  # noqa: E402
from tests.edge import NGINX, Edge, main_conf  # noqa: E402

BIG = 1024 * 1024
STATIC = """    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        location = /healthz {{ return 200 'ok'; }}
    }}"""
# nginx alone: a route of the same server that skips auth_request and sends a fixed token instead.
NGINX_ALONE = """        location /api/alone/ {
            auth_request off;
            proxy_set_header Authorization "Bearer fixed-token";
            proxy_set_header Cookie "";
            proxy_set_header Connection "";
            proxy_pass http://api_notes/;
        }
"""


def static_upstream(procs: list[Proc]) -> str:
    """A static nginx: the fastest upstream we can have, so the paths in front of it are what is measured."""
    workdir = Path(tempfile.mkdtemp(prefix="jwt-bff-bench-static-"))
    (workdir / "www").mkdir()
    (workdir / "www" / "small.json").write_text('{"id": 1, "text": "a small answer, as most API calls get"}\n')
    (workdir / "www" / "big.bin").write_bytes(secrets.token_bytes(BIG))
    port = free_port()
    static = STATIC.format(dir=workdir, port=port)
    (workdir / "static.conf").write_text(main_conf(workdir, static, name="static", workers="auto"))
    args = [NGINX, "-p", str(workdir), "-e", str(workdir / "static-error.log"), "-c", str(workdir / "static.conf")]
    procs.append(Proc([*args, "-g", "daemon off;"], health=f"http://127.0.0.1:{port}/healthz"))
    return f"127.0.0.1:{port}"


def measure_edge(args: argparse.Namespace) -> None:
    seconds, connections = args.seconds, args.connections
    print(f"\n7. Forward auth: nginx + /bff/auth vs the BFF's proxy vs nginx alone (wrk -c{connections} -d{seconds}s)")
    with processes() as procs:
        redis_url, redis_port = start_redis(procs)
        secret = secrets.token_urlsafe(24)
        bff_port, edge_port = free_port(), free_port()
        bff_url = f"http://127.0.0.1:{bff_port}"
        auth_url = start_auth(procs, redis_url, [bff_url], secret, access_ttl=3600)
        upstream = static_upstream(procs)
        stack = Stack(redis_url, redis_port, auth_url, "http://" + upstream, [bff_url], secret)
        # nginx asks /bff/auth from here; one session streams 1 MiB answers on all of wrk's connections at once
        start_bff(procs, stack, bff_port, BFF_TRUSTED_PROXIES="127.0.0.1/32", BFF_MAX_SOCKETS_PER_SESSION="64")
        bff_pid = procs[-1].proc.pid
        # as the official image runs it: a worker per core
        edge = Edge(edge_port, f"127.0.0.1:{bff_port}", {"notes": upstream, "live": upstream}, workers="auto")
        conf = edge.dir / "edge.conf"
        anchor = "        location /api/notes/ {"
        conf.write_text(conf.read_text().replace(anchor, NGINX_ALONE + anchor, 1))
        try:
            edge.start()
            wait_http(edge.url + "/healthz")
            cookie = login(bff_url, USER, PASSWORD)
            headers = {"Cookie": cookie, "X-CSRF": "1"}

            assert edge.proc is not None
            redis_calls: dict[str, int] = {}
            cpu: dict[tuple[str, str], float] = {}  # CPU seconds per request of the layer in front of the upstream
            layers = {"bff": [bff_pid], "edge": [bff_pid, edge.proc.pid], "alone": [edge.proc.pid], "direct": []}

            def measure(path: str, url: str, size: str) -> None:
                wrk(url, headers, seconds=1, connections=connections)  # warm-up: pools, caches
                before, cpu_before = redis_commandstats(redis_port), cpu_seconds(layers[path])
                result = wrk(url, headers, seconds=seconds, connections=connections)
                cpu[path, size] = (cpu_seconds(layers[path]) - cpu_before) / max(result.requests, 1)
                if path == "edge" and size == "small.json":
                    after = redis_commandstats(redis_port)
                    redis_calls.update({k: after[k] - before.get(k, 0) for k in after if k != "info"})
                results[path, size] = result

            results: dict[tuple[str, str], WrkResult] = {}
            for size in ("small.json", "big.bin"):
                measure("bff", f"{bff_url}/api/notes/{size}", size)
                measure("edge", f"{edge.url}/api/notes/{size}", size)
                measure("alone", f"{edge.url}/api/alone/{size}", size)
                measure("direct", f"http://{upstream}/{size}", size)
        finally:
            edge.cleanup()
    for size, label in (("small.json", "small answer (60 B)"), ("big.bin", "1 MiB answer")):
        bff, via_edge, alone = results["bff", size], results["edge", size], results["alone", size]
        row(f"{label}: the static upstream direct (the ceiling)", fmt(results["direct", size]))
        row(f"{label}: BFF's own proxy", fmt(bff))
        row(f"{label}: nginx + /bff/auth", fmt(via_edge))
        row(f"{label}: nginx alone (fixed token)", fmt(alone))
        target = "target >= 1.5" if size == "small.json" else "target >= 3"
        row(f"{label}: nginx + /bff/auth / BFF's proxy", f"{via_edge.rps / bff.rps:.2f}x", target)
        row(f"{label}: nginx + /bff/auth / nginx alone", f"{via_edge.rps / alone.rps:.2f}x")
        per = {path: cpu[path, size] * 1000 for path in ("bff", "edge", "alone")}
        row(
            f"{label}: CPU ms per request in front of the upstream",
            f"BFF proxy {per['bff']:.3f}, nginx + /bff/auth {per['edge']:.3f}, nginx alone {per['alone']:.3f}",
        )
        row(f"{label}: CPU per request, BFF's proxy / nginx + /bff/auth", f"{per['bff'] / per['edge']:.2f}x")
    per_request = sum(redis_calls.values()) / max(results["edge", "small.json"].requests, 1)
    by_command = ", ".join(
        f"{k}={v / max(results['edge', 'small.json'].requests, 1):.3f}" for k, v in redis_calls.items() if v
    )
    row("Redis commands per request through nginx + /bff/auth", f"{per_request:.3f} ({by_command})", "target 1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    measure_edge(parser.parse_args())
    print("\n| measure | figure | target |\n|---|---|---|")
    for what, figure, target in rows:
        print(f"| {what.strip()} | {figure} | {target} |")


if __name__ == "__main__":
    main()
