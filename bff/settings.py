"""BFF settings, read once from the environment (DESIGN §4)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bff.routes import RouteTable, parse_routes
from servicekit.client_secret import require_strong
from servicekit.durable import WaitPolicy
from servicekit.proxies import IPNetwork, networks
from servicekit.redis import redis_url_setting
from servicekit.settings import SettingsError, env_flag, env_float, env_int, http_url

HOST_PREFIX = "__Host-"


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
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_websockets: int = 1000  # BFF_MAX_WEBSOCKETS: open WebSockets per process; more get 503
    post_logout_url: str = "http://localhost:8000/"  # where the provider sends the browser after logout (DESIGN §6)
    allow_dev_secret: bool = False  # BFF_ALLOW_DEV_SECRET: `bff serve` may start with a weak client secret

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        secret = env.get("BFF_CLIENT_SECRET", "")
        if not secret:
            raise SettingsError("BFF_CLIENT_SECRET is required")
        secure = env_flag(env, "BFF_COOKIE_SECURE", True)
        cookie_name = env.get("BFF_COOKIE_NAME") or "__Host-session"
        if not secure and cookie_name.startswith(HOST_PREFIX):
            # Browsers refuse a __Host- cookie without Secure, so plain-http development drops the prefix.
            cookie_name = cookie_name[len(HOST_PREFIX) :]
        if not cookie_name.replace("-", "").replace("_", "").isalnum():
            raise SettingsError(f"BFF_COOKIE_NAME must be letters, digits, '-' and '_', got {cookie_name!r}")
        public_url = http_url("BFF_PUBLIC_URL", env.get("BFF_PUBLIC_URL") or "http://localhost:8000")
        idle = env_int(env, "BFF_IDLE_TTL", 1800, minimum=1)
        absolute = env_int(env, "BFF_ABSOLUTE_TTL", 43200, minimum=1)
        return cls(
            client_secret=secret,
            issuer=http_url("BFF_ISSUER", env.get("BFF_ISSUER") or "http://localhost:9000"),
            client_id=env.get("BFF_CLIENT_ID") or "bff",
            public_url=public_url,
            routes=parse_routes(env.get("BFF_ROUTES") or '{"notes": "http://localhost:9001"}'),
            scopes=env.get("BFF_SCOPES") or "openid notes:read notes:write",
            cookie_name=cookie_name,
            cookie_secure=secure,
            idle_ttl=min(idle, absolute),
            absolute_ttl=absolute,
            refresh_skew=env_int(env, "BFF_REFRESH_SKEW", 30),
            redis_url=redis_url_setting(env),
            redis_cluster=env_flag(env, "REDIS_CLUSTER", False),
            redis_wait=WaitPolicy.from_env(env),
            upstream_timeout=env_float(env, "BFF_UPSTREAM_TIMEOUT", 30.0, positive=True),
            auth_timeout=env_float(env, "BFF_AUTH_TIMEOUT", 10.0, positive=True),
            lock_lease=env_float(env, "BFF_LOCK_LEASE", 5.0, positive=True),
            max_websockets=env_int(env, "BFF_MAX_WEBSOCKETS", 1000),
            auth_internal_url=(
                http_url("BFF_AUTH_INTERNAL_URL", env["BFF_AUTH_INTERNAL_URL"])
                if env.get("BFF_AUTH_INTERNAL_URL")
                else None
            ),
            dpop_key_file=env.get("BFF_DPOP_KEY_FILE") or None,
            trusted_proxies=networks("BFF_TRUSTED_PROXIES", env.get("BFF_TRUSTED_PROXIES") or "none"),
            post_logout_url=http_url(
                "BFF_POST_LOGOUT_URL", env.get("BFF_POST_LOGOUT_URL") or f"{public_url}/", strip_slash=False
            ),
            allow_dev_secret=env_flag(env, "BFF_ALLOW_DEV_SECRET"),
        )

    def check_client_secret(self) -> None:
        """Refuse a weak BFF_CLIENT_SECRET (servicekit.client_secret) before serving, unless BFF_ALLOW_DEV_SECRET."""
        require_strong(
            "BFF_CLIENT_SECRET", self.client_secret, allow_dev=self.allow_dev_secret, flag="BFF_ALLOW_DEV_SECRET"
        )

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
    def login_cookie_name(self) -> str:
        return (HOST_PREFIX if self.cookie_secure else "") + "bff-login"
