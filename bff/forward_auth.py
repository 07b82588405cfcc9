"""Forward auth (DESIGN §8): ``/bff/auth`` turns the session cookie into an ``Authorization`` header for a proxy that
moves the bytes itself — nginx ``auth_request``, Traefik ``forwardAuth``, Envoy ``ext_authz`` (HTTP service).

The proxy asks about a request it holds; the answer is about that *original* request:

* its URI from ``X-Original-URI`` (nginx), ``X-Forwarded-Uri`` (Traefik) or the path after ``/bff/auth`` (Envoy's
  ``path_prefix``), its method from ``X-Original-Method`` / ``X-Forwarded-Method`` or the request's own (Envoy);
* believed only from a peer in ``BFF_TRUSTED_PROXIES``: anyone else gets 403, so a forged ``X-Original-URI`` sent
  straight to the BFF learns nothing, least of all a token. The list is empty by default — forward auth is opt-in —
  because the usual same-host reverse proxy (nginx, Caddy, Apache forwarding every path to localhost:8000) makes a
  browser's own call to ``/bff/auth`` arrive from loopback, and the answer's ``Authorization`` would hand the access
  token to any script on the page;
* the route is the URI's ``/api/{route}/…``, refused as the proxy refuses it (unknown 404, dot segments 400), and
  its policy (DESIGN §7) applies as on ``/api/*``: methods (405), which token (user, optional, client, none);
* CSRF is judged on the original method with the original request's headers (the proxies copy them);
* 200 with an empty body — nginx keeps its upstream connection to the BFF alive only for auth answers without a
  body (measured: with a body every subrequest opened a new connection and throughput halved) — carrying
  ``Authorization`` and ``X-Auth-Request-Sub``, and of the session's kept claims (DESIGN §11) ``X-Auth-Request-User``
  (``preferred_username``), ``-Email`` and ``-Groups`` (comma-joined) when present and header-safe (``bff.claims``);
  401 ``login_required`` as JSON, never a redirect; 403 ``insufficient_claims`` when the route's ``require`` fails.
  Every refusal carries its error code in ``X-Auth-Request-Error``, for the proxy to answer the browser with.
  The 200 also carries ``X-Request-ID`` and ``traceparent`` (this answer's span as the parent) for the proxy to set
  on the upstream request, so that the upstream's log lines and spans join the BFF's, as behind its own proxy.

The common case costs one Redis command (the session's GETEX), as a proxied request does.
"""

from __future__ import annotations

from urllib.parse import unquote

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from bff import csrf
from bff.claims import header_value, identity_headers
from bff.dpop import credential_headers
from bff.endpoints import Endpoints, cookie
from bff.errors import BadRequest, CSRFError, NotFound, UntrustedPeer
from bff.paths import climbs
from bff.routes import API_PREFIX
from servicekit.logs import current
from servicekit.proxies import TrustedProxies, peer

PATH = "/bff/auth"
NO_STORE = (b"cache-control", b"no-store")
URI_LIMIT = 8192  # longer original URIs are refused (nginx's own default limit is 8 KiB per header line)


def api_route(uri: str) -> tuple[str, str]:
    """``(route, path)`` of an original request URI ``/api/{route}/…`` (query dropped), the route read percent-decoded
    as the BFF's own proxy and nginx's ``location`` read it. Refused as the proxy refuses a path (``bff.paths``): dot
    segments in every spelling and control characters; and backslashes, which some servers read as ``/``. A proxy in
    front resolving dot segments (RFC 3986 §5.2.4) could otherwise send the request to another route's upstream than
    the one whose policy answered."""
    path = uri.split("?", 1)[0].split("#", 1)[0]
    if climbs(path.encode("latin-1", "replace")):
        raise BadRequest("Dot segments and control characters are not allowed in API paths.")
    try:
        decoded = unquote(path, errors="strict") if "%" in path else path
    except UnicodeDecodeError:
        raise BadRequest("The original URI is not UTF-8.") from None
    if not decoded.startswith("/api/"):
        raise NotFound("Forward auth covers /api/{route}/… only.")
    if "\\" in decoded:
        raise BadRequest("Backslashes are not allowed in API paths.")
    return decoded.split("/")[2], path


