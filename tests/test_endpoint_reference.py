"""docs/reference/endpoints.md names every route the three services declare: a route added without its line there
fails here."""

from __future__ import annotations

import re

from tests.conftest import REPO

ROUTE = re.compile(r"(?:Route|WebSocketRoute|Mount|_Template)\(\s*\"(/[^\"]*)\"")


def test_every_route_of_every_service_is_in_the_reference() -> None:
    page = (REPO / "docs" / "reference" / "endpoints.md").read_text()
    named = set(re.findall(r"`(?:[A-Z, ]+ )?(/[^`? ]*)", page))
    declared: dict[str, set[str]] = {}
    for package in ("bff", "auth_server", "resource_server"):
        for source in (REPO / package).glob("*.py"):
            for path in ROUTE.findall(source.read_text()):
                declared.setdefault(path, set()).add(f"{package}/{source.name}")
    assert {"/bff/login", "/oauth/token", "/notes/{note_id}", "/ws/echo", "/bff/auth"} <= set(declared)  # scan works
    missing = sorted(f"{path} ({', '.join(sorted(where))})" for path, where in declared.items() if path not in named)
    assert missing == [], "add these to docs/reference/endpoints.md"
