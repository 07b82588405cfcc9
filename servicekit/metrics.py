"""Request metrics and the access log, as plain ASGI middleware (outermost, so it sees every answer).

Each service keeps its own ``Metrics`` (its own registry: several apps share a process in tests and in
``bff stack``); this middleware only counts and times requests on the counter and histogram it is given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import CONTEXT, RequestContext, access

UNMATCHED = "unmatched"
# A method is a label value: any other token a client sends is counted as "OTHER" (bounded label values).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


class RequestMetrics(Protocol):
    """What the middleware needs of a service's metrics: a request counter and a latency histogram by route."""

    requests: Any
    latency: Any


# scope key: (RequestContext, start) of a request a raw route (servicekit.http) began and hands to the app to answer,
# so that its access line has the one request id, trace, duration and fields of the whole request
HANDED = "servicekit.metrics.handed"


class MetricsMiddleware:
    """Counts requests by route template (never the raw path: bounded label values), times them to the response
    start, and writes the access line.

    ``request_labels`` names the labels of ``metrics.requests`` in order, from ``method``, ``route`` and ``status``.
    ``echo_request_id`` puts the request id on every response; without it (the BFF's hot path, where the proxy
    passes the id on itself) the id is worked out only when something asks for it (servicekit.logs.RequestContext).
    ``forwarded_for``: the client a trusted proxy in front names (``TrustedProxies.client_address``), which the
    access line gives as ``forwarded_for`` when it is not the peer itself (behind a Unix socket, the only address).
    ``caller_flags=False``: a caller's ``traceparent`` flags are not passed on (``servicekit.logs.RequestContext``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: RequestMetrics,
        access_log: logging.Logger,
        request_labels: Sequence[str] = ("method", "route", "status"),
        routes: Sequence[BaseRoute] = (),
        echo_request_id: bool = True,
        forwarded_for: Callable[[Scope], str] | None = None,
        caller_flags: bool = True,
    ) -> None:
        self.app = app
        self.caller_flags = caller_flags  # servicekit.logs.RequestContext: whether a caller's trace flags go on
        self.forwarded_for = forwarded_for
        self.requests = metrics.requests
        self.latency = metrics.latency
        self.access_log = access_log
        self.request_labels = tuple(request_labels)
        self.routes = routes
        self.echo_request_id = echo_request_id
        # labels() looks its child up on every call (a measurable share of a proxied request): keep them
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[str, Any] = {}

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return str(getattr(route, "path", UNMATCHED))
        partial = None
        for candidate in self.routes:  # refused before routing (a 401 from a middleware): find the template
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                return str(getattr(candidate, "path", UNMATCHED))
            if match is Match.PARTIAL and partial is None:  # the path matched, the method did not (405)
                partial = str(getattr(candidate, "path", UNMATCHED))
        return partial or UNMATCHED

    def _observe(self, route: str, seconds: float) -> None:
        histogram = self._histograms.get(route)
        if histogram is None:
            histogram = self._histograms[route] = self.latency.labels(route)
        histogram.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # its log lines and its upstream call carry the request's ids too
                reset = CONTEXT.set(RequestContext(scope["headers"], self.caller_flags))
                try:
                    await self.app(scope, receive, send)
                finally:
                    CONTEXT.reset(reset)
                return
            await self.app(scope, receive, send)
            return
        handed = scope.pop(HANDED, None)  # a raw route's request the app goes on with: its context and start
        if handed is None:
            start = time.perf_counter()
            context = RequestContext(scope["headers"], self.caller_flags)
        else:
            context, start = handed
        status = 500
        timed = False
        logging_on = self.access_log.isEnabledFor(logging.INFO)  # read once per request: hot path
        reset = CONTEXT.set(context)

        async def send_wrapper(message: Message) -> None:
            nonlocal status, timed
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.echo_request_id:
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", context.request_id.encode())]
                self._observe(self._route(scope), time.perf_counter() - start)
                timed = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.record(scope, status, start, context, timed=timed, logging_on=logging_on)
            CONTEXT.reset(reset)

    def record(
        self,
        scope: Scope,
        status: int,
        start: float,
        context: RequestContext,
        *,
        timed: bool = False,
        logging_on: bool = True,
    ) -> None:
        """Count a request answered with ``status`` that began at ``start`` (``time.perf_counter()``), time it
        unless ``timed`` already, and write its access line. Also for answers given outside the ASGI app
        (``servicekit.http`` raw routes)."""
        route = self._route(scope)
        if not timed:  # no answer started (an exception on its way to the server error handler), or a raw answer
            self._observe(route, time.perf_counter() - start)
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        counter = self._counters.get((method, route, status))
        if counter is None:
            values = {"method": method, "route": route, "status": str(status)}
            counter = self.requests.labels(*(values[name] for name in self.request_labels))
            self._counters[(method, route, status)] = counter
        counter.inc()
        if logging_on and self.access_log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            named = self.forwarded_for(scope) if self.forwarded_for is not None else ""
            access(
                self.access_log,
                scope["method"],
                route,
                scope["path"],
                status,
                time.perf_counter() - start,
                context.request_id,
                client,
                context,
                forwarded_for=named if named and (not client or named != client[0]) else None,
            )