class ForwardAuth:
    def __init__(self, endpoints: Endpoints) -> None:
        self.credentials = endpoints.credentials  # the decision /api/* makes: which token a route's upstream gets
        self.cookie_name = endpoints.settings.cookie_name
        self.routes = endpoints.settings.routes
        self.trusted = TrustedProxies(endpoints.settings.trusted_proxies)
        self.origin = endpoints.settings.public_origin.encode("latin-1").lower()
        self.proxy = endpoints.proxy  # its upstream URLs and DPoP key: the answer's proof names the upstream request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a proxy's question; a refusal is raised as a :class:`BFFError` for the app's error handler."""
        headers = await self.decide(scope)
        headers.append((b"content-length", b"0"))  # no body: nginx keeps its connection to the BFF (module doc)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def decide(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """The headers of the 200 answer to a proxy's question (an empty body goes with them); a refusal is raised
        as a :class:`BFFError`. Also what the raw ``/bff/auth`` route answers with (bff.app)."""
        if peer(scope) not in self.trusted:  # None: a peer on the Unix socket (bff serve --uds)
            raise UntrustedPeer(None if self.trusted.any else UntrustedPeer.off)
        uris: set[bytes] = set()
        methods: set[bytes] = set()
        key = upgrade = None
        for name, value in scope["headers"]:
            if name in (b"x-original-uri", b"x-forwarded-uri"):
                uris.add(value)
            elif name in (b"x-original-method", b"x-forwarded-method"):
                methods.add(value.upper())
            elif name == b"sec-websocket-key":
                key = value
            elif name == b"upgrade":
                upgrade = value
        # One answer to "which request?" or none: a browser's own X-Forwarded-Uri slipping past a proxy that sets
        # X-Original-URI (or the reverse) must not choose the route whose policy answers.
        if len(uris) > 1 or len(methods) > 1:
            raise BadRequest("Conflicting original URIs or methods.")
        uri = uris.pop().decode("latin-1") if uris else None
        method = methods.pop().decode("latin-1") if methods else None
        if uri is None:
            # Envoy ext_authz (HTTP service) sends the original method and path under its path_prefix.
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode("latin-1")
            suffix = raw_path[len(PATH) :].decode("latin-1")
            uri = suffix if suffix.startswith("/") else None
            if uri is not None and scope.get("query_string"):
                uri += "?" + scope["query_string"].decode("latin-1")
        elif scope["path"] != PATH:
            raise BadRequest("An original URI both in the path and in a header.")
        if not uri or len(uri) > URI_LIMIT:
            raise BadRequest("The original request's URI is missing (X-Original-URI or X-Forwarded-Uri).")
        method = method or scope["method"]
        context = current()
        if context is not None:  # DESIGN §12: the access line names the request asked about (never its query)
            context.extra = {"original_method": method[:32], "original_uri": uri.split("?", 1)[0]}
        name, path = api_route(uri)
        route = self.routes.get(name)
        if route is None:
            raise NotFound(f"No upstream named {name[:64]!r}.")
        route.check_method(method)  # DESIGN §7: 405 with Allow, and the proxy never calls the upstream
        # An upgrade makes the edge's connection a tunnel to the upstream that nothing checks again (methods, headers,
        # the session's end): only a WebSocket on a route that takes them is one. Any other protocol (h2c), a list
        # of them, or a WebSocket on another route is refused, as the BFF's own proxy refuses it (found attacking:
        # a GET with Upgrade: h2c was approved, and an upstream answering 101 gave the user a raw tunnel).
        protocol = upgrade.strip().lower() if upgrade is not None else b""  # empty: no upgrade asked
        websocket = protocol == b"websocket"
        if protocol and not websocket:
            raise BadRequest("Only a WebSocket upgrade is proxied: send the request without Upgrade (curl: --http1.1).")
        if websocket and not route.websocket:
            raise NotFound(f"The route {route.name!r} takes no WebSockets.")
        if websocket and method != "GET":
            raise BadRequest("A WebSocket handshake is a GET.")
        # Only a real WebSocket handshake (RFC 6455 §4.1: Upgrade: websocket and a Sec-WebSocket-Key; a GET to a route
        # that takes them, as checked above) skips X-CSRF: a GET that merely carries the key is an ordinary request
        # (issue #18 item 7). The proxy passes the original Upgrade header on (deploy/nginx: proxy_set_header Upgrade
        # $http_upgrade on the auth subrequest).
        if websocket and key is not None:
            # A WebSocket handshake: browsers cannot add X-CSRF to it, but always send Origin (RFC 6455 §4.1), and a
            # page cannot forge Sec-WebSocket-Key (a forbidden header name in Fetch). So: our own Origin or nothing.
            if not any(n == b"origin" and v.lower() == self.origin for n, v in scope["headers"]):
                raise CSRFError("A WebSocket handshake needs the BFF's own Origin.")
        elif not csrf.allowed(method, API_PREFIX + name, scope["headers"], self.origin):
            # Judged on the route as read (decoded), never on the raw URI: "/%61pi/notes/" is /api/notes/ to nginx
            # and to us, but not "/api/…" as spelled, and would pass as an unguarded path without X-CSRF.
            raise CSRFError()
        credential = await self.credentials.for_route(route, cookie(Request(scope), self.cookie_name))
        headers = [NO_STORE]
        if credential.token is not None:  # none routes, and optional ones without a session, get no token
            # DESIGN §9: with a DPoP key, the proof names the request the proxy is about to make upstream
            slash = path.find("/", len("/api/"))
            upstream = self.proxy.routes[route.name] + (path[slash:] if slash >= 0 else "/")
            for header, value in credential_headers(self.proxy.dpop, credential.token, method, upstream):
                headers.append((header.lower().encode("latin-1"), value.encode("latin-1")))
        if credential.sub is not None:
            # header-safe and UTF-8 as it is (bff.claims): latin-1 with "?" for the rest made two users' subs one,
            # and a CR or LF in a provider's sub split the answer (the raw route then fell back to the app)
            sub = header_value(credential.sub)
            if sub is not None:
                headers.append((b"x-auth-request-sub", sub))
            if credential.session is not None and credential.session.claims:
                headers += identity_headers(credential.session.claims)  # DESIGN §11; header-safe (bff.claims)
        if context is not None:
            # DESIGN §12: the upstream's log lines join this answer's, as behind the BFF's own proxy: the request's id
            # and its trace with this answer's span as the parent, and the BFF's flag (its sampling decision when it
            # exports spans), not the browser's (BFF_TRUST_TRACEPARENT); the proxy sets both on the upstream request
            headers.append((b"x-request-id", context.request_id.encode("latin-1")))
            headers.append((b"traceparent", context.traceparent().encode("latin-1")))
        return headers
