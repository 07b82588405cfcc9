"""The JWKS cache: the auth server's public keys by ``kid``, fetched rarely and kept when the auth server is down.

- The JWKS URL is configured or discovered from the issuer's metadata (OpenID Connect Discovery 1.0 §4, then
  RFC 8414 §3), whose ``issuer`` must be ours exactly (RFC 8414 §3.3).
- An unknown ``kid`` triggers a refetch at most once per ``cooldown`` seconds, however many requests carry random
  ``kid``s: a flood of forged tokens must not turn into a flood of JWKS requests to the auth server.
- A failed fetch (auth server down, a bad document) keeps every cached key: verification goes on without it.
- Only asymmetric keys are kept (RFC 8725 §3.1: never HMAC with a public key): RSA of at least 2048 bits, EC on
  P-256/P-384, Ed25519. Each key is bound to the algorithms that fit its type, so a token's ``alg`` can never pick
  how a key is used.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError

__all__ = ["SUPPORTED_ALGORITHMS", "JWKSCache", "JWKSError", "VerificationKey", "discovery_urls", "parse_jwk"]

log = logging.getLogger(__name__)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 512 * 1024


def discovery_urls(issuer: str) -> tuple[str, str]:
    """Where the issuer's metadata lives: OIDC Discovery §4 appends to the issuer, RFC 8414 §3.1 inserts the
    well-known segment between the host and the issuer's path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = urlunsplit((parts.scheme, parts.netloc, f"{path}/.well-known/openid-configuration", "", ""))
    oauth = urlunsplit((parts.scheme, parts.netloc, f"/.well-known/oauth-authorization-server{path}", "", ""))
    return oidc, oauth


class JWKSError(Exception):
    """Fetching or reading a JWKS failed (internal to this module: callers see ``loaded``, ``misconfigured`` and
    missing keys). ``passing``: the auth server was unreachable or answered 5xx (it will pass by itself); otherwise
    the answer itself is wrong for this configuration (a 404, another issuer, no usable key), which it will not."""

    def __init__(self, message: str, *, passing: bool = False) -> None:
        super().__init__(message)
        self.passing = passing


# --- signature algorithms: alg → (key type, curve, verify) ------------------------------------------------------


def _rsa(pad: padding.AsymmetricPadding, hash_alg: hashes.HashAlgorithm) -> Callable[[Any, bytes, bytes], bool]:
    def verify(key: rsa.RSAPublicKey, msg: bytes, sig: bytes) -> bool:
        try:
            key.verify(sig, msg, pad, hash_alg)
        except InvalidSignature:
            return False
        return True

    return verify


def _pss(hash_alg: hashes.HashAlgorithm) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)  # RFC 7518 §3.5


def _ecdsa(hash_alg: hashes.HashAlgorithm, size: int) -> Callable[[Any, bytes, bytes], bool]:
    scheme = ec.ECDSA(hash_alg)

    def verify(key: ec.EllipticCurvePublicKey, msg: bytes, sig: bytes) -> bool:
        # RFC 7518 §3.4: the JWS signature is R || S, each exactly `size` bytes (not DER).
        if len(sig) != 2 * size:
            return False
        der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
        try:
            key.verify(der, msg, scheme)
        except InvalidSignature:
            return False
        return True

    return verify


def _ed25519(key: ed25519.Ed25519PublicKey, msg: bytes, sig: bytes) -> bool:
    try:
        key.verify(sig, msg)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class AlgorithmSpec:
    kty: str
    crv: str | None
    verify: Callable[[Any, bytes, bytes], bool]


