"""deploy/nginx's edge configuration keeps from an upstream what the BFF's own proxy keeps from it (bff/proxy.py):
the two paths to an upstream (DESIGN §8) must not drift apart when one of them learns of a new header."""

from __future__ import annotations

import re

from bff.proxy import SPOOFABLE
from tests.edge import TEMPLATE


def _api_location() -> str:
    text = TEMPLATE.read_text()
    start = text.index("    location /api/ {")
    return text[start : text.index("\n    location = /_jwt_bff_auth", start)]


def test_every_header_the_bff_drops_is_cleared_or_replaced_by_nginx() -> None:
    block = _api_location()
    set_headers = {name.lower() for name in re.findall(r"^\s*proxy_set_header\s+(\S+)\s", block, re.M)}
    # What the browser sends that the BFF never passes on; nginx must overwrite each (an empty value drops it).
    dropped = {name.decode() for name in SPOOFABLE} | {"cookie", "authorization", "dpop", "x-csrf"}
    assert sorted(dropped - set_headers) == []


def test_nginx_hides_the_upstream_answers_the_bff_drops() -> None:
    hidden = {name.lower() for name in re.findall(r"^\s*proxy_hide_header\s+(\S+);", _api_location(), re.M)}
    assert {"set-cookie", "clear-site-data"} <= hidden
