"""Opening Redis from ``REDIS_URL``, and telling "Redis is unavailable" (a 503) from a bug (a 500).

``REDIS_URL`` forms: ``redis://host:6379/0`` (one server); a comma-separated list of node URLs, or one URL with
``REDIS_CLUSTER=1``, for a Redis Cluster (the client discovers the other nodes from the seeds);
``redis+sentinel://[[user]:password@]host1:26379,host2:26379/<master name>[/<db>]`` for a master watched by
Redis Sentinel (the client asks the sentinels where the master is, and asks again after a failover; the password is
the master's).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ClusterDownError, ClusterError, RedisClusterException, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .settings import Setting, SettingsError, flag

REDIS_TIMEOUT = 2.0  # seconds: a Redis that does not answer in this time is down (a quick 503), not slow

# Redis is unavailable, in each form redis-py reports it: a dead or hung node, a cluster that lost a master
# (CLUSTERDOWN, or no node for a slot), a slot being moved. All are a 503 that recovers by itself, never a 500.
STORE_DOWN: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,
    TryAgainError,
    RedisClusterException,
)
REDIS_RACE: tuple[type[Exception], ...] = (AttributeError, RuntimeError, TypeError)
_REDIS_CONNECTION = os.path.join("redis", "asyncio", "connection.py")


def redis_transport_race(exc: BaseException) -> bool:
    """redis-py 8.1 lets a write on a connection closed under it escape as AttributeError, RuntimeError or TypeError
    instead of ConnectionError (redis-py #3546, #4287). Its cluster client closes every connection after one error,
    so concurrent commands hit this whenever a node fails: it means Redis is unavailable, not a bug of ours."""
    if not isinstance(exc, REDIS_RACE):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(_REDIS_CONNECTION):
            return True
        tb = tb.tb_next
    return False


def store_down(exc: BaseException) -> bool:
    """True when ``exc`` means Redis is unavailable (answer 503), False for anything else (a bug: 500)."""
    return isinstance(exc, STORE_DOWN) or redis_transport_race(exc)


Handler = Callable[[Any, Exception], Awaitable[Any]]


def store_down_handlers(handler: Handler) -> dict[type[Exception], Handler]:
    """Starlette ``exception_handlers`` entries sending every "Redis is unavailable" exception to ``handler``;
    an AttributeError, RuntimeError or TypeError raised anywhere else is re-raised (a real bug stays a 500)."""

    async def transport_race(request: Any, exc: Exception) -> Any:
        if redis_transport_race(exc):
            return await handler(request, exc)
        raise exc

    return {**dict.fromkeys(STORE_DOWN, handler), **dict.fromkeys(REDIS_RACE, transport_race)}


SENTINEL_SCHEME = "redis+sentinel://"
# A Cluster command refused by a node (connection refused or reset, CLUSTERDOWN, a slot with no node) is sent again
# as redis-py does by default (up to 10 times, backing off to 1 s, while the client re-reads the slot map at most
# once a second): a failover is followed without a 503 for the requests that meet the dead master first (3 retries
# 0.5-1 s apart were too few: a refresh after a failover in CI still met it). A command that timed out is never sent
# again, by a single command, a pipeline or a transaction: a node silent for REDIS_TIMEOUT is down, and the request
# gets its 503 (a connection that cannot be opened in that time is a timeout too: a host gone without a reset costs
# each request meeting it 2 s and a 503, until the slot map is re-read).
CLUSTER_RETRIED = (RedisConnectionError, ClusterDownError, SlotNotCoveredError)


def _retry_no_timeouts(cluster_class: Any) -> None:
    """redis-py 8.2 retries a Cluster command 10 times by default, TimeoutError too: a frozen master held each
    request for up to 10 x REDIS_TIMEOUT, then answered it (a slow 200) instead of the 503 after REDIS_TIMEOUT of
    every other client here (tests/scale/test_cluster_faults.py, test_bff_frozen_master.py). Its list is read from
    the class itself by the cluster pipeline (RedisCluster.ERRORS_ALLOW_RETRY), so it is set there: for every
    Cluster client of the process, which are all ours."""
    cluster_class.ERRORS_ALLOW_RETRY = CLUSTER_RETRIED


class RedisURLError(ValueError):
    """``REDIS_URL`` is malformed; the message says how."""


class SentinelRedis(aioredis.Redis):
    """The master's client of a Sentinel set-up; closing it closes the clients of the sentinels too."""

    sentinel: Any = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            for client in self.sentinel.sentinels:
                await client.aclose()


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None, str | None]:
    """``redis+sentinel://[[user]:password@]h1:26379,h2:26379/name[/db]`` → (sentinels, name, db, user, password)."""
    rest = url[len(SENTINEL_SCHEME) :]
    hosts, _, path = rest.partition("/")
    user = password = None
    if "@" in hosts:
        auth, _, hosts = hosts.rpartition("@")
        name_part, colon, secret = auth.partition(":")
        user = unquote(name_part) or None
        password = unquote(secret) if colon else None
    sentinels = []
    for host in filter(None, (h.strip() for h in hosts.split(","))):
        address, colon, port = host.rpartition(":")
        if not colon or "]" in port:  # no port given: Sentinel's own
            address, port = host, "26379"
        if not port.isdigit() or not address:
            raise RedisURLError(f"REDIS_URL: bad sentinel address {host!r} (host:port)")
        sentinels.append((address.strip("[]"), int(port)))
    parts = [p for p in path.split("/") if p]
    if not sentinels or not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise RedisURLError(
            "REDIS_URL: a Sentinel URL is redis+sentinel://host1:26379,host2:26379/<master name>[/<db>]"
        )
    return sentinels, unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0, user, password


