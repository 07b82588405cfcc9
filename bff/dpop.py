"""DPoP (RFC 9449) on the BFF's side: its key, its proofs, the servers' nonces.

With ``BFF_DPOP_KEY_FILE`` (a PEM EC P-256 private key that every replica shares) every token the BFF obtains is
bound to that key, and every request that carries one — proxied (``/api/*``), WebSocket handshakes, forward-auth
answers (``/bff/auth``) and token requests — carries ``Authorization: DPoP <token>`` and a fresh proof. A token
stolen from an upstream (its logs, a compromised resource server) is useless without the key, and a proof works for
one request, once. Replicas share the key, so a token one of them obtained works from any other.

This is the proxy's hot path: a proof is signed per request. ES256 through ``cryptography`` (OpenSSL) is the
cheapest asymmetric signature there (RSA signing costs ten times more); the header — ``typ``, ``alg`` and the public
``jwk`` — never changes, so it is encoded once, and a proof is one short JSON payload and one signature.

A server may demand a nonce (RFC 9449 §8-9): its answer names the nonce in ``DPoP-Nonce``; the latest one of each
origin is kept here, sent in every later proof, and a challenge (``use_dpop_nonce``) is answered by the caller with
one retry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from jwt_bff_verifier.dpop import jwk_thumbprint

__all__ = ["DPoPKeyError", "DPoPSigner", "credential_headers"]

MAX_NONCES = 1024  # origins whose latest nonce is kept
_SIGN = ec.ECDSA(hashes.SHA256())


class DPoPKeyError(ValueError):
    """BFF_DPOP_KEY_FILE cannot be read, or is not an EC P-256 private key."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _origin(url: str) -> str:
    slash = url.find("/", url.find("//") + 2)
    return url if slash < 0 else url[:slash]


class DPoPSigner:
    """Makes DPoP proofs with one EC P-256 key (ES256)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise DPoPKeyError("the DPoP key must be on the P-256 curve (ES256)")
        numbers = private_key.public_key().public_numbers()
        self.jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
        self.jkt = jwk_thumbprint(self.jwk)  # RFC 7638, what a bound token's cnf.jkt holds
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}
        self._header = _b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
        self._key = private_key
        self._nonces: dict[str, str] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> DPoPSigner:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise DPoPKeyError(f"BFF_DPOP_KEY_FILE {str(path)!r} cannot be read as a PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise DPoPKeyError("BFF_DPOP_KEY_FILE must hold an EC P-256 private key")
        return cls(key)

    def proof(self, method: str, url: str, access_token: str | None = None, nonce: str | None = None) -> str:
        """A fresh proof for one ``method`` request of ``url`` (its query is not part of ``htu``, RFC 9449 §4.2),
        with ``ath`` for ``access_token`` and the origin's latest nonce unless ``nonce`` is given."""
        htu = url.split("?", 1)[0].split("#", 1)[0]
        claims = f'{{"jti":"{_b64url(os.urandom(12))}","htm":{json.dumps(method)},"htu":{json.dumps(htu)},'
        claims += f'"iat":{int(time.time())}'
        if access_token is not None:
            claims += f',"ath":"{_b64url(hashlib.sha256(access_token.encode("ascii", "replace")).digest())}"'
        nonce = nonce if nonce is not None else self._nonces.get(_origin(htu))
        if nonce is not None:
            claims += f',"nonce":{json.dumps(nonce)}'
        signing_input = self._header + _b64url((claims + "}").encode())
        r, s = decode_dss_signature(self._key.sign(signing_input.encode("ascii"), _SIGN))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"  # RFC 7518 §3.4: R || S

    def remember_nonce(self, url: str, nonce: str | None) -> bool:
        """Keep ``nonce`` (a ``DPoP-Nonce`` answer header) for later proofs to ``url``'s origin; True if it is new."""
        if not nonce or len(nonce) > 256:
            return False
        origin = _origin(url)
        if self._nonces.get(origin) == nonce:
            return False
        if len(self._nonces) >= MAX_NONCES and origin not in self._nonces:
            self._nonces.pop(next(iter(self._nonces)))
        self._nonces[origin] = nonce
        return True


def credential_headers(signer: DPoPSigner | None, token: str, method: str, url: str) -> list[tuple[str, str]]:
    """The headers that carry ``token`` to ``url`` for a ``method`` request: ``Authorization: Bearer``, or with a
    DPoP key ``Authorization: DPoP`` and a fresh proof for exactly that request (RFC 9449 §7.1). One place decides,
    for the proxy, WebSocket handshakes and forward-auth answers alike."""
    if signer is None:
        return [("Authorization", f"Bearer {token}")]
    return [("Authorization", f"DPoP {token}"), ("DPoP", signer.proof(method, url, token))]


def nonce_challenge(status: int, www_authenticate: str, nonce: str | None) -> bool:
    """Whether an answer asks for a proof with a (new) nonce: RFC 9449 §9 (401 with a DPoP ``use_dpop_nonce``
    challenge) or §8 (400 ``use_dpop_nonce`` from a token endpoint), with the nonce in ``DPoP-Nonce``."""
    return nonce is not None and status in (400, 401) and "use_dpop_nonce" in www_authenticate
