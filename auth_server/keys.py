"""Signing keys: PEM files in ``AUTH_KEYS_DIR``; the newest key of the configured algorithm signs, and every key
stays loaded and published until the last token it may have signed has expired.

A new key is published at once but signs only ``activation_delay`` seconds after it was made (by default the JWKS
``max-age``), so that verifiers holding a cached JWKS already know it when its first token arrives.

A file is named ``<created unix time>-<kid>.pem``; the ``kid`` is the RFC 7638 thumbprint of the public key, so it
is recomputed on load and never trusted from the name. ``rotate`` adds a key and prunes keys retired long enough.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from jwt_bff_verifier.dpop import jwk_thumbprint

from .errors import KeyFileError

log = logging.getLogger(__name__)

RSA_BITS = 2048
RELOAD_INTERVAL = 1.0  # seconds between checks of the directory for a rotation by another process
_NAME = re.compile(r"^(\d{1,12})-[A-Za-z0-9_-]+\.pem$")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def alg_of(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise KeyFileError(f"unsupported key type {type(key).__name__} (use RSA, EC P-256 or Ed25519)")


def public_jwk(key: PrivateKey) -> dict[str, Any]:
    public = key.public_key()
    jwk: dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        jwk = dict(RSAAlgorithm.to_jwk(public, as_dict=True))
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = dict(ECAlgorithm.to_jwk(public, as_dict=True))
    else:
        jwk = dict(OKPAlgorithm.to_jwk(public, as_dict=True))
    for private_member in ("d", "p", "q", "dp", "dq", "qi"):
        jwk.pop(private_member, None)
    return jwk


def generate(alg: str) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise KeyFileError(f"unsupported signing algorithm {alg!r}")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    created: int
    private: PrivateKey
    path: Path

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        # RFC 7517 §4: kid, alg and use let verifiers pick the key without guessing.
        return {**public_jwk(self.private), "kid": self.kid, "alg": self.alg, "use": "sig"}


def write_key(keys_dir: Path, alg: str, now: int | None = None) -> SigningKey:
    """Generate a key and write it (mode 0600) atomically into ``keys_dir``."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = generate(alg)
    created = int(time.time()) if now is None else now
    kid = jwk_thumbprint(public_jwk(private))
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = keys_dir / f"{created}-{kid}.pem"
    fd, tmp = tempfile.mkstemp(dir=keys_dir, prefix=".tmp-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    log.info("created signing key %s (%s) in %s", kid, alg, keys_dir)
    return SigningKey(kid, alg, created, private, path)


def read_keys(keys_dir: Path) -> list[SigningKey]:
    """Every key file in the directory, oldest first."""
    keys: list[SigningKey] = []
    if not keys_dir.is_dir():
        return keys
    for path in sorted(keys_dir.glob("*.pem")):
        match = _NAME.match(path.name)
        if match is None:
            continue
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc}") from exc
        alg = alg_of(private)
        assert isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
        keys.append(SigningKey(jwk_thumbprint(public_jwk(private)), alg, int(match.group(1)), private, path))
    keys.sort(key=lambda k: (k.created, k.kid))
    return keys


def live_keys(keys: list[SigningKey], retention: int, now: float, delay: int = 0) -> list[SigningKey]:
    """Keys whose tokens may still be alive: a key retires when its successor starts signing (``delay`` after it
    was made), and lives on ``retention`` seconds more."""
    live = []
    for i, key in enumerate(keys):
        retired_at = keys[i + 1].created + delay if i + 1 < len(keys) else None
        if retired_at is None or now < retired_at + retention:
            live.append(key)
    return live


def rotate(keys_dir: Path, alg: str, retention: int, delay: int = 0) -> tuple[SigningKey, list[Path]]:
    """Add a new signing key; delete the files of keys retired more than ``retention`` seconds ago."""
    existing = read_keys(keys_dir)
    now = int(time.time())
    # Names sort by creation time: never let a new key sort before an existing one made in the same second.
    created = max([now, *(k.created + 1 for k in existing)])
    new = write_key(keys_dir, alg, created)
    keys = [*existing, new]
    live = {k.path for k in live_keys(keys, retention, now, delay)}
    removed = [k.path for k in keys if k.path not in live]
    for path in removed:
        path.unlink(missing_ok=True)
    return new, removed


@functools.lru_cache(maxsize=64)
def _derive(key: SigningKey, label: bytes) -> bytes:
    der = key.private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return hmac.new(der, b"jwt-bff auth-server derived secret\x00" + label, hashlib.sha256).digest()


class KeyRing:
    """The loaded keys; notices a rotation done by ``auth-server keys rotate`` (another process)."""

    def __init__(
        self, keys_dir: Path, alg: str, retention: int, *, activation_delay: int = 0, create: bool = True
    ) -> None:
        self.keys_dir = keys_dir
        self.alg = alg
        self.retention = retention
        self.delay = activation_delay
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp: tuple[int, int] | None = None
        self._keys: list[SigningKey] = []
        self._by_kid: dict[str, SigningKey] = {}
        self._load()
        if create and not any(k.alg == alg for k in self._keys):
            # Development convenience (DESIGN §1): a key is made on first start.
            try:
                write_key(keys_dir, alg, max([int(time.time()), *(k.created + 1 for k in self._keys)]))
            except OSError as exc:
                raise KeyFileError(f"no {alg} key in {keys_dir} and none can be made there: {exc}") from exc
            self._load()

    def _dir_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.keys_dir.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def _load(self) -> None:
        stamp = self._dir_stamp()
        keys = live_keys(read_keys(self.keys_dir), self.retention, time.time(), self.delay)
        self._keys = keys
        self._by_kid = {k.kid: k for k in keys}
        self._stamp = stamp

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_INTERVAL:
            return
        with self._lock:
            self._checked = now
            if self._dir_stamp() != self._stamp:
                try:
                    self._load()
                except KeyFileError as exc:
                    log.error("keeping the loaded keys: %s", exc)

    @property
    def signing_key(self) -> SigningKey | None:
        self._maybe_reload()
        candidates = [k for k in self._keys if k.alg == self.alg]
        if not candidates:
            return None
        # The first key signs from its creation; each later one once it has been published for the delay.
        now = time.time()
        signer = candidates[0]
        for key in candidates[1:]:
            if key.created + self.delay <= now:
                signer = key
        return signer

    def get(self, kid: str) -> SigningKey | None:
        self._maybe_reload()
        return self._by_kid.get(kid)

    def jwks(self) -> dict[str, Any]:
        self._maybe_reload()
        return {"keys": [k.jwk() for k in reversed(self._keys)]}

    def derived_secrets(self, label: bytes) -> list[bytes]:
        """Secrets derived from the private keys (oldest live key first): shared by every replica that shares the
        keys directory, with no extra configuration."""
        self._maybe_reload()
        return [_derive(k, label) for k in self._keys]

    def algorithms(self) -> list[str]:
        return sorted({k.alg for k in self._keys} | {self.alg})
