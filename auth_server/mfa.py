"""Second factors (DESIGN §14): TOTP (RFC 6238), passkeys (WebAuthn) and recovery codes; the levels ``pwd``/``mfa``.

A login is at level ``pwd`` (a password) or ``mfa`` (a password and a second factor). An authorization request asks
for a level with ``acr_values`` (``mfa`` among them: ``mfa``; else ``pwd``) and a freshness with ``max_age``; what is
missing from the browser's SSO session (``sso.py``) is asked for, and nothing else (``missing``): the password when
there is no session (or ``prompt=login``, or a ``pwd``-level ``max_age`` exceeded), the second factor alone when
the session has the password but no second factor recent enough. A code is issued only once nothing is missing, so
replaying the password step's form only ever brings back the second factor's page.

``amr`` (RFC 8176): ``pwd``; ``otp`` for a TOTP or a recovery code; ``hwk`` for a device-bound passkey, ``swk`` for a
synced one (``credential_device_type``); ``mfa`` once a second factor joined the password.

Keys (each user's under its own hash tag, so Cluster-safe)::

    auth:mfa:{<sub>}        hash  totp (base32 secret; sealed with AUTH_FACTOR_KEYS), totp_step (last time step
                                  used: a code works once), totp_pending (sealed alike), totp_pending_at (an
                                  enrolment not yet confirmed with a code)
    auth:recovery:{<sub>}   set   SHA-256 of each unused recovery code (a code is removed when used: single use)
    auth:passkeys:{<sub>}   hash  credential id (base64url) -> JSON {key, count, type, at}
    auth:webauthn:{<hash>}  str   a pending WebAuthn challenge: "<sub> <purpose>", TTL CHALLENGE_TTL, taken once

The TOTP secret must be read to check a code. With ``AUTH_FACTOR_KEYS`` it is kept sealed (AES-GCM under a key
derived from the first key, the user's ``sub`` as associated data: ``sealed:<base64url>``), so a copy of Redis alone
holds no second factor; every key of the list opens, and a secret found plain (written before the keys were set)
or under another key than the first is sealed again with the first at its next use (only while it is still the same
value: a factor removed meanwhile stays removed). A sealed secret that no key opens is ``FactorKeyMissing``: the
login says the authenticator cannot be checked now, the log names the setting. Without the keys it is kept as the
authenticator app keeps it; a copy of Redis then still lacks the password, which only its argon2id hash stands for.
Recovery codes are random (50 bits each) and kept as their SHA-256 only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ACR_PWD, ACR_MFA = "pwd", "mfa"
ACR_VALUES = (ACR_PWD, ACR_MFA)  # acr_values_supported
TOTP_ISSUER = "jwt-bff"
TOTP_DIGITS, TOTP_PERIOD = 6, 30
TOTP_WINDOW = 1  # time steps accepted either side of now (clock drift, a code typed as it turned over)
PENDING_TTL = 900  # seconds an unconfirmed TOTP enrolment waits for its first code
RECOVERY_CODES = 10
CHALLENGE_TTL = 300  # seconds a WebAuthn challenge may be answered
REAUTH_WINDOW = 600  # seconds after a second factor in which /account may change the factors of a user who has one
MAX_CODE = 64

SEALED = "sealed:"  # the prefix of a TOTP secret kept sealed (AUTH_FACTOR_KEYS)
FACTOR_KEY_INFO = b"jwt-bff auth factor key"
# KEYS[1] the user's mfa hash; ARGV[1] its field, ARGV[2] the value read, ARGV[3] the value to write in its place.
# Only if the field still holds what was read: a secret removed or replaced meanwhile is not brought back.
_RESEAL = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 1 end
return 0
"""


class FactorKeyMissing(Exception):
    """A sealed TOTP secret that none of AUTH_FACTOR_KEYS opens (a key removed from the list too soon)."""


# KEYS[1] the user's mfa hash; ARGV[1] the time step a correct code was made for. Takes it only if it is later than the
# last one used: a code (and every older one) works once. Returns 1 taken, 0 replayed.
_TAKE_STEP = """
local last = tonumber(redis.call('HGET', KEYS[1], 'totp_step') or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('HSET', KEYS[1], 'totp_step', ARGV[1])
return 1
"""


