"""The user's claims (DESIGN §11): which the BFF keeps at login, what ``/bff/user`` and forward auth say of them, and
the routes' ``require`` rules over them.

* **Kept at login**: the names in ``BFF_USER_CLAIMS`` (default ``preferred_username,name,email``) plus every claim
  a route's ``require`` names, taken from the verified ID token; from the provider's userinfo (OIDC Core §5.3) for
  those the ID token lacks, when the provider has a userinfo endpoint and lists them in ``claims_supported`` (or lists
  none) — ``AuthClient.user_claims``. Taken again the same way when a refresh answers with a new ID token
  (``AuthClient.refreshed_claims``). They live sealed in the session record, so each is capped
  (:data:`MAX_CLAIM_BYTES`, :data:`MAX_TOTAL_BYTES`); a claim over the cap is left out with a WARNING naming it,
  never its value. Only JSON values are kept, never a token: the session's tokens are fields of their own and
  ``/bff/user`` returns ``claims`` alone.
* **Rules**: ``"require": {"groups": ["admin"], "email_verified": [true]}`` — every named claim must hold one of the
  listed values (a list claim: any of its elements). Compiled once per route at start-up into a frozenset of the
  accepted strings and one of the other values as typed keys, so a request pays a dict lookup and a set test per
  named claim (``isdisjoint`` for a list of strings). ``true`` never matches ``1`` nor ``"true"``: values compare
  with their JSON type.
* **Forward-auth headers** (:func:`identity_headers`): ``X-Auth-Request-User`` (``preferred_username``),
  ``-Email`` (``email``), ``-Groups`` (``groups``, comma-joined). A value with a control character (CR, LF, NUL, …) is
  never sent; a group with a comma or with spaces at either end is left out of the joined list (it would read as
  other groups); a value that is not a string (a number, an object) is not sent.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from servicekit.settings import SettingsError

log = logging.getLogger(__name__)

DEFAULT_USER_CLAIMS = "preferred_username,name,email"
MAX_CLAIM_BYTES = 4096  # one claim's JSON: a groups list of ~100 names
MAX_TOTAL_BYTES = 8192  # all kept claims: the record stays small (it is read on every request)
MAX_RULE_CLAIMS = 32
MAX_RULE_VALUES = 256
MAX_HEADER_BYTES = 4096  # an identity header longer than this is not sent (nginx's header buffers are 8 KiB)
CLAIM_NAME = re.compile(r"[A-Za-z0-9_.:/+-]{1,64}")  # what providers use, and no separator of ours (, ; = space)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")  # CR, LF, NUL, TAB and the other controls: never in a header value
HEADERS_CACHE = 4096  # claims objects whose identity headers are remembered (as SessionManager's opened records)
_HEADERS: dict[int, tuple[Mapping[str, Any], tuple[tuple[bytes, bytes], ...]]] = {}


def parse_claim_names(raw: str | None, var: str = "BFF_USER_CLAIMS") -> tuple[str, ...]:
    """The claim names of ``BFF_USER_CLAIMS`` (comma-separated); empty keeps none (but those the rules name)."""
    names = [n.strip() for n in (DEFAULT_USER_CLAIMS if raw is None else raw).split(",") if n.strip()]
    for name in names:
        if not CLAIM_NAME.fullmatch(name):
            raise SettingsError(f"{var}: bad claim name {name[:80]!r} (1-64 letters, digits and '_.:/+-')")
    return tuple(dict.fromkeys(names))


def _key(value: Any) -> tuple[str, Any] | None:
    """A value as it compares in a rule: with its JSON type (``true`` is not ``1``), numbers as floats."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, int | float) and math.isfinite(value):
        return ("n", float(value))
    return None


@dataclass(frozen=True)
class Rules:
    """A route's ``require``, compiled: per claim, the accepted strings and the accepted other values (as typed
    keys); every claim must hold one of its values."""

    checks: tuple[tuple[str, frozenset[str], frozenset[tuple[str, Any]]], ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for name, _, _ in self.checks)

    def allows(self, claims: Mapping[str, Any]) -> bool:
        for name, strings, others in self.checks:
            value = claims.get(name)
            if type(value) is str:
                if value not in strings:  # a string equals strings only: no type confusion with true or 1
                    return False
            elif type(value) is list:
                try:
                    # C speed for the usual list of strings; non-strings in it (1, true, null) never equal a string
                    if strings.isdisjoint(value) and not (others and any(_key(v) in others for v in value)):
                        return False
                except TypeError:  # an object or list inside the list: compared one by one
                    if not any(
                        (v in strings) if type(v) is str else (_key(v) in others) for v in value if _key(v) is not None
                    ):
                        return False
            elif not others or _key(value) not in others:
                return False
        return True


