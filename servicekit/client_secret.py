"""Client secrets a service refuses to start with: empty, short, or well known (issue #10 item 9c).

docker-compose.yml falls back to a fixed secret so that ``docker compose up`` works for a try-out; the same file on a
server with ``BFF_CLIENT_SECRET`` forgotten would run with a secret anyone can read on GitHub, and anyone holding it
can redeem the BFF's codes and refresh tokens at the provider (RFC 6749 §2.3.1, §10.1). A development flag
(``BFF_ALLOW_DEV_SECRET``, ``AUTH_ALLOW_DEV_SECRET``) lets one through, with a warning; ``bff stack`` makes a random
secret of its own.
"""

from __future__ import annotations

import logging

from servicekit.settings import SettingsError

log = logging.getLogger(__name__)

MIN_LENGTH = 16  # characters; as AUTH_FORM_SECRET
# The placeholders this repository ships (docker-compose.yml's fallback, deploy/k8s/secrets.example.yaml), and the
# commonest stand-ins.
WELL_KNOWN = frozenset(
    {
        "dev-only-change-me-0123456789abcdef",
        "replace-with-a-long-random-secret",
        "change-me",
        "changeme",
        "secret",
        "password",
        "client-secret",
        "client_secret",
    }
)
ADVICE = "set a long random value (python -c 'import secrets; print(secrets.token_urlsafe(32))')"


def weakness(secret: str) -> str | None:
    """Why ``secret`` must not be used in production, or None."""
    if not secret:
        return "empty"
    if secret.strip().lower() in WELL_KNOWN:
        return "a well-known placeholder"
    if len(secret) < MIN_LENGTH:
        return f"shorter than {MIN_LENGTH} characters"
    return None


def require_strong(name: str, secret: str, *, allow_dev: bool, flag: str) -> None:
    """Raise :class:`SettingsError` naming ``name`` (and ``flag``) for a weak secret, unless ``allow_dev``."""
    reason = weakness(secret)
    if reason is None:
        return
    if allow_dev:
        log.warning("%s is %s: allowed by %s, for development only", name, reason, flag)
        return
    raise SettingsError(f"{name} is {reason}: {ADVICE}, or set {flag}=1 for development")
