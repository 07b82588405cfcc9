"""Routes as policies (DESIGN §7): what ``BFF_ROUTES`` says about each upstream, parsed once at start-up.

``BFF_ROUTES`` maps a route name to an upstream URL (the short form) or to an object::

    {"notes":   "http://notes:9001",
     "orders":  {"url": "http://orders:8080", "token": "user", "resource": "https://orders.example",
                 "methods": ["GET", "POST"], "timeout": 10},
     "reports": {"url": "http://reports:8080", "token": "client", "resource": "https://reports.example"},
     "status":  {"url": "http://status:8080", "token": "none"},
     "chat":    {"url": "http://chat:8080", "websocket": true},
     "admin":   {"url": "http://admin:8080", "require": {"groups": ["admin"]}}}

``token`` says which credential the upstream gets: ``user`` (the default: the user's token, a session is required),
``optional`` (the user's token when there is a session, nothing otherwise), ``client`` (the BFF's own
client-credentials token; a session is still required, so anonymous callers cannot borrow the app's rights, but the
token never names the user), ``none`` (no token, no session needed). ``resource`` is an RFC 8707 resource indicator:
the route's token is asked for with it and has exactly that ``aud``, so it is good for this upstream alone.
``require`` (DESIGN §11, ``bff.claims``) names claims of the session that must hold one of the listed values, else
403 ``insufficient_claims`` and the upstream is not called.

Everything that decides a request before any upstream is called lives here, for ``/api/*`` and for the forward-auth
endpoint alike: :meth:`RouteTable.lookup` (404), :meth:`Route.check_method` (405 with ``Allow``) and the route's
``rules`` (403, checked in ``bff.credentials`` once the session is read).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bff.claims import Rules, parse_rules
from bff.errors import MethodNotAllowed, NotFound
from servicekit.settings import SettingsError, http_url

log = logging.getLogger(__name__)
ACR_VALUE = re.compile(r"[A-Za-z0-9._:/#-]{1,128}")  # as bff.step_up.ACR_VALUE

TOKEN_POLICIES = ("user", "optional", "client", "none")
FIELDS = frozenset({"url", "token", "resource", "methods", "websocket", "timeout", "require", "acr", "max_age"})
NEVER_PROXIED = frozenset({"TRACE", "TRACK", "CONNECT"})  # RFC 9110 §9.3.6/§9.3.8: refused before any route
COMMON_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")  # Allow of a route without a list
MAX_TIMEOUT = 86_400.0
_NAME = re.compile(r"[A-Za-z0-9._~-]{1,64}")  # one unreserved path segment (RFC 3986 §2.3)
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")  # RFC 9110 §9.1 tokens, upper case as every client sends them
_RESOURCE_MAX = 512
API_PREFIX = "/api/"


@dataclass(frozen=True)
class Route:
    """One upstream and the policy for calling it."""

    name: str
    url: str  # origin and path prefix, no trailing slash
    token: str = "user"  # one of TOKEN_POLICIES
    resource: str | None = None  # RFC 8707 resource indicator: the token's exact aud
    methods: frozenset[str] | None = None  # None: every method (but NEVER_PROXIED)
    websocket: bool = False
    timeout: float | None = None  # seconds to connect and between reads; None: BFF_UPSTREAM_TIMEOUT
    rules: Rules | None = None  # DESIGN §11 ``require``: claims the session must hold, else 403 insufficient_claims
    # DESIGN §14: the login level (acr values, one of which the session's must be) and age (seconds since auth_time)
    # the route needs, else 401 insufficient_user_authentication with a step_up_url (bff.step_up)
    acr: tuple[str, ...] = ()
    max_age: int | None = None

    @property
    def needs_session(self) -> bool:
        """``user`` and ``client`` routes answer 401 login_required without a session."""
        return self.token in ("user", "client")

    @property
    def user_token(self) -> bool:
        """The upstream gets the user's token (when there is a session)."""
        return self.token in ("user", "optional")

    @property
    def allow(self) -> str:
        """The ``Allow`` header of a 405 (RFC 9110 §15.5.6)."""
        return ", ".join(sorted(self.methods if self.methods is not None else COMMON_METHODS))

    def check_method(self, method: str) -> None:
        """Raise 405 (with ``Allow``) for a method outside the route's list, and for TRACE, TRACK and CONNECT on
        every route (they would echo the request, credentials included, or open a tunnel); the upstream is then
        never called."""
        if method in NEVER_PROXIED or (self.methods is not None and method not in self.methods):
            raise MethodNotAllowed(self.allow, f"The route {self.name!r} does not accept {method[:32]}.")


class RouteTable(Mapping[str, Route]):
    """The routes by name, and the lookup of a request path."""

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = dict(routes)

    def __getitem__(self, name: str) -> Route:
        return self._routes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    @staticmethod
    def name_of(path: str) -> str:
        """The route segment of ``/api/{route}/...`` (empty for anything else)."""
        if not path.startswith(API_PREFIX):
            return ""
        return path[len(API_PREFIX) :].split("/", 1)[0]

    def lookup(self, path: str) -> Route:
        """The route of a request path ``/api/{route}/...``; 404 for an unknown one."""
        name = self.name_of(path)
        route = self._routes.get(name)
        if route is None:
            raise NotFound(f"No upstream named {name[:64]!r}.")
        return route

    def sharing_the_login_token(self) -> list[str]:
        """User-token routes without ``resource`` while others have one: they get the login's access token, whose
        ``aud`` is every audience of the client (the scoped routes' resources included), so their upstreams could
        replay it at the scoped routes' — the one-token-per-route promise (DESIGN §7) does not hold for them."""
        user = [r for r in self._routes.values() if r.user_token]
        if not any(r.resource for r in user):
            return []  # no route is scoped: one shared token is the configuration's plain meaning
        return sorted(r.name for r in user if r.resource is None)

    def required_claims(self) -> frozenset[str]:
        """Every claim a route's ``require`` names: kept at login whatever ``BFF_USER_CLAIMS`` says."""
        return frozenset(name for r in self._routes.values() if r.rules is not None for name in r.rules.names)


