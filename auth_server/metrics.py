"""Prometheus metrics on a per-app registry (several apps share a process in tests and in ``bff stack``)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram

ACCESS = logging.getLogger("auth_server.access")


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
        self.backchannel_logouts = Counter(
            "auth_backchannel_logouts_total",
            "Back-channel logout deliveries by outcome (delivered, refused by the client, failed after retries)",
            ["outcome"],
            registry=self.registry,
        )
        self.revocation_feed_refused = Counter(
            "auth_revocation_feed_refused_total",
            "Revocation feed reads refused (AUTH_REVOCATIONS_CLIENTS): the reason",
            ["reason"],
            registry=self.registry,
        )
        self.login_failures = Counter(
            "auth_login_failures_total",
            "Failed logins (wrong credentials or throttled)",
            ["reason"],
            registry=self.registry,
        )
