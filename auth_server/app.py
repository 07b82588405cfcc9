"""The auth server application: ``create_app(settings)``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from servicekit import tracing
from servicekit.client_gone import client_gone_handlers
from servicekit.metrics import MetricsMiddleware
from servicekit.redis import open_redis, store_down_handlers

from .endpoints import Endpoints, oauth_error_response
from .errors import OAuthError, SignUpError, SignUpThrottled, StoreUnavailable
from .keys import KeyRing
from .metrics import ACCESS, Metrics
from .settings import Settings

log = logging.getLogger(__name__)


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
        Route("/oauth/logout", ep.logout.handle, methods=["GET", "POST"]),
        Route("/oauth/revocations", ep.revocations, methods=["GET"]),
        Route("/oauth/par", ep.par.push, methods=["POST"]),
        Route("/userinfo", ep.userinfo, methods=["GET", "POST"]),
        Route("/register", ep.register_get, methods=["GET"]),
        Route("/register", ep.register_post, methods=["POST"]),
        Route("/users", ep.create_user, methods=["POST"]),
        Route("/account", ep.account.get, methods=["GET"]),
        Route("/account", ep.account.post, methods=["POST"]),
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
            await ep.notifier.drain(limit=5.0)  # back-channel logouts under way get a last chance
            await ep.tokens.durable.aclose()
            if own_redis:
                await client.aclose()

    async def oauth_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OAuthError)
        return oauth_error_response(exc)

    async def signup_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignUpError)
        headers = {"Cache-Control": "no-store"}
        if isinstance(exc, SignUpThrottled):
            headers["Retry-After"] = str(exc.retry_after)  # RFC 6585 §4
        return JSONResponse(
            {"error": exc.error, "error_description": exc.description, "field": exc.field},
            status_code=exc.status_code,
            headers=headers,
        )

    async def store_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("redis unavailable: %s", type(exc).__name__)
        return oauth_error_response(StoreUnavailable())

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
        middleware=[
            Middleware(
                MetricsMiddleware,
                metrics=metrics,
                access_log=ACCESS,
                routes=routes,
            ),
            *tracing.middleware(
                tracing.spans(settings.otel_endpoint, settings.otel_service_name, sampling=settings.otel_sampling)
            ),
        ],
        exception_handlers={
            OAuthError: oauth_error,
            SignUpError: signup_error,
            404: not_found,
            405: not_found,
            **store_down_handlers(store_unavailable),
            **client_gone_handlers(),
            Exception: server_error,
        },
    )
    # Starlette's trailing-slash redirect is absolute and built from the Host header: a forged Host became the
    # Location (issue #10). A path is served as spelled, or is 404.
    app.router.redirect_slashes = False
    app.state.endpoints = ep
    return app