DEFAULT_URL = "redis://localhost:6379/0"


def redis_url(label: str, raw: str) -> str:
    """A ``REDIS_URL``, checked at start-up (a malformed Sentinel URL names the variable)."""
    url = raw.strip()
    if url.startswith(SENTINEL_SCHEME):
        try:
            parse_sentinel_url(url)
        except RedisURLError as exc:
            raise SettingsError(str(exc).replace("REDIS_URL", label, 1)) from None
    return url


def redis_url_setting(env: Mapping[str, str]) -> str:
    """``REDIS_URL`` from the environment, checked at start-up (a malformed Sentinel URL names the variable)."""
    return redis_url("REDIS_URL", env.get("REDIS_URL") or DEFAULT_URL)


REDIS_SETTINGS = (
    Setting(
        "REDIS_URL",
        DEFAULT_URL,
        "Redis: redis://host:port/db, several comma-separated node URLs (a Cluster), or "
        "redis+sentinel://host:26379,.../<master>[/<db>]. A password in it is masked by `config`.",
        redis_url,
    ),
    Setting(
        "REDIS_CLUSTER",
        "false",
        "REDIS_URL is a seed node of a Redis Cluster (several URLs imply it).",
        flag,
        kind="boolean",
    ),
)


def open_redis(url: str, cluster: bool = False) -> Any:
    """A client for ``REDIS_URL`` (see the module docstring for its forms). Keys that must be read or written
    together share a hash tag, so nothing here spans slots."""
    if url.startswith(SENTINEL_SCHEME):
        from redis.asyncio.sentinel import Sentinel

        sentinels, name, db, user, password = parse_sentinel_url(url)
        sentinel = Sentinel(
            sentinels,
            sentinel_kwargs={"socket_timeout": REDIS_TIMEOUT, "socket_connect_timeout": REDIS_TIMEOUT},
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
        )
        client = sentinel.master_for(
            name, redis_class=SentinelRedis, db=db, username=user, password=password, retry=Retry(NoBackoff(), 1)
        )
        client.sentinel = sentinel
        return client
    if cluster or "," in url:
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        from redis.asyncio.connection import parse_url

        nodes = [
            ClusterNode(str(p.get("host", "localhost")), int(p.get("port", 6379)))
            for p in (parse_url(part.strip()) for part in url.split(",") if part.strip())
        ]
        _retry_no_timeouts(RedisCluster)
        return RedisCluster(
            startup_nodes=nodes,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            # redis-py's default retry, less TimeoutError: what its transactions (MULTI/EXEC) retry by
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), 10, supported_errors=(RedisConnectionError,)),
        )
    return aioredis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT, retry=Retry(NoBackoff(), 1)
    )
