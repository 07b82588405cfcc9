"""Resource server settings, read once from the environment (DESIGN §4), declared in ``SETTINGS``
(servicekit.settings): the single source for reading them, ``resource-server config`` and
docs/reference/settings.md."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from jwt_bff_verifier import DEFAULT_ALGORITHMS, SUPPORTED_ALGORITHMS
from servicekit.http import HTTP_SETTINGS
from servicekit.redis import REDIS_SETTINGS
from servicekit.settings import Declarations, Setting, SettingsError, choice, combine, integer, number, url
from servicekit.tracing import OTEL_SETTINGS, Sampling, sampling


def _audience(label: str, raw: str) -> str:
    if not raw.strip():
        raise SettingsError(f"{label} must not be empty")
    return raw.strip()


def _algorithms(label: str, raw: str) -> tuple[str, ...]:
    algorithms = tuple(a.strip() for a in raw.split(","))
    bad = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
    if bad or not algorithms:
        raise SettingsError(
            f"{label}: unsupported {bad} (never none or HS*); choose from {sorted(SUPPORTED_ALGORITHMS)}"
        )
    return algorithms


def _nonce_secret(label: str, raw: str) -> bytes:
    if len(raw) < 16:
        raise SettingsError(f"{label} must be at least 16 characters")
    return raw.encode()


def _public_urls(label: str, raw: str) -> tuple[str, ...]:
    parse = url(strip_slash=True)
    return tuple(parse(label, u.strip()) for u in raw.split(",") if u.strip())


def _max_notes(label: str, raw: str) -> int:
    value: int = integer()(label, raw)
    if value < 1:
        raise SettingsError(f"{label} must be at least 1")
    return value


OWN = (
    Setting(
        "RS_ISSUER",
        "http://localhost:9000",
        "The issuer whose tokens are accepted (compared exactly with iss).",
        url(strip_slash=False),
    ),
    Setting("RS_AUDIENCE", "notes", "This API's audience: a token's aud must hold it.", _audience),
    Setting(
        "RS_JWKS_URL",
        None,
        "Where the signing keys are fetched.",
        url(strip_slash=False),
        default_doc="discovered from the issuer's metadata",
    ),
    Setting(
        "RS_ALGORITHMS",
        ",".join(DEFAULT_ALGORITHMS),
        "Accepted signature algorithms (never none or HS*).",
        _algorithms,
        kind="list",
    ),
    Setting("RS_LEEWAY", "30", "Seconds of clock skew allowed on exp, nbf and iat.", integer(), kind="integer"),
    Setting(
        "RS_JWKS_COOLDOWN", "30", "Seconds between refetches of the JWKS for an unknown kid.", number(), kind="number"
    ),
    Setting("RS_MAX_NOTES", "500", "Notes one user may keep (the sample API).", _max_notes, kind="integer"),
    Setting(
        "RS_VERIFY_CACHE_SIZE",
        "4096",
        "Verified tokens remembered, so a token seen again skips the crypto; 0 disables.",
        integer(),
        kind="integer",
    ),
    Setting(
        "RS_REVOCATION_POLL",
        "2",
        "Seconds between polls of the revocation feed; 0 turns it off.",
        number(),
        kind="number",
    ),
    Setting(
        "RS_REVOCATIONS_URL",
        None,
        "The revocation feed to poll (a failing feed: one WARNING, then back-off up to 60 s).",
        url(strip_slash=False),
        default_doc="the issuer metadata's revocation_feed_endpoint; none advertised: no feed is polled",
    ),
    Setting(
        "RS_DPOP",
        "allowed",
        "DPoP-bound tokens (RFC 9449): off, allowed or required.",
        choice("off", "allowed", "required"),
    ),
    Setting(
        "RS_DPOP_NONCE_SECRET",
        None,
        "Set (at least 16 characters): DPoP proofs must carry a nonce the API issued.",
        _nonce_secret,
        secret=True,
    ),
    Setting(
        "RS_PUBLIC_URL",
        None,
        "Comma-separated base URLs clients reach this API at: a DPoP proof's htu must be the request's path under "
        "one of them, never the Host header (issue #18). Unset: the Host is trusted only for tokens whose aud is "
        "this audience alone.",
        _public_urls,
        kind="list",
    ),
    Setting(
        "RS_REVOCATIONS_CLIENT_ID",
        None,
        "Client id sent (HTTP Basic) when the auth server lets only some clients read its revocation feed "
        "(AUTH_REVOCATIONS_CLIENTS).",
    ),
    Setting(
        "RS_REVOCATIONS_CLIENT_SECRET",
        None,
        "The secret of RS_REVOCATIONS_CLIENT_ID.",
        secret=True,
    ),
)
SETTINGS = Declarations(
    "resource-server", "RS_", combine(OWN, REDIS_SETTINGS, HTTP_SETTINGS, OTEL_SETTINGS), config_var="RS_CONFIG"
)


@dataclass(frozen=True)
class Settings:
    issuer: str = "http://localhost:9000"
    audience: str = "notes"
    jwks_url: str | None = None  # None: discovered from the issuer's metadata
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: int = 30
    jwks_cooldown: float = 30.0
    max_notes: int = 500
    verify_cache_size: int = 4096  # verified tokens remembered (0 disables): a token seen again skips the crypto
    redis_url: str = field(default="redis://localhost:6379/0", repr=False)  # may hold a password
    redis_cluster: bool = False  # REDIS_CLUSTER=1: REDIS_URL is a seed node of a Redis Cluster (several URLs imply it)
    revocation_poll: float = 2.0  # DESIGN §9: seconds between polls of the revocation feed; 0 turns it off
    revocations_url: str | None = None  # None: the issuer metadata's revocation_feed_endpoint, if it has one
    dpop: str = "allowed"  # RFC 9449: off | allowed | required
    dpop_nonce_secret: bytes | None = field(default=None, repr=False)  # set: DPoP proofs must carry our nonce
    public_urls: tuple[str, ...] = ()  # RS_PUBLIC_URL: what a DPoP proof's htu may name (issue #18 item 2)
    revocations_client_id: str | None = None  # credentials for a feed restricted by AUTH_REVOCATIONS_CLIENTS
    revocations_client_secret: str | None = field(default=None, repr=False)
    otel_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT: spans exported with OpenTelemetry (DESIGN §12)
    otel_service_name: str = "resource-server"
    otel_sampling: Sampling | None = None  # OTEL_TRACES_SAMPLER(_ARG): which requests' spans are exported

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings from ``env`` (default ``os.environ``), over the TOML file ``RS_CONFIG`` names, if any."""
        v = SETTINGS.read(os.environ if env is None else env)
        if (v["revocations_client_id"] is None) != (v["revocations_client_secret"] is None):
            raise SettingsError(
                "RS_REVOCATIONS_CLIENT_ID and RS_REVOCATIONS_CLIENT_SECRET are set together or not at all"
            )
        return cls(
            issuer=v["issuer"],
            audience=v["audience"],
            jwks_url=v["jwks_url"],
            algorithms=v["algorithms"],
            leeway=v["leeway"],
            jwks_cooldown=v["jwks_cooldown"],
            max_notes=v["max_notes"],
            verify_cache_size=v["verify_cache_size"],
            redis_url=v["redis_url"],
            redis_cluster=v["redis_cluster"],
            revocation_poll=v["revocation_poll"],
            dpop=v["dpop"],
            dpop_nonce_secret=v["dpop_nonce_secret"],
            revocations_url=v["revocations_url"],
            public_urls=v["public_url"] or (),
            revocations_client_id=v["revocations_client_id"],
            revocations_client_secret=v["revocations_client_secret"],
            otel_endpoint=v["otel_exporter_otlp_endpoint"],
            otel_service_name=v["otel_service_name"] or "resource-server",
            otel_sampling=sampling(v),
        )
