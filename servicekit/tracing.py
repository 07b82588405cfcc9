"""OpenTelemetry export, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (DESIGN §12).

The W3C trace context itself (``traceparent`` in, on to upstreams and the provider, the trace id in every log line)
is always on and costs next to nothing (``servicekit.logs.RequestContext``). Exporting spans needs the ``otel``
extra (``pip install 'jwt-bff[otel]'``): only then, and only when the endpoint is set, is ``servicekit.otel`` — and
with it OpenTelemetry — imported. A service without the variable pays nothing for it on its hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from random import getrandbits
from typing import Any

from .settings import Setting, SettingsError, stripped

# OTEL_TRACES_SAMPLER, OpenTelemetry's own variable and names -> (a caller's traceparent decides, the ratio sampled;
# None: OTEL_TRACES_SAMPLER_ARG's)
SAMPLERS: dict[str, tuple[bool, float | None]] = {
    "parentbased_always_on": (True, 1.0),  # the SDK's default
    "parentbased_traceidratio": (True, None),
    "parentbased_always_off": (True, 0.0),
    "always_on": (False, 1.0),
    "traceidratio": (False, None),
    "always_off": (False, 0.0),
}


def _ratio(raw: str | None) -> float:
    if raw is None or not raw.strip():
        return 1.0  # unset: OpenTelemetry's default
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:  # (NaN is neither)
        raise SettingsError(
            f"OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1 (0.01: one trace in a hundred), got {raw!r}"
        )
    return value


OTEL_SETTINGS = (
    Setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        None,
        "OTLP/HTTP collector base URL (e.g. http://otel-collector:4318): export a span per request with "
        "OpenTelemetry (needs the otel extra). Unset: no export.",
    ),
    Setting("OTEL_SERVICE_NAME", None, "The service.name of the exported spans (default: the service's own name)."),
    Setting(
        "OTEL_TRACES_SAMPLER",
        "parentbased_always_on",
        "Which requests' spans are exported, by OpenTelemetry's sampler names: parentbased_traceidratio exports the "
        "ratio OTEL_TRACES_SAMPLER_ARG of new traces and follows a caller's traceparent; always_off none. Checked "
        "only when OTEL_EXPORTER_OTLP_ENDPOINT is set.",
        parse=stripped,
    ),
    Setting(
        "OTEL_TRACES_SAMPLER_ARG",
        None,
        "The ratio of traces the traceidratio samplers export, 0 to 1 (0.01: one in a hundred); unset: 1. Read only "
        "by those two samplers.",
        default_doc="1",
    ),
)


@dataclass(frozen=True)
class Sampling:
    """Which requests get a recorded span, decided before OpenTelemetry is asked (a request left out costs next to
    nothing): OpenTelemetry's samplers of the same names, and their rule."""

    follows_caller: bool  # parentbased_*: a caller's traceparent flag decides
    bound: int  # TraceIdRatioBased's: a trace is sampled when its id's low 64 bits are below it
    # whether a caller's traceparent may decide at all: its flags (parentbased_*) and, for the ratio, its trace id.
    # False at a front gate (the BFF: its callers are browsers, W3C Trace Context §7.2): fresh random bits decide.
    trust_caller: bool = True
    # paths whose callers are trusted where the others are not (the auth server's back channel, whose callers are
    # clients; its pages, and any other path, are browsers')
    trusted_paths: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        sampler: str | None,
        arg: str | None,
        *,
        trust_caller: bool = True,
        trusted_paths: frozenset[str] = frozenset(),
    ) -> Sampling:
        """``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` as given; a sampler this service cannot follow, or
        a ratio outside 0-1 for a ratio sampler, is a SettingsError naming the setting."""
        name = (sampler or "parentbased_always_on").strip().lower()
        if name not in SAMPLERS:
            known = ", ".join(SAMPLERS)
            raise SettingsError(f"OTEL_TRACES_SAMPLER must be one of {known}, got {sampler!r}")
        follows, fixed = SAMPLERS[name]
        ratio = _ratio(arg) if fixed is None else fixed  # (the ARG of another sampler is not ours to judge)
        return cls(follows, round(ratio * 2**64), trust_caller, trusted_paths)

    def trusts(self, scope: Mapping[str, Any]) -> bool:
        """Whether a caller's traceparent may decide for the request of ``scope``: judged on the path the app routes
        (without ``root_path``, which Starlette's ``path`` includes), so that an app mounted under a prefix is judged
        as it is routed."""
        if self.trust_caller:
            return True
        path, root = scope["path"], scope.get("root_path")
        return (path[len(root) :] if root and path.startswith(root) else path) in self.trusted_paths

    def fresh(self) -> bool:
        """Decided on fresh random bits, by the same rule: for a caller whose word does not count."""
        return getrandbits(64) < self.bound

    def sampled(self, trace_id: str, caller_flags: str | None) -> bool:
        """For a trace id (32 hex digits) and the caller's flags (None: no caller)."""
        if caller_flags is not None and self.follows_caller:
            return int(caller_flags, 16) & 1 == 1
        return int(trace_id[16:], 16) < self.bound


def sampling(
    values: Mapping[str, Any], *, trust_caller: bool = True, trusted_paths: frozenset[str] = frozenset()
) -> Sampling | None:
    """A service's Sampling from its settings' values (OTEL_SETTINGS), or None when it exports no spans: then the
    sampler settings are not read, and cannot stop a service that does not use them."""
    if not values["otel_exporter_otlp_endpoint"]:
        return None
    return Sampling.of(
        values["otel_traces_sampler"],
        values["otel_traces_sampler_arg"],
        trust_caller=trust_caller,
        trusted_paths=trusted_paths,
    )


# scope key: a span begun outside the app (a raw route, servicekit.http) that the app's span middleware goes on with
SPAN = "servicekit.otel.span"
LEFT_OUT = False  # ... under SPAN: the request was not sampled


def spans(endpoint: str | None, service: str, exporter: Any = None, sampling: Sampling | None = None) -> Any:
    """The service's span maker (``servicekit.otel.Spans``) when export is on, else None.

    ``exporter``: a span exporter of the caller's (the SDK's in-memory one in tests) instead of OTLP/HTTP.
    ``sampling``: which requests' spans are recorded (default: all of them, and whatever a caller asks)."""
    if not endpoint and exporter is None:
        return None
    try:
        from . import otel
    except ImportError as exc:  # the extra is not installed: say so at start-up, naming the setting
        raise SettingsError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: pip install 'jwt-bff[otel]'"
        ) from exc
    return otel.spans(endpoint, service, exporter, sampling or Sampling.of(None, None))


def middleware(spans: Any) -> list[Any]:
    """The span middleware to add for ``spans`` (inside the metrics middleware, which sets the request context),
    or none when export is off."""
    if spans is None:
        return []
    from . import otel

    return [otel.span_middleware(spans)]
