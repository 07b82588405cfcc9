"""BFF_ROUTES (DESIGN §7): the short and the object form, and bad configuration failing at start-up with a message
that names the route and the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bff.errors import MethodNotAllowed, NotFound
from bff.routes import Route, parse_routes
from bff.settings import Settings, SettingsError

DESIGN_EXAMPLE = {
    "notes": "http://notes:9001",
    "orders": {
        "url": "http://orders:8080",
        "token": "user",
        "resource": "https://orders.example",
        "methods": ["GET", "POST"],
    },
    "catalog": {"url": "http://catalog:8080", "token": "optional"},
    "reports": {"url": "http://reports:8080", "token": "client", "resource": "https://reports.example"},
    "status": {"url": "http://status:8080", "token": "none"},
    "chat": {"url": "http://chat:8080/", "websocket": True, "timeout": 2.5},
}


def test_design_example_parses() -> None:
    routes = Settings.from_env({"BFF_CLIENT_SECRET": "x", "BFF_ROUTES": json.dumps(DESIGN_EXAMPLE)}).routes
    assert routes["notes"] == Route("notes", "http://notes:9001")  # the short form: a user route, every method
    assert routes["orders"].resource == "https://orders.example" and routes["orders"].methods == {"GET", "HEAD", "POST"}
    assert [routes[n].token for n in ("catalog", "reports", "status")] == ["optional", "client", "none"]
    assert routes["chat"].websocket and routes["chat"].timeout == 2.5 and routes["chat"].url == "http://chat:8080"
    assert [r.needs_session for r in routes.values()] == [True, True, False, True, False, True]


def test_lookup_and_methods() -> None:
    routes = parse_routes(json.dumps(DESIGN_EXAMPLE))
    assert routes.lookup("/api/orders/x/y").name == "orders"
    assert routes.lookup("/api/notes").name == "notes"
    for path in ("/api/nope/x", "/api//x", "/bff/user"):
        with pytest.raises(NotFound):
            routes.lookup(path)
    routes["orders"].check_method("POST")
    with pytest.raises(MethodNotAllowed) as refused:
        routes["orders"].check_method("DELETE")
    assert refused.value.status_code == 405 and refused.value.headers == {"Allow": "GET, HEAD, POST"}
    routes["orders"].check_method("HEAD")  # RFC 9110 §9.3.2: HEAD wherever GET (issue #18 item 8a)
    routes["notes"].check_method("PATCH")  # no list: every method


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ("[]", "BFF_ROUTES must be a non-empty JSON object"),
        ("{", "BFF_ROUTES must be a JSON object"),
        ({"a/b": "http://x"}, "BFF_ROUTES: bad route name 'a/b'"),
        ({"a": 5}, r"BFF_ROUTES\[a\] must be a URL or an object"),
        ({"a": {"token": "user"}}, r"BFF_ROUTES\[a\]\.url is required"),
        ({"a": {"url": "ftp://x"}}, r"BFF_ROUTES\[a\]\.url must be an http\(s\) URL"),
        ({"a": {"url": "http://x", "tokn": "user"}}, r"BFF_ROUTES\[a\] has unknown field 'tokn'"),
        ({"a": {"url": "http://x", "token": "admin"}}, r"BFF_ROUTES\[a\]\.token must be one of user, optional"),
        ({"a": {"url": "http://x", "resource": "https://r#f"}}, r"BFF_ROUTES\[a\]\.resource"),
        ({"a": {"url": "http://x", "resource": ""}}, r"BFF_ROUTES\[a\]\.resource"),
        ({"a": {"url": "http://x", "token": "none", "resource": "r"}}, r"BFF_ROUTES\[a\]\.resource needs a token"),
        ({"a": {"url": "http://x", "methods": []}}, r"BFF_ROUTES\[a\]\.methods must be a non-empty list"),
        ({"a": {"url": "http://x", "methods": "GET"}}, r"BFF_ROUTES\[a\]\.methods must be a non-empty list"),
        ({"a": {"url": "http://x", "methods": ["get"]}}, r"BFF_ROUTES\[a\]\.methods: 'get'"),
        ({"a": {"url": "http://x", "methods": ["TRACE"]}}, r"BFF_ROUTES\[a\]\.methods: 'TRACE'"),
        ({"a": {"url": "http://x", "websocket": "yes"}}, r"BFF_ROUTES\[a\]\.websocket must be true or false"),
        ({"a": {"url": "http://x", "websocket": True, "methods": ["POST"]}}, r"BFF_ROUTES\[a\]\.methods must incl"),
        ({"a": {"url": "http://x", "timeout": 0}}, r"BFF_ROUTES\[a\]\.timeout must be a number"),
        ({"a": {"url": "http://x", "timeout": "5"}}, r"BFF_ROUTES\[a\]\.timeout must be a number"),
        ({"a": {"url": "http://x", "timeout": True}}, r"BFF_ROUTES\[a\]\.timeout must be a number"),
    ],
)
def test_bad_routes_fail_naming_route_and_field(routes: Any, message: str) -> None:
    raw = routes if isinstance(routes, str) else json.dumps(routes)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"BFF_CLIENT_SECRET": "x", "BFF_ROUTES": raw})


def test_a_route_without_resource_beside_scoped_ones_is_named_at_start(caplog: pytest.LogCaptureFixture) -> None:
    # DESIGN §7's own example: "notes" (short form) gets the login's token, whose aud holds every audience of the
    # client — the scoped "orders" resource included — so the notes upstream could replay it at orders.
    raw = {
        "notes": "http://notes:9001",
        "catalog": {"url": "http://catalog:8080", "token": "optional"},
        "orders": {"url": "http://orders:8080", "resource": "https://orders.example"},
        "reports": {"url": "http://reports:8080", "token": "client"},
        "status": {"url": "http://status:8080", "token": "none"},
    }
    with caplog.at_level("WARNING", logger="bff.routes"):
        table = parse_routes(json.dumps(raw))
    assert table.sharing_the_login_token() == ["catalog", "notes"]
    assert "catalog, notes" in caplog.text
    caplog.clear()
    unscoped = {"notes": "http://notes:9001", "live": "http://live:9002"}  # one shared token: nothing to say
    with caplog.at_level("WARNING", logger="bff.routes"):
        assert parse_routes(json.dumps(unscoped)).sharing_the_login_token() == []
    assert caplog.text == ""
