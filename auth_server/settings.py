"""Auth server settings, read once from the environment (DESIGN §4)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from servicekit.client_secret import require_strong
from servicekit.durable import WaitPolicy
from servicekit.proxies import IPNetwork, networks
from servicekit.redis import redis_url_setting
from servicekit.settings import SettingsError, env_flag, env_int, http_url

SIGNING_ALGS = ("RS256", "ES256", "EdDSA")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")


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
        unknown = set(item) - {
            "client_id",
            "client_secret",
            "redirect_uris",
            "grant_types",
            "scope",
            "audience",
            "post_logout_redirect_uris",
            "backchannel_logout_uri",
        }
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        alg = env.get("AUTH_SIGNING_ALG") or "RS256"
        if alg not in SIGNING_ALGS:
            raise SettingsError(f"AUTH_SIGNING_ALG must be one of {', '.join(SIGNING_ALGS)}, got {alg!r}")
        form_secret = env.get("AUTH_FORM_SECRET")
        if form_secret is not None and form_secret != "" and len(form_secret) < 16:
            raise SettingsError("AUTH_FORM_SECRET must be at least 16 characters")
        jwks_max_age = env_int(env, "AUTH_JWKS_MAX_AGE", 300, minimum=0)
        access_ttl = env_int(env, "AUTH_ACCESS_TTL", 300, minimum=1)
        refresh_ttl = env_int(env, "AUTH_REFRESH_TTL", 1_209_600, minimum=1)
        family_ttl = env_int(env, "AUTH_FAMILY_TTL", 2_592_000, minimum=1)
        settings = cls(
            issuer=http_url("AUTH_ISSUER", env.get("AUTH_ISSUER") or "http://localhost:9000", plain=True),
            redis_url=redis_url_setting(env),
            redis_cluster=env_flag(env, "REDIS_CLUSTER"),
            redis_wait=WaitPolicy.from_env(env),
            keys_dir=Path(env.get("AUTH_KEYS_DIR") or "keys"),
            signing_alg=alg,
            access_ttl=access_ttl,
            refresh_ttl=refresh_ttl,
            family_ttl=family_ttl,
            id_token_ttl=env_int(env, "AUTH_ID_TOKEN_TTL", 300, minimum=1),
            code_ttl=env_int(env, "AUTH_CODE_TTL", 60, minimum=1),
            refresh_retry_grace=env_int(env, "AUTH_REFRESH_RETRY_GRACE", 10, minimum=0),
            dpop_nonce=env_flag(env, "AUTH_DPOP_NONCE", True),
            clients=parse_clients(env.get("AUTH_CLIENTS") or "[]"),
            login_max_failures=env_int(env, "AUTH_LOGIN_MAX_FAILURES", 10, minimum=1),
            login_window=env_int(env, "AUTH_LOGIN_WINDOW", 900, minimum=1),
            login_max_failures_per_address=env_int(env, "AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS", 100, minimum=1),
            login_max_failures_per_account=env_int(env, "AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT", 100, minimum=1),
            signup_max_per_address=env_int(env, "AUTH_SIGNUP_MAX_PER_ADDRESS", 20, minimum=1),
            signup_window=env_int(env, "AUTH_SIGNUP_WINDOW", 3600, minimum=1),
            allow_dev_secret=env_flag(env, "AUTH_ALLOW_DEV_SECRET"),
            trusted_proxies=networks("AUTH_TRUSTED_PROXIES", env.get("AUTH_TRUSTED_PROXIES") or ""),
            jwks_max_age=jwks_max_age,
            key_activation_delay=env_int(env, "AUTH_KEY_ACTIVATION_DELAY", jwks_max_age, minimum=0),
            max_body=env_int(env, "AUTH_MAX_BODY", 65_536, minimum=1024),
            form_secret=form_secret.encode() if form_secret else None,
            sso_idle_ttl=env_int(env, "AUTH_SSO_IDLE_TTL", 28_800, minimum=1),
            sso_ttl=env_int(env, "AUTH_SSO_TTL", 86_400, minimum=1),
        )
        if settings.code_ttl > 600:
            raise SettingsError("AUTH_CODE_TTL must be at most 600 seconds (RFC 6749 §4.1.2)")
        return settings

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