def parse_rules(where: str, raw: Any) -> Rules:
    """``{"claim": [value, ...], ...}`` → :class:`Rules`; SettingsError naming ``where`` and the claim at fault."""
    if not isinstance(raw, dict) or not raw:
        raise SettingsError(f'{where} must be an object of claim name -> list of values, e.g. {{"groups": ["admin"]}}')
    if len(raw) > MAX_RULE_CLAIMS:
        raise SettingsError(f"{where} names more than {MAX_RULE_CLAIMS} claims")
    checks = []
    for name, values in raw.items():
        if not CLAIM_NAME.fullmatch(name):
            raise SettingsError(f"{where}: bad claim name {name[:80]!r} (1-64 letters, digits and '_.:/+-')")
        if not isinstance(values, list) or not values:
            raise SettingsError(
                f"{where}.{name} must be a non-empty list of accepted values (a string, number or boolean each)"
            )
        if len(values) > MAX_RULE_VALUES:
            raise SettingsError(f"{where}.{name} lists more than {MAX_RULE_VALUES} values")
        strings, others = [], []
        for value in values:
            key = _key(value)
            if key is None:
                raise SettingsError(f"{where}.{name}: {json.dumps(value)[:80]} is not a string, number or boolean")
            if isinstance(value, str):
                strings.append(value)
            else:
                others.append(key)
        checks.append((name, frozenset(strings), frozenset(others)))
    return Rules(tuple(checks))


def keep(found: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The claims ``names`` of ``found`` that fit the caps (in the order of ``names``); the rest left out, each with a
    WARNING naming the claim (never its value)."""
    kept: dict[str, Any] = {}
    total = 0
    for name in names:
        if name not in found:
            continue
        value = found[name]
        try:
            size = len(json.dumps(value, separators=(",", ":"), allow_nan=False))
        except (TypeError, ValueError):
            log.warning("claim %s is not JSON and was not kept", name)
            continue
        if size > MAX_CLAIM_BYTES or total + size > MAX_TOTAL_BYTES:
            log.warning(
                "claim %s (%d bytes) was not kept: each claim may take %d bytes, all kept claims %d",
                name,
                size,
                MAX_CLAIM_BYTES,
                MAX_TOTAL_BYTES,
            )
            continue
        total += size
        kept[name] = value
    return kept


def header_value(value: Any) -> bytes | None:
    """A claim as a header value: a non-empty string without CR, LF or NUL, UTF-8 encoded, within MAX_HEADER_BYTES;
    else None (the header is left out: never split, never a lossy stand-in that another user's value could match)."""
    if not isinstance(value, str) or not value or _UNSAFE.search(value):
        return None
    encoded = value.encode("utf-8")  # RFC 9110 §5.5: bytes above 0x7f are opaque obs-text, passed on as they are
    return encoded if len(encoded) <= MAX_HEADER_BYTES else None


def _groups_value(value: Any) -> bytes | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return None
    # A group holding a comma (or spaces at its ends, which readers strip) would read as other groups once joined.
    safe = [g for g in value if isinstance(g, str) and g and "," not in g and g == g.strip() and not _UNSAFE.search(g)]
    return header_value(",".join(safe)) if safe else None


def identity_headers(claims: Mapping[str, Any]) -> tuple[tuple[bytes, bytes], ...]:
    """The forward-auth identity headers of a session's kept claims, those that are present and safe.

    Remembered per claims object: a record unchanged in Redis is opened once (``SessionManager``), so a busy
    session's every forward-auth answer brings the very same dict, and the checks and encodings are done once for it
    (the entry holds the dict, so its id cannot be reused by another while it is cached)."""
    cached = _HEADERS.get(id(claims))
    if cached is not None and cached[0] is claims:
        return cached[1]
    headers = _identity_headers(claims)
    if len(_HEADERS) >= HEADERS_CACHE:
        del _HEADERS[next(iter(_HEADERS))]  # the oldest entry
    _HEADERS[id(claims)] = (claims, headers)
    return headers


def _identity_headers(claims: Mapping[str, Any]) -> tuple[tuple[bytes, bytes], ...]:
    headers = []
    for header, name in ((b"x-auth-request-user", "preferred_username"), (b"x-auth-request-email", "email")):
        value = header_value(claims.get(name))
        if value is not None:
            headers.append((header, value))
    groups = _groups_value(claims.get("groups"))
    if groups is not None:
        headers.append((b"x-auth-request-groups", groups))
    return tuple(headers)
