"""Spans with the OpenTelemetry SDK (imported only through ``servicekit.tracing`` when export is on).

One server span per HTTP request, in the request's trace: its parent is the caller's ``traceparent`` span when there
was one, and the ``traceparent`` the service sends on (to an upstream, to the provider) names this span, so that the
upstream's and the provider's spans hang under it.
"""

from __future__ import annotations

from random import getrandbits
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import CONTEXT, RequestContext
from .tracing import LEFT_OUT, SPAN, Sampling


class RequestTraceIds(RandomIdGenerator):
    """A new trace's id is the one the request's context holds, which the sampler decided on (``next``, set just
    before the span is started), so that a ratio sampler downstream reading the same id decides the same."""

    def __init__(self) -> None:
        self.next: int | None = None

    def generate_trace_id(self) -> int:
        chosen, self.next = self.next, None
        return chosen or super().generate_trace_id()


def tracer(
    endpoint: str | None, service: str, exporter: SpanExporter | None = None, ids: RequestTraceIds | None = None
) -> trace.Tracer:
    # every span it is asked for is recorded: which requests get one is Spans' decision (tracing.Sampling)
    provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=ALWAYS_ON, id_generator=ids)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # OTLP/HTTP: the traces path below the base endpoint (OTLP exporter specification)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("jwt-bff")


class Spans:
    """A server span per sampled HTTP request, carrying the request's trace id and, as parent, the caller's span.

    The sampler (``tracing.Sampling``) decides first, from the trace id and the caller's flags: a request left out
    never reaches OpenTelemetry (its SDK's span costs ~5 us even when its own sampler drops it) and says so to the
    services it calls (flags 00). ``begin`` and ``end`` are also for answers given outside the ASGI app (a raw route,
    ``servicekit.http``): what was begun there goes on in the app under ``tracing.SPAN`` in the scope (a span, or
    ``LEFT_OUT``), so that a request the raw route hands over is still one span."""

    def __init__(self, tracer: trace.Tracer, sampling: Sampling, ids: RequestTraceIds) -> None:
        self.tracer = tracer
        self.sampling = sampling
        self.ids = ids

    def begin(self, scope: Scope, context: RequestContext) -> trace.Span | None:
        if context._trace is None and not any(name == b"traceparent" for name, _ in context.headers):
            # a new trace, the commonest question: its id's low half drawn here and decided on by the ratio rule,
            # without reading the trace context, which a request left out may never need
            low = getrandbits(64)
            keep = low < self.sampling.bound
            context.new_trace = (f"{low:016x}", "01" if keep else "00")
            if not keep:
                return None
            trace_id, caller, flags = context.trace
        else:
            trace_id, caller, flags = context.trace
            if caller is None or self.sampling.trusts(scope):  # a new trace (a malformed one), or trusted
                keep = self.sampling.sampled(trace_id, None if caller is None else flags)
            else:  # a caller whose word does not count: neither its flag nor the trace id it chose
                keep = self.sampling.fresh()
            if not keep:
                self.leave_out(context)
                return None
        parent = None
        if caller is None:
            self.ids.next = int(trace_id, 16)  # the SDK's new trace: the id decided on
        else:
            remote = trace.SpanContext(
                int(trace_id, 16), int(caller, 16), is_remote=True, trace_flags=trace.TraceFlags(int(flags, 16))
            )
            parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        span = self.tracer.start_span(f"{scope['method']} {scope['path']}", context=parent, kind=trace.SpanKind.SERVER)
        self.attach(span, context)
        return span

    @staticmethod
    def leave_out(context: RequestContext) -> None:
        # not sampled: the calls made for it say so, so that no service records a span under one nobody has
        trace_id, caller, _ = context.trace
        context._trace = (trace_id, caller, "00")

    @staticmethod
    def attach(span: trace.Span, context: RequestContext) -> None:
        # this span is the one the request's calls name as their parent; a new trace is OpenTelemetry's. The
        # sampler's decision (OTEL_TRACES_SAMPLER) goes on in the flags: a service called for a span not recorded
        # records none under it either (a parent-based sampler, the SDK's default), instead of orphans
        own = span.get_span_context()
        context.span_id = f"{own.span_id:016x}"
        trace_id, caller, _ = context.trace
        flags = "01" if own.trace_flags.sampled else "00"
        context._trace = (trace_id if caller is not None else f"{own.trace_id:032x}", caller, flags)

    @staticmethod
    def end(span: trace.Span, scope: Scope, status: int) -> None:
        if not span.is_recording():  # ended already: nothing to name or to end again
            return
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
        span.end()


class SpanMiddleware:
    """The app's requests' spans (``Spans``); a request a raw route began brings its span along (``tracing.SPAN``)."""

    def __init__(self, app: ASGIApp, *, spans: Spans) -> None:
        self.app = app
        self.spans = spans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = CONTEXT.get()
        if scope["type"] != "http" or context is None:
            if scope["type"] == "websocket" and context is not None:
                # no span for a WebSocket: the handshake sent upstream names none to record children under
                self.spans.leave_out(context)
            await self.app(scope, receive, send)
            return
        span = scope.pop(SPAN, None)
        if span is None:
            span = self.spans.begin(scope, context)
        elif span is LEFT_OUT:
            self.spans.leave_out(context)
            span = None
        else:
            self.spans.attach(span, context)
        if span is None:
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            with trace.use_span(span, end_on_exit=False):  # an error escaping the app is recorded on it
                await self.app(scope, receive, sending)
        finally:
            self.spans.end(span, scope, status)


def spans(endpoint: str | None, service: str, exporter: Any, sampling: Sampling) -> Spans:
    ids = RequestTraceIds()
    return Spans(tracer(endpoint, service, exporter, ids), sampling, ids)


def span_middleware(spans: Spans) -> Middleware:
    return Middleware(SpanMiddleware, spans=spans)
