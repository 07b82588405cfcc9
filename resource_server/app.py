"""The sample notes API: a stateless resource server built on the verifier library (DESIGN §2).

Notes live in Redis, one hash per user: ``rs:notes:{<sub>}`` → note id → JSON note.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from redis import asyncio as aioredis
from redis.exceptions import ClusterError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from .logs import access, request_id
from .settings import Settings
from .verifier import TokenVerifier, VerifierError
from .verifier.starlette import BearerAuthMiddleware, get_claims, requires_scope

log = logging.getLogger(__name__)


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


MAX_BODY_BYTES = 16 * 1024
MAX_TEXT_CHARS = 2000
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/ping"})
_NOTE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class ApiError(Exception):
    """An error answered as ``{"error", "error_description"}`` JSON."""

    def __init__(self, status_code: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status_code = status_code
        self.error = error
        self.description = description


def _error(status_code: int, error: str, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code, headers=headers)


class Metrics:
    """This app's Prometheus metrics, in its own registry (several apps share a process in tests and `bff stack`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("rs_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("rs_request_duration_seconds", "Request latency", ["route"], registry=self.registry)
        self.token_failures = Counter(
            "rs_token_failures", "Refused tokens by reason", ["reason"], registry=self.registry
        )
        self.jwks_fetches = Counter("rs_jwks_fetches", "JWKS fetches by outcome", ["outcome"], registry=self.registry)

    def token_failure(self, error: VerifierError) -> None:
        self.token_failures.labels(error.reason).inc()

    def jwks_fetch(self, outcome: str) -> None:
        self.jwks_fetches.labels(outcome).inc()


