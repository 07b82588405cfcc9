"""DPoP (RFC 9449) at the token endpoint: proofs checked, tokens bound, nonces demanded.

A token request with a ``DPoP`` proof gets access tokens bound to the proof's key (``cnf.jkt``, ``token_type:
DPoP``, §5); a public client's refresh tokens are bound too (§5: a confidential client's are already bound to its
credentials), and each refresh with one must bring a proof by the same key. The proof checks themselves are the
verifier library's (``jwt_bff_verifier.dpop``, importable alone, the same code a resource server runs);
this module adds what only an auth server does:

- ``jti`` replay detection across replicas: ``SET auth:dpop:{<sha256(jkt, jti)>} NX`` for the proof window (one key
  per proof: Cluster-safe);
- server nonces (§8, ``AUTH_DPOP_NONCE``): a proof without a current nonce gets ``400 use_dpop_nonce`` and a
  ``DPoP-Nonce`` header; every answer carries a fresh one. Nonces are stateless (HMAC of a time window) under a
  secret derived from the signing keys, so every replica accepts every other's;
- the ``htu`` must be the advertised ``{issuer}/oauth/token`` (the endpoint's URL under ``AUTH_ISSUER``), whatever
  address the request came in at: a client inside the network that calls an internal address still signs the public
  name. Never the request's ``Host`` (issue #18 item 2: a proof made for another server was accepted when the
  request carried that server's Host).
"""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.requests import Request

from jwt_bff_verifier.dpop import DEFAULT_DPOP_ALGORITHMS, NonceIssuer, ProofVerifier
from jwt_bff_verifier.errors import InvalidDPoPProof as ProofRefused
from jwt_bff_verifier.errors import UseDPoPNonce as NonceWanted

from .errors import InvalidDPoPProof, UseDPoPNonce
from .keys import KeyRing
from .settings import Settings

DPOP_ALGORITHMS = sorted(DEFAULT_DPOP_ALGORITHMS)  # advertised as dpop_signing_alg_values_supported
PROOF_WINDOW = 60.0  # seconds a proof's iat may lie in the past
NONCE_LIFETIME = 300.0  # seconds per nonce window (a nonce is good for one to two windows)


class DPoPCheck:
    def __init__(self, settings: Settings, redis: Any, keys: KeyRing) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.proofs = ProofVerifier(algorithms=DPOP_ALGORITHMS, window=PROOF_WINDOW, replay=None)

    def nonces(self) -> NonceIssuer | None:
        if not self.settings.dpop_nonce:
            return None
        secrets = self.keys.derived_secrets(b"dpop-nonce")
        return NonceIssuer(secrets[-1], lifetime=NONCE_LIFETIME) if secrets else None

    def fresh_nonce(self) -> str | None:
        """A nonce for the ``DPoP-Nonce`` header of any answer (RFC 9449 §8.2), when nonces are on."""
        nonces = self.nonces()
        return nonces.issue() if nonces is not None else None

    async def key_of(
        self, request: Request, endpoint: str, access_token: str | None = None, *, nonce: bool = True
    ) -> str | None:
        """The thumbprint (``jkt``) of the key that signed the request's DPoP proof, None without a proof; raises
        InvalidDPoPProof or UseDPoPNonce. ``endpoint``: the path of the endpoint the proof must name;
        ``nonce=False``: no nonce demanded (a resource endpoint such as userinfo)."""
        values = request.headers.getlist("dpop")
        if not values:
            return None
        if len(values) > 1:
            raise InvalidDPoPProof("Send one DPoP proof.")
        self.proofs.nonces = self.nonces() if nonce else None
        try:
            proof = self.proofs.verify(
                values[0],
                method=request.method,
                url=self.settings.issuer + endpoint,  # configured, never the request's Host (issue #18 item 2)
                access_token=access_token,
            )
        except NonceWanted as exc:
            raise UseDPoPNonce(exc.nonce) from None
        except ProofRefused as exc:
            raise InvalidDPoPProof(exc.description) from None
        marker = hashlib.sha256(f"{proof.jkt}\x00{proof.jti}".encode()).hexdigest()
        ttl = int(PROOF_WINDOW + self.proofs.leeway) + 1
        if not await self.redis.set(f"auth:dpop:{{{marker}}}", "1", nx=True, ex=ttl):  # RFC 9449 §11.1
            raise InvalidDPoPProof("The DPoP proof was already used.")
        return proof.jkt
