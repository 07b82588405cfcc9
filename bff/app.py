"""``create_app(settings)``: the BFF as a Starlette app, with its clients opened in the lifespan."""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from bff.auth_client import AuthClient
from bff.backchannel import LogoutTokens
from bff.client_tokens import ClientTokens
from bff.credentials import Credentials
from bff.csrf import CSRFMiddleware
from bff.dpop import DPoPKeyError, DPoPSigner
from bff.endpoints import STATIC, Endpoints, cookie
from bff.errors import (
    BadRequest,
    BFFError,
    LoginRequired,
    MethodNotAllowed,
    NotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from bff.forward_auth import ForwardAuth
from bff.frontend import Frontend
from bff.logout import Logout
from bff.metrics import ACCESS, Metrics
from bff.pages import error_response
from bff.proxy import Proxy
from bff.refresh import Refresher
from bff.session_index import SessionIndex
from bff.session_slots import SessionSlots
from bff.session_watch import SessionWatch
from bff.settings import Settings, SettingsError
from bff.sockets import SocketProxy
from bff.your_sessions import YourSessions, session_stores
from servicekit import tracing
from servicekit.client_gone import CLIENT_CLOSED_REQUEST, client_gone, client_gone_handlers
from servicekit.http import RawAnswer
from servicekit.logs import CONTEXT, RequestContext, outbound_headers
from servicekit.metrics import HANDED, MetricsMiddleware
from servicekit.redis import open_redis

log = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 20, 100)  # fewer young-generation passes: a request makes many short-lived objects


class _Template:
    def __init__(self, path: str) -> None:
        self.path = path  # the metrics label


API_ROUTE = _Template("/api/{route}/{path}")  # every proxied request
AUTH_ROUTE = _Template("/bff/auth")  # every forward-auth question (DESIGN §8)
METRIC_LABELS = ("route", "status")
REFUSED = "jwt_bff.refused"  # scope key: the raw /bff/auth route's refusal, for the app to answer


class PrefixRoute:
    """Plain ASGI middleware sending every HTTP request under ``prefix`` to ``endpoint`` (and every WebSocket to
    ``websocket``), past the router."""

    def __init__(self, app: ASGIApp, *, prefix: str, endpoint: ASGIApp, websocket: ASGIApp | None = None) -> None:
        self.app = app
        self.prefix = prefix
        self.endpoint = endpoint
        self.websocket = websocket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.endpoint(scope, receive, send)
        elif scope["type"] == "websocket" and self.websocket is not None and scope["path"].startswith(self.prefix):
            await self.websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def carry_request_context(request: httpx.Request) -> None:
    """httpx request hook: the current request's X-Request-ID and traceparent on a call to the provider."""
    for name, value in outbound_headers().items():
        request.headers[name] = value


class StoreOutage:
    """Counts every call that found Redis unreachable, and says so in a WARNING at most every ``quiet`` seconds
    (an outage fails every request: one line per request would drown the log)."""

    def __init__(self, redis_url: str, metrics: Metrics, quiet: float = 10.0) -> None:
        self.where = re.sub(r"//[^@/]*@", "//", redis_url)  # never the password
        self.metrics = metrics
        self.quiet = quiet
        self.said = float("-inf")

    def seen(self, exc: BaseException) -> None:
        self.metrics.store_errors.inc()
        now = time.monotonic()
        if now - self.said >= self.quiet:
            self.said = now
            log.warning(
                "session store unreachable at %s (%s: %s): requests needing a session answer 503; check that Redis "
                "is running and REDIS_URL",
                self.where,
                type(exc).__name__,
                exc,
                extra={"fields": {"store": self.where, "cause": type(exc).__name__}},
            )


def load_dpop_key(settings: Settings) -> DPoPSigner | None:
    """The DPoP key of ``BFF_DPOP_KEY_FILE``, read at start-up: a bad file stops the start with a clear message."""
    if settings.dpop_key_file is None:
        return None
    try:
        return DPoPSigner.from_file(settings.dpop_key_file)
    except DPoPKeyError as exc:
        raise SettingsError(str(exc)) from None


