"""The BFF's own origin, which CSRF and WebSocket handshakes compare a browser's ``Origin`` with, is the RFC 6454 §6.2
serialization of ``BFF_PUBLIC_URL``: what a browser sends. A public URL spelled with its default port, upper case or
user info must not make every POST and every WebSocket of the site 403 (found attacking the integrated stack)."""

from __future__ import annotations

import pytest

from bff import csrf
from bff.settings import Settings


@pytest.mark.parametrize(
    ("public_url", "origin"),
    [
        ("https://app.example", "https://app.example"),
        ("https://App.EXAMPLE:443", "https://app.example"),
        ("HTTP://app.example:80/base", "http://app.example"),
        ("http://app.example:8000", "http://app.example:8000"),
        ("https://app.example:8443", "https://app.example:8443"),
        ("http://[::1]:80", "http://[::1]"),
    ],
)
def test_public_origin_is_what_a_browser_sends(public_url: str, origin: str) -> None:
    settings = Settings.from_env({"BFF_CLIENT_SECRET": "s", "BFF_PUBLIC_URL": public_url})
    assert settings.public_origin == origin
    ours = settings.public_origin.encode()
    headers = [(b"origin", origin.encode()), (b"x-csrf", b"1")]
    assert csrf.allowed("POST", "/api/notes/x", headers, ours)
    # and still nothing else: another port, scheme or host, "null", a trailing slash
    for foreign in (origin + ":1", origin.replace("http", "ws", 1), origin + ".evil", "null", origin + "/"):
        assert not csrf.allowed("POST", "/api/notes/x", [(b"origin", foreign.encode()), (b"x-csrf", b"1")], ours)