def wanted_level(acr_values: tuple[str, ...]) -> str:
    """The level an authorization request asks for (OIDC Core §3.1.2.1 ``acr_values``, in order of preference: we
    give the strongest one named that we know)."""
    return ACR_MFA if ACR_MFA in acr_values else ACR_PWD


def parse_acr_values(raw: str | None) -> tuple[str, ...]:
    """``acr_values``: space-separated; values we do not know are left out (they are requests, not demands)."""
    if not raw:
        return ()
    return tuple(v for v in raw.split() if v in ACR_VALUES)


def missing(session: Any, level: str, max_age: int | None, *, now: float | None = None) -> str | None:
    """What the SSO ``session`` (or None) lacks for ``level`` within ``max_age``: "password", "second_factor" or
    None. For ``mfa`` a recent second factor is the re-authentication ``max_age`` asks for; for ``pwd`` any
    authentication (``auth_time``) within it."""
    now = time.time() if now is None else now
    if session is None:
        return "password"
    if level == ACR_MFA:
        if not session.mfa_time or (max_age is not None and (max_age == 0 or now - session.mfa_time > max_age)):
            return "second_factor"
        return None
    if max_age is not None and (max_age == 0 or now - session.auth_time > max_age):
        return "password"
    return None


def amr_with(amr: tuple[str, ...], method: str) -> tuple[str, ...]:
    """The session's ``amr`` after a second factor ``method`` (RFC 8176)."""
    values = [*amr]
    for value in (method, "mfa"):
        if value not in values:
            values.append(value)
    return tuple(values)


def hash_code(code: str) -> str:
    normalized = "".join(c for c in code.lower() if c.isalnum())
    return hashlib.sha256(b"recovery-code\x00" + normalized.encode()).hexdigest()


def new_recovery_codes() -> list[str]:
    """Ten codes of 10 base32 characters (50 bits), shown as ``xxxxx-xxxxx``."""
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:10]
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


