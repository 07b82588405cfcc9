"""Test doubles of the BFF's neighbours: a small OAuth provider with refresh-token rotation and reuse detection,
and an upstream that checks the bearer token and echoes what it received. Plus a tiny cookie-keeping browser."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "bff"
CLIENT_SECRET = "s3cret-of-the-bff"
_SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Provider:
    """An OAuth 2.0 provider double: auto-approves logins as ``alice``; rotates refresh tokens; reuse kills the
    family (as the real auth server does). ``delay`` slows refreshes; ``answer_delay`` holds a refresh's answer after
    the family was rotated; ``down`` makes the token endpoint 503."""

    issuer: str
    access_ttl: float = 300
    delay: float = 0.0
    answer_delay: float = 0.0
    down: bool = False
    refuse_client: bool = False  # answer every client authentication invalid_client (a secret changed at the provider)
    refreshes: int = 0
    reuse_detected: int = 0
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)  # family -> current refresh token
    refresh_index: dict[str, str] = field(default_factory=dict)  # refresh token -> family
    access: dict[str, float] = field(default_factory=dict)  # access token -> expiry
    revoked: list[str] = field(default_factory=list)
    id_token_override: Callable[[dict[str, Any]], str] | None = None
    post_only: bool = False  # advertise client_secret_post only
    user: str = "alice"  # who the next login is
    end_session: bool = True  # advertise an end_session_endpoint (RP-Initiated Logout)
    next_sid: str | None = None  # the sid (family) of the next login, when a test must know it in advance
    no_refresh: bool = False  # issue no refresh token at login
    resources: list[str | None] = field(default_factory=list)  # the RFC 8707 resource of each refresh grant
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)  # user -> extra ID token claims (DESIGN §11)
    userinfo: dict[str, dict[str, Any]] | None = None  # user -> userinfo claims; None: no userinfo endpoint
    userinfo_calls: int = 0
    users_of: dict[str, str] = field(default_factory=dict)  # the login's access token -> user
    refresh_id_token: bool = False  # answer refreshes with a new ID token (of the user's claims at that time)
    family_user: dict[str, str] = field(default_factory=dict)  # family -> user
    authorize_params: list[dict[str, str]] = field(default_factory=list)  # every /authorize query, in order
    mfa_tokens: set[str] = field(default_factory=set)  # access tokens of logins whose ID token said acr=mfa

    def id_token(self, claims: dict[str, Any]) -> str:
        if self.id_token_override is not None:
            return self.id_token_override(claims)
        return jwt.encode(claims, _SIGNING_KEY, algorithm="RS256", headers={"kid": "k1"})

    def logout_token(self, key: Any = None, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        """A Back-Channel Logout token for the BFF; a claim given as None is left out."""
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(12),
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(
            body, key or _SIGNING_KEY, algorithm="RS256", headers={"kid": "k1", "typ": "logout+jwt", **(headers or {})}
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/revoke", self.revoke, methods=["POST"]),
                Route("/userinfo", self.userinfo_endpoint),
            ]
        )

    async def jwks(self, request: Request) -> Response:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(_SIGNING_KEY.public_key()))
        return JSONResponse({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})

    async def discovery(self, request: Request) -> Response:
        base = self.issuer.rstrip("/")
        methods = ["client_secret_post"] if self.post_only else ["client_secret_basic", "client_secret_post"]
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": base + "/authorize",
                "token_endpoint": base + "/token",
                "revocation_endpoint": base + "/revoke",
                "jwks_uri": base + "/jwks",
                **({"end_session_endpoint": base + "/logout"} if self.end_session else {}),
                **({"userinfo_endpoint": base + "/userinfo"} if self.userinfo is not None else {}),
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": methods,
                "revocation_endpoint_auth_methods_supported": methods,
            }
        )

    async def userinfo_endpoint(self, request: Request) -> Response:
        self.userinfo_calls += 1
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        user = self.users_of.get(token)
        if self.userinfo is None or user is None or token not in self.access:
            return JSONResponse({"error": "invalid_token"}, 401)
        return JSONResponse({"sub": f"sub-{user}", **self.userinfo.get(user, {})})

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        self.authorize_params.append(dict(q))
        assert q["code_challenge_method"] == "S256" and q["response_type"] == "code" and q["client_id"] == CLIENT_ID
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"challenge": q["code_challenge"], "nonce": q["nonce"], "redirect_uri": q["redirect_uri"]}
        return RedirectResponse(q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]}), 302)

    def _pair(self, family: str) -> dict[str, Any]:
        access = "eyJ" + secrets.token_urlsafe(24)  # looks like a JWT, so leak scans find it
        refresh = "eyJ" + secrets.token_urlsafe(24)
        self.access[access] = time.time() + self.access_ttl
        self.families[family] = refresh
        self.refresh_index[refresh] = family
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "scope": "openid notes:read",
        }

    async def token(self, request: Request) -> Response:
        form = await request.form()
        if not self._client_ok(request, form):
            return JSONResponse({"error": "invalid_client"}, 401)
        if form["grant_type"] == "authorization_code":
            grant = self.codes.pop(str(form["code"]), None)
            verifier = str(form.get("code_verifier", ""))
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if grant is None or grant["challenge"] != challenge or grant["redirect_uri"] != form["redirect_uri"]:
                return JSONResponse({"error": "invalid_grant"}, 400)
            family, self.next_sid = self.next_sid or secrets.token_urlsafe(8), None
            self.family_user[family] = self.user
            body = self._pair(family)
            if self.no_refresh:
                del body["refresh_token"]
            body["id_token"] = self.id_token(
                {
                    "iss": self.issuer,
                    "sub": f"sub-{self.user}",
                    "aud": CLIENT_ID,
                    "exp": int(time.time()) + 300,
                    "iat": int(time.time()),
                    "nonce": grant["nonce"],
                    "preferred_username": self.user,
                    "sid": family,
                    **self.claims.get(self.user, {}),
                }
            )
            self.users_of[body["access_token"]] = self.user
            if self.claims.get(self.user, {}).get("acr") == "mfa":
                self.mfa_tokens.add(body["access_token"])
            return JSONResponse(body, headers={"Cache-Control": "no-store"})
        self.refreshes += 1
        resource = form.get("resource")
        self.resources.append(None if resource is None else str(resource))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            return JSONResponse({"error": "temporarily_unavailable"}, 503)
        token = str(form["refresh_token"])
        family = self.refresh_index.get(token)
        if family is None or family not in self.families:
            return JSONResponse({"error": "invalid_grant"}, 400)
        if self.families[family] != token:
            self.reuse_detected += 1
            del self.families[family]  # reuse: the whole login dies
            return JSONResponse({"error": "invalid_grant"}, 400)
        pair = self._pair(family)
        if self.refresh_id_token and resource is None:  # OIDC Core §12.2: a new ID token, the user's claims of now
            user = self.family_user.get(family, self.user)
            now = int(time.time())
            pair["id_token"] = self.id_token(
                {"iss": self.issuer, "sub": f"sub-{user}", "aud": CLIENT_ID, "exp": now + 300, "iat": now,
                 "preferred_username": user, **self.claims.get(user, {})}
            )  # fmt: skip
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        return JSONResponse(pair, headers={"Cache-Control": "no-store"})

    def _client_ok(self, request: Request, form: Any) -> bool:
        if self.refuse_client:
            return False
        auth = request.headers.get("authorization")
        if self.post_only:
            return auth is None and form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
        return auth == "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()

    async def revoke(self, request: Request) -> Response:
        if self.down:
            return JSONResponse({"error": "temporarily_unavailable"}, 503)
        form = await request.form()
        if not self._client_ok(request, form):
            return JSONResponse({"error": "invalid_client"}, 401)
        family = self.refresh_index.get(str(form["token"]))
        if family is not None:
            self.families.pop(family, None)
            self.revoked.append(family)
        return Response(status_code=200)

    def upstream(self) -> Starlette:
        """A resource server double: checks the bearer token against what this provider issued; echoes."""

        async def echo(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            token = auth.removeprefix("Bearer ")
            expiry = self.access.get(token)
            if expiry is None or expiry < time.time():
                return JSONResponse(
                    {"error": "invalid_token"}, 401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
                )
            if request.url.path == "/step-up" and token not in self.mfa_tokens:  # RFC 9470 §3, as a verifier says it
                return JSONResponse(
                    {"error": "insufficient_user_authentication"},
                    401,
                    headers={
                        "WWW-Authenticate": 'Bearer error="insufficient_user_authentication", error_description='
                        '"A different authentication level is required", acr_values="mfa", max_age="300"'
                    },
                )
            body = await request.body()
            headers = dict(request.headers)
            headers["authorization"] = "Bearer <valid, redacted>"  # checked above; never echoed to a browser
            response = JSONResponse(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "query": request.url.query,
                    "headers": headers,
                    "body": body.decode(errors="replace"),
                }
            )
            response.headers.append("set-cookie", "upstream=evil; Path=/")
            response.headers["x-upstream"] = "yes"
            return response

        async def slow(request: Request) -> Response:
            await asyncio.sleep(float(request.query_params.get("s", "2")))
            return JSONResponse({})

        async def big(request: Request) -> Response:
            return Response(b"x" * int(request.query_params.get("n", "1000000")), media_type="application/octet-stream")

        return Starlette(
            routes=[
                Route("/slow", slow),
                Route("/big", big),
                Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            ]
        )


class Browser:
    """Keeps cookies the way a browser would for one site, and records every response it saw."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}
        self.seen: list[httpx.Response] = []

    def _store(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in header.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    async def request(self, method: str, url: str, *, csrf: bool = True, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if csrf:
            headers.setdefault("X-CSRF", "1")
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self.client.request(method, url, headers=headers, **kwargs)
        self._store(response)
        self.seen.append(response)
        return response

    async def login(self, provider_client: httpx.AsyncClient, return_to: str = "/") -> httpx.Response:
        """Follow /bff/login → provider → /bff/callback like a browser does."""
        start = await self.request("GET", "/bff/login", params={"return_to": return_to}, csrf=False)
        assert start.status_code == 302, start.text
        at_provider = await provider_client.get(start.headers["location"])
        assert at_provider.status_code == 302, at_provider.text
        callback = httpx.URL(at_provider.headers["location"])
        return await self.request("GET", callback.raw_path.decode(), csrf=False)

    def leaked(self) -> list[str]:
        """Every place a response showed a JWT (``eyJ….eyJ…``: a JSON header and payload, base64url): bodies,
        headers, redirects. Not "eyJ" alone: a sealed cookie is random base64url, which holds those three letters
        about once in a thousand (CI met one in the login cookie)."""
        found = []
        for r in self.seen:
            if JWT.search(no_hint(r.text)):
                found.append(f"body of {r.request.url}")
            for name, value in r.headers.items():
                if JWT.search(no_hint(value)):
                    found.append(f"header {name} of {r.request.url}")
        return found


JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.")  # a JWS in compact form, by its JSON header and payload


def no_hint(text: str) -> str:
    """``text`` without the value of an ``id_token_hint``: the one token RP-Initiated Logout §2 sends through the
    browser, to the provider's logout (DESIGN §6). Any other token stays visible to the leak scan."""
    return re.sub(r"id_token_hint=[A-Za-z0-9_.%-]+", "id_token_hint=", text)
