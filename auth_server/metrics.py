"""Prometheus metrics on a per-app registry (several apps share a process in tests and in ``bff stack``)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import access, request_id


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "auth_http_requests_total",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "auth_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.grants = Counter(
            "auth_token_grants_total",
            "Token endpoint requests by grant type and outcome",
            ["grant_type", "outcome"],
            registry=self.registry,
        )
        self.login_failures = Counter(
            "auth_login_failures_total",
            "Failed logins (wrong credentials or throttled)",
            ["reason"],
            registry=self.registry,
        )


class MetricsMiddleware:
    """Counts requests by route template (never the raw path: bounded label values) and times them."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: list[Any]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _route(self, scope: Scope) -> str:
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(route.path)
            if match == Match.PARTIAL and partial is None:  # the path matched, the method did not (405)
                partial = str(route.path)
        return partial or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            route = self._route(scope)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            elapsed = time.perf_counter() - start
            self.metrics.latency.labels(route).observe(elapsed)
            access(scope["method"], route, scope["path"], status, elapsed, rid, scope.get("client"))
