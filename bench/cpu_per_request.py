"""CPU time of a BFF process per proxied request, for two source trees side by side (A/B), in one run.

    python bench/cpu_per_request.py --base /tmp/main-export          # base tree vs this one
    python bench/cpu_per_request.py --base /tmp/main-export --rounds 5 --seconds 5
    python bench/cpu_per_request.py --base /tmp/main-export --path auth    # /bff/auth as nginx asks it
    python bench/cpu_per_request.py --env BFF_USER_CLAIMS=email,groups    # one tree: a setting's own cost

``--env`` and ``--base-env`` (repeatable, ``NAME=VALUE``; ``$RS`` in a value is the resource server's URL) set a
variable for this tree's BFF or the base's; without ``--base`` both run this tree, so a feature's cost shows alone.
``$OTLP`` in a value starts an OTLP/HTTP collector that keeps nothing (``bench/otlp_sink.py``) and is its URL, so
that span export costs what it costs a service whose collector answers:

    python bench/cpu_per_request.py --env 'OTEL_EXPORTER_OTLP_ENDPOINT=$OTLP'    # a span per request, exported
    python bench/cpu_per_request.py --threads ...    # and which thread of this tree's BFF spent it (an exporter's?)

Throughput on a shared machine swings with everyone else's load; the CPU seconds the BFF process itself spends per
request (utime + stime from /proc, over a wrk run) swing much less. Both BFFs run at once against one Redis, auth
server and resource server, and are driven in alternation, so that a change in the machine's load hits both. Prints
the median of each and their ratio. Not a test: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    Proc,
    Stack,
    bff_env,
    free_port,
    given_env,
    login,
    processes,
    service,
    start_otlp_sink,
    start_redis,
    wrk,
)
from bench.run import PASSWORD, USER, start_auth, start_rs  # noqa: E402

HERE = str(Path(__file__).resolve().parent.parent)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    return _cpu(Path(f"/proc/{pid}/stat"))


def _cpu(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of stat(5))


def thread_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of each of a process's threads (the event loop's, an exporter's), by "name/tid"."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            threads[f"{(task / 'comm').read_text().strip()}/{task.name}"] = _cpu(task / "stat")
    return threads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", help="the other source tree (e.g. `git archive main` unpacked); default: this one")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="for this tree's BFF")
    parser.add_argument("--base-env", action="append", default=[], metavar="NAME=VALUE", help="for the base's BFF")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--path", choices=("api", "auth"), default="api", help="the proxy, or forward auth")
    parser.add_argument("--threads", action="store_true", help="also each thread's CPU per request (this tree's)")
    args = parser.parse_args()
    trees = {"base": str(Path(args.base).resolve()) if args.base else HERE, "this": HERE}
    with processes() as procs:
        redis_url, redis_port = start_redis(procs)
        ports = {name: free_port() for name in trees}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        secret = "cpu-bench-secret-0123456789"
        auth_url = start_auth(procs, redis_url, list(urls.values()), secret, access_ttl=3600)
        rs_url = start_rs(procs, redis_url, auth_url)
        stack = Stack(redis_url, redis_port, auth_url, rs_url, list(urls.values()), secret)
        pids, cookies = {}, {}
        extra = {"base": args.base_env, "this": args.env}
        otlp_url = start_otlp_sink(procs) if any("$OTLP" in item for item in args.env + args.base_env) else None
        for name, tree in trees.items():
            env = {**bff_env(stack, urls[name], BFF_TRUSTED_PROXIES="127.0.0.1/32"), "PYTHONPATH": tree}
            env |= given_env(extra[name], RS=rs_url, OTLP=otlp_url or "")
            procs.append(Proc(service("bff", ports[name], "serve"), env, health=urls[name] + "/readyz"))
            pids[name] = procs[-1].proc.pid
            cookies[name] = login(urls[name], USER, PASSWORD)
        per_request: dict[str, list[float]] = {name: [] for name in trees}
        path, asked = "/api/notes/me", {}
        if args.path == "auth":  # the question nginx's auth_request asks (deploy/nginx)
            path, asked = "/bff/auth", {"X-Original-URI": "/api/notes/me", "X-Original-Method": "GET"}
        for name in trees:  # warm-up: pools, caches
            wrk(f"{urls[name]}{path}", {"Cookie": cookies[name], "X-CSRF": "1", **asked}, seconds=1)
        for round_ in range(args.rounds):
            for name in trees if round_ % 2 == 0 else reversed(list(trees)):
                headers = {"Cookie": cookies[name], "X-CSRF": "1", **asked}
                before, threads = cpu_seconds(pids[name]), thread_seconds(pids[name])
                result = wrk(f"{urls[name]}{path}", headers, seconds=args.seconds, connections=args.connections)
                used = cpu_seconds(pids[name]) - before
                if args.threads and name == "this":
                    for thread, seconds in thread_seconds(pids[name]).items():
                        spent = (seconds - threads.get(thread, 0.0)) / max(result.requests, 1) * 1e6
                        if spent:
                            print(f"    thread {thread:<24} {spent:7.1f} us CPU/request")
                per_request[name].append(used / max(result.requests, 1) * 1e6)
                errors = f"  ({result.errors} errors)" if result.errors else ""
                cost = per_request[name][-1]
                print(f"  round {round_ + 1} {name:<4} {result.rps:8,.0f} req/s  {cost:7.1f} us CPU/request{errors}")
        medians = {name: statistics.median(values) for name, values in per_request.items()}
        for name, median in medians.items():
            print(f"{name:<4} median {median:7.1f} us of BFF CPU per request  ({trees[name]})")
        paired = [this / base for this, base in zip(per_request["this"], per_request["base"], strict=True)]
        print(f"this / base: {medians['this'] / medians['base']:.3f}x CPU per request (medians); median of the")
        print(f"rounds' own ratios (each pair measured back to back): {statistics.median(paired):.3f}x")
        if otlp_url:  # the spans did go somewhere: what the collector took
            print(f"OTLP collector took: {httpx.get(otlp_url + '/count').json()}")


if __name__ == "__main__":
    main()
