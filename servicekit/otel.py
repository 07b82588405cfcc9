"""Spans with the OpenTelemetry SDK (imported only through ``servicekit.tracing`` when export is on).

One server span per HTTP request, in the request's trace: its parent is the caller's ``traceparent`` span when there
was one, and the ``traceparent`` the service sends on (to an upstream, to the provider) names this span, so that the
upstream's and the provider's spans hang under it.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import CONTEXT


def tracer(endpoint: str | None, service: str, exporter: SpanExporter | None = None) -> trace.Tracer:
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # OTLP/HTTP: the traces path below the base endpoint (OTLP exporter specification)
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    else:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("jwt-bff")


class SpanMiddleware:
    """A server span per HTTP request, carrying the request's trace id and, as parent, the caller's span."""

    def __init__(self, app: ASGIApp, *, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = CONTEXT.get()
        if scope["type"] != "http" or context is None:
            await self.app(scope, receive, send)
            return
        trace_id, caller, flags = context.trace
        parent = None
        if caller is not None:
            remote = trace.SpanContext(
                int(trace_id, 16), int(caller, 16), is_remote=True, trace_flags=trace.TraceFlags(int(flags, 16))
            )
            parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        status = 500
        with self.tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}", context=parent, kind=trace.SpanKind.SERVER
        ) as span:
            own = span.get_span_context()
            # this span is the one the request's calls name as their parent; a new trace is OpenTelemetry's
            context.span_id = f"{own.span_id:016x}"
            if caller is None:
                context._trace = (f"{own.trace_id:032x}", None, flags)

            async def sending(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, sending)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None)
                if template:  # the route template, never the raw path (bounded span names)
                    span.update_name(f"{scope['method']} {template}")
                    span.set_attribute("http.route", template)
                span.set_attribute("http.request.method", scope["method"])
                span.set_attribute("url.path", scope["path"])
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.StatusCode.ERROR)


def span_middleware(endpoint: str | None, service: str, exporter: Any = None) -> Middleware:
    return Middleware(SpanMiddleware, tracer=tracer(endpoint, service, exporter))
