"""A bounded load test through two BFF processes on a real Redis Cluster, with access tokens short enough that
sessions refresh all the time: 0 errors, 0 sessions lost, BFF memory flat.

The full run (200 sessions for 60 s) is marked ``load`` and left out of the default run: ``pytest -m load
tests/scale -s`` prints its figures. A short version (50 sessions for 6 s) runs by default."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.scale.load import Load, RssSampler, check_all, login_many, rss_mib, run_load

pytestmark = pytest.mark.anyio

BFF = ["-m", "bff", "serve"]
WARM_UP = 2.0  # seconds of load before the memory baseline: pools and caches fill up first


@pytest.fixture
def redis_url(redis_cluster_url: str) -> str:
    return redis_cluster_url


@dataclass
class Figures:
    sessions: int
    seconds: float
    load: Load
    refreshes: int
    rss: list[tuple[float, float, float]]  # per BFF: baseline after warm-up, peak, end (MiB)

    def report(self) -> str:
        statuses = dict(self.load.counts())
        rss = "; ".join(f"{b:.0f} -> peak {p:.0f}, end {e:.0f} MiB" for b, p, e in self.rss)
        return (
            f"{self.sessions} sessions x {self.seconds:.0f}s over {len(self.rss)} BFF processes on a 3-master "
            f"cluster: {len(self.load.outcomes)} requests ({self.load.rate:.0f}/s), statuses {statuses}, "
            f"latency p50 {self.load.latency(0.5) * 1000:.1f} ms p99 {self.load.latency(0.99) * 1000:.1f} ms, "
            f"{self.refreshes} refresh grants; BFF RSS {rss}"
        )


async def run(stack_factory: Any, process_factory: Any, sessions: int, seconds: float, access_ttl: int) -> Figures:
    # one user on many devices: as many sessions as the run needs (BFF_MAX_SESSIONS_PER_USER would end the oldest)
    stack: Stack = stack_factory(
        access_ttl=access_ttl, bff_thread=False, BFF_REFRESH_SKEW="0", BFF_MAX_SESSIONS_PER_USER=str(sessions)
    )
    port = int(stack.bff_url.rsplit(":", 1)[1])
    bffs = [process_factory(BFF, stack.bff_env, port=port), process_factory(BFF, stack.bff_env)]
    urls = [b.url for b in bffs]
    cookies = await login_many(stack, sessions)

    stop = asyncio.Event()
    load = Load()
    task = asyncio.create_task(run_load(cookies, lambda: urls, stop, load=load))
    await asyncio.sleep(WARM_UP)
    samplers = [RssSampler(b.proc.pid, interval=0.2) for b in bffs]
    for sampler in samplers:
        await sampler.__aenter__()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 30)
    for sampler in samplers:
        await sampler.__aexit__()
    ends = [rss_mib(b.proc.pid) for b in bffs]
    figures = Figures(
        sessions,
        seconds + WARM_UP,
        load,
        stack.gate.refreshes,
        [(s.baseline, s.peak, e) for s, e in zip(samplers, ends, strict=True)],
    )
    print(figures.report())

    assert dict(load.counts()) == {200: len(load.outcomes)}, figures.report()  # 0 errors
    assert load.sessions_ok(after=WARM_UP + seconds - 2) == set(range(sessions))
    for url in urls:
        assert await check_all(cookies, url) == {200: 2 * sessions}  # 0 sessions lost, on either BFF
    # every session refreshed at every expiry it lived through (no more: one grant per session per expiry)
    expiries = int((WARM_UP + seconds) // access_ttl)
    assert sessions * max(1, expiries - 1) <= stack.gate.refreshes <= sessions * (expiries + 2), figures.report()
    return figures


async def test_short_load(stack_factory: Any, process_factory: Any) -> None:
    figures = await run(stack_factory, process_factory, sessions=50, seconds=4, access_ttl=3)
    for baseline, peak, end in figures.rss:
        assert peak - baseline < 20 and end - baseline < 20, figures.report()


@pytest.mark.load
async def test_load_200_sessions_60s(stack_factory: Any, process_factory: Any) -> None:
    started = time.monotonic()
    figures = await run(stack_factory, process_factory, sessions=200, seconds=58, access_ttl=10)
    for baseline, peak, end in figures.rss:
        assert peak - baseline < 30 and end - baseline < 30, figures.report()
    print(f"whole test: {time.monotonic() - started:.0f}s")