@dataclass(frozen=True)
class Passkey:
    credential_id: str  # base64url
    public_key: bytes
    sign_count: int
    device_type: str  # "single_device" (hwk) or "multi_device" (swk)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SecondFactors:
    """Each user's second factors in Redis (keys in the module docstring)."""

    def __init__(self, redis: Any, issuer: str, keys: tuple[bytes, ...] = ()) -> None:
        self.redis = redis
        self.issuer = issuer
        # AUTH_FACTOR_KEYS: the first seals, every one opens (module docstring)
        self._aeads = [
            AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=FACTOR_KEY_INFO).derive(key))
            for key in keys
        ]
        self._reseal = redis.register_script(_RESEAL)
        parts = urlsplit(issuer)
        self.rp_id = parts.hostname or "localhost"  # WebAuthn §5.1.2: a domain (an IP address is refused by browsers)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self._take_step = redis.register_script(_TAKE_STEP)

    # --- what a user has ----------------------------------------------------------------------------------------

    async def enrolled(self, sub: str) -> dict[str, Any]:
        """{"totp": bool, "passkeys": [Passkey], "recovery_codes": int}"""
        totp = await self.redis.hget(f"auth:mfa:{{{sub}}}", "totp")
        return {
            "totp": totp is not None,
            "passkeys": await self.passkeys(sub),
            "recovery_codes": int(await self.redis.scard(f"auth:recovery:{{{sub}}}")),
        }

    async def remove_all(self, sub: str) -> dict[str, Any]:
        """Remove every second factor of ``sub`` (TOTP, a pending enrolment, passkeys, recovery codes): what an
        operator does for a user who lost them (``auth-server users mfa-reset``). Returns what was enrolled. The keys
        share the user's hash tag: one command, one slot."""
        found = await self.enrolled(sub)
        await self.redis.delete(f"auth:mfa:{{{sub}}}", f"auth:recovery:{{{sub}}}", f"auth:passkeys:{{{sub}}}")
        return found

    async def remove_totp(self, sub: str) -> bool:
        """Turn TOTP off for ``sub`` (a pending enrolment too); False if it was not on. The last factor gone, the
        recovery codes go with it: they stand in for a factor the user no longer has."""
        removed = await self.redis.hdel(f"auth:mfa:{{{sub}}}", "totp", "totp_step", "totp_pending", "totp_pending_at")
        await self._drop_codes_unless_a_factor_is_left(sub)
        return bool(removed)

    async def remove_passkey(self, sub: str, credential_id: str) -> bool:
        """Remove one of ``sub``'s passkeys; False if it has no such passkey."""
        removed = await self.redis.hdel(f"auth:passkeys:{{{sub}}}", credential_id)
        await self._drop_codes_unless_a_factor_is_left(sub)
        return bool(removed)

    async def _drop_codes_unless_a_factor_is_left(self, sub: str) -> None:
        if not await self.has_any(sub):
            await self.redis.delete(f"auth:recovery:{{{sub}}}")

    async def has_any(self, sub: str) -> bool:
        found = await self.enrolled(sub)
        return bool(found["totp"] or found["passkeys"])

    # --- TOTP (RFC 6238) ----------------------------------------------------------------------------------------

    def uri(self, secret: str, username: str) -> str:
        """The ``otpauth://`` URI an authenticator app scans (Key Uri Format: issuer, SHA1, 6 digits, 30 s)."""
        return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD).provisioning_uri(
            name=username, issuer_name=TOTP_ISSUER
        )

    # --- the secret at rest (AUTH_FACTOR_KEYS) -------------------------------------------------------------------

    def _seal(self, sub: str, secret: str) -> str:
        if not self._aeads:
            return secret
        nonce = secrets.token_bytes(12)
        return SEALED + _b64(nonce + self._aeads[0].encrypt(nonce, secret.encode(), sub.encode()))

    def _open(self, sub: str, stored: str) -> tuple[str, bool]:
        """(the secret, whether it should be sealed again with the first key). FactorKeyMissing when no key opens it."""
        if not stored.startswith(SEALED):
            return stored, bool(self._aeads)  # plain: written before the keys were set
        try:
            blob = _unb64(stored[len(SEALED) :])
        except ValueError:
            raise FactorKeyMissing() from None
        for i, aead in enumerate(self._aeads):
            try:
                return aead.decrypt(blob[:12], blob[12:], sub.encode()).decode(), i > 0
            except (InvalidTag, ValueError):
                continue
        raise FactorKeyMissing()

    async def reseal_all(self, *, unseal: bool = False) -> dict[str, int]:
        """Seal every user's TOTP secret (and pending one) with the first key, as a use would: after AUTH_FACTOR_KEYS
        is set or a key is put first (``auth-server users totp-reseal``). Counts: ``sealed`` now, ``current``
        already, ``unopenable`` under no listed key (those users must enrol again, or the key be listed).
        ``unseal``: write each back as the app holds it instead (``--unseal``: before a rollback to a release that
        cannot open them, or before the keys are emptied)."""
        counts = {"sealed": 0, "current": 0, "unopenable": 0}
        async for key in self.redis.scan_iter(match="auth:mfa:{*}", count=500):
            name = _text(key)
            sub = name[len("auth:mfa:{") : -1]
            for field in ("totp", "totp_pending"):
                raw = await self.redis.hget(name, field)
                if raw is None:
                    continue
                stored = _text(raw)
                try:
                    secret, stale = self._open(sub, stored)
                except FactorKeyMissing:
                    counts["unopenable"] += 1
                    continue
                if unseal:
                    stale = secret != stored  # in the clear already, or not
                if not stale:
                    counts["current"] += 1
                elif await self._reseal(
                    keys=[name], args=[field, stored, secret if unseal else self._seal(sub, secret)]
                ):
                    counts["sealed"] += 1
        return counts

    async def start_totp(self, sub: str) -> str:
        """A new secret, pending until ``confirm_totp`` gets a code made with it (the app holds it, then)."""
        secret = pyotp.random_base32()
        await self.redis.hset(
            f"auth:mfa:{{{sub}}}",
            mapping={"totp_pending": self._seal(sub, secret), "totp_pending_at": int(time.time())},
        )
        return secret

    async def pending_totp(self, sub: str) -> str | None:
        """The pending secret; None when there is none, it is too old, or no key opens it (then: start again)."""
        raw = await self.redis.hmget(f"auth:mfa:{{{sub}}}", ["totp_pending", "totp_pending_at"])
        if raw[0] is None or raw[1] is None or time.time() - int(raw[1]) > PENDING_TTL:
            return None
        try:
            return self._open(sub, _text(raw[0]))[0]
        except FactorKeyMissing:
            return None

    async def confirm_totp(self, sub: str, code: str) -> bool:
        """Activate the pending secret if ``code`` was made with it (and take the code's step: it works once)."""
        secret = await self.pending_totp(sub)
        step = self._step_of(secret, code) if secret is not None else None
        if secret is None or step is None:
            return False
        await self.activate_totp(sub, secret, step)
        return True

    async def activate_totp(self, sub: str, secret: str, step: int = -1) -> None:
        key = f"auth:mfa:{{{sub}}}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"totp": self._seal(sub, secret), "totp_step": step})
            pipe.hdel(key, "totp_pending", "totp_pending_at")
            await pipe.execute()

    @staticmethod
    def _step_of(secret: str, code: str) -> int | None:
        """The time step ``code`` was made for, within ``TOTP_WINDOW`` of now; None for a wrong code."""
        code = code.strip().replace(" ", "")
        if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
            return None
        totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD)
        current = int(time.time() // TOTP_PERIOD)  # RFC 6238 §4.2: T = floor((now - T0) / X), T0 = 0
        found = None
        for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
            if secrets.compare_digest(totp.generate_otp(step), code):  # every candidate checked
                found = step
        return found

    async def verify_totp(self, sub: str, code: str) -> bool:
        """A correct code, never used before (RFC 6238 §5.2: "the verifier MUST NOT accept the second attempt of the
        same OTP"): its time step must be later than the last one used. FactorKeyMissing when the secret is sealed
        under none of AUTH_FACTOR_KEYS."""
        key = f"auth:mfa:{{{sub}}}"
        stored = await self.redis.hget(key, "totp")
        if stored is None:
            return False
        secret, stale = self._open(sub, _text(stored))
        step = self._step_of(secret, code)
        if step is None:
            return False
        taken = bool(await self._take_step(keys=[key], args=[step]))
        if taken and stale:  # sealed again with the first key, only while it is still the same secret
            await self._reseal(keys=[key], args=["totp", _text(stored), self._seal(sub, secret)])
        return taken

    # --- recovery codes ---------------------------------------------------------------------------------------

    async def new_recovery_codes(self, sub: str) -> list[str]:
        """A fresh set (the old ones stop working); returned once, kept only hashed."""
        codes = new_recovery_codes()
        key = f"auth:recovery:{{{sub}}}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.sadd(key, *(hash_code(c) for c in codes))
            await pipe.execute()
        return codes

    async def use_recovery_code(self, sub: str, code: str) -> bool:
        if not code or len(code) > MAX_CODE:
            return False
        return bool(await self.redis.srem(f"auth:recovery:{{{sub}}}", hash_code(code)))  # atomic: single use

    # --- passkeys (WebAuthn) ------------------------------------------------------------------------------------

    async def passkeys(self, sub: str) -> list[Passkey]:
        raw = await self.redis.hgetall(f"auth:passkeys:{{{sub}}}")
        found = []
        for cred_id, value in sorted(raw.items()):
            data = json.loads(value)
            found.append(Passkey(_text(cred_id), _unb64(data["key"]), int(data["count"]), str(data["type"])))
        return found

    async def new_challenge(self, sub: str, purpose: str) -> bytes:
        """A challenge for one ceremony (``purpose``: "register" or "authenticate"), kept for ``CHALLENGE_TTL``.
        Only for a user who passed the password: nothing anonymous writes here."""
        challenge = secrets.token_bytes(32)
        key = f"auth:webauthn:{{{hashlib.sha256(challenge).hexdigest()}}}"
        await self.redis.set(key, f"{sub} {purpose}", ex=CHALLENGE_TTL)
        return challenge

    async def take_challenge(self, credential: dict[str, Any], sub: str, purpose: str) -> bytes | None:
        """The challenge the browser's ``clientDataJSON`` answers, if it is one of ours for ``sub`` and ``purpose``,
        taken (single use)."""
        try:
            client_data = json.loads(_unb64(str(credential["response"]["clientDataJSON"])))
            challenge = _unb64(str(client_data["challenge"]))
        except (KeyError, TypeError, ValueError, RecursionError):  # RecursionError: JSON nested past the stack
            return None
        key = f"auth:webauthn:{{{hashlib.sha256(challenge).hexdigest()}}}"
        owner = await self.redis.getdel(key)
        return challenge if owner is not None and _text(owner) == f"{sub} {purpose}" else None

    def registration_options(self, sub: str, username: str, challenge: bytes, existing: list[Passkey]) -> str:
        from webauthn import generate_registration_options, options_to_json
        from webauthn.helpers.structs import (
            AuthenticatorSelectionCriteria,
            PublicKeyCredentialDescriptor,
            ResidentKeyRequirement,
            UserVerificationRequirement,
        )

        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name="jwt-bff",
            user_id=sub.encode(),
            user_name=username,
            challenge=challenge,
            exclude_credentials=[PublicKeyCredentialDescriptor(id=_unb64(p.credential_id)) for p in existing],
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
        )
        return str(options_to_json(options))

    def authentication_options(self, challenge: bytes, passkeys: list[Passkey]) -> str:
        from webauthn import generate_authentication_options, options_to_json
        from webauthn.helpers.structs import PublicKeyCredentialDescriptor

        options = generate_authentication_options(
            rp_id=self.rp_id,
            challenge=challenge,
            allow_credentials=[PublicKeyCredentialDescriptor(id=_unb64(p.credential_id)) for p in passkeys],
        )
        return str(options_to_json(options))

    async def register_passkey(self, sub: str, credential_json: str) -> bool:
        """Verify a ``navigator.credentials.create()`` answer to one of our challenges and keep the passkey."""
        from webauthn import verify_registration_response
        from webauthn.helpers.exceptions import WebAuthnException

        credential = _json_object(credential_json)
        if credential is None:
            return False
        challenge = await self.take_challenge(credential, sub, "register")
        if challenge is None:
            return False
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
            )
        except (WebAuthnException, KeyError, TypeError, ValueError, RecursionError):
            return False
        record = {
            "key": _b64(verified.credential_public_key),
            "count": verified.sign_count,
            "type": str(verified.credential_device_type.value),
            "at": int(time.time()),
        }
        await self.redis.hset(f"auth:passkeys:{{{sub}}}", _b64(verified.credential_id), json.dumps(record))
        return True

    async def verify_passkey(self, sub: str, credential_json: str) -> str | None:
        """The ``amr`` of a valid ``navigator.credentials.get()`` answer by one of the user's passkeys ("hwk" for a
        device-bound one, "swk" for a synced one), or None. The signature counter must grow when the authenticator
        keeps one (WebAuthn §6.1.1: a cloned authenticator)."""
        from webauthn import verify_authentication_response
        from webauthn.helpers.exceptions import WebAuthnException

        credential = _json_object(credential_json)
        if credential is None:
            return None
        challenge = await self.take_challenge(credential, sub, "authenticate")
        if challenge is None:
            return None
        cred_id = credential.get("id")
        found = next((p for p in await self.passkeys(sub) if p.credential_id == cred_id), None)
        if found is None:
            return None
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=found.public_key,
                credential_current_sign_count=found.sign_count,
            )
        except (WebAuthnException, KeyError, TypeError, ValueError, RecursionError):
            return None
        record = {
            "key": _b64(found.public_key),
            "count": verified.new_sign_count,
            "type": found.device_type,
            "at": int(time.time()),
        }
        await self.redis.hset(f"auth:passkeys:{{{sub}}}", found.credential_id, json.dumps(record))
        return "swk" if found.device_type == "multi_device" else "hwk"


def _json_object(text: str) -> dict[str, Any] | None:
    if not text or len(text) > 16_384:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
