"""The refresh retry grace (DESIGN §9): the answer to a rotation, kept sealed for a client's immediate retry.

A client that dies (or loses the connection) between our rotation of its refresh token and saving the new pair
would otherwise retry with the refresh token we just rotated, which is reuse, and lose the whole login. So the
answer of each rotation is kept in the family for ``AUTH_REFRESH_RETRY_GRACE`` seconds, and the rotated token,
presented again by the same client within that time, gets the very same pair back (the pattern of Okta's and
Auth0's "refresh token reuse interval").

Only a client that proves it is the same one gets the grace (issue #18 item 6): a confidential client (it
authenticated) or one whose refresh token is bound to a DPoP key (it proved the key). A public client without DPoP
cannot be told from a thief who replays its just-rotated token, so for it a retry is reuse, as before the grace.

Nothing in Redis may hold a token in clear (DESIGN §4): the answer is sealed with AES-256-GCM under a key derived
from the presented refresh token itself, which only the client holds; a copy of Redis alone opens nothing. The
associated data binds the blob to its family and generation, so it cannot be moved to another.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import TokenRejected

_CONTEXT = b"jwt-bff auth refresh-retry-grace v1\x00"
_NONCE = 12


def _key(refresh_token: str) -> bytes:
    # The refresh token is a signed JWT with a random jti: ample entropy for a one-shot SHA-256 derivation.
    return hashlib.sha256(_CONTEXT + refresh_token.encode("ascii", "replace")).digest()


def seal(refresh_token: str, sid: str, jti: str, answer: dict[str, Any], request: str) -> bytes:
    """The answer to the rotation of ``refresh_token`` (family ``sid``, generation ``jti``) for ``request`` (what
    the access token was asked for: scope, resource), sealed."""
    nonce = os.urandom(_NONCE)
    plain = json.dumps({"at": time.time(), "answer": answer, "request": request}, separators=(",", ":")).encode()
    return nonce + AESGCM(_key(refresh_token)).encrypt(nonce, plain, f"{sid}\x00{jti}".encode())


def open_sealed(refresh_token: str, sid: str, jti: str, blob: bytes) -> tuple[dict[str, Any], str]:
    """The answer and request sealed by ``seal``; raises TokenRejected if the blob was not sealed for this token."""
    try:
        plain = AESGCM(_key(refresh_token)).decrypt(blob[:_NONCE], blob[_NONCE:], f"{sid}\x00{jti}".encode())
        kept = json.loads(plain)
        answer, sealed_at, request = kept["answer"], float(kept["at"]), str(kept["request"])
    except (InvalidTag, ValueError, KeyError, TypeError) as exc:
        raise TokenRejected("the kept answer does not open with this refresh token") from exc
    if isinstance(answer.get("expires_in"), int):  # the same tokens, so less of their life is left
        answer["expires_in"] = max(0, answer["expires_in"] - int(time.time() - sealed_at))
    return dict(answer), request
