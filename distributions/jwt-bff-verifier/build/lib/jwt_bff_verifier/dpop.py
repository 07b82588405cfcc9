"""DPoP (RFC 9449): checking proofs of possession, and the helpers both ends of a proof need.

A DPoP-bound access token carries ``cnf.jkt``, the RFC 7638 thumbprint of the client's public key; each request that
uses it carries ``Authorization: DPoP <token>`` and a fresh proof — a JWT signed with that key, naming the request
(``htm``, ``htu``), its time (``iat``), a unique ``jti`` and the token's hash (``ath``). A stolen token alone is
useless: without the private key no proof can be made, and a stolen proof works for one request, once.

``ProofVerifier.verify`` runs every check of RFC 9449 §4.3, in order:

1. one proof, a compact JWS of at most ``MAX_PROOF_LENGTH`` characters (before any decoding);
2. header: ``typ`` is ``dpop+jwt``; ``alg`` in the asymmetric allow-list (never ``none``, never HMAC); ``jwk`` a
   public key only (no private members) whose type fits ``alg``;
3. the signature, with that ``jwk``;
4. claims: ``jti`` a string, ``htm`` the request's method, ``htu`` the request's URI without query and fragment
   (both normalized, RFC 3986 §6.2.2-6.2.3), ``iat`` within ``window`` (± ``leeway``), ``nonce`` when the server
   demands one, ``ath`` the token's SHA-256 when a token is presented;
5. the ``jti`` not seen before within the ``iat`` window (``ReplayCache``; the caller may keep it elsewhere).

The caller then compares ``DPoPProof.jkt`` with the token's ``cnf.jkt``. Decoded headers are cached by their exact
base64 text: one client's proofs share a header, so the key is parsed and thumbprinted once, not per request.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import re
import struct
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import InvalidDPoPProof, UseDPoPNonce
from .keys import SUPPORTED_ALGORITHMS, JWKSError, VerificationKey, parse_jwk

__all__ = [
    "DEFAULT_DPOP_ALGORITHMS",
    "DPOP_TYP",
    "MAX_PROOF_LENGTH",
    "DPoPProof",
    "NonceIssuer",
    "ProofVerifier",
    "ReplayCache",
    "access_token_hash",
    "jwk_thumbprint",
    "normalize_htu",
]

DPOP_TYP = "dpop+jwt"  # RFC 9449 §4.2
DEFAULT_DPOP_ALGORITHMS = tuple(SUPPORTED_ALGORITHMS)  # asymmetric only: none and HS* cannot even be named
MAX_PROOF_LENGTH = 4096  # an RSA-4096 jwk and every claim fit; anything longer is refused before decoding
MAX_JTI_LENGTH = 256
HEADER_CACHE_SIZE = 1024
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})  # RFC 7518 §6: never in a proof's jwk
# RFC 7638 §3.2: the required members of each key type, in lexicographic order
THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%[0-9a-fA-F]{2}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_FROM_URLSAFE = str.maketrans("-_", "+/")


def _unb64url(segment: str) -> bytes:
    # binascii directly (the base64 module's wrappers cost more than the decoding); excess padding is ignored
    return binascii.a2b_base64(segment.translate(_FROM_URLSAFE) + "==")


def _json_object(segment: str) -> Any:
    return json.loads(_unb64url(segment).decode("utf-8"))  # str: json skips its encoding detection


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK (base64url), as ``cnf.jkt`` holds it (RFC 9449 §6.1)."""
    members = THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise ValueError("not an EC, RSA or OKP public key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


@functools.lru_cache(maxsize=256)  # a client sends one token many times
def access_token_hash(token: str) -> str:
    """``ath``: the base64url SHA-256 of the access token's ASCII text (RFC 9449 §4.2)."""
    return _b64url(hashlib.sha256(token.encode("ascii", "replace")).digest())


def _normalize_percent(match: re.Match[str]) -> str:
    char = chr(int(match.group(0)[1:], 16))
    return char if char in _UNRESERVED else match.group(0).upper()  # RFC 3986 §6.2.2.1-6.2.2.2


@functools.lru_cache(maxsize=1024)  # a server sees few URLs many times: parse each once
def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def normalize_htu(uri: str) -> str | None:
    """``uri`` without query and fragment, normalized as RFC 9449 §4.3 (9) asks (RFC 3986 §6.2.2 and §6.2.3: case
    of scheme and host, percent-encoding, default port, empty path); None if it is not an absolute http(s) URI."""
    if len(uri) > MAX_PROOF_LENGTH:
        return None
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _PERCENT.sub(_normalize_percent, parts.path) or "/"
    return urlunsplit((scheme, netloc, path, "", ""))


@dataclass(frozen=True, slots=True)
class DPoPProof:
    """A proof that passed every check: its key's thumbprint, its ``jti`` and ``iat``, and its ``nonce``."""

    jkt: str
    jti: str
    iat: float
    nonce: str | None


@dataclass(frozen=True, slots=True)
class _Header:
    alg: str
    key: VerificationKey
    jkt: str


class ReplayCache:
    """The ``jti`` of every proof accepted within the ``iat`` window, in this process (RFC 9449 §11.1).

    Bounded: when full, the entries whose window has passed go first, then the oldest. Replicas each keep their own,
    so a proof replayed at another replica within the window is not caught here (``iat`` and ``htu`` still bound it
    to one request, a minute at most); an auth server keeps its replay cache in Redis instead.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._until: dict[str, float] = {}
        self._next_prune = 0.0

    def seen(self, jti: str, until: float, now: float) -> bool:
        """True if ``jti`` was already used; otherwise remember it until ``until``."""
        known = self._until.get(jti)
        if known is not None and known > now:
            return True
        # Entries arrive roughly in expiry order: drop expired ones from the front (at most once a second), then
        # (full) the oldest — amortized O(1) per proof, never a scan of the whole cache.
        entries = self._until
        if now >= self._next_prune or len(entries) >= self.max_entries:
            self._next_prune = now + 1.0
            self._prune(now)
        entries[jti] = until
        return False

    def _prune(self, now: float) -> None:
        entries = self._until
        while entries:
            oldest = next(iter(entries))
            if entries[oldest] > now and len(entries) < self.max_entries:
                break
            del entries[oldest]

    def __len__(self) -> int:
        return len(self._until)


class NonceIssuer:
    """Server-provided nonces (RFC 9449 §8-9) without server state: ``<window>.<HMAC(secret, window)>``, valid in
    the window it was made in and the next one. Replicas given the same secret accept each other's nonces."""

    def __init__(self, secret: bytes, *, lifetime: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        self.secret = secret
        self.lifetime = lifetime
        self._clock = clock

    def _mac(self, window: int) -> str:
        return _b64url(hmac.new(self.secret, struct.pack(">Q", window), hashlib.sha256).digest()[:18])

    def issue(self) -> str:
        window = int(self._clock() // self.lifetime)
        return f"{window}.{self._mac(window)}"

    def valid(self, nonce: object) -> bool:
        if not isinstance(nonce, str) or len(nonce) > 64:
            return False
        window_text, _, mac = nonce.partition(".")
        # ASCII only: str.isdigit() accepts "²", which int() refuses, and compare_digest() refuses non-ASCII text
        if not (nonce.isascii() and window_text.isdigit()):
            return False
        window = int(window_text)
        current = int(self._clock() // self.lifetime)
        return window in (current, current - 1) and hmac.compare_digest(mac, self._mac(window))


class ProofVerifier:
    """Checks DPoP proofs (RFC 9449 §4.3) for one server. ``replay=None`` leaves the ``jti`` check to the caller."""

    def __init__(
        self,
        *,
        algorithms: Collection[str] = DEFAULT_DPOP_ALGORITHMS,
        window: float = 60.0,
        leeway: float = 5.0,
        replay: ReplayCache | None = None,
        nonces: NonceIssuer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        unsupported = set(algorithms) - set(SUPPORTED_ALGORITHMS)
        if unsupported or not algorithms:
            raise ValueError(f"DPoP algorithms must be asymmetric ones of {sorted(SUPPORTED_ALGORITHMS)}")
        self.algorithms = frozenset(algorithms)
        self.window = window
        self.leeway = leeway
        self.replay = replay
        self.nonces = nonces
        self._clock = clock
        self._headers: dict[str, _Header] = {}

    @property
    def algs_text(self) -> str:
        """The ``algs`` of a ``WWW-Authenticate: DPoP`` challenge (RFC 9449 §7.1)."""
        return " ".join(sorted(self.algorithms))

    def _header(self, segment: str) -> _Header:
        cached = self._headers.get(segment)
        if cached is not None:
            return cached
        try:
            header = _json_object(segment)
        except (binascii.Error, ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the stack
            raise InvalidDPoPProof("The DPoP proof is malformed.") from exc
        if not isinstance(header, dict):
            raise InvalidDPoPProof("The DPoP proof is malformed.")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() != DPOP_TYP:
            raise InvalidDPoPProof("The DPoP proof's typ is not dpop+jwt.")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidDPoPProof("The DPoP proof's algorithm is not allowed.")
        if "crit" in header:
            raise InvalidDPoPProof("The DPoP proof has unsupported critical headers.")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise InvalidDPoPProof("The DPoP proof carries no jwk.")
        if PRIVATE_MEMBERS & set(jwk):
            raise InvalidDPoPProof("The DPoP proof's jwk holds a private key.")
        try:
            key = parse_jwk({**jwk, "kid": "dpop", "use": "sig"}, self.algorithms)
            jkt = jwk_thumbprint(jwk)
        except (JWKSError, ValueError) as exc:
            raise InvalidDPoPProof("The DPoP proof's jwk is not a usable public key.") from exc
        if alg not in key.algorithms:  # the key's type decides how it is used, never the header alone
            raise InvalidDPoPProof("The DPoP proof's algorithm does not fit its key.")
        parsed = _Header(alg, key, jkt)
        if len(self._headers) >= HEADER_CACHE_SIZE:
            del self._headers[next(iter(self._headers))]
        self._headers[segment] = parsed
        return parsed

    def verify(
        self, proof: str, *, method: str, url: str, access_token: str | None = None, also: Collection[str] = ()
    ) -> DPoPProof:
        """The checked proof for a ``method`` request of ``url``; raises InvalidDPoPProof or UseDPoPNonce.
        ``access_token``: the token presented with it, whose hash ``ath`` must hold (at a resource server).
        ``also``: other names of the same endpoint the client may have signed (e.g. its advertised public URL,
        when the request came in at an internal address)."""
        if len(proof) > MAX_PROOF_LENGTH or _JWS.fullmatch(proof) is None:
            raise InvalidDPoPProof("The DPoP proof is malformed.")
        header_b64, payload_b64, signature_b64 = proof.split(".")
        header = self._header(header_b64)
        try:
            signature = _unb64url(signature_b64)
        except binascii.Error as exc:
            raise InvalidDPoPProof("The DPoP proof is malformed.") from exc
        signing_input = proof[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
        if not SUPPORTED_ALGORITHMS[header.alg].verify(header.key.key, signing_input, signature):
            raise InvalidDPoPProof("The DPoP proof's signature is invalid.")
        try:
            claims = _json_object(payload_b64)
        except (binascii.Error, ValueError, RecursionError) as exc:
            raise InvalidDPoPProof("The DPoP proof is malformed.") from exc
        if not isinstance(claims, dict):
            raise InvalidDPoPProof("The DPoP proof is malformed.")

        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH or not _utf8(jti):
            # a lone surrogate ("\ud800" in the JSON) cannot be encoded: a replay cache keyed by its bytes would fail
            raise InvalidDPoPProof("The DPoP proof has no valid jti.")
        if claims.get("htm") != method:  # RFC 9110 §9.1: methods are case-sensitive
            raise InvalidDPoPProof("The DPoP proof is for another HTTP method.")
        htu = normalize_htu(claims["htu"]) if isinstance(claims.get("htu"), str) else None
        if htu is None or (htu != normalize_htu(url) and all(htu != normalize_htu(other) for other in also)):
            raise InvalidDPoPProof("The DPoP proof is for another URL.")
        iat = claims.get("iat")
        now = self._clock()
        if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
            raise InvalidDPoPProof("The DPoP proof has no valid iat.")
        if not now - self.window - self.leeway <= iat <= now + self.leeway:
            raise InvalidDPoPProof("The DPoP proof is too old or from the future.")
        nonce = claims.get("nonce")
        if self.nonces is not None and not self.nonces.valid(nonce):
            raise UseDPoPNonce(self.nonces.issue())
        if access_token is not None:
            ath = claims.get("ath")
            # ASCII first: hmac.compare_digest() raises on non-ASCII text
            if (
                not isinstance(ath, str)
                or not ath.isascii()
                or not hmac.compare_digest(ath, access_token_hash(access_token))
            ):
                raise InvalidDPoPProof("The DPoP proof is not for this access token (ath).")
        if self.replay is not None and self.replay.seen(jti, iat + self.window + self.leeway, now):
            raise InvalidDPoPProof("The DPoP proof was already used.")
        return DPoPProof(header.jkt, jti, float(iat), nonce if isinstance(nonce, str) else None)
