"""Logs as JSON lines, the access log, and the request context every line of a request carries (DESIGN §12).

Every line has the same fields in every service: ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
``message``, ``request_id`` and ``trace_id`` (both null outside a request), then the line's own fields. An access
line adds ``method``, ``route``, ``path`` (never the query string, where codes, states and tokens travel),
``status`` and ``duration_ms``.

The request context is one small object per request in a ``ContextVar``, set by the metrics middleware (the
outermost). Its request id (the caller's ``X-Request-ID`` when it is sane, else a new one) and its W3C trace context
(the caller's ``traceparent`` when it is valid, else a new trace) are worked out only when something asks: a log
line, or a call to an upstream or the provider, which carry them on (``outbound_headers``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from contextvars import ContextVar
from typing import Any

_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# W3C Trace Context §3.2: version 00, a trace id and a parent id in lower-case hex, neither all zeros, and flags.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID if it is a plain token (no log injection), else a new random one."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _SANE_ID.fullmatch(text):
                return text
            break
    return os.urandom(8).hex()


class RequestContext:
    """What every log line and every outgoing call of one request carries; computed on first use."""

    __slots__ = ("headers", "_request_id", "_trace", "span_id", "extra", "_entropy", "new_trace", "caller_flags")

    def __init__(self, headers: list[tuple[bytes, bytes]], caller_flags: bool = True) -> None:
        self.headers = headers
        # False: a caller's traceparent flags are not passed on (a browser's, at a service that does not decide
        # sampling itself): the trace goes on flagged as one this service starts, its id still the caller's
        self.caller_flags = caller_flags
        self._request_id: str | None = None
        self._trace: tuple[str, str | None, str] | None = None  # (trace id, the caller's span id, flags)
        self.span_id: str | None = None  # this service's span (OpenTelemetry's when it is on)
        self.extra: dict[str, Any] | None = None  # more fields for the access line (forward auth's original URI)
        self._entropy: str | None = None
        # a trace this request starts, as a sampler decided it: (its id's low 16 hex digits, flags); None: random, 01
        self.new_trace: tuple[str, str] | None = None

    def _random(self) -> str:
        """64 random hex digits, drawn once per request (one system call, not three): a new request id takes the
        first 16, a new trace id the next 32, this service's span id the last 16."""
        if self._entropy is None:
            self._entropy = os.urandom(32).hex()
        return self._entropy

    def _scan(self) -> None:
        """Read X-Request-ID and traceparent in one pass over the headers (the proxy asks for both)."""
        rid = trace = None
        for name, value in self.headers:
            if name == b"x-request-id" and rid is None:
                text = value.decode("latin-1")
                rid = text if _SANE_ID.fullmatch(text) else ""
            elif name == b"traceparent" and trace is None:
                match = _TRACEPARENT.fullmatch(value.decode("latin-1").strip())
                # W3C Trace Context §4.3: an invalid one (all-zero ids included) starts a new trace
                valid = match is not None and match[1] != _ZERO_TRACE and match[2] != _ZERO_SPAN
                trace = (match[1], match[2], match[3]) if valid and match is not None else ()
        self._request_id = rid or self._random()[:16]
        if trace:
            self._trace = trace if self.caller_flags else (trace[0], trace[1], "01")
        else:
            low, flags = self.new_trace or (self._random()[32:48], "01")
            self._trace = (self._random()[16:32] + low, None, flags)

    @property
    def request_id(self) -> str:
        if self._request_id is None:
            self._scan()
        return self._request_id  # type: ignore[return-value]

    @property
    def trace(self) -> tuple[str, str | None, str]:
        if self._trace is None:
            self._scan()
        return self._trace  # type: ignore[return-value]

    @property
    def trace_id(self) -> str:
        return self.trace[0]

    def traceparent(self) -> str:
        """The ``traceparent`` to send on: this trace, this service's span as the parent."""
        trace_id, _, flags = self.trace
        if self.span_id is None:
            self.span_id = self._random()[48:]
        return f"00-{trace_id}-{self.span_id}-{flags}"


CONTEXT: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)


def current() -> RequestContext | None:
    return CONTEXT.get()


def outbound_headers() -> dict[str, str]:
    """``X-Request-ID`` and ``traceparent`` for a call made on behalf of the current request (none outside one)."""
    context = CONTEXT.get()
    if context is None:
        return {}
    return {"X-Request-ID": context.request_id, "traceparent": context.traceparent()}


def access(
    logger: logging.Logger,
    method: str,
    route: str,
    path: str,
    status: int,
    seconds: float,
    rid: str,
    client: Any,
    context: RequestContext | None = None,
    *,
    forwarded_for: str | None = None,
) -> None:
    """One access line on ``logger`` (each service has its own ``<package>.access`` logger); ``context``: the
    request's, when it is no longer the current one (an answer recorded after its context was reset)."""
    if logger.isEnabledFor(logging.INFO):
        fields = {
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "request_id": rid,
            "client": client[0] if client else None,
        }
        if forwarded_for:  # the client a trusted proxy in front names (servicekit.metrics.MetricsMiddleware)
            fields["forwarded_for"] = forwarded_for
        if context is None:
            context = CONTEXT.get()
        if context is not None:
            fields["trace_id"] = context.trace_id
            if context.extra:
                fields.update(context.extra)
        logger.info("request", extra={"fields": fields})


def rfc3339(created: float) -> str:
    """``2026-12-04T05:34:13.123Z``: RFC 3339, UTC, milliseconds."""
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = CONTEXT.get()
        out: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": context.request_id if context is not None else None,
            "trace_id": context.trace_id if context is not None else None,
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def log_config(level: str = "info", *, access_logger: str | None = None, access: bool | None = None) -> dict[str, Any]:
    """A logging dictConfig for uvicorn's ``log_config``: everything as JSON lines on stderr.

    ``access_logger`` names the service's access logger: ``access=True`` turns its lines on, ``False`` off, ``None``
    leaves it at the root level.
    """
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JSONFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper()},
            "uvicorn.access": {"level": "WARNING"},
            # httpx writes an INFO line per call, its whole URL with the query (the resource server's revocation
            # poll: one every 2 s); the services log their failed calls themselves, with the fields that matter
            "httpx": {"level": "WARNING"},
        },
    }
    if access_logger is not None and access is not None:
        config["loggers"][access_logger] = {"level": "INFO" if access else "WARNING"}
    return config
