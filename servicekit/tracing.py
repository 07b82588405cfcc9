"""OpenTelemetry export, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (DESIGN §12).

The W3C trace context itself (``traceparent`` in, on to upstreams and the provider, the trace id in every log line)
is always on and costs next to nothing (``servicekit.logs.RequestContext``). Exporting spans needs the ``otel``
extra (``pip install 'jwt-bff[otel]'``): only then, and only when the endpoint is set, is ``servicekit.otel`` — and
with it OpenTelemetry — imported. A service without the variable pays nothing for it on its hot path.
"""

from __future__ import annotations

from typing import Any

from .settings import Setting, SettingsError

OTEL_SETTINGS = (
    Setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        None,
        "OTLP/HTTP collector base URL (e.g. http://otel-collector:4318): export a span per request with "
        "OpenTelemetry (needs the otel extra). Unset: no export.",
    ),
    Setting("OTEL_SERVICE_NAME", None, "The service.name of the exported spans (default: the service's own name)."),
)


# scope key: a span begun outside the app (a raw route, servicekit.http) that the app's span middleware goes on with
SPAN = "servicekit.otel.span"


def spans(endpoint: str | None, service: str, exporter: Any = None) -> Any:
    """The service's span maker (``servicekit.otel.Spans``) when export is on, else None.

    ``exporter``: a span exporter of the caller's (the SDK's in-memory one in tests) instead of OTLP/HTTP."""
    if not endpoint and exporter is None:
        return None
    try:
        from . import otel
    except ImportError as exc:  # the extra is not installed: say so at start-up, naming the setting
        raise SettingsError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: pip install 'jwt-bff[otel]'"
        ) from exc
    return otel.spans(endpoint, service, exporter)


def middleware(spans: Any) -> list[Any]:
    """The span middleware to add for ``spans`` (inside the metrics middleware, which sets the request context),
    or none when export is off."""
    if spans is None:
        return []
    from . import otel

    return [otel.span_middleware(spans)]
