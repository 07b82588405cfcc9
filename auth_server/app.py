"""The auth server application: ``create_app(settings)``."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ClusterError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .endpoints import Endpoints, oauth_error_response
from .errors import OAuthError, SignUpError, StoreUnavailable
from .keys import KeyRing
from .metrics import Metrics, MetricsMiddleware
from .settings import Settings

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 2.0  # seconds; a down Redis must give a quick 503, not a hung request


# Redis is unavailable, in each form redis-py reports it: a dead or hung node, a cluster that lost a master
# (CLUSTERDOWN, or no node for a slot), a slot being moved. All are a 503, never a 500.
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


def open_redis(url: str, cluster: bool = False) -> Any:
    """A client for ``REDIS_URL``; a comma-separated list of node URLs, or ``cluster`` (``REDIS_CLUSTER=1``) with
    one seed node, means a Redis Cluster (the client discovers the other nodes from the seeds)."""
    if cluster or "," in url:
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        from redis.asyncio.connection import parse_url

        nodes = []
        for part in url.split(","):
            parsed = parse_url(part.strip())
            nodes.append(ClusterNode(str(parsed.get("host", "localhost")), int(parsed.get("port", 6379))))
        return RedisCluster(startup_nodes=nodes, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
    return aioredis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT, retry=Retry(NoBackoff(), 1)
    )


def create_app(settings: Settings, *, redis: aioredis.Redis | None = None) -> Starlette:
    own_redis = redis is None
    client: Any = redis if redis is not None else open_redis(settings.redis_url, settings.redis_cluster)
    keys = KeyRing(
        settings.keys_dir, settings.signing_alg, settings.key_retention, activation_delay=settings.key_activation_delay
    )
    metrics = Metrics()
    ep = Endpoints(settings, client, keys, metrics)

    routes = [
        Route("/.well-known/openid-configuration", ep.discovery, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", ep.discovery, methods=["GET"]),
        Route("/.well-known/jwks.json", ep.jwks, methods=["GET"]),
        Route("/oauth/authorize", ep.authorize_get, methods=["GET"]),
        Route("/oauth/authorize", ep.authorize_post, methods=["POST"]),
        Route("/oauth/token", ep.token, methods=["POST"]),
        Route("/oauth/revoke", ep.revoke, methods=["POST"]),
        Route("/oauth/introspect", ep.introspect, methods=["POST"]),
        Route("/userinfo", ep.userinfo, methods=["GET", "POST"]),
        Route("/register", ep.register_get, methods=["GET"]),
        Route("/register", ep.register_post, methods=["POST"]),
        Route("/users", ep.create_user, methods=["POST"]),
        Route("/healthz", ep.healthz, methods=["GET"]),
        Route("/readyz", ep.readyz, methods=["GET"]),
        Route("/metrics", ep.metrics_endpoint, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ep.users.warm_up()
        try:
            yield
        finally:
            if own_redis:
                await client.aclose()

    async def oauth_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OAuthError)
        return oauth_error_response(exc)

    async def signup_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignUpError)
        return JSONResponse(
            {"error": exc.error, "error_description": exc.description, "field": exc.field},
            status_code=exc.status_code,
            headers={"Cache-Control": "no-store"},
        )

    async def store_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("redis unavailable: %s", type(exc).__name__)
        return oauth_error_response(StoreUnavailable())

    async def transport_race(request: Request, exc: Exception) -> Response:
        if redis_transport_race(exc):
            return await store_unavailable(request, exc)
        raise exc

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "server_error"}, status_code=500, headers={"Cache-Control": "no-store"})

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        error = "method_not_allowed" if status == 405 else "not_found"
        return JSONResponse({"error": error}, status_code=status, headers=getattr(exc, "headers", None))

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(MetricsMiddleware, metrics=metrics, routes=routes)],
        exception_handlers={
            OAuthError: oauth_error,
            SignUpError: signup_error,
            404: not_found,
            405: not_found,
            **dict.fromkeys(STORE_DOWN, store_unavailable),
            **dict.fromkeys(REDIS_RACE, transport_race),
            Exception: server_error,
        },
    )
    app.state.endpoints = ep
    return app
