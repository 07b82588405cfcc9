"""Load and measurement helpers for the scale tests: many logged-in sessions, a request loop over several BFF
replicas that records every outcome, and the resident memory of a process."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.conftest import Stack


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from ``/proc/<pid>/status`` (VmRSS, kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in the background; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.baseline = rss_mib(pid)
        self.peak = self.baseline
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mib(self.pid))
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> RssSampler:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.peak = max(self.peak, rss_mib(self.pid))


async def login_many(stack: Stack, n: int, username: str = "loaduser", parallel: int = 8) -> list[str]:
    """``n`` separate logins (one user, as many devices): the ``Cookie`` header of each session."""
    limit = asyncio.Semaphore(parallel)

    async def one() -> str:
        async with limit:
            browser = stack.browser()
            callback = await stack.login(browser, username)
            assert callback.status_code == 302, callback.text
            return "; ".join(f"{k}={v}" for k, v in browser.cookies.items())

    return list(await asyncio.gather(*(one() for _ in range(n))))


@dataclass
class Outcome:
    at: float  # seconds since the load started
    session: int
    url: str
    status: int | str  # the HTTP status, or the name of the transport error
    latency: float = 0.0  # seconds


@dataclass
class Load:
    """Every outcome of a load run, with the counts the assertions need."""

    outcomes: list[Outcome] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def counts(self, url: str | None = None, after: float = 0.0, sent_after: float = 0.0) -> Counter[int | str]:
        """Statuses of the requests answered ``after`` and sent ``sent_after`` (seconds since the start)."""
        return Counter(
            o.status
            for o in self.outcomes
            if (url is None or o.url == url) and o.at >= after and o.at - o.latency >= sent_after
        )

    def sessions_ok(self, after: float, url: str | None = None) -> set[int]:
        """Sessions that got a 200 after ``after`` seconds (from ``url`` if given)."""
        return {o.session for o in self.outcomes if o.status == 200 and o.at >= after and (url is None or o.url == url)}

    def latency(self, quantile: float) -> float:
        ordered = sorted(o.latency for o in self.outcomes)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] if ordered else 0.0

    @property
    def rate(self) -> float:
        elapsed = max((o.at for o in self.outcomes), default=0.0)
        return len(self.outcomes) / elapsed if elapsed else 0.0


async def run_load(
    cookies: Sequence[str],
    urls: Callable[[], Sequence[str]],
    stop: asyncio.Event,
    *,
    paths: Sequence[str] = ("/api/notes/me", "/bff/user"),
    pause: float = 0.0,
    load: Load | None = None,
    request_timeout: float = 20.0,
) -> Load:
    """One worker per session, each requesting ``paths`` in turn from the replicas ``urls()`` (round robin, asked
    anew each time, as a load balancer would) until ``stop`` is set. Transport errors are recorded, not raised."""
    load = load or Load()
    # An idle connection is dropped after 2 s, well before the services close it (uvicorn: 5 s idle). httpx's default is
    # those same 5 s: a pooled connection reused just as the server closed it failed as a ReadError, which this load
    # counted as the BFF's (3 in ~2,100 requests, once in CI); nginx retries such a request itself.
    limits = httpx.Limits(
        max_connections=len(cookies) + 16, max_keepalive_connections=len(cookies) + 16, keepalive_expiry=2.0
    )

    async with httpx.AsyncClient(timeout=request_timeout, limits=limits) as client:

        async def worker(i: int, cookie: str) -> None:
            n = i
            while not stop.is_set():
                replicas = urls()
                url = replicas[n % len(replicas)]
                path = paths[n % len(paths)]
                n += 1
                status: int | str
                sent = time.monotonic()
                try:
                    response = await client.get(url + path, headers={"Cookie": cookie, "X-CSRF": "1"})
                    status = response.status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                now = time.monotonic()
                load.outcomes.append(Outcome(now - load.started, i, url, status, now - sent))
                if pause:
                    await asyncio.sleep(pause)

        await asyncio.gather(*(worker(i, c) for i, c in enumerate(cookies)))
    return load


async def check_all(
    cookies: Sequence[str], url: str, paths: Sequence[str] = ("/bff/user", "/api/notes/me")
) -> Counter[int]:
    """Every session once on every path: the statuses counted (all 200 means no session was lost)."""
    async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=64)) as client:
        responses = await asyncio.gather(
            *(client.get(url + path, headers={"Cookie": c, "X-CSRF": "1"}) for c in cookies for path in paths)
        )
    return Counter(r.status_code for r in responses)
