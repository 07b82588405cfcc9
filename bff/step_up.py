"""Step-up authentication (RFC 9470, DESIGN §14) at the BFF.

An upstream that needs a stronger or more recent login answers ``401`` with ``WWW-Authenticate: Bearer
error="insufficient_user_authentication", acr_values="mfa", max_age="300"``; a route may declare the same
requirement (``"acr": "mfa"``, ``"max_age": 300`` in ``BFF_ROUTES``), checked against the session before the upstream
is called. Either way the BFF does not retry (a new token of the same login would not help): it answers the browser
``401 {"error": "insufficient_user_authentication", "acr_values": "mfa", "max_age": 300, "step_up_url":
"/bff/login?acr_values=mfa&max_age=300&return_to=…"}``. A login through that URL asks the provider for that level
(``acr_values``, ``max_age``), checks the ``acr`` and ``auth_time`` of the ID token it gets back, and upgrades the
*same* session: same cookie, same record (so its WebSockets and streams stay open), new tokens, written with the
conditional ``SessionManager.save`` — a session logged out meanwhile stays logged out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from bff.errors import BadRequest, StepUpRequired

CHALLENGE_ERROR = "insufficient_user_authentication"
MAX_ACR_VALUES = 8
MAX_AGE_LIMIT = 10**9
ACR_VALUE = re.compile(r"[A-Za-z0-9._:/#-]{1,128}")  # what an acr value is in practice (names, URNs, URLs)
_PARAM = re.compile(r'(acr_values|max_age)\s*=\s*(?:"([^"\\]*)"|([^\s,]+))')
AUTH_TIME_LEEWAY = 60  # seconds of clock skew allowed between the provider's auth_time and our clock


def parse_acr_values(raw: str | None, what: str = "acr_values") -> tuple[str, ...]:
    """Space-separated ``acr_values`` (OIDC Core §3.1.2.1), each a plain token; BadRequest otherwise."""
    if raw is None or raw == "":
        return ()
    values = tuple(raw.split())
    if len(values) > MAX_ACR_VALUES or not all(ACR_VALUE.fullmatch(v) for v in values):
        raise BadRequest(f"{what} must be up to {MAX_ACR_VALUES} space-separated values.")
    return values


def parse_max_age(raw: str | None, what: str = "max_age") -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise BadRequest(f"{what} must be a number of seconds.")
    return int(raw)


def challenge_of(header: str) -> tuple[tuple[str, ...], int | None] | None:
    """The (acr_values, max_age) of an RFC 9470 challenge in a ``WWW-Authenticate`` value, or None if it is not one.
    Values an upstream sends that are not plain tokens are dropped rather than passed on."""
    if CHALLENGE_ERROR not in header:
        return None
    acr_values: tuple[str, ...] = ()
    max_age: int | None = None
    for name, quoted, bare in _PARAM.findall(header):
        value = quoted if quoted else bare
        try:
            if name == "acr_values":
                acr_values = parse_acr_values(value)
            else:
                max_age = parse_max_age(value)
        except BadRequest:
            continue
    return acr_values, max_age


def step_up_url(acr_values: Collection[str], max_age: int | None, return_to: str) -> str:
    params: dict[str, Any] = {}
    if acr_values:
        params["acr_values"] = " ".join(acr_values)
    if max_age is not None:
        params["max_age"] = max_age
    params["return_to"] = return_to
    return "/bff/login?" + urlencode(params)


def step_up_error(
    acr_values: tuple[str, ...], max_age: int | None, return_to: str, description: str | None = None
) -> StepUpRequired:
    return StepUpRequired(acr_values, max_age, step_up_url(acr_values, max_age, return_to), description)


def return_to_of(scope: Mapping[str, Any], public_origin: str, navigation: bool) -> str:
    """Where the browser goes back after the step-up: the page itself for a navigation, else the page that made
    the call (``Referer``, when it is of our own origin), else ``/``."""
    if navigation:
        query = scope.get("query_string", b"").decode("latin-1")
        return scope["path"] + (f"?{query}" if query else "")
    for name, value in scope["headers"]:
        if name == b"referer":
            parts = urlsplit(value.decode("latin-1"))
            if f"{parts.scheme}://{parts.netloc}".lower() == public_origin and parts.path.startswith("/"):
                return parts.path + (f"?{parts.query}" if parts.query else "")
    return "/"


def meets(
    acr: str | None, auth_time: float | None, acr_values: Collection[str], max_age: int | None, *, leeway: float = 0
) -> bool:
    """Whether a login (``acr``, ``auth_time``) meets the requirement (RFC 9470 §3's two parameters)."""
    if acr_values and acr not in acr_values:
        return False
    if max_age is not None and (auth_time is None or time.time() - auth_time > max_age + leeway):
        return False
    return True


def login_level(claims: Mapping[str, Any]) -> tuple[str | None, list[str], float | None]:
    """(acr, amr, auth_time) of an ID token's claims, each None or empty when absent or malformed."""
    acr = claims.get("acr")
    amr = claims.get("amr")
    auth_time = claims.get("auth_time")
    return (
        acr if isinstance(acr, str) else None,
        [a for a in amr if isinstance(a, str)] if isinstance(amr, list) else [],
        float(auth_time) if isinstance(auth_time, int | float) and not isinstance(auth_time, bool) else None,
    )
