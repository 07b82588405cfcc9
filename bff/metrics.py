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
        # DESIGN §12: proxied traffic by route name (never a path: bounded label values)
        self.upstream_requests = Counter(
            "bff_upstream_requests_total",
            "Calls to upstreams by route name and status (the upstream's, or 502/504 when it gave none)",
            ["route", "status"],
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "bff_upstream_request_duration_seconds",
            "Time from sending a call to an upstream to its response headers, by route name",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.provider_requests = Counter(
            "bff_provider_requests_total",
            "Calls to the provider by endpoint (discovery, jwks, par, token, revocation, userinfo) and outcome "
            "(ok, refused, misconfigured, unavailable)",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.provider_misconfigured = Gauge(
            "bff_provider_misconfigured",
            "1 while the provider refuses the BFF's own configuration (readiness says misconfigured), else 0",
            registry=self.registry,
        )
        self.store_errors = Counter(
            "bff_store_errors_total", "Session store (Redis) calls that found it unreachable", registry=self.registry
        )

        self.no_refresh_token_logins = Counter(
            "bff_logins_without_refresh_token",
            "Logins the provider answered without a refresh token: each such session ends with its access token",
            registry=self.registry,
        )
        self.claims_refused = Counter(
            "bff_claims_refused_total",
            "Requests refused 403 insufficient_claims by a route's require, by route (proxy, WebSocket, /bff/auth)",
            ["route"],
            registry=self.registry,
        )
        self.step_ups = Counter(
            "bff_step_up_total",
            "Step-up authentication (RFC 9470): asked (by a route's acr/max_age or an upstream's challenge), "
            "upgraded (a session raised in place), refused (the provider's acr/auth_time fell short)",
            ["event"],
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
            "WebSockets and streams refused (429) because their session (BFF_MAX_SOCKETS_PER_SESSION) or user "
            "(BFF_MAX_SOCKETS_PER_USER) held its cap already",
            ["kind", "scope"],
            registry=self.registry,
        )

    def socket_cap_refused(self, kind: str, scope: str) -> None:
        self.socket_cap_refusals.labels(kind, scope).inc()

    def websocket_event(self, outcome: str) -> None:
        self.websockets.labels(outcome).inc()

    def provider_call(self, endpoint: str, outcome: str) -> None:
        self.provider_requests.labels(endpoint, outcome).inc()

    def refresh_outcome(self, outcome: str) -> None:
        self.refreshes.labels(outcome).inc()
        if outcome in ("invalid_grant", "no_refresh_token"):
            self.sessions.labels("ended").inc()
