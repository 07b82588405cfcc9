"""``TokenVerifier``: validate an RFC 9068 access token against cached JWKS keys, with no call per request.

The checks, in order (RFC 9068 §4, RFC 8725 §3):

1. size (at most ``MAX_TOKEN_LENGTH`` characters) and JWS compact syntax, before any decoding or crypto;
2. header: ``alg`` in the fixed allow-list (never ``none``, never HMAC: the allow-list only holds asymmetric
   algorithms), ``typ`` is ``at+jwt`` (RFC 9068 §4 step 1), no ``crit``; ``jku``/``x5u``/``jwk``/``x5c`` are
   ignored — keys only ever come from our own JWKS, by ``kid``;
3. the key for ``kid`` (one rate-limited refetch if unknown), whose type must fit ``alg``, and the signature;
4. claims: ``iss`` exact, ``aud`` holds ours, ``exp`` required, ``nbf``/``iat`` not in the future (each with
   ``leeway``), ``sub``/``jti``/``client_id`` non-empty strings, ``scope`` a string when present;
5. with ``revocations=True``: the token's login (``sid``) has not ended (``revocations.py``; also for cached tokens);
6. the binding (RFC 9449 §7): a token with ``cnf`` only with the DPoP scheme and a valid proof by that key, and
   with ``dpop="required"`` no token without one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypedDict, cast
from urllib.parse import urlsplit

import httpx

from .dpop import DEFAULT_DPOP_ALGORITHMS, NonceIssuer, ProofVerifier, ReplayCache
from .errors import (
    ExpiredToken,
    InsufficientUserAuthentication,
    InvalidDPoPProof,
    InvalidToken,
    KeysUnavailable,
    RevokedToken,
)
from .keys import SUPPORTED_ALGORITHMS, JWKSCache, VerificationKey
from .revocations import RevocationList

__all__ = [
    "ACCEPTED_TYPES",
    "DEFAULT_ALGORITHMS",
    "MAX_TOKEN_LENGTH",
    "AccessTokenClaims",
    "TokenVerifier",
    "check_authentication",
    "scopes_of",
]

MAX_TOKEN_LENGTH = 8192
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 §4; media types compare case-insensitively
REQUIRED_STRING_CLAIMS = ("sub", "jti", "client_id")
DPoPMode = Literal["off", "allowed", "required"]

# Three base64url segments (RFC 7515 §7.1): anything else is refused before it is decoded.
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class _Verified:
    claims: dict[str, Any]
    key: VerificationKey
    exp: float


class AccessTokenClaims(TypedDict, total=False):
    """The claims of a verified access token (RFC 9068 §2.2); ``iss sub aud exp iat jti client_id`` are present."""

    iss: str
    sub: str
    aud: str | list[str]
    exp: int | float
    iat: int | float
    nbf: int | float
    jti: str
    client_id: str
    scope: str
    sid: str
    cnf: dict[str, str]
    acr: str  # RFC 9470 §6.1 / RFC 9068 §2.2.1: the login's level, how (amr), and when (auth_time)
    amr: list[str]
    auth_time: int | float


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """The space-separated ``scope`` claim as a set (RFC 9068 §2.2.3)."""
    scope = claims.get("scope")
    return frozenset(scope.split()) if isinstance(scope, str) else frozenset()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads accepts NaN/Infinity; an `exp` of Infinity never expires


_JSON = json.JSONDecoder(parse_constant=_reject_constant)  # one decoder, not one per call


def _segment_json(segment: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = _JSON.decode(raw.decode("utf-8"))  # RFC 7519 §7.2: the JSON is UTF-8
    except (binascii.Error, ValueError, RecursionError) as exc:  # Unicode/JSONDecodeError are ValueErrors;
        # RecursionError: JSON nested deeper than the parser's stack (8 KiB of "[" fits in a token)
        raise InvalidToken("The access token is malformed.", reason="malformed") from exc
    if not isinstance(value, dict):
        raise InvalidToken("The access token is malformed.", reason="malformed")
    return value


def check_authentication(
    claims: Mapping[str, Any],
    acr_values: Collection[str] = (),
    max_age: int | None = None,
    *,
    leeway: float = 0,
    now: float | None = None,
) -> None:
    """RFC 9470 §3: raise ``InsufficientUserAuthentication`` unless the token's ``acr`` is one of ``acr_values`` (when
    any) and its ``auth_time`` is at most ``max_age`` seconds old (when given; a token without ``auth_time`` fails it).
    The challenge carries both requirements, so that one new login meets them."""
    wanted = tuple(acr_values)
    if wanted and claims.get("acr") not in wanted:
        raise InsufficientUserAuthentication(wanted, max_age)
    if max_age is not None:
        auth_time = claims.get("auth_time")
        current = time.time() if now is None else now
        fresh = (
            isinstance(auth_time, int | float)
            and not isinstance(auth_time, bool)
            and current - auth_time <= max_age + leeway
        )
        if not fresh:
            raise InsufficientUserAuthentication(wanted, max_age, "More recent authentication is required")


def _public_base(url: str) -> str:
    """A configured public base URL (``RS_PUBLIC_URL``): absolute http(s), no query or fragment; no trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"public URL {url!r} must be an absolute http(s) URL without query or fragment")
    return url.strip().rstrip("/")


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2) as a float, None if absent; anything else is an invalid token."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"The access token has an invalid {name} claim.", reason=name)
    return float(value)


