"""Auth server settings, read once from the environment (DESIGN §4), declared in ``SETTINGS`` (servicekit.settings):
the single source for reading them, ``auth-server config`` and docs/reference/settings.md."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from servicekit.client_secret import require_strong
from servicekit.durable import WAIT_SETTINGS, WaitPolicy
from servicekit.http import HTTP_SETTINGS
from servicekit.proxies import IPNetwork, networks
from servicekit.redis import REDIS_SETTINGS
from servicekit.settings import Declarations, Setting, SettingsError, combine, flag, integer, url
from servicekit.tracing import OTEL_SETTINGS, Sampling, sampling

SIGNING_ALGS = ("RS256", "ES256", "EdDSA")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
# The back channel: the paths clients call (the BFF's token calls, a resource server's discovery and revocation feed),
# whose traceparent decides sampling (the BFF's calls join its trace as it decided). On every other path — the pages a
# browser loads (/oauth/authorize, /oauth/logout, /register, /account), a 404 — a caller's traceparent decides nothing
# unless AUTH_TRUST_TRACEPARENT (W3C Trace Context §7.2): fresh random bits do.
BACK_CHANNEL = frozenset(
    {
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
        "/oauth/token",
        "/oauth/revoke",
        "/oauth/introspect",
        "/oauth/revocations",
        "/oauth/par",
        "/userinfo",
        "/users",
    }
)


@dataclass(frozen=True)
class Client:
    """A registered OAuth client (one entry of ``AUTH_CLIENTS``)."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    scope: tuple[str, ...] = ()
    audience: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()  # OIDC RP-Initiated Logout §3.1: exact matches only
    backchannel_logout_uri: str | None = None  # OIDC Back-Channel Logout §2.2

    @property
    def confidential(self) -> bool:
        return self.client_secret is not None


# The fields of an AUTH_CLIENTS entry, which parse_clients accepts (any other is refused), with what each means: the
# settings reference (docs/reference/settings.md) shows this table.
CLIENT_FIELDS = {
    "client_id": "Required: the client's id, unique among the clients.",
    "client_secret": "Makes the client confidential: it authenticates at the token endpoint with HTTP Basic or "
    "in the form. Without it the client is public (PKCE only, token_endpoint_auth_method none). Serving refuses "
    "a weak one (shorter than 16 characters, or a well-known placeholder such as the example's) unless "
    "AUTH_ALLOW_DEV_SECRET: make each with python -c 'import secrets; print(secrets.token_urlsafe(32))'.",
    "redirect_uris": "Where codes are sent: absolute URIs without fragment, matched exactly. Required for "
    "authorization_code.",
    "grant_types": "Any of authorization_code, refresh_token and client_credentials (which needs a "
    "client_secret). Default: authorization_code and refresh_token.",
    "scope": "The scopes the client may ask for; a request that names none gets all of them. Default: none.",
    "audience": "The resources (RFC 8707) the client's access tokens may be for, and their aud. Default: none, "
    "and the aud is the client_id.",
    "post_logout_redirect_uris": "Where a logout may send the browser back to (OIDC RP-Initiated Logout): "
    "absolute http(s) URLs without fragment, matched exactly.",
    "backchannel_logout_uri": "Where logout tokens are POSTed when a login of this client ends (OIDC Back-Channel "
    "Logout): an absolute http(s) URL without fragment.",
}