class MetricsMiddleware:
    """Counts requests by route template and status and times them (plain ASGI, outermost)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        for candidate in self.routes:  # refused before routing (e.g. 401): find the template ourselves
            if candidate.matches(scope)[0] is Match.FULL:
                return str(getattr(candidate, "path", "?"))
        return "<unmatched>"

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        rid = request_id(scope["headers"])

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = self._template(scope)
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            access(scope["method"], route, scope["path"], status, elapsed, rid, scope.get("client"))


def _notes_key(sub: str) -> str:
    return f"rs:notes:{{{sub}}}"  # the hash tag keeps one user's notes in one Redis Cluster slot


async def _read_json(request: Request) -> Any:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise ApiError(413, "request_too_large", f"The body must be at most {MAX_BODY_BYTES} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "request_too_large", f"The body must be at most {MAX_BODY_BYTES} bytes.")
    try:
        return json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid_request", "The body must be a JSON object.") from None


def open_redis(url: str, cluster: bool = False) -> Any:
    """A client for ``REDIS_URL``; several comma-separated node URLs, or ``cluster`` (``REDIS_CLUSTER=1``) with one
    seed node, mean a Redis Cluster (the client discovers the other nodes from the seeds).

    Notes live in one key per user (``rs:notes:{sub}``), so nothing here spans slots.
    """
    if cluster or "," in url:
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        from redis.asyncio.connection import parse_url

        nodes = [
            ClusterNode(str(p.get("host", "localhost")), int(p.get("port", 6379)))
            for p in (parse_url(part.strip()) for part in url.split(",") if part.strip())
        ]
        return RedisCluster(startup_nodes=nodes, socket_connect_timeout=2, socket_timeout=2)
    return aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30)


def create_app(
    settings: Settings,
    *,
    redis: aioredis.Redis | None = None,
    verifier: TokenVerifier | None = None,
) -> Starlette:
    """The notes API. Pass ``verifier`` (e.g. ``FakeIssuer().verifier()``) to run it without an auth server."""
    metrics = Metrics()
    owns_verifier = verifier is None
    if verifier is None:
        verifier = TokenVerifier(
            settings.issuer,
            settings.audience,
            settings.algorithms,
            settings.leeway,
            settings.jwks_url,
            cooldown=settings.jwks_cooldown,
            on_fetch=metrics.jwks_fetch,
            cache_size=settings.verify_cache_size,
        )
    state: dict[str, Any] = {"redis": redis}

    def store() -> aioredis.Redis:
        client: aioredis.Redis = state["redis"]
        return client

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owns_redis = state["redis"] is None
        if owns_redis:  # connects lazily: the app starts even while Redis is down (readyz says 503)
            state["redis"] = open_redis(settings.redis_url, settings.redis_cluster)
        loader = asyncio.create_task(verifier.keys.run())  # retries until the auth server answers
        try:
            yield
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
            if owns_verifier:
                await verifier.aclose()
            if owns_redis:
                await store().aclose()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        redis_ok = False
        try:
            redis_ok = bool(await store().ping())
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            log.warning("readiness: Redis unavailable: %s", type(exc).__name__)
        ready = redis_ok and verifier.ready
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "keys": verifier.ready, "redis": redis_ok},
            200 if ready else 503,
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def ping(request: Request) -> JSONResponse:
        """Public; verifies a token if one is sent (the benchmark's endpoint, both ways)."""
        claims = request.scope.get("auth")
        return JSONResponse({"pong": True, "sub": claims["sub"] if claims else None})

    @requires_scope()
    async def me(request: Request) -> JSONResponse:
        claims = get_claims(request)
        return JSONResponse({"sub": claims["sub"], "scope": claims.get("scope", ""), "client_id": claims["client_id"]})

    @requires_scope("notes:read")
    async def list_notes(request: Request) -> JSONResponse:
        raw = await store().hvals(_notes_key(get_claims(request)["sub"]))
        notes = [json.loads(value) for value in raw]
        notes.sort(key=lambda note: (note["created_at"], note["id"]), reverse=True)
        return JSONResponse({"notes": notes})

    @requires_scope("notes:write")
    async def create_note(request: Request) -> JSONResponse:
        data = await _read_json(request)
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_request", "The body must be a JSON object.")
        text = data.get("text")
        if not isinstance(text, str) or not 1 <= len(text.strip()) <= MAX_TEXT_CHARS:
            raise ApiError(400, "invalid_request", f"text: must be a string of 1 to {MAX_TEXT_CHARS} characters.")
        note = {
            "id": secrets.token_urlsafe(12),
            "text": text.strip(),
            "created_at": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        key = _notes_key(get_claims(request)["sub"])
        async with store().pipeline(transaction=True) as pipe:
            pipe.hset(key, note["id"], json.dumps(note))
            pipe.hlen(key)
            _, count = await pipe.execute()
        if count > settings.max_notes:  # over the cap: take it back (atomic enough: the cap is never exceeded for long)
            await store().hdel(key, note["id"])
            raise ApiError(409, "too_many_notes", f"A user may keep at most {settings.max_notes} notes.")
        return JSONResponse(note, 201)

    @requires_scope("notes:write")
    async def delete_note(request: Request) -> Response:
        note_id = request.path_params["note_id"]
        if _NOTE_ID.fullmatch(note_id) is None or not await store().hdel(
            _notes_key(get_claims(request)["sub"]), note_id
        ):
            raise ApiError(404, "not_found", "No such note.")
        return Response(status_code=204)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status_code, exc.error, exc.description)

    async def store_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("Redis unavailable: %s", exc)
        return _error(503, "temporarily_unavailable", "The note store is unavailable.", {"Retry-After": "2"})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        names = {404: "not_found", 405: "method_not_allowed"}
        return _error(status, names.get(status, "invalid_request"), str(getattr(exc, "detail", "")))

    async def transport_race(request: Request, exc: Exception) -> Response:
        if redis_transport_race(exc):
            return await store_unavailable(request, exc)
        raise exc

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "server_error", "An internal error occurred.")

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/ping", ping),
        Route("/me", me),
        Route("/notes", list_notes, methods=["GET"]),
        Route("/notes", create_note, methods=["POST"]),
        Route("/notes/{note_id}", delete_note, methods=["DELETE"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics, routes=routes),
            Middleware(
                BearerAuthMiddleware,
                verifier=verifier,
                realm=settings.audience,
                public_paths=PUBLIC_PATHS,
                on_error=metrics.token_failure,
            ),
        ],
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            **dict.fromkeys(STORE_DOWN, store_unavailable),
            **dict.fromkeys(REDIS_RACE, transport_race),
            Exception: server_error,
        },
        lifespan=lifespan,
    )
