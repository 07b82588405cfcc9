"""Prometheus metrics on a per-app registry (the middleware counting requests is servicekit's)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ACCESS = logging.getLogger("bff.access")


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

        self.claims_refused = Counter(
            "bff_claims_refused_total",
            "Requests refused 403 insufficient_claims by a route's require, by route (proxy, WebSocket, /bff/auth)",
            ["route"],
            registry=self.registry,
        )
        self.websockets = Counter(
            "bff_websockets_total",
            "WebSocket handshakes and ends: opened, refused (by status) and session_ended (closed 1008)",
            ["outcome"],
            registry=self.registry,
        )
        self.websockets_open = Gauge("bff_websockets_open", "Open WebSockets in this process", registry=self.registry)
        self.socket_cap_refusals = Counter(
            "bff_session_socket_cap_total",
            "WebSockets and streams refused (429) because their session held BFF_MAX_SOCKETS_PER_SESSION already",
            ["kind"],
            registry=self.registry,
        )

    def socket_cap_refused(self, kind: str) -> None:
        self.socket_cap_refusals.labels(kind).inc()

    def websocket_event(self, outcome: str) -> None:
        self.websockets.labels(outcome).inc()

    def refresh_outcome(self, outcome: str) -> None:
        self.refreshes.labels(outcome).inc()
        if outcome in ("invalid_grant", "no_refresh_token"):
            self.sessions.labels("ended").inc()
