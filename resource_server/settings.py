"""Resource server settings, read once from the environment (DESIGN §4)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from jwt_bff_verifier import DEFAULT_ALGORITHMS, SUPPORTED_ALGORITHMS
from servicekit.redis import redis_url_setting
from servicekit.settings import SettingsError, env_flag, env_float, env_int, http_url


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
    revocations_url: str | None = None  # None: {issuer}/oauth/revocations
    dpop: str = "allowed"  # RFC 9449: off | allowed | required
    dpop_nonce_secret: bytes | None = field(default=None, repr=False)  # set: DPoP proofs must carry our nonce

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        issuer = http_url("RS_ISSUER", env.get("RS_ISSUER") or cls.issuer, strip_slash=False)
        audience = (env.get("RS_AUDIENCE") or cls.audience).strip()
        if not audience:
            raise SettingsError("RS_AUDIENCE must not be empty")
        jwks_url = env.get("RS_JWKS_URL") or None
        if jwks_url is not None:
            jwks_url = http_url("RS_JWKS_URL", jwks_url, strip_slash=False)
        algorithms = tuple(a.strip() for a in (env.get("RS_ALGORITHMS") or ",".join(DEFAULT_ALGORITHMS)).split(","))
        bad = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
        if bad or not algorithms:
            raise SettingsError(
                f"RS_ALGORITHMS: unsupported {bad} (never none or HS*); choose from {sorted(SUPPORTED_ALGORITHMS)}"
            )
        dpop = (env.get("RS_DPOP") or cls.dpop).strip().lower()
        if dpop not in ("off", "allowed", "required"):
            raise SettingsError(f"RS_DPOP must be off, allowed or required, got {dpop!r}")
        nonce_secret = env.get("RS_DPOP_NONCE_SECRET") or ""
        if nonce_secret and len(nonce_secret) < 16:
            raise SettingsError("RS_DPOP_NONCE_SECRET must be at least 16 characters")
        max_notes = env_int(env, "RS_MAX_NOTES", cls.max_notes)
        if max_notes < 1:
            raise SettingsError("RS_MAX_NOTES must be at least 1")
        return cls(
            issuer=issuer,
            audience=audience,
            jwks_url=jwks_url,
            algorithms=algorithms,
            leeway=env_int(env, "RS_LEEWAY", cls.leeway),
            jwks_cooldown=env_float(env, "RS_JWKS_COOLDOWN", cls.jwks_cooldown),
            max_notes=max_notes,
            verify_cache_size=env_int(env, "RS_VERIFY_CACHE_SIZE", cls.verify_cache_size),
            redis_url=redis_url_setting(env),
            redis_cluster=env_flag(env, "REDIS_CLUSTER"),
            revocation_poll=env_float(env, "RS_REVOCATION_POLL", cls.revocation_poll),
            dpop=dpop,
            dpop_nonce_secret=nonce_secret.encode() if nonce_secret else None,
            revocations_url=(
                http_url("RS_REVOCATIONS_URL", env["RS_REVOCATIONS_URL"], strip_slash=False)
                if env.get("RS_REVOCATIONS_URL")
                else None
            ),
        )