# The only algorithms the verifier can ever accept: asymmetric ones. `none` and HS* are absent by design.
SUPPORTED_ALGORITHMS: Mapping[str, AlgorithmSpec] = {
    "RS256": AlgorithmSpec("RSA", None, _rsa(padding.PKCS1v15(), hashes.SHA256())),
    "RS384": AlgorithmSpec("RSA", None, _rsa(padding.PKCS1v15(), hashes.SHA384())),
    "RS512": AlgorithmSpec("RSA", None, _rsa(padding.PKCS1v15(), hashes.SHA512())),
    "PS256": AlgorithmSpec("RSA", None, _rsa(_pss(hashes.SHA256()), hashes.SHA256())),
    "PS384": AlgorithmSpec("RSA", None, _rsa(_pss(hashes.SHA384()), hashes.SHA384())),
    "PS512": AlgorithmSpec("RSA", None, _rsa(_pss(hashes.SHA512()), hashes.SHA512())),
    "ES256": AlgorithmSpec("EC", "P-256", _ecdsa(hashes.SHA256(), 32)),
    "ES384": AlgorithmSpec("EC", "P-384", _ecdsa(hashes.SHA384(), 48)),
    "EdDSA": AlgorithmSpec("OKP", "Ed25519", _ed25519),
}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key from the JWKS and the algorithms it may verify."""

    kid: str
    kty: str
    crv: str | None
    algorithms: frozenset[str]
    key: PublicKey


def parse_jwk(jwk: Mapping[str, Any], allowed: Collection[str]) -> VerificationKey:
    """Turn one JWK into a ``VerificationKey``, or raise ``JWKSError`` saying why it is unusable."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JWKSError("a key without a kid")
    if jwk.get("use", "sig") != "sig":
        raise JWKSError(f"key {kid!r} is not for signatures")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    key: Any
    try:
        if kty == "RSA":
            key = RSAAlgorithm.from_jwk(dict(jwk))
            crv = None
        elif kty == "EC":
            key = ECAlgorithm.from_jwk(dict(jwk))
        elif kty == "OKP" and crv == "Ed25519":
            key = OKPAlgorithm.from_jwk(dict(jwk))
        else:
            raise JWKSError(f"key {kid!r} has an unsupported type {kty!r}/{crv!r}")
    except (PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise JWKSError(f"key {kid!r} cannot be read: {exc}") from exc
    if hasattr(key, "public_key"):  # a JWKS must not hold private parts; use only the public half if it does
        key = key.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise JWKSError(f"key {kid!r} is a {key.key_size}-bit RSA key (at least {MIN_RSA_BITS} required)")
    algorithms = frozenset(
        alg for alg, spec in SUPPORTED_ALGORITHMS.items() if alg in allowed and spec.kty == kty and spec.crv == crv
    )
    if "alg" in jwk:  # RFC 7517 §4.4: a key that names its algorithm is used with that one only
        algorithms &= {jwk["alg"]}
    if not algorithms:
        raise JWKSError(f"key {kid!r} fits none of the allowed algorithms")
    return VerificationKey(kid=kid, kty=kty, crv=crv, algorithms=algorithms, key=key)


def parse_jwks(document: Any, allowed: Collection[str]) -> dict[str, VerificationKey]:
    """The usable keys of a JWKS document; unusable keys are logged and skipped. No usable key is an error."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JWKSError("not a JWKS document (no 'keys' list)")
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping):
            continue
        try:
            key = parse_jwk(jwk, allowed)
        except JWKSError as exc:
            log.warning("JWKS: skipping %s", exc)
            continue
        keys[key.kid] = key
    if not keys:
        raise JWKSError("the JWKS holds no usable key")
    return keys


class JWKSCache:
    """Keys by ``kid``, loaded from a JWKS URL (configured or discovered from the issuer) or given up front.

    ``get(kid)`` is the synchronous hot path; ``get_or_fetch(kid)`` refetches on a miss, rate-limited by
    ``cooldown``. ``run()`` is a background task for an app's lifespan: it retries until the first load
    succeeds, then refreshes every ``refresh_interval`` seconds.
    """

    def __init__(
        self,
        *,
        issuer: str,
        algorithms: Collection[str],
        jwks_url: str | None = None,
        jwks: Mapping[str, Any] | None = None,
        cooldown: float = 30.0,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
        on_fetch: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        settings_hint: str = "the verifier's issuer and jwks_url",
    ) -> None:
        self.issuer = issuer
        self.algorithms = frozenset(algorithms)
        self.jwks_url = jwks_url
        self.cooldown = cooldown
        self.timeout = timeout
        self._client = http_client
        self._owns_client = http_client is None
        self._on_fetch = on_fetch
        self._clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._lock = asyncio.Lock()
        self._last_attempt = -math.inf
        self._static = jwks is not None and jwks_url is None
        self.loaded = False
        self._metadata: Mapping[str, Any] | None = None
        self.settings_hint = settings_hint
        self.misconfigured: str | None = None  # the reason, while the issuer's answers do not fit this configuration
        if jwks is not None:
            self.load(jwks)

    # -- reading ------------------------------------------------------------------------------------------------

    def get(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def load(self, document: Mapping[str, Any]) -> None:
        """Replace the cached keys with those of ``document`` (raises ``JWKSError`` and keeps the old ones if bad)."""
        self._keys = parse_jwks(document, self.algorithms)
        self.loaded = True

    async def get_or_fetch(self, kid: str) -> VerificationKey | None:
        key = self._keys.get(kid)
        if key is None and not self._static:
            await self.refresh()
            key = self._keys.get(kid)
        return key

    # -- fetching -----------------------------------------------------------------------------------------------

    async def refresh(self, *, force: bool = False) -> bool:
        """Refetch the JWKS unless one was tried less than ``cooldown`` seconds ago (``force`` skips that check).

        Returns True when fresh keys were loaded. Never raises for network or document errors: the cached keys stay.
        """
        if self._static:
            return False
        async with self._lock:  # concurrent misses share one fetch: the others find the cooldown running
            if not force and self._clock() - self._last_attempt < self.cooldown:
                return False
            self._last_attempt = self._clock()
            try:
                self.load(await self._fetch())
            except (JWKSError, httpx.HTTPError, ValueError) as exc:
                if isinstance(exc, httpx.HTTPError) or (isinstance(exc, JWKSError) and exc.passing):
                    log.warning("JWKS fetch failed (keeping %d cached keys): %s", len(self._keys), exc)
                    self._count("error")
                    return False
                # DESIGN §12: an answer that will not change by itself is a configuration error: one ERROR line per
                # new reason, and readiness says misconfigured until a fetch succeeds
                reason = f"{exc}; check {self.settings_hint}"
                if reason != self.misconfigured:
                    log.error("JWKS misconfiguration (keeping %d cached keys): %s", len(self._keys), reason)
                self.misconfigured = reason
                self._count("misconfigured")
                return False
            if self.misconfigured is not None:
                log.info("JWKS: the issuer's keys load again")
            self.misconfigured = None
            self._count("ok")
            return True

    async def run(self, *, refresh_interval: float = 300.0, first_delay: float = 0.5, max_delay: float = 15.0) -> None:
        """Load the keys, retrying with backoff until the auth server answers, then refresh them periodically."""
        if self._static:
            return
        delay = first_delay
        while True:
            if await self.refresh(force=True):
                delay = first_delay
                await asyncio.sleep(refresh_interval)
            else:
                await asyncio.sleep(delay if not self.loaded else refresh_interval)
                delay = min(delay * 2, max_delay)

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
        self._client = None

    def _count(self, outcome: str) -> None:
        if self._on_fetch is not None:
            self._on_fetch(outcome)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    async def _get_json(self, url: str) -> Any:
        response = await self._http().get(url, headers={"Accept": "application/json"})
        if response.status_code != 200:
            raise JWKSError(f"GET {url} answered {response.status_code}", passing=response.status_code >= 500)
        if len(response.content) > MAX_JWKS_BYTES:
            raise JWKSError(f"GET {url} answered more than {MAX_JWKS_BYTES} bytes")
        return response.json()

    async def _fetch(self) -> Any:
        if self.jwks_url is None:
            self.jwks_url = await self._discover()
        return await self._get_json(self.jwks_url)

    async def issuer_metadata(self) -> Mapping[str, Any]:
        """The issuer's metadata document (fetched once; raises ``JWKSError`` or an httpx error when it cannot be)."""
        if self._metadata is None:
            self._metadata = await self._find_metadata()
        return self._metadata

    async def revocation_feed(self) -> str | None:
        """The ``revocation_feed_endpoint`` the issuer advertises (our auth server's extension), or None."""
        feed = (await self.issuer_metadata()).get("revocation_feed_endpoint")
        return feed if isinstance(feed, str) and feed.startswith(("https://", "http://")) else None

    async def _discover(self) -> str:
        metadata = await self.issuer_metadata()
        jwks_uri = metadata.get("jwks_uri")
        if isinstance(jwks_uri, str) and jwks_uri.startswith(("https://", "http://")):
            return jwks_uri
        raise JWKSError("discovery failed: the issuer's metadata has no jwks_uri")

    async def _find_metadata(self) -> Mapping[str, Any]:
        errors: list[str] = []
        passing = False
        for url in discovery_urls(self.issuer):
            try:
                metadata = await self._get_json(url)
            except (JWKSError, httpx.HTTPError, ValueError) as exc:
                passing = passing or isinstance(exc, httpx.HTTPError) or (isinstance(exc, JWKSError) and exc.passing)
                errors.append(f"{url}: {exc or type(exc).__name__}")
                continue
            if not isinstance(metadata, Mapping) or metadata.get("issuer") != self.issuer:
                # RFC 8414 §3.3 / OIDC Discovery §4.3: metadata for another issuer must not be used.
                named = metadata.get("issuer") if isinstance(metadata, Mapping) else None
                errors.append(f"{url}: metadata for another issuer ({str(named)[:200]!r}, not {self.issuer!r})")
                continue
            return metadata
        raise JWKSError("discovery failed: " + "; ".join(errors), passing=passing)
