"""Prometheus metrics on a per-app registry, and plain ASGI middleware counting requests by route template."""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bff.logs import ACCESS, access, request_id


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bff_requests_total",
            "HTTP requests by route template and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bff_request_duration_seconds",
            "Time to response start, by route template",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.refreshes = Counter(
            "bff_refreshes_total", "Access token refreshes by outcome", ["outcome"], registry=self.registry
        )
        self.sessions = Counter("bff_sessions_total", "Sessions created and ended", ["event"], registry=self.registry)
        self.upstream_errors = Counter(
            "bff_upstream_errors_total",
            "Upstream failures by route and kind",
            ["route", "kind"],
            registry=self.registry,
        )

    def refresh_outcome(self, outcome: str) -> None:
        self.refreshes.labels(outcome).inc()
        if outcome in ("invalid_grant", "no_refresh_token"):
            self.sessions.labels("ended").inc()


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # labels() looks its child up on every call (a measurable share of a proxied request): keep them
        self._children: dict[tuple[str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        rid = ""

        logging_on = ACCESS.isEnabledFor(logging.INFO)  # off by default in `bff serve` (--access-log): hot path

        async def send_wrapper(message: Message) -> None:
            nonlocal status, rid
            if message["type"] == "http.response.start":
                status = message["status"]
                if logging_on:
                    for name, value in message.get("headers", ()):
                        if name == b"x-request-id":  # the id the proxy sent upstream
                            rid = value.decode("latin-1")
                route = getattr(scope.get("route"), "path", "unmatched")
                histogram = self._latency.get(route)
                if histogram is None:
                    histogram = self._latency[route] = self.metrics.latency.labels(route)
                histogram.observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            counter = self._children.get((route, status))
            if counter is None:
                counter = self._children[(route, status)] = self.metrics.requests.labels(route, str(status))
            counter.inc()
            if logging_on:
                access(
                    scope["method"],
                    route,
                    scope["path"],
                    status,
                    time.perf_counter() - start,
                    rid or request_id(scope["headers"]),
                    scope.get("client"),
                )
