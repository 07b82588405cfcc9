"""Profile the BFF's hot paths under wrk load with py-spy; prints where the time goes.

python bench/profile_bff.py --seconds 8               # the proxy: /api/notes/me
python bench/profile_bff.py --seconds 8 --path auth   # forward auth: /bff/auth as nginx asks it
python bench/profile_bff.py --env 'OTEL_EXPORTER_OTLP_ENDPOINT=$OTLP'   # with a setting ($OTLP: a collector)
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    Stack,
    free_port,
    given_env,
    login,
    processes,
    start_otlp_sink,
    start_redis,
    wrk,
)
from bench.run import PASSWORD, USER, start_auth, start_bff, start_rs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--path", choices=("api", "auth"), default="api")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="for the BFF ($OTLP: a collector's URL)"
    )
    args = parser.parse_args()
    with processes() as procs:
        redis_url, redis_port = start_redis(procs)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        auth_url = start_auth(procs, redis_url, [url], "profile-secret-0123456789", access_ttl=3600)
        rs_url = start_rs(procs, redis_url, auth_url)
        stack = Stack(redis_url, redis_port, auth_url, rs_url, [url], "profile-secret-0123456789")
        otlp_url = start_otlp_sink(procs) if any("$OTLP" in item for item in args.env) else ""
        extra = given_env(args.env, OTLP=otlp_url)
        start_bff(procs, stack, port, **{"BFF_TRUSTED_PROXIES": "127.0.0.1/32", **extra})
        bff_pid = procs[-1].proc.pid
        cookie = login(url, USER, PASSWORD)
        headers = {"Cookie": cookie, "X-CSRF": "1"}
        target = f"{url}/api/notes/me"
        if args.path == "auth":  # the question nginx's auth_request asks (deploy/nginx)
            headers |= {"X-Original-URI": "/api/notes/me", "X-Original-Method": "GET"}
            target = f"{url}/bff/auth"
        wrk(target, headers, seconds=1)
        out = Path(tempfile.mkdtemp()) / "bff.txt"
        load = threading.Thread(target=wrk, args=(target, headers), kwargs={"seconds": args.seconds})
        load.start()
        subprocess.run(
            [
                "py-spy",
                "record",
                "--pid",
                str(bff_pid),
                "--duration",
                str(args.seconds - 1),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            check=True,
            capture_output=True,
        )
        load.join()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        frames = stack_text.split(";")
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"{total} samples\n\nself time:")
    for frame, n in own.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {frame}")
    print("\ninclusive time (project and library frames):")
    for frame, n in inclusive.most_common(args.top * 2):
        if "asyncio" in frame or "runners.py" in frame or "<module>" in frame:
            continue
        print(f"{100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