def _url(where: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise SettingsError(f"{where}.url must be an http(s) URL string")
    return http_url(f"{where}.url", raw, plain=True)


def _route(name: str, spec: Any, var: str) -> Route:
    if not _NAME.fullmatch(name):
        raise SettingsError(f"{var}: bad route name {name[:80]!r} (1-64 letters, digits and '._~-')")
    where = f"{var}[{name}]"
    if isinstance(spec, str):
        return Route(name, _url(where, spec))
    if not isinstance(spec, dict):
        raise SettingsError(f"{where} must be a URL or an object with a url")
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        raise SettingsError(f"{where} has unknown field {unknown[0]!r} (fields: {', '.join(sorted(FIELDS))})")
    if "url" not in spec:
        raise SettingsError(f"{where}.url is required")
    url = _url(where, spec["url"])

    token = spec.get("token", "user")
    if token not in TOKEN_POLICIES:
        raise SettingsError(f"{where}.token must be one of {', '.join(TOKEN_POLICIES)}, got {token!r}")

    resource = spec.get("resource")
    if resource is not None:
        if (
            not isinstance(resource, str)
            or not resource
            or len(resource) > _RESOURCE_MAX
            or "#" in resource
            or any(c.isspace() for c in resource)
        ):
            raise SettingsError(f"{where}.resource must be a resource indicator without fragment (RFC 8707 §2)")
        if token == "none":
            raise SettingsError(f"{where}.resource needs a token: a 'none' route gets no token")

    methods: frozenset[str] | None = None
    if "methods" in spec:
        raw = spec["methods"]
        if not isinstance(raw, list) or not raw or not all(isinstance(m, str) for m in raw):
            raise SettingsError(f"{where}.methods must be a non-empty list of HTTP methods")
        bad = [m for m in raw if not _METHOD.fullmatch(m) or m in NEVER_PROXIED]
        if bad:
            raise SettingsError(
                f"{where}.methods: {bad[0]!r} is not a method the BFF forwards (upper case; never "
                "TRACE, TRACK or CONNECT)"
            )
        # RFC 9110 §9.3.2: HEAD is GET without the body; wherever GET is allowed, so is HEAD (issue #18 item 8a)
        methods = frozenset(raw) | ({"HEAD"} if "GET" in raw else set())

    websocket = spec.get("websocket", False)
    if not isinstance(websocket, bool):
        raise SettingsError(f"{where}.websocket must be true or false")
    if websocket and methods is not None and "GET" not in methods:
        raise SettingsError(f"{where}.methods must include GET: a WebSocket handshake is a GET")

    timeout = spec.get("timeout")
    if timeout is not None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or not 0 < timeout <= MAX_TIMEOUT
        ):
            raise SettingsError(f"{where}.timeout must be a number of seconds in (0, {int(MAX_TIMEOUT)}]")
        timeout = float(timeout)

    rules = None
    if "require" in spec:
        rules = parse_rules(f"{where}.require", spec["require"])
        if token in ("none", "optional"):
            # A rule is about the signed-in user: a 'none' route reads no session, an 'optional' one serves anonymous
            # callers, who hold no claims.
            raise SettingsError(f"{where}.require needs a signed-in user: use token 'user' or 'client', not {token!r}")
    acr: tuple[str, ...] = ()
    if "acr" in spec:
        raw_acr = spec["acr"]
        values = [raw_acr] if isinstance(raw_acr, str) else raw_acr
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and ACR_VALUE.fullmatch(v) for v in values)
        ):
            raise SettingsError(f'{where}.acr must be an acr value or a list of them (e.g. "mfa")')
        acr = tuple(values)
    max_age = spec.get("max_age")
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int) or not 0 <= max_age < 10**9):
        raise SettingsError(f"{where}.max_age must be a whole number of seconds")
    if (acr or max_age is not None) and token in ("none", "optional"):
        raise SettingsError(
            f"{where}.acr and max_age need a signed-in user: use token 'user' or 'client', not {token!r}"
        )
    return Route(name, url, token, resource, methods, websocket, timeout, rules, acr, max_age)


def parse_routes(raw: str, var: str = "BFF_ROUTES") -> RouteTable:
    """Parse ``BFF_ROUTES``; raises SettingsError naming the route and field at fault."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise SettingsError(f"{var} must be a JSON object of route name -> URL or route object") from None
    if not isinstance(data, dict) or not data:
        raise SettingsError(f"{var} must be a non-empty JSON object of route name -> URL or route object")
    table = RouteTable({name: _route(name, spec, var) for name, spec in data.items()})
    shared = table.sharing_the_login_token()
    if shared:
        log.warning(
            "%s: route(s) %s have no resource while others do: they get the login's token, valid at every audience "
            "of the client, which their upstreams could replay at the scoped routes; give them a resource",
            var,
            ", ".join(shared),
        )
    return table