def create_app(settings: Settings, *, redis: aioredis.Redis | None = None, span_exporter: Any = None) -> Starlette:
    """``span_exporter``: where spans go instead of OTLP (the SDK's in-memory exporter in tests), which turns the
    export on as OTEL_EXPORTER_OTLP_ENDPOINT does."""
    own_redis = redis is None
    client: Any = redis if redis is not None else open_redis(settings.redis_url, settings.redis_cluster)
    metrics = Metrics()
    # the sessions, and (DESIGN §14) each user's list of them, which the API below shows and ends
    store, manager, session_list = session_stores(settings, client, fast_reads=True)
    # every call to the provider carries the request's id and trace context (DESIGN §12)
    http = httpx.AsyncClient(
        timeout=settings.auth_timeout, follow_redirects=False, event_hooks={"request": [carry_request_context]}
    )
    auth = AuthClient(settings, http, on_call=metrics.provider_call)
    metrics.provider_misconfigured.set_function(lambda: 1 if auth.health.problems else 0)
    store.on_unavailable = StoreOutage(settings.redis_url, metrics).seen
    dpop = load_dpop_key(settings)
    auth.dpop = dpop
    refresher = Refresher(
        manager,
        auth,
        skew=settings.refresh_skew,
        auth_timeout=settings.auth_timeout,
        lock_lease=settings.lock_lease,
        on_outcome=metrics.refresh_outcome,
        claims=settings.kept_claims,
    )
    proxy = Proxy(settings.routes, settings.upstream_timeout)
    proxy.dpop = dpop
    proxy.requests, proxy.latency = metrics.upstream_requests, metrics.upstream_latency
    credentials = Credentials(
        manager,
        refresher,
        ClientTokens(auth, skew=settings.refresh_skew),
        on_refused=lambda route: metrics.claims_refused.labels(route).inc(),
    )
    credentials.on_step_up = lambda route: metrics.step_ups.labels("asked_by_route").inc()
    index = SessionIndex(client, ttl=settings.absolute_ttl, durable=store.durable, compact=settings.compact_store)
    endpoints = Endpoints(settings, manager, auth, refresher, proxy, metrics, credentials, index)
    proxy.proxies = endpoints.proxies  # the upstream's X-Forwarded-For: the client the trusted edge names
    endpoints.session_list = session_list
    index.listed = session_list.records  # a sub-only back-channel logout ends the sessions the user's list names
    credentials.on_use = session_list.seen  # last_seen_at: a dict lookup per request, a write every few minutes
    your_sessions = YourSessions(
        manager,
        session_list,
        auth,
        metrics,
        current=endpoints.session,
        expire_cookie=lambda: endpoints.expire_cookie(settings.cookie_name),
    )
    most = settings.max_sessions_per_user
    # BFF_MAX_SESSIONS_PER_USER: a login beyond it ends the user's oldest sessions
    endpoints.after_login = lambda sub, ref, made: your_sessions.limit(sub, ref, made, most)
    logout = Logout(settings, manager, auth, index, LogoutTokens(auth, manager.store), metrics, endpoints.expire_cookie)
    watch = SessionWatch(manager.store)
    proxy.watch = watch  # a stream (SSE, a download) stops when its session ends, as a WebSocket closes
    slots = SessionSlots(
        settings.max_sockets_per_session, settings.max_sockets_per_user, on_refused=metrics.socket_cap_refused
    )
    proxy.slots = slots  # a session's streams and WebSockets share its cap
    sockets = SocketProxy(
        routes=settings.routes,
        origin=settings.public_origin,
        cookie_name=settings.cookie_name,
        credentials=credentials,
        proxy=proxy,
        watch=watch,
        max_sockets=settings.max_websockets,
        slots=slots,
        on_event=metrics.websocket_event,
    )
    metrics.websockets_open.set_function(lambda: sockets.open)
    frontend = Frontend(settings, endpoints, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await proxy.open()
        await sockets.start()
        await frontend.open()
        try:
            await auth.discover()
        except BFFError:  # logged by the auth client (a WARNING, or an ERROR naming the setting)
            log.warning("auth server discovery failed at start-up; retried on demand")
        try:
            yield
        finally:
            await watch.close()
            await frontend.close()
            await session_list.close()
            await sockets.close()
            await proxy.close()
            await http.aclose()
            store.close_fast_reads()
            await store.durable.aclose()
            if own_redis:
                await client.aclose()

    async def bff_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BFFError)
        headers = {}
        if isinstance(exc, LoginRequired) and cookie(request, settings.cookie_name) is not None:
            headers["Set-Cookie"] = endpoints.expire_cookie(settings.cookie_name)
        return error_response(exc, request.scope, headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own refusals (a route's method not allowed, a malformed request body) answered as BFF errors
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            error: BFFError = MethodNotAllowed((exc.headers or {}).get("Allow", "GET"))
        elif exc.status_code == 404:
            error = NotFound()
        elif 400 <= exc.status_code < 500:
            error = BadRequest()
        else:
            error = BFFError()
        return error_response(error, request.scope)

    async def api(scope: Scope, receive: Receive, send: Send) -> None:
        # The hot path, as plain ASGI: Starlette's router and exception middleware cost a measurable share of a
        # proxied request, and /api/* needs neither. Errors are answered exactly as bff_error answers them.
        scope["route"] = API_ROUTE
        route = scope["path"][len("/api/") :].split("/", 1)[0]
        request = Request(scope, receive)
        try:
            response = await endpoints.api(request)
            # A proxied answer reads its upstream body here; it raises only before its status is out (a body
            # broken off), so the error can still be answered.
            await response(scope, receive, send)
        except ClientDisconnect as exc:  # the browser went away mid-body: nobody to answer, no server error
            await (await client_gone(request, exc))(scope, receive, send)
        except BFFError as exc:
            if isinstance(exc, UpstreamUnavailable | UpstreamTimeout):
                metrics.upstream_errors.labels(route, exc.error).inc()
            await (await bff_error(request, exc))(scope, receive, send)

    forward = ForwardAuth(endpoints)

    async def forward_auth(scope: Scope, receive: Receive, send: Send) -> None:
        # Plain ASGI past the CSRF middleware: the rules apply to the original request, which ForwardAuth judges.
        scope["route"] = AUTH_ROUTE
        try:
            refused = scope.pop(REFUSED, None)
            if refused is not None:  # the raw route's decision (below): answered here, not decided again
                raise refused
            if scope["path"] != "/bff/auth" and not scope["path"].startswith("/bff/auth/"):
                raise NotFound("No such endpoint.")
            await forward(scope, receive, send)
        except BFFError as exc:
            request = Request(scope, receive)
            response = await bff_error(request, exc)
            # The proxy asking sees the status only (nginx auth_request): the error code in a header lets it answer
            # the browser the BFF's own error (403 csrf, forbidden or insufficient_claims; deploy/nginx).
            response.headers["X-Auth-Request-Error"] = exc.error
            await response(scope, receive, send)

    recorder = MetricsMiddleware(
        forward_auth,
        metrics=metrics,
        access_log=ACCESS,
        request_labels=METRIC_LABELS,
        forwarded_for=proxy.forwarded_for,
        caller_flags=settings.trust_traceparent,
    )
    # None: export off
    spans = tracing.spans(settings.otel_endpoint, settings.otel_service_name, span_exporter, settings.otel_sampling)

    async def raw_forward_auth(scope: dict[str, Any]) -> RawAnswer:
        # Every forward-auth question of an ingress, answered past uvicorn's ASGI cycle, Starlette and the middleware
        # (servicekit.http raw routes: one write of status line, Date/Server and these headers). A refusal is
        # handed to the app with its decision (REFUSED), which answers it as every error (JSON or page, metrics,
        # X-Auth-Request-Error) without asking Redis again.
        start = time.perf_counter()
        scope["route"] = AUTH_ROUTE
        # what the log lines and calls made meanwhile carry, made as the recorder makes a request's (the caller's
        # trace flags passed on or not), since the app's access line goes on with it for a refusal (HANDED)
        context = RequestContext(scope["headers"], recorder.caller_flags)
        reset = CONTEXT.set(context)
        span = spans.begin(scope, context) if spans is not None else None  # export on: its server span
        try:
            headers = await forward.decide(scope)
        except Exception as exc:  # noqa: BLE001 - raised again by forward_auth, inside the app's error handling
            scope[REFUSED] = exc
            # one request: the app's access line has this context (its ids, what was asked) and this start
            scope[HANDED] = (context, start)
            if spans is not None:  # the app's span middleware goes on with it: one span (or none) for the request
                scope[tracing.SPAN] = span if span is not None else tracing.LEFT_OUT
            return None
        except BaseException:  # cancelled (the asker went away): its span ends, as the request did
            if span is not None:
                spans.end(span, scope, CLIENT_CLOSED_REQUEST)
            raise
        finally:
            CONTEXT.reset(reset)
        recorder.record(scope, 200, start, context)
        if span is not None:
            spans.end(span, scope, 200)
        return 200, headers, b""

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(BFFError(), request.scope)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/bff/login", endpoints.login, methods=["GET"]),
        Route("/bff/callback", endpoints.callback, methods=["GET"]),
        Route("/bff/user", endpoints.user, methods=["GET"]),
        Route("/bff/logout", logout.page, methods=["GET"]),
        Route("/bff/logout", logout.script, methods=["POST"]),
        Route("/bff/backchannel", logout.backchannel, methods=["POST"]),
        Route("/bff/sessions", your_sessions.listing, methods=["GET"]),
        Route("/bff/sessions", your_sessions.end_others, methods=["DELETE"]),
        Route("/bff/sessions/{id}", your_sessions.end_one, methods=["DELETE"]),
        Route("/healthz", endpoints.healthz, methods=["GET"]),
        Route("/readyz", endpoints.readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    if settings.frontend_kind == "demo":
        routes += [
            Route("/", frontend.demo_page, methods=["GET", "HEAD"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                MetricsMiddleware,
                metrics=metrics,
                access_log=ACCESS,
                request_labels=METRIC_LABELS,
                echo_request_id=False,
                forwarded_for=proxy.forwarded_for,  # the access line's client behind a trusted edge
                # a browser's traceparent flag decides nothing downstream either, export on or off (W3C Trace
                # Context §7.2): unless BFF_TRUST_TRACEPARENT, its trace goes on flagged as one the BFF starts
                caller_flags=settings.trust_traceparent,
            ),
            *tracing.middleware(spans),
            Middleware(PrefixRoute, prefix="/bff/auth", endpoint=forward_auth),
            Middleware(CSRFMiddleware, origin=settings.public_origin),
            Middleware(PrefixRoute, prefix="/api/", endpoint=api, websocket=sockets),
        ],
        # Every Redis failure is a StoreUnavailable (a BFFError) already: RedisStore._call translates them all.
        exception_handlers={
            BFFError: bff_error,
            HTTPException: http_error,
            **client_gone_handlers(),
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    # DESIGN §11: the frontend is what no route matched, behind /api/ (a middleware ahead of the router) and every
    # /bff/ route: the hot path never reaches it.
    app.router.default = frontend
    # Starlette's trailing-slash redirect is absolute and built from the Host header: a forged Host became the
    # Location (issue #10; auth_server.app). A path is served as spelled, or is 404.
    app.router.redirect_slashes = False
    app.raw_routes = {b"/bff/auth": raw_forward_auth}  # type: ignore[attr-defined]
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.endpoints = endpoints
    app.state.frontend = frontend
    return app


def create_app_from_env() -> Starlette:
    """The uvicorn factory for ``bff serve --workers N``."""
    settings = Settings.from_env()
    settings.check_client_secret()
    app = create_app(settings)
    # What is loaded by now (modules, the app) lives as long as the process: keep it out of the collector's scans,
    # which otherwise show up in the p99 latency under load (measured with bench/run.py: p99 44 ms -> 26 ms).
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return app
