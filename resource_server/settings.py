"""Resource server settings, read once from the environment (DESIGN §4)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .verifier import DEFAULT_ALGORITHMS, SUPPORTED_ALGORITHMS


class SettingsError(ValueError):
    """A setting is malformed; the message names the variable."""


def _url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name} must be an http(s) URL, got {raw!r}")
    return raw  # kept verbatim: `iss` is compared exactly (RFC 9068 §4)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be 1 or 0 (true/false), got {raw!r}")


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a{'n integer' if integer else ' number'}, got {raw!r}") from None
    if value < 0 or value != value:
        raise SettingsError(f"{name} must not be negative, got {raw!r}")
    return value


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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        issuer = _url("RS_ISSUER", env.get("RS_ISSUER") or cls.issuer)
        audience = (env.get("RS_AUDIENCE") or cls.audience).strip()
        if not audience:
            raise SettingsError("RS_AUDIENCE must not be empty")
        jwks_url = env.get("RS_JWKS_URL") or None
        if jwks_url is not None:
            jwks_url = _url("RS_JWKS_URL", jwks_url)
        algorithms = tuple(a.strip() for a in (env.get("RS_ALGORITHMS") or ",".join(DEFAULT_ALGORITHMS)).split(","))
        bad = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
        if bad or not algorithms:
            raise SettingsError(
                f"RS_ALGORITHMS: unsupported {bad} (never none or HS*); choose from {sorted(SUPPORTED_ALGORITHMS)}"
            )
        max_notes = int(_number(env, "RS_MAX_NOTES", cls.max_notes, integer=True))
        if max_notes < 1:
            raise SettingsError("RS_MAX_NOTES must be at least 1")
        return cls(
            issuer=issuer,
            audience=audience,
            jwks_url=jwks_url,
            algorithms=algorithms,
            leeway=int(_number(env, "RS_LEEWAY", cls.leeway, integer=True)),
            jwks_cooldown=_number(env, "RS_JWKS_COOLDOWN", cls.jwks_cooldown),
            max_notes=max_notes,
            verify_cache_size=int(_number(env, "RS_VERIFY_CACHE_SIZE", cls.verify_cache_size, integer=True)),
            redis_url=env.get("REDIS_URL") or cls.redis_url,
            redis_cluster=_flag(env, "REDIS_CLUSTER"),
        )
