"""BFF settings, read once from the environment and the TOML file ``BFF_CONFIG`` names (DESIGN §4, §11).

``SETTINGS`` declares each one (servicekit.settings): the single source for reading them, the file's keys,
``bff config`` and docs/reference/settings.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bff.claims import parse_claim_names
from bff.routes import RouteTable, parse_routes
from servicekit.client_secret import require_strong
from servicekit.durable import WAIT_SETTINGS, WaitPolicy
from servicekit.http import HTTP_SETTINGS
from servicekit.proxies import IPNetwork, networks
from servicekit.redis import REDIS_SETTINGS
from servicekit.settings import (
    Declarations,
    Setting,
    SettingsError,
    combine,
    flag,
    http_url,
    integer,
    number,
    stripped,
    url,
)
from servicekit.tracing import OTEL_SETTINGS, Sampling, sampling

HOST_PREFIX = "__Host-"


def _cookie_name(label: str, raw: str) -> str:
    if not raw.replace("-", "").replace("_", "").isalnum():
        raise SettingsError(f"{label} must be letters, digits, '-' and '_', got {raw!r}")
    return raw


def _routes(label: str, raw: str) -> RouteTable:
    return parse_routes(raw, label)


def _claim_names(label: str, raw: str) -> tuple[str, ...]:
    return parse_claim_names(raw, label)


def _trusted_proxies(label: str, raw: str) -> tuple[IPNetwork | str, ...]:
    return networks(label, raw, unix=True)


def _frontend(label: str, raw: str) -> str:
    """``none``, ``demo``, an http(s) URL, or a directory holding an index.html (made absolute, symlinks resolved)."""
    value = raw.strip()
    if value.lower() in ("none", "demo"):
        return value.lower()
    if "://" in value:
        return http_url(label, value, plain=True)
    path = os.path.realpath(value)
    if not os.path.isdir(path):
        raise SettingsError(
            f"{label} must be none, demo, an http(s):// URL or a directory (a built SPA), got {raw!r}: "
            "no such directory"
        )
    if not os.path.isfile(os.path.join(path, "index.html")):
        raise SettingsError(f"{label} {raw!r} has no index.html: name the built SPA's directory (e.g. dist/)")
    return path


OWN = (
    Setting(
        "BFF_CLIENT_SECRET",
        None,
        "The BFF's client secret at the provider (at least 16 characters; see BFF_ALLOW_DEV_SECRET).",
        secret=True,
        required=True,
    ),
    Setting("BFF_ISSUER", "http://localhost:9000", "The provider's issuer URL (its discovery document).", url()),
    Setting("BFF_CLIENT_ID", "bff", "The BFF's client id at the provider."),
    Setting(
        "BFF_PUBLIC_URL",
        "http://localhost:8000",
        "The BFF's URL as browsers see it: its origin and {public_url}/bff/callback, the redirect URI.",
        url(),
    ),
    Setting(
        "BFF_ROUTES",
        '{"notes": "http://localhost:9001"}',
        "Route name -> upstream URL or route object (url, token, resource, methods, websocket, timeout, ...); "
        "in the file, one [routes.NAME] table each.",
        _routes,
        kind="table",
    ),
    Setting(
        "BFF_SCOPES",
        "openid notes:read notes:write",
        "Scopes asked for at login (space-separated).",
        kind="list",
        sep=" ",
    ),
    Setting(
        "BFF_COOKIE_NAME",
        "__Host-session",
        "The session cookie's name (the __Host- prefix is dropped when BFF_COOKIE_SECURE is false).",
        _cookie_name,
    ),
    Setting(
        "BFF_COOKIE_SECURE", "true", "Secure cookies (false only for plain-http development).", flag, kind="boolean"
    ),
    Setting(
        "BFF_IDLE_TTL",
        "1800",
        "Seconds a session lives without use (at most BFF_ABSOLUTE_TTL).",
        integer(minimum=1),
        kind="integer",
    ),
    Setting("BFF_ABSOLUTE_TTL", "43200", "Seconds a session lives at most.", integer(minimum=1), kind="integer"),
    Setting("BFF_REFRESH_SKEW", "30", "Seconds before expiry an access token is refreshed.", integer(), kind="integer"),
    Setting(
        "BFF_UPSTREAM_TIMEOUT",
        "30",
        "Seconds to connect to an upstream and between its reads (a route's timeout overrides it).",
        number(positive=True),
        kind="number",
    ),
    Setting("BFF_AUTH_TIMEOUT", "10", "Seconds for a call to the provider.", number(positive=True), kind="number"),
    Setting("BFF_LOCK_LEASE", "5", "Seconds a refresh lock is held at most.", number(positive=True), kind="number"),
    Setting("BFF_MAX_WEBSOCKETS", "1000", "Open WebSockets per process; more get 503.", integer(), kind="integer"),
    Setting(
        "BFF_MAX_SOCKETS_PER_SESSION",
        "16",
        "Open WebSockets plus streamed answers (SSE, downloads) of one session per process; more get 429 "
        "too_many_sockets for that session only.",
        integer(minimum=1),
        kind="integer",
    ),
    Setting(
        "BFF_MAX_SOCKETS_PER_USER",
        "64",
        "Open WebSockets plus streamed answers of one user (all their sessions) per process; more get 429 "
        "too_many_sockets for that user only.",
        integer(minimum=1),
        kind="integer",
    ),
    Setting(
        "BFF_AUTH_INTERNAL_URL",
        None,
        "Where the BFF itself reaches the provider (token, JWKS, PAR, revocation), when not at BFF_ISSUER.",
        url(),
        default_doc="BFF_ISSUER",
    ),
    Setting(
        "BFF_DPOP_KEY_FILE",
        None,
        "A PEM EC P-256 private key: every token the BFF obtains is DPoP-bound to it (RFC 9449).",
        stripped,
        default_doc="none: Bearer tokens",
    ),
    Setting(
        "BFF_TRUSTED_PROXIES",
        "none",
        "CIDRs of the proxies whose X-Original-*/X-Forwarded-* headers /bff/auth believes (forward auth), or none; "
        "unix: those connected to the Unix socket of bff serve --uds (its permissions say who may connect).",
        _trusted_proxies,
        kind="list",
    ),
    Setting(
        "BFF_POST_LOGOUT_URL",
        None,
        "Where the provider sends the browser after logout.",
        url(strip_slash=False),
        default_doc="BFF_PUBLIC_URL + /",
        derive=lambda v: f"{v['public_url']}/",
    ),
    Setting(
        "BFF_USER_CLAIMS",
        "preferred_username,name,email",
        "Claims kept at login (ID token, else userinfo) and returned in /bff/user as claims; the claims a route's "
        "require names are kept too. X-Auth-Request-User/-Email/-Groups of forward auth come from them.",
        _claim_names,
        kind="list",
    ),
    Setting(
        "BFF_FRONTEND",
        "none",
        "What the BFF serves outside /bff/* and /api/*: a directory (a built SPA: its files, index.html for page "
        "navigations to other paths), an http(s):// URL (a dev server or CDN origin, proxied without cookies or "
        "credentials, WebSockets included), demo (the demo page) or none.",
        _frontend,
    ),
    Setting(
        "BFF_MAX_SESSIONS_PER_USER",
        "100",
        "Live sessions one user may hold (each login through a provider's SSO session makes one); a login beyond it "
        "ends the user's oldest, as ending one on /bff/sessions does. 0: no limit.",
        integer(minimum=0),
        kind="integer",
    ),
    Setting(
        "BFF_COMPACT_STORE",
        "false",
        "Write session records, the back-channel logout index and the user's list of sessions in this release's "
        "compact forms, which a replica of an earlier release cannot read. Set true once none runs, nor will after a "
        "rollback: ~650 bytes of Redis a session less. This release reads both forms, whatever this says.",
        flag,
        kind="boolean",
    ),
    Setting(
        "BFF_TRUST_TRACEPARENT",
        "false",
        "Let a caller's traceparent decide which requests' spans are exported (OTEL_TRACES_SAMPLER's parentbased "
        "samplers follow its flag; the ratio ones read its trace id), and its flag go on upstream. Off: the BFF's "
        "callers are browsers, whose word would make every request recorded; fresh random bits decide, the caller's "
        "trace still holds the span, and with export off its trace goes on flagged as one the BFF starts.",
        flag,
        kind="boolean",
    ),
    Setting(
        "BFF_LOGIN_REQUIRED",
        "false",
        "Whatever BFF_FRONTEND serves needs a session: a page navigation without one goes to /bff/login?return_to="
        "<path>; any other request (an asset, a fetch, an API call) gets 401 JSON, never a redirect.",
        flag,
        kind="boolean",
    ),
    Setting(
        "BFF_ALLOW_DEV_SECRET",
        "false",
        "Start even with a weak BFF_CLIENT_SECRET (development only; a WARNING says so).",
        flag,
        kind="boolean",
    ),
)
SETTINGS = Declarations(
    "bff",
    "BFF_",
    combine(OWN, REDIS_SETTINGS, WAIT_SETTINGS, HTTP_SETTINGS, OTEL_SETTINGS),
    config_var="BFF_CONFIG",
    retired={
        "BFF_USER_INDEX_SET": "BFF_COMPACT_STORE=true leaves the per-user set out, with the other compact forms, once "
        "no replica of an earlier release runs (docs/operations, Upgrading)",
    },
)


@dataclass(frozen=True)
class Settings:
    client_secret: str = field(repr=False)
    issuer: str = "http://localhost:9000"
    client_id: str = "bff"
    public_url: str = "http://localhost:8000"
    routes: RouteTable = field(default_factory=lambda: parse_routes('{"notes": "http://localhost:9001"}'))
    scopes: str = "openid notes:read notes:write"
    cookie_name: str = "__Host-session"
    cookie_secure: bool = True
    idle_ttl: int = 1800
    absolute_ttl: int = 43200
    refresh_skew: int = 30
    redis_url: str = "redis://localhost:6379/0"
    redis_cluster: bool = False  # REDIS_CLUSTER=1: REDIS_URL is a seed node of a Redis Cluster (several URLs imply it)
    redis_wait: WaitPolicy = (
        WaitPolicy()
    )  # REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT: durable writes (servicekit.durable)
    upstream_timeout: float = 30.0
    auth_timeout: float = 10.0
    lock_lease: float = 5.0
    auth_internal_url: str | None = None
    dpop_key_file: str | None = None  # DESIGN §9: a PEM EC P-256 private key; every token obtained is DPoP-bound
    # DESIGN §8: the proxies whose X-Original-*/X-Forwarded-* headers /bff/auth believes. None by default (forward
    # auth is opt-in): a same-host reverse proxy that forwards every path would make a browser's /bff/auth call come
    # from loopback, and its answer's Authorization header would hand the access token to the page's scripts.
    trusted_proxies: tuple[IPNetwork | str, ...] = ()  # and servicekit.proxies.UNIX: the Unix socket's peers
    max_websockets: int = 1000  # BFF_MAX_WEBSOCKETS: open WebSockets per process; more get 503
    max_sockets_per_session: int = 16  # BFF_MAX_SOCKETS_PER_SESSION: a session's sockets and streams; more get 429
    max_sockets_per_user: int = 64  # BFF_MAX_SOCKETS_PER_USER: a user's, all sessions together; more get 429
    post_logout_url: str = "http://localhost:8000/"  # where the provider sends the browser after logout (DESIGN §6)
    allow_dev_secret: bool = False  # BFF_ALLOW_DEV_SECRET: `bff serve` may start with a weak client secret
    # DESIGN §11 BFF_USER_CLAIMS: the claims kept at login and shown in /bff/user (the rules' claims are kept too)
    user_claims: tuple[str, ...] = ("preferred_username", "name", "email")
    # DESIGN §11: what the BFF serves outside /bff/* and /api/*: "none", "demo", an http(s):// URL (a dev server or a
    # CDN origin, proxied without credentials) or the absolute path of a directory (a built SPA)
    frontend: str = "none"
    login_required: bool = False  # BFF_LOGIN_REQUIRED: a page navigation without a session goes to /bff/login
    max_sessions_per_user: int = 100  # BFF_MAX_SESSIONS_PER_USER: a login beyond it ends the user's oldest; 0: none
    compact_store: bool = False  # BFF_COMPACT_STORE: sessions and indexes in forms earlier releases cannot read
    otel_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT: spans exported with OpenTelemetry (DESIGN §12)
    otel_service_name: str = "jwt-bff"
    otel_sampling: Sampling | None = None  # OTEL_TRACES_SAMPLER(_ARG): which requests' spans are exported
    trust_traceparent: bool = False  # BFF_TRUST_TRACEPARENT: a caller's traceparent flag decides, and goes on

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings from ``env`` (default ``os.environ``), over the TOML file ``BFF_CONFIG`` names, if any."""
        v = SETTINGS.read(os.environ if env is None else env)
        secure = v["cookie_secure"]
        cookie_name = v["cookie_name"]
        if not secure and cookie_name.startswith(HOST_PREFIX):
            # Browsers refuse a __Host- cookie without Secure, so plain-http development drops the prefix.
            cookie_name = cookie_name[len(HOST_PREFIX) :]
        return cls(
            client_secret=v["client_secret"],
            issuer=v["issuer"],
            client_id=v["client_id"],
            public_url=v["public_url"],
            routes=v["routes"],
            scopes=v["scopes"],
            cookie_name=cookie_name,
            cookie_secure=secure,
            idle_ttl=min(v["idle_ttl"], v["absolute_ttl"]),
            absolute_ttl=v["absolute_ttl"],
            refresh_skew=v["refresh_skew"],
            redis_url=v["redis_url"],
            redis_cluster=v["redis_cluster"],
            redis_wait=WaitPolicy(v["redis_wait_replicas"], v["redis_wait_timeout"]),
            upstream_timeout=v["upstream_timeout"],
            auth_timeout=v["auth_timeout"],
            lock_lease=v["lock_lease"],
            max_websockets=v["max_websockets"],
            max_sockets_per_session=v["max_sockets_per_session"],
            max_sockets_per_user=v["max_sockets_per_user"],
            auth_internal_url=v["auth_internal_url"],
            dpop_key_file=v["dpop_key_file"],
            trusted_proxies=v["trusted_proxies"],
            post_logout_url=v["post_logout_url"],
            allow_dev_secret=v["allow_dev_secret"],
            user_claims=v["user_claims"],
            frontend=v["frontend"],
            login_required=v["login_required"],
            compact_store=v["compact_store"],
            max_sessions_per_user=v["max_sessions_per_user"],
            otel_endpoint=v["otel_exporter_otlp_endpoint"],
            otel_service_name=v["otel_service_name"] or "jwt-bff",
            otel_sampling=sampling(v, trust_caller=v["trust_traceparent"]),
            trust_traceparent=v["trust_traceparent"],
        )

    def check_client_secret(self) -> None:
        """Refuse a weak BFF_CLIENT_SECRET (servicekit.client_secret) before serving, unless BFF_ALLOW_DEV_SECRET."""
        require_strong(
            "BFF_CLIENT_SECRET", self.client_secret, allow_dev=self.allow_dev_secret, flag="BFF_ALLOW_DEV_SECRET"
        )

    @property
    def kept_claims(self) -> tuple[str, ...]:
        """The claims a login keeps: BFF_USER_CLAIMS and every claim a route's require names."""
        return tuple(dict.fromkeys((*self.user_claims, *sorted(self.routes.required_claims()))))

    @property
    def back_channel_url(self) -> str:
        """Where the BFF itself reaches the auth server (an internal address in compose or Kubernetes)."""
        return self.auth_internal_url or self.issuer

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/bff/callback"

    @property
    def public_origin(self) -> str:
        """The browser's spelling of our origin (RFC 6454 §6.2), which ``Origin`` headers are compared with: scheme
        and host in lower case, no user info, no default port (``https://app.example:443`` is sent as
        ``https://app.example``, and a literal comparison would refuse every POST and WebSocket of the site)."""
        parts = urlsplit(self.public_url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
        port = parts.port
        default = {"http": 80, "https": 443}.get(scheme)
        return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")

    @property
    def frontend_kind(self) -> str:
        """``none``, ``demo``, ``url`` or ``directory``."""
        if self.frontend in ("none", "demo"):
            return self.frontend
        return "url" if self.frontend.startswith(("http://", "https://")) else "directory"

    @property
    def login_cookie_name(self) -> str:
        return (HOST_PREFIX if self.cookie_secure else "") + "bff-login"
