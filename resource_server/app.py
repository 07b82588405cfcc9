"""The sample notes API: a stateless resource server built on the verifier library (DESIGN §2).

Notes live in Redis, one hash per user: ``rs:notes:{<sub>}`` → note id → JSON note.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from redis import asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jwt_bff_verifier import TokenVerifier, VerifierError
from jwt_bff_verifier.dpop import NonceIssuer
from jwt_bff_verifier.keys import JWKSCache
from jwt_bff_verifier.starlette import BearerAuthMiddleware, get_claims, require_auth, requires_scope
from jwt_bff_verifier.verifier import DPoPMode
from servicekit import tracing
from servicekit.client_gone import client_gone_handlers
from servicekit.metrics import MetricsMiddleware
from servicekit.redis import open_redis, store_down_handlers

from .live import live_routes
from .settings import Settings

log = logging.getLogger(__name__)
ACCESS = logging.getLogger("resource_server.access")


MAX_BODY_BYTES = 16 * 1024
MAX_TEXT_CHARS = 2000
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/ping"})
_NOTE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
NOTE_FIELDS = ("id", "text", "created_at")

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
        self.jwks_fetches = Counter(
            "rs_jwks_fetches",
            "JWKS fetches by outcome (ok; error: unreachable or 5xx; misconfigured)",
            ["outcome"],
            registry=self.registry,
        )

    def token_failure(self, error: VerifierError) -> None:
        self.token_failures.labels(error.reason).inc()

    def jwks_fetch(self, outcome: str) -> None:
        self.jwks_fetches.labels(outcome).inc()


def _notes_key(sub: str) -> str:
    return f"rs:notes:{{{sub}}}"  # the hash tag keeps one user's notes in one Redis Cluster slot


async def _read_json(request: Request) -> Any:
    length = request.headers.get("content-length")
    if length is not None and (not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY_BYTES):
        raise ApiError(413, "request_too_large", f"The body must be at most {MAX_BODY_BYTES} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "request_too_large", f"The body must be at most {MAX_BODY_BYTES} bytes.")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser's stack
        raise ApiError(400, "invalid_request", "The body must be a JSON object.") from None


def _utf8(text: str) -> bool:
    """Whether ``text`` can be sent as UTF-8: JSON's ``"\ud800"`` escape makes a lone surrogate, which cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(raw: bytes | str) -> dict[str, str] | None:
    """A stored note as it can be answered, or None for a record this version would never have written (damaged
    data is skipped, and a lone surrogate stored before it was refused becomes U+FFFD): one bad record must not make
    GET /notes fail for good."""
    try:
        note = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(note, dict) or not all(isinstance(note.get(k), str) for k in NOTE_FIELDS):
        return None
    return {
        k: v if _utf8(v) else v.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        for k, v in ((k, note[k]) for k in NOTE_FIELDS)
    }


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
            revocations=settings.revocation_poll > 0,
            revocation_poll=settings.revocation_poll or 2.0,
            revocations_url=settings.revocations_url,
            revocations_credentials=(
                (settings.revocations_client_id, settings.revocations_client_secret)
                if settings.revocations_client_id and settings.revocations_client_secret
                else None
            ),
            dpop=cast(DPoPMode, settings.dpop),
            dpop_nonces=NonceIssuer(settings.dpop_nonce_secret) if settings.dpop_nonce_secret else None,
            public_urls=settings.public_urls,
        )
        if verifier.dpop != "off" and not verifier.public_urls:
            log.warning(
                "RS_PUBLIC_URL is not set: a DPoP proof's htu is compared with the request's Host, and only for "
                "tokens whose aud is %r alone (a token and proof an upstream received for itself carry its own "
                "audience, refused here); tokens valid at several audiences need RS_PUBLIC_URL",
                settings.audience,
            )
    if isinstance(getattr(verifier, "keys", None), JWKSCache):  # an ERROR for a misconfiguration names our settings
        verifier.keys.settings_hint = "RS_ISSUER (and RS_JWKS_URL when set)"
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
        verifier.start_polling()  # the revocation feed, when on (DESIGN §9)
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
        misconfigured = getattr(verifier.keys, "misconfigured", None)
        if misconfigured is not None:  # DESIGN §12: the issuer's answers will not fit until the operator acts
            return JSONResponse(
                {"status": "misconfigured", "reason": misconfigured, "keys": verifier.ready, "redis": redis_ok}, 503
            )
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
        # aud shows which resource the token is good for (DESIGN §7: one resource per route token)
        return JSONResponse(
            {
                "sub": claims["sub"],
                "scope": claims.get("scope", ""),
                "client_id": claims["client_id"],
                "aud": claims.get("aud"),
                # DESIGN §14: the login's level, as the token says it (what require_auth checks), when it says it
                **{name: claims[name] for name in ("acr", "amr", "auth_time") if name in claims},
            }
        )

    @requires_scope("notes:read")
    async def list_notes(request: Request) -> JSONResponse:
        raw = await store().hvals(_notes_key(get_claims(request)["sub"]))
        notes = [note for note in map(_shown, raw) if note is not None]
        if len(notes) < len(raw):
            log.warning("skipped %d unreadable notes", len(raw) - len(notes))
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
        if not _utf8(text):
            raise ApiError(400, "invalid_request", "text: must be Unicode text (it holds a lone surrogate).")
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

    # DESIGN §14, the demo's step-up: deleting every note at once needs a second factor given in the last 5 minutes
    # (RFC 9470). A password login gets 401 insufficient_user_authentication, which the BFF turns into a step-up.
    @requires_scope("notes:write")
    @require_auth(acr_values=["mfa"], max_age=300)
    async def delete_all_notes(request: Request) -> Response:
        await store().delete(_notes_key(get_claims(request)["sub"]))
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
        Route("/notes", delete_all_notes, methods=["DELETE"]),
        Route("/notes/{note_id}", delete_note, methods=["DELETE"]),
        *live_routes(verifier),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                MetricsMiddleware,
                metrics=metrics,
                access_log=ACCESS,
                request_labels=("route", "method", "status"),
                routes=routes,
            ),
            *tracing.middleware(
                tracing.spans(settings.otel_endpoint, settings.otel_service_name, sampling=settings.otel_sampling)
            ),
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
            **store_down_handlers(store_unavailable),
            **client_gone_handlers(),
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # it built an absolute Location from the Host header (auth_server.app)
    return app
