"""Reading settings from an environment mapping: the parsers every service's ``settings.py`` uses.

Each raises ``SettingsError`` with a message naming the variable, so a bad deployment fails at start-up and says
what to fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from urllib.parse import urlsplit

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, positive: bool = False) -> float:
    """A finite number, >= 0 (``positive``: > 0)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise SettingsError(f"{name} must be {'> 0' if positive else '>= 0'}, got {raw!r}")
    return value


def env_flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise SettingsError(f"{name} must be true or false (1 or 0), got {raw!r}")


def http_url(name: str, raw: str, *, strip_slash: bool = True, plain: bool = False) -> str:
    """An absolute http(s) URL; ``plain`` also refuses a query or fragment; ``strip_slash=False`` keeps it verbatim
    (an issuer is compared exactly, RFC 9068 §4)."""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or (plain and (parts.query or parts.fragment)):
        rule = " without query or fragment" if plain else ""
        raise SettingsError(f"{name} must be an http(s) URL{rule}, got {raw!r}")
    return raw.rstrip("/") if strip_slash else raw
