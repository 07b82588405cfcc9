"""Trace context and OpenTelemetry export (DESIGN §12): the browser's traceparent reaches the upstream with the BFF's
span as parent; with export on, the BFF's server span is in the browser's trace and is that parent; without
OTEL_EXPORTER_OTLP_ENDPOINT, OpenTelemetry is never imported."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bff.settings import Settings
from servicekit.settings import SettingsError
from servicekit.tracing import Sampling
from tests.bff.conftest import Rig, running
from tests.bff.doubles import Browser, Provider

pytestmark = pytest.mark.anyio

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
BROWSER_SPAN = "00f067aa0ba902b7"


async def test_the_upstream_gets_the_browser_trace_with_the_bff_as_parent(rig: Rig) -> None:
    browser = await rig.logged_in()
    response = await browser.request("GET", "/api/notes/me", headers={"traceparent": f"00-{TRACE}-{BROWSER_SPAN}-01"})
    version, trace, parent, flags = response.json()["headers"]["traceparent"].split("-")
    assert (version, trace, flags) == ("00", TRACE, "01") and parent != BROWSER_SPAN and int(parent, 16)
    for broken in ("00-zz-00f067aa0ba902b7-01", f"00-{'0' * 32}-{BROWSER_SPAN}-01", "junk"):
        response = await browser.request("GET", "/api/notes/me", headers={"traceparent": broken})
        new = response.json()["headers"]["traceparent"].split("-")[1]
        assert len(new) == 32 and new not in (TRACE, "0" * 32)  # an invalid one starts a new trace (W3C §4.3)


async def test_without_export_a_browsers_trace_flag_goes_on_only_when_trusted(
    rig_env: tuple[Provider, str, dict[str, str]],
) -> None:
    """With export off the BFF decides no sampling, and a browser's flag went on as it came: a page could have its
    requests left out of the upstreams' traces (00), or recorded where a trace the BFF starts would not be. Now its
    trace goes on flagged as one the BFF starts (01), unless BFF_TRUST_TRACEPARENT; its trace id stays (the logs')."""
    provider, upstream, env = rig_env
    for trusted in ("false", "true"):
        async with running(provider, upstream, {**env, "BFF_TRUST_TRACEPARENT": trusted}) as rig:
            browser = await rig.logged_in()
            for flags in ("00", "01"):
                sent = await browser.request(
                    "GET", "/api/notes/me", headers={"traceparent": f"00-{TRACE}-{BROWSER_SPAN}-{flags}"}
                )
                _, trace, _, went_on = sent.json()["headers"]["traceparent"].split("-")
                assert (trace, went_on) == (TRACE, flags if trusted == "true" else "01"), (trusted, flags)


async def test_spans_are_exported_in_the_browser_trace(
    rig_env: tuple[Provider, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, upstream, env = rig_env
    exporter = InMemorySpanExporter()
    import bff.app

    real = bff.app.create_app
    monkeypatch.setattr(bff.app, "create_app", lambda settings, **kw: real(settings, span_exporter=exporter, **kw))
    import tests.bff.conftest

    monkeypatch.setattr(tests.bff.conftest, "create_app", bff.app.create_app)
    async with running(provider, upstream, {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) as rig:
        browser = await rig.logged_in()
        exporter.clear()
        response = await browser.request("GET", "/bff/user", headers={"traceparent": f"00-{TRACE}-{BROWSER_SPAN}-01"})
        assert response.status_code == 200
        proxied = await browser.request(
            "GET", "/api/notes/me", headers={"traceparent": f"00-{TRACE}-{BROWSER_SPAN}-01"}
        )
    spans = exporter.get_finished_spans()
    user = next(span for span in spans if span.name == "GET /bff/user")
    assert f"{user.context.trace_id:032x}" == TRACE and f"{user.parent.span_id:016x}" == BROWSER_SPAN
    assert user.attributes["http.response.status_code"] == 200 and user.resource.attributes["service.name"] == "jwt-bff"
    api = next(span for span in spans if span.name == "GET /api/{route}/{path}")
    sent_parent = proxied.json()["headers"]["traceparent"].split("-")[2]
    assert f"{api.context.span_id:016x}" == sent_parent  # the upstream's parent is the BFF's exported span


@pytest.mark.parametrize("sampler", ["always_off", "traceidratio"])
async def test_a_request_the_sampler_leaves_out_is_not_sampled_downstream_either(
    rig_env: tuple[Provider, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch, sampler: str
) -> None:
    """OTEL_TRACES_SAMPLER (OpenTelemetry's names) thins the spans out: the ones it leaves out are not exported, and
    the traceparent sent on says so (flags 00), so that the upstream's and the provider's parent-based samplers
    record no orphan under a span nobody has. A browser's traceparent decides only with BFF_TRUST_TRACEPARENT."""
    provider, upstream, env = rig_env
    exporter = InMemorySpanExporter()
    import bff.app

    real = bff.app.create_app
    monkeypatch.setattr(bff.app, "create_app", lambda settings, **kw: real(settings, span_exporter=exporter, **kw))
    import tests.bff.conftest

    monkeypatch.setattr(tests.bff.conftest, "create_app", bff.app.create_app)
    env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    left_out = {"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": "0"}  # traceidratio at 0: none
    async with running(provider, upstream, {**env, **left_out}) as rig:
        browser = await rig.logged_in()
        exporter.clear()
        for given in ({}, {"traceparent": f"00-{TRACE}-{BROWSER_SPAN}-01"}):
            proxied = await browser.request("GET", "/api/notes/me", headers=given)
            version, trace, parent, flags = proxied.json()["headers"]["traceparent"].split("-")
            assert flags == "00" and int(parent, 16) and parent != BROWSER_SPAN
            assert (trace == TRACE) == bool(given)
    assert [span for span in exporter.get_finished_spans() if span.name.startswith("GET /api")] == []
    trusting = {**env, "BFF_TRUST_TRACEPARENT": "true"}  # parentbased_always_on, OpenTelemetry's default sampler
    async with running(provider, upstream, trusting) as rig:
        browser = await rig.logged_in()
        exporter.clear()
        unsampled = await browser.request(
            "GET", "/api/notes/me", headers={"traceparent": f"00-{TRACE}-{BROWSER_SPAN}-00"}
        )
        assert unsampled.json()["headers"]["traceparent"].endswith("-00")
        sampled = await browser.request("GET", "/api/notes/me")
        assert sampled.json()["headers"]["traceparent"].endswith("-01")
    (api,) = [span for span in exporter.get_finished_spans() if span.name.startswith("GET /api")]
    assert f"{api.context.span_id:016x}" == sampled.json()["headers"]["traceparent"].split("-")[2]


@pytest.mark.parametrize("sampler", ["parentbased_traceidratio", "traceidratio"])
async def test_a_browser_cannot_make_its_requests_sampled(
    rig_env: tuple[Provider, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch, sampler: str
) -> None:
    """Found attacking the samplers (W3C Trace Context §7.2): a browser's traceparent flagged sampled made every
    request it sent recorded (~1.5x the CPU, and the collector's bill) under parentbased_traceidratio, and under
    traceidratio a trace id it chose (low 64 bits zero) did the same. The BFF's callers are browsers: unless
    BFF_TRUST_TRACEPARENT, fresh random bits decide, and what the BFF decided is what its upstream is told."""
    provider, upstream, env = rig_env
    exporter = InMemorySpanExporter()
    import bff.app

    real = bff.app.create_app
    monkeypatch.setattr(bff.app, "create_app", lambda settings, **kw: real(settings, span_exporter=exporter, **kw))
    import tests.bff.conftest

    monkeypatch.setattr(tests.bff.conftest, "create_app", bff.app.create_app)
    env = {
        **env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_TRACES_SAMPLER": sampler,
        "OTEL_TRACES_SAMPLER_ARG": "1e-9",  # none of 50 fresh draws; every trace id below it, when trusted
    }
    for trusted, recorded in (("false", 0), ("true", 50)):
        async with running(provider, upstream, {**env, "BFF_TRUST_TRACEPARENT": trusted}) as rig:
            browser = await rig.logged_in()
            exporter.clear()
            for _ in range(50):
                forced = f"00-{os.urandom(8).hex()}{'0' * 16}-{BROWSER_SPAN}-01"  # sampled, and below any ratio
                sent = (await browser.request("GET", "/api/notes/me", headers={"traceparent": forced})).json()
                assert sent["headers"]["traceparent"].endswith("-01" if recorded else "-00")
                assert sent["headers"]["traceparent"][3:35] == forced[3:35]  # still the browser's trace
        spans = [span for span in exporter.get_finished_spans() if span.name.startswith("GET /api")]
        assert len(spans) == recorded, trusted


def test_a_ratio_sampler_keeps_about_its_ratio_and_the_same_traces_as_opentelemetrys() -> None:
    """tracing.Sampling decides before OpenTelemetry is asked, by the rule of the SDK's sampler of the same name: on
    the same trace ids, the same decisions."""
    from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

    ours, theirs = Sampling.of("traceidratio", "0.25"), TraceIdRatioBased(0.25)
    ids = [os.urandom(16).hex() for _ in range(4000)]
    kept = [trace for trace in ids if ours.sampled(trace, None)]
    sdk = [t for t in ids if theirs.should_sample(None, int(t, 16), "x").decision == Decision.RECORD_AND_SAMPLE]
    assert kept == sdk and 800 < len(kept) < 1200
    parent_based = Sampling.of("parentbased_traceidratio", "0")
    assert parent_based.sampled(ids[0], "01") and not parent_based.sampled(ids[0], "00")
    assert not parent_based.sampled(ids[0], None)  # a new trace: the ratio, here none
    assert Sampling.of("always_on", "0").sampled(ids[0], "00")  # not parent-based: a caller's flag does not count


def test_a_ratio_sampler_keeps_its_ratio_of_new_traces_and_follows_callers() -> None:
    """Spans.begin on requests as they come: new traces (no traceparent) sampled at the ratio, once; a caller's
    traceparent followed; a request left out sends flags 00 on."""
    from servicekit.logs import RequestContext
    from servicekit.otel import spans

    exporter = InMemorySpanExporter()
    maker = spans(None, "x", exporter, Sampling.of("parentbased_traceidratio", "0.5"))
    scope = {"method": "GET", "path": "/api/notes/me"}
    contexts = [RequestContext([(b"host", b"x")]) for _ in range(2000)]
    begun = [maker.begin(scope, context) for context in contexts]
    assert 850 < sum(span is not None for span in begun) < 1150  # about half, not a quarter (decided twice)
    for span, context in zip(begun, contexts, strict=True):
        assert context.traceparent().endswith("-01" if span is not None else "-00")
        # the decision is the ratio rule's on the very trace id sent on, so that a ratio sampler downstream agrees
        assert (int(context.trace_id[16:], 16) < 2**63) == (span is not None)
        if span is not None:
            assert f"{span.get_span_context().trace_id:032x}" == context.trace_id
    for flags in ("00", "01"):
        caller = RequestContext([(b"traceparent", f"00-{TRACE}-{BROWSER_SPAN}-{flags}".encode())])
        assert (maker.begin(scope, caller) is not None) == (flags == "01")
        assert caller.traceparent().startswith(f"00-{TRACE}-") and caller.traceparent().endswith(f"-{flags}")


@pytest.mark.parametrize("trusting", [False, True])
def test_a_browser_cannot_make_the_auth_servers_pages_sampled(tmp_path: Any, trusting: bool) -> None:
    """The auth server's pages are loaded by browsers: there, and on any path but the back channel's, a forced
    traceparent (sampled, and a trace id below any ratio) decides nothing unless AUTH_TRUST_TRACEPARENT, while the back
    channel follows its callers (the BFF's token calls join the trace as the BFF decided it). Judged on the path as
    routed: under a root_path too, and a spelling that escapes the list of pages is a 404 that is not trusted either
    (found by a review: an app under a root path, and /oauth/authorize/, were trusted)."""
    from auth_server.settings import BACK_CHANNEL
    from servicekit.logs import RequestContext
    from servicekit.otel import spans
    from tests.auth_server.helpers import make_settings

    settings = make_settings(
        "redis://127.0.0.1:1/0",
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.000000001",
        AUTH_TRUST_TRACEPARENT=str(trusting).lower(),
    )
    assert settings.otel_sampling is not None
    maker = spans(None, "auth-server", InMemorySpanExporter(), settings.otel_sampling)

    def recorded(path: str, root_path: str = "") -> int:
        forced = [f"00-{os.urandom(8).hex()}{'0' * 16}-{BROWSER_SPAN}-01" for _ in range(50)]
        contexts = [RequestContext([(b"traceparent", f.encode())]) for f in forced]
        scope = {"method": "GET", "path": root_path + path, "root_path": root_path}
        begun = [maker.begin(scope, context) for context in contexts]
        for context, span in zip(contexts, begun, strict=True):  # what the auth server says on is what it decided
            assert context.traceparent().endswith("-01" if span is not None else "-00")
        return sum(span is not None for span in begun)

    assert {"/oauth/token", "/oauth/revoke", "/.well-known/jwks.json"} <= BACK_CHANNEL
    pages = ("/oauth/authorize", "/oauth/logout", "/register", "/account")
    for root in ("", "/auth"):
        for page in (*pages, "/oauth/authorize/", "//oauth/authorize", "/healthz"):
            assert recorded(page, root) == (50 if trusting else 0), (root, page)
        for back_channel in BACK_CHANNEL:
            assert recorded(back_channel, root) == 50, (root, back_channel)


async def test_a_websocket_handshake_sent_on_asks_for_no_span_under_the_bffs() -> None:
    """The BFF makes no span for a WebSocket: the traceparent its handshake sends upstream names a span nobody
    records, so it says not sampled (found by a review: a browser's -01 went on as it came)."""
    from servicekit.logs import CONTEXT, RequestContext
    from servicekit.otel import SpanMiddleware, spans

    maker = spans(None, "x", InMemorySpanExporter(), Sampling.of(None, None))
    sent: list[str] = []

    async def upstream(scope: Any, receive: Any, send: Any) -> None:
        context = CONTEXT.get()
        assert context is not None
        sent.append(context.traceparent())

    middleware = SpanMiddleware(upstream, spans=maker)
    headers = [(b"traceparent", f"00-{TRACE}-{BROWSER_SPAN}-01".encode())]
    reset = CONTEXT.set(RequestContext(headers))
    try:
        await middleware({"type": "websocket", "path": "/api/chat/ws", "headers": headers}, None, None)  # type: ignore[arg-type]
    finally:
        CONTEXT.reset(reset)
    assert sent[0].startswith(f"00-{TRACE}-") and sent[0].endswith("-00")


RATIO = {"OTEL_TRACES_SAMPLER": "traceidratio"}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER must be one of"),
        ({**RATIO, "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1"),
        ({**RATIO, "OTEL_TRACES_SAMPLER_ARG": "nan"}, "OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1"),
        ({**RATIO, "OTEL_TRACES_SAMPLER_ARG": "ten percent"}, "OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1"),
    ],
)
def test_a_sampler_setting_the_services_cannot_use_is_said_at_start(env: dict[str, str], named: str) -> None:
    exporting = {"BFF_CLIENT_SECRET": "x" * 40, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    with pytest.raises(SettingsError, match=named):
        Settings.from_env({**exporting, **env})
    assert Settings.from_env({"BFF_CLIENT_SECRET": "x" * 40, **env}).otel_sampling is None  # export off: not read


def test_sampler_settings_as_the_opentelemetry_operator_injects_them_start() -> None:
    """Found attacking the samplers: an ARG only a ratio sampler reads stopped the start under another sampler (a
    Jaeger-style ARG with always_on), and an ARG of spaces was an error where an empty one meant the default."""
    exporting = {"BFF_CLIENT_SECRET": "x" * 40, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    always = Settings.from_env({**exporting, "OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": "x=1"})
    assert always.otel_sampling is not None and always.otel_sampling.bound == 2**64
    spaces = Settings.from_env({**exporting, **RATIO, "OTEL_TRACES_SAMPLER_ARG": "  "})
    assert spaces.otel_sampling is not None and spaces.otel_sampling.bound == 2**64  # unset: 1, as OpenTelemetry's
    half = Settings.from_env({**exporting, **RATIO, "OTEL_TRACES_SAMPLER_ARG": " 0.5 "})
    assert half.otel_sampling is not None and half.otel_sampling.bound == 2**63
    assert not half.otel_sampling.trust_caller  # the BFF's callers are browsers (BFF_TRUST_TRACEPARENT)


async def test_without_the_endpoint_no_span_machinery_is_imported() -> None:
    code = (
        "import sys, bff.app, bff.settings\n"
        "bff.app.create_app(bff.settings.Settings.from_env({'BFF_CLIENT_SECRET': 'x' * 40}))\n"
        # (redis-py imports the OpenTelemetry *metrics* SDK by itself when it is installed: not ours to judge)
        "assert not [m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', 'servicekit.otel'))]\n"
    )
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


async def test_the_otlp_exporter_is_built_from_the_endpoint() -> None:
    from servicekit.otel import tracer

    assert tracer("http://127.0.0.1:4318", "jwt-bff") is not None  # the otel extra's OTLP/HTTP path imports and builds


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:4318"])
async def test_the_resource_server_and_the_auth_server_export_when_asked(
    endpoint: str | None, tmp_path: object
) -> None:
    """The same switch in the two other services: their span middleware is there exactly when the endpoint is set."""
    from auth_server.app import create_app as create_auth
    from resource_server.app import create_app as create_rs
    from resource_server.settings import Settings as RSSettings
    from tests.auth_server.helpers import make_settings

    extra = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint} if endpoint else {}
    rs = create_rs(
        RSSettings.from_env({"RS_ISSUER": "http://auth.test", "REDIS_URL": "redis://127.0.0.1:1/0", **extra})
    )
    auth = create_auth(make_settings("redis://127.0.0.1:1/0", tmp_path, **extra))  # type: ignore[arg-type]
    for app, service in ((rs, "resource-server"), (auth, "auth-server")):
        spans = [m for m in app.user_middleware if m.cls.__name__ == "SpanMiddleware"]
        assert len(spans) == (1 if endpoint else 0), service
        if endpoint:
            resource = spans[0].kwargs["spans"].tracer.resource  # type: ignore[attr-defined]
            assert resource.attributes["service.name"] == service
            sampling = spans[0].kwargs["spans"].sampling  # type: ignore[attr-defined]
            if service == "auth-server":  # browsers load its pages: only its back channel's callers are trusted
                assert not sampling.trust_caller and "/oauth/token" in sampling.trusted_paths
            else:
                assert sampling.trust_caller


class Collector:
    """An OTLP/HTTP collector on a real socket that keeps the spans it is sent (decoded from protobuf)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        spans = self.spans = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                export = ExportTraceServiceRequest.FromString(body)
                for resource in export.resource_spans:
                    for scoped in resource.scope_spans:
                        spans.extend(scoped.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def in_trace(self, trace: str) -> list[Any]:
        return [span for span in list(self.spans) if span.trace_id.hex() == trace]


async def test_forward_auth_on_a_real_socket_exports_one_span_per_question(
    rig_env: tuple[Provider, str, dict[str, str]], process_factory: Any
) -> None:
    """`bff serve` answers an allowed /bff/auth past the ASGI app (servicekit.http raw routes) and hands a refusal to
    the app: each is one server span, exported over OTLP/HTTP to a collector on a socket, in the asker's trace. The
    allowed answer names that span as the upstream request's parent, for the proxy to send on."""
    provider, _, env = rig_env
    collector = Collector()
    bff = process_factory(
        ["-m", "bff", "serve"],
        {
            **env,
            "BFF_TRUSTED_PROXIES": "127.0.0.1/32",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # the SDK's batch export, every 100 ms instead of 5 s
        },
    )
    allowed_trace, refused_trace = "4bf92f3577b34da6a3ce929d0e0e4736", "5c0a2f3577b34da6a3ce929d0e0e4799"
    asked = {"X-Original-URI": "/api/notes/me", "X-Original-Method": "GET", "X-CSRF": "1"}
    try:
        async with httpx.AsyncClient(base_url=bff.url, timeout=10) as client, httpx.AsyncClient() as provider_client:
            browser = Browser(client)
            assert (await browser.login(provider_client)).status_code == 302
            allowed = await browser.request(
                "GET",
                "/bff/auth",
                csrf=False,
                headers={**asked, "traceparent": f"00-{allowed_trace}-{BROWSER_SPAN}-01"},
            )
            assert allowed.status_code == 200, allowed.text
        async with httpx.AsyncClient(base_url=bff.url, timeout=10) as stranger:  # no session: refused
            refused = await stranger.get(
                "/bff/auth", headers={**asked, "traceparent": f"00-{refused_trace}-{BROWSER_SPAN}-01"}
            )
            assert refused.status_code == 401
        for _ in range(100):
            if collector.in_trace(allowed_trace) and collector.in_trace(refused_trace):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # a second span of either request would have come by now
        for trace, status in ((allowed_trace, 200), (refused_trace, 401)):
            (span,) = collector.in_trace(trace)
            attributes = {a.key: a.value for a in span.attributes}
            assert span.name == "GET /bff/auth" and span.parent_span_id.hex() == BROWSER_SPAN
            assert attributes["http.response.status_code"].int_value == status
            assert attributes["http.route"].string_value == "/bff/auth"
        (span,) = collector.in_trace(allowed_trace)
        assert allowed.headers["traceparent"] == f"00-{allowed_trace}-{span.span_id.hex()}-01"
        assert "traceparent" not in refused.headers
    finally:
        collector.server.shutdown()
        collector.server.server_close()
