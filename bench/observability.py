"""What the observability of DESIGN §12 adds to one proxied request, in-process (no network: a ratio of CPU time).

    python bench/observability.py

The per-request additions on the BFF's hot path: the request context (one object, one ContextVar set and reset),
the request id and W3C ``traceparent`` put on the upstream call, and the upstream metrics (a counter and a
histogram by route name). Compared with what the proxy did before (a random X-Request-ID when the browser sent
none), and put against the CPU time of a whole proxied request measured by ``bench/run.py --only proxy`` (its
"CPU us per request" row: ~120 us on the development machine; pass yours as the first argument).
"""

from __future__ import annotations

import os
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multidict import CIMultiDict  # noqa: E402

from bff.metrics import Metrics  # noqa: E402
from bff.proxy import Proxy  # noqa: E402
from bff.routes import parse_routes  # noqa: E402
from servicekit.logs import CONTEXT, RequestContext, outbound_headers  # noqa: E402

HEADERS = [
    (b"host", b"localhost:8000"),
    (b"cookie", b"__Host-session=" + b"x" * 43),
    (b"x-csrf", b"1"),
    (b"accept", b"*/*"),
    (b"user-agent", b"wrk"),
]
N = 200_000


def main() -> None:
    metrics = Metrics()
    proxy = Proxy(parse_routes('{"notes": "http://127.0.0.1:9001"}'), 30)
    proxy.requests, proxy.latency = metrics.upstream_requests, metrics.upstream_latency

    def now() -> None:
        context = RequestContext(HEADERS)
        reset = CONTEXT.set(context)
        headers: CIMultiDict[str] = CIMultiDict([("accept", "*/*")])
        headers.update(outbound_headers())
        proxy.count("notes", 200, 0.004)
        CONTEXT.reset(reset)

    def before() -> None:
        headers: CIMultiDict[str] = CIMultiDict([("accept", "*/*")])
        if "x-request-id" not in headers:
            headers["X-Request-ID"] = os.urandom(16).hex()

    with_us = min(timeit.repeat(now, number=N, repeat=5)) / N * 1e6
    without = min(timeit.repeat(before, number=N, repeat=5)) / N * 1e6
    added = with_us - without
    whole = float(sys.argv[1]) if len(sys.argv) > 1 else 123.0  # bench/run.py --only proxy: CPU us per request
    print(f"request context + traceparent + upstream metrics: {with_us:.2f} us; before: {without:.2f} us")
    print(f"added per proxied request: {added:.2f} us = {added / whole:.1%} of the {whole:.0f} us of CPU a proxied")
    print("request costs the BFF (bench/run.py --only proxy, 'CPU us per request'; target <= 5%)")


if __name__ == "__main__":
    main()