class TokenVerifier:
    """Verifies access tokens of one issuer for one audience::

        verifier = TokenVerifier("https://auth.example", "notes")   # JWKS discovered from the issuer
        claims = await verifier.verify(token)                       # or raises a VerifierError

    Build it once per app (it holds the key cache, the verified-token cache and an HTTP client) and
    ``await verifier.aclose()`` at shutdown, or use it as an async context manager. ``await verifier.start()`` loads
    the keys eagerly; otherwise the first token loads them. Pass ``keys=`` (a ``JWKSCache`` built with ``jwks=``, as
    ``jwt_bff_verifier.testing`` does) to verify with no network. ``cache_size=0`` disables the
    verified-token cache (then every call checks the signature).

    ``revocations=True`` refuses tokens of ended logins (DESIGN §9): a background task polls
    ``revocations_url`` (default: the ``revocation_feed_endpoint`` of the issuer's metadata; none advertised, none
    polled) every ``revocation_poll`` seconds, backing off while it fails, started by
    ``start()`` or the first token; pass a ``RevocationList`` instead to share or feed one yourself.
    ``revocations_credentials`` (client_id, client_secret): sent as HTTP Basic when the auth server lets only
    some clients read the feed (``AUTH_REVOCATIONS_CLIENTS``).

    ``dpop`` (RFC 9449): ``"allowed"`` (the default) accepts DPoP-bound tokens with a valid proof and plain bearer
    tokens; ``"required"`` accepts bound tokens only; ``"off"`` accepts no DPoP. In every mode a bound token (one
    with ``cnf``) is refused as a bearer token. Proofs are checked by ``self.proofs`` (``dpop.py``), with a ``jti``
    replay cache over the ``dpop_window``; ``dpop_nonces`` makes the server demand its nonces (RFC 9449 §9).
    ``public_urls``: the base URLs clients reach this server at (``RS_PUBLIC_URL``); a proof's ``htu`` must be the
    request's path under one of them. Without them, the request's ``Host`` is trusted only for tokens of this
    audience alone (``_htu_candidates`` says why that is safe).
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        leeway: float = 30,
        jwks_url: str | None = None,
        *,
        keys: JWKSCache | None = None,
        cooldown: float = 30.0,
        http_client: httpx.AsyncClient | None = None,
        on_fetch: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        cache_size: int = 4096,
        revocations: bool | RevocationList = False,
        revocation_poll: float = 2.0,
        revocations_url: str | None = None,
        revocations_credentials: tuple[str, str] | None = None,
        dpop: DPoPMode = "allowed",
        dpop_algorithms: Collection[str] = DEFAULT_DPOP_ALGORITHMS,
        dpop_window: float = 60.0,
        dpop_nonces: NonceIssuer | None = None,
        public_urls: Collection[str] = (),
    ) -> None:
        if dpop not in ("off", "allowed", "required"):
            raise ValueError("dpop must be 'off', 'allowed' or 'required'")
        unsupported = set(algorithms) - set(SUPPORTED_ALGORITHMS)
        if unsupported:  # RFC 8725 §3.1: `none` and HMAC can never be allowed for tokens signed with a private key
            supported = sorted(SUPPORTED_ALGORITHMS)
            raise ValueError(f"unsupported algorithms {sorted(unsupported)}; choose from {supported}")
        if not algorithms:
            raise ValueError("at least one algorithm must be allowed")
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        self.issuer = issuer
        self.audience = audience
        self.algorithms = frozenset(algorithms)
        self.leeway = leeway
        self.keys = (
            keys
            if keys is not None
            else JWKSCache(
                issuer=issuer,
                algorithms=self.algorithms,
                jwks_url=jwks_url,
                cooldown=cooldown,
                http_client=http_client,
                on_fetch=on_fetch,
            )
        )
        self._clock = clock
        # Verified tokens, by their exact text: a token seen again skips the signature check (the dominant cost)
        # but not its expiry, and is dropped once its key leaves the JWKS. Only valid tokens enter; FIFO-bounded.
        self.cache_size = cache_size
        self._verified: dict[str, _Verified] = {}
        if revocations is True:
            # DESIGN §11: the feed named, or the one the issuer's metadata advertises (revocation_feed_endpoint);
            # an issuer advertising none has none, and nothing is polled.
            revocations = RevocationList(
                revocations_url,
                interval=revocation_poll,
                http_client=http_client,
                clock=clock,
                credentials=revocations_credentials,
                discover=self.keys.revocation_feed,
            )
        self.revocations = revocations if isinstance(revocations, RevocationList) else None
        self._poller: asyncio.Task[None] | None = None
        self.dpop: DPoPMode = dpop
        self.public_urls = tuple(_public_base(u) for u in public_urls)
        self.proofs = ProofVerifier(
            algorithms=dpop_algorithms, window=dpop_window, replay=ReplayCache(), nonces=dpop_nonces, clock=clock
        )

    @property
    def ready(self) -> bool:
        """True once keys are loaded (readiness)."""
        return self.keys.loaded

    async def start(self) -> bool:
        """Try to load the keys now (and start polling revocations); returns whether the keys loaded (it never
        raises for an unreachable auth server)."""
        self.start_polling()
        return await self.keys.refresh(force=True)

    def start_polling(self) -> None:
        """Start the background poll of the revocation feed (idempotent; needs a running event loop)."""
        if self.revocations is not None and self._poller is None and self.revocations.remote:
            self._poller = asyncio.get_running_loop().create_task(self.revocations.run())

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self.revocations is not None:
            await self.revocations.aclose()
        await self.keys.aclose()

    async def __aenter__(self) -> TokenVerifier:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        await self.aclose()
        return False

    async def verify(
        self, token: str, *, scheme: str = "Bearer", proof: str | None = None, method: str = "GET", url: str = ""
    ) -> AccessTokenClaims:
        """Return the claims of a valid access token, or raise ``InvalidToken`` / ``ExpiredToken`` /
        ``RevokedToken`` / ``InvalidDPoPProof`` / ``KeysUnavailable`` (all ``VerifierError``). The claims are the
        caller's own copy.

        ``scheme`` is how the token came (``Bearer`` or ``DPoP``); with ``DPoP``, ``proof`` is the request's
        ``DPoP`` header and ``method``/``url`` the request's, which the proof must name (RFC 9449 §7)."""
        claims = await self._claims(token)
        if self.revocations is not None and self.revocations.revoked(claims.get("sid")):
            raise RevokedToken()
        cnf = claims.get("cnf")
        if scheme == "DPoP":
            if self.dpop == "off":
                raise InvalidToken("DPoP is not accepted here.", reason="dpop")
            jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
            if not isinstance(jkt, str):  # RFC 9449 §7.1: the DPoP scheme is for bound tokens only
                raise InvalidToken("The access token is not bound to a DPoP key.", reason="dpop")
            if proof is None:
                raise InvalidDPoPProof("A DPoP proof is required with the DPoP scheme.")
            url, also = self._htu_candidates(url, claims)
            checked = self.proofs.verify(proof, method=method, url=url, access_token=token, also=also)
            if not hmac.compare_digest(checked.jkt, jkt):  # RFC 9449 §4.3 (12)
                raise InvalidDPoPProof("The DPoP proof was made with another key than the token's.")
        elif cnf is not None:  # RFC 9449 §7.2: a bound token is never a bearer token
            raise InvalidToken("The access token is bound to a key: send it with the DPoP scheme.", reason="dpop")
        elif self.dpop == "required":
            raise InvalidToken("A DPoP-bound access token is required.", reason="dpop")
        return claims

    def _htu_candidates(self, url: str, claims: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
        """The URLs a proof may name for a request of ``url`` (issue #18 item 2). With ``public_urls``: this request's
        path under each configured base URL, never the request's ``Host``. Without: the request's own URL (its
        ``Host``), but only for a token whose ``aud`` is this verifier's audience alone — an upstream that received a
        token and proof for itself holds a token of its own audience, which fails our audience check; a token valid
        at several audiences could be replayed here with a forged Host, so it needs ``public_urls``."""
        if self.public_urls:
            split = urlsplit(url)
            path = split.path or "/"
            candidates = tuple(base + path for base in self.public_urls)
            return candidates[0], candidates[1:]
        aud = claims.get("aud")
        if aud != self.audience and aud != [self.audience]:
            raise InvalidToken(
                "A DPoP proof for a token valid at several audiences needs the server's public URL "
                "(RS_PUBLIC_URL, the verifier's public_urls).",
                reason="dpop",
            )
        return url, ()

    async def _claims(self, token: str) -> AccessTokenClaims:
        if len(token) > MAX_TOKEN_LENGTH:  # before anything else: no hashing, decoding or crypto on huge input
            raise InvalidToken("The access token is too large.", reason="too_large")
        seen = self._verified.get(token)
        if seen is not None:
            if self.keys.get(seen.key.kid) is seen.key:
                if self._clock() >= seen.exp + self.leeway:
                    del self._verified[token]
                    raise ExpiredToken()
                return cast(AccessTokenClaims, dict(seen.claims))
            del self._verified[token]  # its key was rotated out or replaced: verify again from scratch
        if _JWS.fullmatch(token) is None:
            raise InvalidToken("The access token is malformed.", reason="malformed")
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = _segment_json(header_b64)

        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:  # exact match: "none", "None", "HS256" all fail
            raise InvalidToken("The access token's algorithm is not allowed.", reason="alg")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:  # RFC 9068 §4 step 1; RFC 8725 §3.11
            raise InvalidToken("The token is not an access token.", reason="typ")
        if "crit" in header:  # RFC 7515 §4.1.11: we understand no extension, so none may be critical
            raise InvalidToken("The access token has unsupported critical headers.", reason="crit")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise InvalidToken("The access token has no usable key id.", reason="kid")

        key = self.keys.get(kid) or await self.keys.get_or_fetch(kid)
        if key is None:
            if not self.keys.loaded:
                raise KeysUnavailable()
            raise InvalidToken("The access token was signed with an unknown key.", reason="unknown_kid")
        if alg not in key.algorithms:  # the key's type decides how it is used, never the token's header
            raise InvalidToken("The access token's algorithm does not fit its key.", reason="alg")

        try:
            signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
        except binascii.Error as exc:
            raise InvalidToken("The access token is malformed.", reason="malformed") from exc
        signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
        if not SUPPORTED_ALGORITHMS[alg].verify(key.key, signing_input, signature):
            raise InvalidToken("The access token's signature is invalid.", reason="signature")

        claims = _segment_json(payload_b64)
        exp = self._check_claims(claims)
        if self.revocations is not None:
            self.start_polling()
        if self.cache_size > 0:
            if len(self._verified) >= self.cache_size:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = _Verified(claims, key, exp)
            claims = dict(claims)
        return cast(AccessTokenClaims, claims)

    def _check_claims(self, claims: dict[str, Any]) -> float:
        """Check the claims (RFC 9068 §4 steps 3-6); return ``exp``."""
        now = self._clock()
        leeway = self.leeway
        exp = _time_claim(claims, "exp")
        if exp is None:  # RFC 9068 §2.2: exp is required
            raise InvalidToken("The access token has no expiry.", reason="exp")
        if now >= exp + leeway:
            raise ExpiredToken()
        iat = _time_claim(claims, "iat")
        if iat is None or iat > now + leeway:  # RFC 9068 §2.2: iat is required
            raise InvalidToken("The access token has an invalid issue time.", reason="iat")
        nbf = _time_claim(claims, "nbf")
        if nbf is not None and nbf > now + leeway:
            raise InvalidToken("The access token is not valid yet.", reason="nbf")
        if claims.get("iss") != self.issuer:  # RFC 9068 §4 step 3: exact match, no prefix or normalization
            raise InvalidToken("The access token was issued by another issuer.", reason="iss")
        aud = claims.get("aud")
        if isinstance(aud, str):
            ok = aud == self.audience
        else:
            ok = isinstance(aud, list) and self.audience in aud and all(isinstance(a, str) for a in aud)
        if not ok:  # RFC 9068 §4 step 4
            raise InvalidToken("The access token is not meant for this audience.", reason="aud")
        for name in REQUIRED_STRING_CLAIMS:
            value = claims.get(name)
            if not isinstance(value, str) or not value:
                raise InvalidToken(f"The access token has no valid {name} claim.", reason="claims")
        if "scope" in claims and not isinstance(claims["scope"], str):
            raise InvalidToken("The access token has an invalid scope claim.", reason="claims")
        return exp