def _str_list(name: str, where: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SettingsError(f"{name}: {where} must be a list of non-empty strings")
    return tuple(value)


def parse_clients(raw: str, name: str = "AUTH_CLIENTS") -> tuple[Client, ...]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be JSON: {exc}") from None
    if not isinstance(data, list):
        raise SettingsError(f"{name} must be a JSON list of clients")
    clients: list[Client] = []
    for i, item in enumerate(data):
        where = f"client #{i}"
        if not isinstance(item, dict):
            raise SettingsError(f"{name}: {where} must be an object")
        unknown = set(item) - set(CLIENT_FIELDS)
        if unknown:
            raise SettingsError(f"{name}: {where} has unknown fields {sorted(unknown)}")
        client_id = item.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            raise SettingsError(f"{name}: {where} needs a non-empty client_id")
        where = f"client {client_id!r}"
        secret = item.get("client_secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise SettingsError(f"{name}: {where} client_secret must be a non-empty string")
        grants = _str_list(
            name, f"{where} grant_types", item.get("grant_types", ["authorization_code", "refresh_token"])
        )
        bad = [g for g in grants if g not in GRANT_TYPES]
        if bad:
            raise SettingsError(f"{name}: {where} has unsupported grant types {bad} (supported: {list(GRANT_TYPES)})")
        if "client_credentials" in grants and secret is None:
            raise SettingsError(f"{name}: {where} needs a client_secret for client_credentials")
        redirect_uris = _str_list(name, f"{where} redirect_uris", item.get("redirect_uris", []))
        for uri in redirect_uris:
            parts = urlsplit(uri)
            if not parts.scheme or not parts.netloc or parts.fragment:
                raise SettingsError(f"{name}: {where} redirect URI {uri!r} must be absolute, without fragment")
        logout_uris = _str_list(name, f"{where} post_logout_redirect_uris", item.get("post_logout_redirect_uris", []))
        for uri in logout_uris:
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
                raise SettingsError(f"{name}: {where} post-logout redirect URI {uri!r} must be absolute, no fragment")
        backchannel = item.get("backchannel_logout_uri")
        if backchannel is not None:
            bc = urlsplit(backchannel) if isinstance(backchannel, str) else None
            # Back-Channel Logout §2.2: an absolute http(s) URL, which may have a query but no fragment
            if bc is None or bc.scheme not in ("http", "https") or not bc.netloc or bc.fragment:
                raise SettingsError(f"{name}: {where} backchannel_logout_uri must be an absolute http(s) URL")
        if "authorization_code" in grants and not redirect_uris:
            raise SettingsError(f"{name}: {where} needs redirect_uris for authorization_code")
        clients.append(
            Client(
                client_id=client_id,
                client_secret=secret,
                redirect_uris=redirect_uris,
                grant_types=grants,
                scope=_str_list(name, f"{where} scope", item.get("scope", [])),
                audience=_str_list(name, f"{where} audience", item.get("audience", [])),
                post_logout_redirect_uris=logout_uris,
                backchannel_logout_uri=backchannel,
            )
        )
    ids = [c.client_id for c in clients]
    if len(set(ids)) != len(ids):
        raise SettingsError(f"{name}: client_id values must be unique")
    return tuple(clients)


def _path(label: str, raw: str) -> Path:
    return Path(raw)


def _signing_alg(label: str, raw: str) -> str:
    if raw not in SIGNING_ALGS:
        raise SettingsError(f"{label} must be one of {', '.join(SIGNING_ALGS)}, got {raw!r}")
    return raw


def _form_secret(label: str, raw: str) -> bytes:
    if len(raw) < 16:
        raise SettingsError(f"{label} must be at least 16 characters")
    return raw.encode()


def _factor_keys(label: str, raw: str) -> tuple[bytes, ...]:
    keys = tuple(part.encode() for part in raw.replace(",", " ").split())  # a file may hold one key a line
    if any(len(key) < 32 for key in keys):
        raise SettingsError(f"{label} must be keys of at least 32 characters each, separated by commas or spaces")
    return keys


def _code_ttl(label: str, raw: str) -> int:
    ttl: int = integer(minimum=1)(label, raw)
    if ttl > 600:
        raise SettingsError(f"{label} must be at most 600 seconds (RFC 6749 §4.1.2)")
    return ttl


def _clients(label: str, raw: str) -> tuple[Client, ...]:
    return parse_clients(raw, label)


def _clients_shown(raw: str) -> str:
    """AUTH_CLIENTS as `config` prints it: each client_secret masked."""
    try:
        data = json.loads(raw)
    except ValueError:
        return "<redacted>"
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and "client_secret" in item:
                item["client_secret"] = "<redacted>"
    return json.dumps(data)


def _trusted_proxies(label: str, raw: str) -> tuple[IPNetwork, ...]:
    return tuple(net for net in networks(label, raw) if not isinstance(net, str))  # addresses only: no unix here


def _ttl(name: str, default: int, help: str, minimum: int = 1) -> Setting:
    return Setting(name, str(default), help, integer(minimum=minimum), kind="integer")


OWN = (
    Setting(
        "AUTH_ISSUER",
        "http://localhost:9000",
        "The issuer URL: the iss of every token, and where browsers reach the server.",
        url(plain=True),
    ),
    Setting("AUTH_KEYS_DIR", "keys", "Directory of the signing keys (PEM files; created with a key if empty).", _path),
    Setting("AUTH_SIGNING_ALG", "RS256", "Algorithm of new signing keys: RS256, ES256 or EdDSA.", _signing_alg),
    _ttl("AUTH_ACCESS_TTL", 300, "Seconds an access token lives."),
    _ttl("AUTH_REFRESH_TTL", 1_209_600, "Seconds a refresh token lives unused."),
    _ttl("AUTH_FAMILY_TTL", 2_592_000, "Seconds a refresh-token family (a login) lives at most."),
    _ttl("AUTH_ID_TOKEN_TTL", 300, "Seconds an ID token lives."),
    Setting("AUTH_CODE_TTL", "60", "Seconds an authorization code lives (at most 600).", _code_ttl, kind="integer"),
    _ttl("AUTH_REFRESH_RETRY_GRACE", 10, "Seconds a just-rotated refresh token may be retried by the same client.", 0),
    Setting(
        "AUTH_DPOP_NONCE",
        "true",
        "DPoP proofs at the token endpoint must carry the server's nonce (RFC 9449 §8).",
        flag,
        kind="boolean",
    ),
    Setting(
        "AUTH_CLIENTS",
        "[]",
        "The registered clients: a JSON list of objects (a list field may also be one space-separated string); "
        "in the file, one [[clients]] table each.",
        _clients,
        secret=True,
        kind="tables",
        show=_clients_shown,
        fields=CLIENT_FIELDS,
        example="docs_src/reference/auth_clients.json",
    ),
    _ttl("AUTH_LOGIN_MAX_FAILURES", 10, "Failed logins per account and address in AUTH_LOGIN_WINDOW before 429."),
    _ttl("AUTH_LOGIN_WINDOW", 900, "Seconds over which failed logins are counted."),
    _ttl("AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS", 100, "Failed logins from one address, across accounts, before 429."),
    _ttl("AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT", 100, "Failed logins of one account, across addresses, before 429."),
    _ttl(
        "AUTH_DEVICE_MAX_FAILURES",
        10,
        "Failed logins in AUTH_LOGIN_WINDOW from a browser holding the account's device cookie (OWASP device "
        "cookies): such a browser is exempt from the per-account limit, with this budget of its own.",
    ),
    _ttl("AUTH_DEVICE_COOKIE_TTL", 15_552_000, "Seconds a device cookie (set at each sign-in) is honoured."),
    _ttl("AUTH_SIGNUP_MAX_PER_ADDRESS", 20, "New accounts per address in AUTH_SIGNUP_WINDOW."),
    _ttl("AUTH_SIGNUP_WINDOW", 3600, "Seconds over which sign-ups are counted."),
    Setting(
        "AUTH_ALLOW_DEV_SECRET",
        "false",
        "Serve even with weak client secrets in AUTH_CLIENTS (development only; a WARNING says so).",
        flag,
        kind="boolean",
    ),
    Setting(
        "AUTH_TRUST_TRACEPARENT",
        "false",
        "Let any caller's traceparent decide which requests have their spans exported, as a client's does on the "
        "back channel (token, revocation, introspection, PAR, userinfo, discovery). Off: on the pages a browser loads "
        "(authorize, logout, register, account) and any other path, fresh random bits decide (or any page could have "
        "every request it sends recorded); the caller's trace still holds the span.",
        flag,
        kind="boolean",
    ),
    Setting(
        "AUTH_TRUSTED_PROXIES",
        "",
        "CIDRs of the proxies whose X-Forwarded-For names the client (throttling by address).",
        _trusted_proxies,
        kind="list",
        default_doc="none",
    ),
    _ttl("AUTH_JWKS_MAX_AGE", 300, "Cache-Control max-age of the JWKS (seconds).", 0),
    Setting(
        "AUTH_KEY_ACTIVATION_DELAY",
        None,
        "Seconds a rotated key is published before it signs (caches of the JWKS catch up).",
        integer(),
        kind="integer",
        default_doc="AUTH_JWKS_MAX_AGE",
        derive=lambda v: v["jwks_max_age"],
    ),
    _ttl("AUTH_MAX_BODY", 65_536, "Largest request body in bytes (at least 1024).", 1024),
    Setting(
        "AUTH_FORM_SECRET",
        None,
        "Keys the login form's token (HMAC), at least 16 characters; unset: derived from the signing keys.",
        _form_secret,
        secret=True,
    ),
    Setting(
        "AUTH_FACTOR_KEYS",
        "",
        "Keys that seal users' TOTP secrets in Redis (AES-GCM), at least 32 characters each (openssl rand -base64 "
        "32), separated by commas or spaces: the first seals, every one opens (rotation: docs/guides/step-up.md; "
        "auth-server users totp-reseal seals what is left). Empty: kept as the authenticator app keeps them.",
        _factor_keys,
        secret=True,
        kind="list",
    ),
    _ttl("AUTH_SSO_IDLE_TTL", 28_800, "Seconds a browser SSO session lives without use."),
    _ttl("AUTH_SSO_TTL", 86_400, "Seconds a browser SSO session lives at most."),
    Setting(
        "AUTH_REVOCATIONS_CLIENTS",
        "",
        "Client ids (confidential, authenticated with HTTP Basic as at the token endpoint) that alone may read "
        "the revocation feed; empty: anyone may.",
        lambda label, raw: tuple(raw.replace(",", " ").split()),
        kind="list",
        default_doc="anyone",
    ),
)
SETTINGS = Declarations(
    "auth-server",
    "AUTH_",
    combine(OWN, REDIS_SETTINGS, WAIT_SETTINGS, HTTP_SETTINGS, OTEL_SETTINGS),
    config_var="AUTH_CONFIG",
)


@dataclass(frozen=True)
class Settings:
    issuer: str = "http://localhost:9000"
    redis_url: str = "redis://localhost:6379/0"
    redis_cluster: bool = False  # REDIS_CLUSTER=1: REDIS_URL is a seed node of a Redis Cluster (several URLs imply it)
    redis_wait: WaitPolicy = (
        WaitPolicy()
    )  # REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT: durable writes (servicekit.durable)
    keys_dir: Path = Path("keys")
    signing_alg: str = "RS256"
    access_ttl: int = 300
    refresh_ttl: int = 1_209_600
    family_ttl: int = 2_592_000
    id_token_ttl: int = 300
    code_ttl: int = 60
    dpop_nonce: bool = True  # RFC 9449 §8: DPoP proofs at the token endpoint must carry our nonce
    refresh_retry_grace: int = 10  # DESIGN §9: seconds a just-rotated refresh token may be retried for the same pair
    clients: tuple[Client, ...] = ()
    login_max_failures: int = 10
    login_window: int = 900
    login_max_failures_per_address: int = 100  # across accounts: password spraying from one address
    login_max_failures_per_account: int = 100  # across addresses: the backstop (NIST SP 800-63B §5.2.2)
    device_max_failures: int = 10  # OWASP device cookies (devices.py): a known browser's own failure budget
    device_cookie_ttl: int = 15_552_000
    signup_max_per_address: int = 20
    signup_window: int = 3600
    allow_dev_secret: bool = False  # AUTH_ALLOW_DEV_SECRET: `auth-server serve` may start with weak client secrets
    trusted_proxies: tuple[IPNetwork, ...] = ()  # peers whose X-Forwarded-For names the client (servicekit.proxies)
    jwks_max_age: int = 300
    key_activation_delay: int = 300
    max_body: int = 65_536
    sso_idle_ttl: int = 28_800  # a browser SSO session's idle life (s), renewed by use
    sso_ttl: int = 86_400  # its absolute life (s)
    # Keys the stateless login-form token (HMAC). Unset: derived from the signing keys, which replicas share.
    form_secret: bytes | None = field(default=None, repr=False)
    factor_keys: tuple[bytes, ...] = field(default=(), repr=False)  # AUTH_FACTOR_KEYS: seal TOTP secrets at rest
    # AUTH_REVOCATIONS_CLIENTS: when set, only these (confidential) clients, authenticated as at the token endpoint,
    # may read the revocation feed (issue #18 item 8c: it lists ended sids). Empty: anyone may (the default).
    revocations_clients: tuple[str, ...] = ()
    otel_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT: spans exported with OpenTelemetry (DESIGN §12)
    otel_service_name: str = "auth-server"
    otel_sampling: Sampling | None = None  # OTEL_TRACES_SAMPLER(_ARG): which requests' spans are exported

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings from ``env`` (default ``os.environ``), over the TOML file ``AUTH_CONFIG`` names, if any."""
        v = SETTINGS.read(os.environ if env is None else env)
        for client_id in v["revocations_clients"]:
            found = next((c for c in v["clients"] if c.client_id == client_id), None)
            if found is None or not found.confidential:
                raise SettingsError(
                    f"AUTH_REVOCATIONS_CLIENTS: {client_id!r} is not a confidential client of AUTH_CLIENTS "
                    "(a reader of the feed authenticates with its client_secret)"
                )
        return cls(
            issuer=v["issuer"],
            redis_url=v["redis_url"],
            redis_cluster=v["redis_cluster"],
            redis_wait=WaitPolicy(v["redis_wait_replicas"], v["redis_wait_timeout"]),
            keys_dir=v["keys_dir"],
            signing_alg=v["signing_alg"],
            access_ttl=v["access_ttl"],
            refresh_ttl=v["refresh_ttl"],
            family_ttl=v["family_ttl"],
            id_token_ttl=v["id_token_ttl"],
            code_ttl=v["code_ttl"],
            refresh_retry_grace=v["refresh_retry_grace"],
            dpop_nonce=v["dpop_nonce"],
            clients=v["clients"],
            login_max_failures=v["login_max_failures"],
            login_window=v["login_window"],
            login_max_failures_per_address=v["login_max_failures_per_address"],
            login_max_failures_per_account=v["login_max_failures_per_account"],
            device_max_failures=v["device_max_failures"],
            device_cookie_ttl=v["device_cookie_ttl"],
            signup_max_per_address=v["signup_max_per_address"],
            signup_window=v["signup_window"],
            allow_dev_secret=v["allow_dev_secret"],
            trusted_proxies=v["trusted_proxies"],
            jwks_max_age=v["jwks_max_age"],
            key_activation_delay=v["key_activation_delay"],
            max_body=v["max_body"],
            form_secret=v["form_secret"],
            factor_keys=v["factor_keys"],
            sso_idle_ttl=v["sso_idle_ttl"],
            sso_ttl=v["sso_ttl"],
            revocations_clients=v["revocations_clients"],
            otel_endpoint=v["otel_exporter_otlp_endpoint"],
            otel_service_name=v["otel_service_name"] or "auth-server",
            otel_sampling=sampling(v, trust_caller=v["trust_traceparent"], trusted_paths=BACK_CHANNEL),
        )

    def check_client_secrets(self) -> None:
        """Refuse to serve a client whose secret is weak (servicekit.client_secret), unless AUTH_ALLOW_DEV_SECRET."""
        for client in self.clients:
            if client.client_secret is not None:
                require_strong(
                    f"AUTH_CLIENTS: client {client.client_id!r} client_secret",
                    client.client_secret,
                    allow_dev=self.allow_dev_secret,
                    flag="AUTH_ALLOW_DEV_SECRET",
                )

    def client(self, client_id: str) -> Client | None:
        for client in self.clients:
            if client.client_id == client_id:
                return client
        return None

    @property
    def key_retention(self) -> int:
        """How long a retired key stays loaded and published: until the last token it signed has expired."""
        return max(self.access_ttl, self.refresh_ttl, self.id_token_ttl)
