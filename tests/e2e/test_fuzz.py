"""Malformed input thrown at every endpoint of the three services, on real sockets: never a 500, never a traceback
(issue #10: "make finding these our own habit").

A seeded generator (reproducible: the failing case is printed) mixes known troublemakers — NUL, lone surrogates,
Unicode digits, overlong UTF-8, dot segments, deep JSON, huge values — into paths, query parameters, headers, cookies,
tokens and bodies (form, JSON, garbage), with and without a live session. 502/503/504 are allowed (an upstream or the
auth server may legitimately be refused something), 500 never. ``FUZZ_SEED`` and ``FUZZ_CASES`` change the run."""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.test_spa import SPA
from tests.e2e.conftest import CLIENT_SECRET, Stack

pytestmark = pytest.mark.anyio

CASES = int(os.environ.get("FUZZ_CASES", "300"))  # random cases, after the corpus of ~820
SEED = int(os.environ.get("FUZZ_SEED", "10"))
BFF_PATHS = [
    "/bff/login",
    "/bff/callback",
    "/bff/user",
    "/bff/logout",
    "/bff/auth",
    "/bff/backchannel",
    "/bff/sessions",
    "/bff/sessions/AAAAAAAAAAAAAAAAAAAAAA",
    "/bff/sessions/%2e%2e",
    "/api/notes/notes",
    "/api/notes/me",
    "/api/admins/me",  # a route with require (DESIGN §11): the fuzzing user lacks the claim, 403 insufficient_claims
    "/api/vault/me",  # a route with acr (DESIGN §14): a password session gets 401 with a step_up_url
    "/api/notes/%2e%2e/x",
    "/api/nope/x",
    "/",
    "/readyz",
    # the frontend (DESIGN §11): a built SPA behind BFF_LOGIN_REQUIRED (docs_src/your_spa/dist)
    "/orders/7",
    "/assets/index-BdX3k9aZ.js",
    "/assets/index-Zz9Zz9Zz.js",
    "/index.html",
    "/assets/",
    "/.env",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/assets/..%2f..%2findex.html",
    "/bff/nope",
]
AUTH_PATHS = [
    "/oauth/authorize",
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/introspect",
    "/oauth/logout",
    "/oauth/revocations",
    "/oauth/par",
    "/userinfo",
    "/register",
    "/users",
    "/.well-known/openid-configuration",
    "/account",
]
RS_PATHS = ["/me", "/notes", "/notes/x", "/ping"]
FIELDS = ["state", "code", "return_to", "sid", "since", "token", "client_id", "redirect_uri", "max_age", "prompt",
          "grant_type", "refresh_token", "code_verifier", "username", "password", "form_token", "id_token_hint",
          "response_type", "code_challenge", "scope", "nonce", "resource", "logout_token", "text", "request_uri",
          "post_logout_redirect_uri", "code_challenge_method", "acr_values", "otp", "recovery_code", "passkey",
          "credential", "action", "step", "claims"]  # fmt: skip
FORM = b"application/x-www-form-urlencoded"
HEADERS = ["Content-Type", "Origin", "X-CSRF", "Authorization", "Cookie", "X-Original-URI", "X-Original-Method",
           "DPoP", "X-Request-ID", "Accept", "Content-Encoding", "X-Forwarded-For", "Upgrade",
           "X-Auth-Request-User", "X-Auth-Request-Groups", "Sec-Fetch-Mode", "If-None-Match", "If-Modified-Since",
           "Range", "If-Range", "Sec-WebSocket-Protocol", "traceparent", "tracestate"]  # fmt: skip


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).rstrip(b"=").decode()


ATOMS = [
    "", "\x00", "%00", "%ff", "%c0%ae", "%u002e", "..", "%2e%2e", "%252e", "..;", "\\", "\u00e9", "\ud800", "\u00b2",
    "\u0661", "[" * 4000, '{"a":' * 600, "a" * 5000, "=", "&", ";", ",", '"', "<script>", "-1", "1e999", "NaN",
    "null", "true", "0x10", "e30.e30.e30", _b64("[" * 3000) + ".e30.AAAA", "Bearer x", "Basic " + _b64("bff:x"),
    "DPoP " + _b64('{"typ":"dpop+jwt","jwk":' + "[" * 2000) + ".e30.A", "\u00b2." + "A" * 43, "A" * 43,
    "urn:ietf:params:oauth:request_uri:", "urn:ietf:params:oauth:request_uri:A%00",
]  # fmt: skip


# Whole JSON values (bodies, or field values): deep nesting, lone surrogates, Unicode digits, NUL, huge, odd numbers.
TROUBLE = ["[" * 3000, '{"a":' * 1500, '"\\ud800"', '"a\\udfffb"', '"\u00b2"', '"\u0661\u0662"', '"\\u0000"',
           '"' + "a" * 3000 + '"', "1e999", '"%c0%ae%u002e..%2f..;"']  # fmt: skip
DEEP_JWT = _b64("[" * 3000) + ".e30.AAAA"
HEADER_TROUBLE = [
    {"Authorization": "Bearer " + DEEP_JWT},
    {"Authorization": "Bearer e30." + _b64('{"a":' * 1500) + ".AAAA"},
    {"Authorization": "DPoP " + DEEP_JWT, "DPoP": _b64('{"typ": "dpop+jwt", "jwk": ' + "[" * 2000) + ".e30.A"},
    {"Authorization": "Basic " + _b64("bff:\ud800")},
    {"Cookie": "__Host-session=" + "\u00e9" * 43 + "; __Host-bff-login-AAAAAAAAAAAA=" + "\u00b2" * 300},
    {"X-Original-URI": "/api/notes/%u002e%u002e/x", "X-Original-Method": "\u00e9"},
    {"Content-Length": "\u00b2", "DPoP-Nonce": "\u0661"},
    {"X-Original-URI": "/api/admins/me", "X-Auth-Request-Groups": "admin,\u00e9", "X-Auth-Request-User": "\u0661"},
    # W3C trace context (DESIGN §12): a broken traceparent starts a new trace, never a 500 nor a log injection
    {"traceparent": "00-" + "\u0661" * 32 + "-" + "0" * 16 + "-01\x7f{", "tracestate": "\u00e9=" + "x" * 9000},
    {"traceparent": "ff-" + "A" * 32 + "-" + "B" * 16 + "-zz", "X-Request-ID": "a\x7fb" + "\u00e9" * 200},
]
JSON_PATHS = {"/users", "/notes", "/api/notes/notes", "/bff/backchannel"}


class Fuzzer:
    def __init__(self, rng: random.Random, session: str, urls: dict[str, str]) -> None:
        self.rng = rng
        self.session = session
        self.urls = urls

    def atom(self) -> str:
        return "".join(self.rng.choice(ATOMS) for _ in range(self.rng.randint(1, 3)))

    @staticmethod
    def url_safe(text: str) -> str:
        # Percent-encode what no client would send raw (httpx refuses it), keeping the troublemakers' bytes.
        return "".join(
            c if 32 < ord(c) < 127 else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")) for c in text
        )

    def corpus(self) -> Iterator[tuple[str, str, dict[str, bytes], bytes | None]]:
        """Every endpoint, POSTed each known troublemaker as a whole JSON body and in every field of a form (and of a
        JSON object where JSON is expected), and queried with it in every field."""
        for service, paths in (("bff", BFF_PATHS), ("auth", AUTH_PATHS), ("rs", RS_PATHS)):
            headers = {"X-CSRF": b"1", "Cookie": self.session.encode()} if service == "bff" else {}
            for path in paths:
                for atom in TROUBLE:
                    url = self.urls[service] + self.url_safe(path)
                    bodies = [(atom, b"application/json"), ("&".join(f"{k}={atom}" for k in FIELDS), FORM)]
                    if path in JSON_PATHS:
                        bodies.append(("{" + ", ".join(f'"{k}": {atom}' for k in FIELDS) + "}", b"application/json"))
                    for body, content_type in bodies:
                        yield (
                            "POST",
                            url,
                            {**headers, "Content-Type": content_type},
                            body.encode("utf-8", "surrogatepass"),
                        )
                    query = "&".join(f"{k}={atom.strip(chr(34))}" for k in FIELDS)
                    yield "GET", self.url_safe(url + "?" + query), headers, None
                for extra in HEADER_TROUBLE:
                    raw = {k: v.encode("utf-8", "surrogatepass") for k, v in extra.items()}
                    yield "GET", self.urls[service] + self.url_safe(path), {**headers, **raw}, None

    def pushed(self) -> Iterator[tuple[str, str, dict[str, bytes], bytes | None]]:
        """PAR (RFC 9126), authenticated, so the pushed request itself is parsed: a valid request with one field at
        a time made a troublemaker; and the authorization endpoint given each troublemaker as its request_uri."""
        auth = {"Authorization": b"Basic " + base64.b64encode(f"bff:{CLIENT_SECRET}".encode()), "Content-Type": FORM}
        valid = {"response_type": "code", "client_id": "bff", "redirect_uri": self.urls["bff"] + "/bff/callback",
                 "scope": "openid", "state": "s", "code_challenge": "A" * 43, "code_challenge_method": "S256",
                 "prompt": "login", "max_age": "0", "nonce": "n", "resource": "notes"}  # fmt: skip
        yield "POST", self.urls["auth"] + "/oauth/par", auth, "&".join(f"{k}={v}" for k, v in valid.items()).encode()
        for field, atom in itertools.product(valid, [*TROUBLE, *ATOMS]):
            body = "&".join(f"{k}={atom if k == field else v}" for k, v in valid.items())
            yield "POST", self.urls["auth"] + "/oauth/par", auth, self.url_safe(body).encode()
        for atom in ATOMS:
            query = "client_id=bff&request_uri=" + atom
            yield "GET", self.url_safe(self.urls["auth"] + "/oauth/authorize?" + query), {}, None

    def sessions(self) -> Iterator[tuple[str, str, dict[str, bytes], bytes | None]]:
        """Your sessions (DESIGN §14): every troublemaker as the session id to end, with the live session; then the
        list is read (it must still answer 200: nothing above ended the fuzzing session)."""
        headers = {"X-CSRF": b"1", "Cookie": self.session.encode()}
        for atom in [*ATOMS, *TROUBLE]:
            for method in ("DELETE", "GET", "POST"):
                yield method, self.urls["bff"] + "/bff/sessions/" + self.url_safe(atom), headers, None
        yield "DELETE", self.urls["bff"] + "/bff/sessions", headers, None  # the others: there are none
        yield "GET", self.urls["bff"] + "/bff/sessions?" + self.url_safe("id=" + self.atom()), headers, None

    def case(self) -> tuple[str, str, dict[str, bytes], bytes | None]:
        rng = self.rng
        service = rng.choice(["bff", "bff", "auth", "rs"])
        path = rng.choice({"bff": BFF_PATHS, "auth": AUTH_PATHS, "rs": RS_PATHS}[service])
        query = "&".join(f"{rng.choice(FIELDS)}={self.atom()}" for _ in range(rng.randint(0, 4)))
        headers: dict[str, str] = {}
        if service == "bff" and rng.random() < 0.7:
            headers.update({"X-CSRF": "1", "Cookie": self.session})
        for name in rng.sample(HEADERS, rng.randint(0, 3)):
            headers[name] = self.atom()[:3000]
        method = rng.choice(["GET", "GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
        body = None
        if method not in ("GET", "HEAD"):
            kind = rng.choice(["form", "json", "raw"])
            fields = {rng.choice(FIELDS): self.atom() for _ in range(rng.randint(0, 4))}
            if kind == "form":
                text = "&".join(f"{k}={v}" for k, v in fields.items())
            elif kind == "json":  # string values escaped as JSON does ("\ud800"), or raw ones (deep, NaN)
                values = [json.dumps(v) if rng.random() < 0.6 else v for v in fields.values()]
                text = "{" + ", ".join(f'"{k}": {v}' for k, v in zip(fields, values, strict=True)) + "}"
                text = text if rng.random() < 0.8 else self.atom() + text
            else:
                text = self.atom()
            body = text.encode("utf-8", "surrogatepass")
            if rng.random() < 0.85:
                headers["Content-Type"] = {
                    "form": "application/x-www-form-urlencoded",
                    "json": "application/json",
                    "raw": rng.choice(["text/plain", "multipart/form-data; boundary=x", "application/json"]),
                }[kind]
        url = self.urls[service] + self.url_safe(path + ("?" + query if query else ""))
        raw = {k: v.encode("utf-8", "surrogatepass") for k, v in headers.items()}
        return method, url, raw, body


async def test_malformed_input_everywhere_is_never_a_500(stack_factory: Any) -> None:
    # /bff/auth fuzzed past its peer check; a rule route, and every claim kept (none of them a problem to answer)
    stack: Stack = stack_factory(
        BFF_TRUSTED_PROXIES="127.0.0.1/32",
        BFF_FRONTEND=str(SPA),
        BFF_LOGIN_REQUIRED="true",
        BFF_USER_CLAIMS="preferred_username,name,email,groups,sub,sid,nonce,aud",
        extra_routes={
            "admins": {"require": {"groups": ["admin"], "email_verified": [True]}},
            "vault": {"acr": "mfa", "max_age": 300},  # DESIGN §14: step-up before the upstream
        },
    )
    browser = stack.browser()
    await stack.login(browser)
    session = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    refused = await browser.request("GET", "/api/admins/me")  # the rule's route refuses this user (no groups claim)
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_claims", refused.text
    fuzzer = Fuzzer(random.Random(SEED), session, {"bff": stack.bff_url, "auth": stack.auth_url, "rs": stack.rs_url})
    sent, statuses = 0, set()
    cases = itertools.chain(fuzzer.corpus(), fuzzer.pushed(), fuzzer.sessions(), (fuzzer.case() for _ in range(CASES)))
    async with httpx.AsyncClient(timeout=15) as client:
        for method, url, headers, body in cases:
            try:
                response = await client.request(method, url, headers=headers, content=body)
            except (httpx.LocalProtocolError, httpx.InvalidURL, UnicodeEncodeError):
                continue  # refused by the client library before anything was sent
            except httpx.RemoteProtocolError:
                continue  # the server refused the bytes themselves (h11): not an answer to judge
            sent += 1
            statuses.add(response.status_code)
            broken = response.status_code in (500, 501) or response.status_code >= 505 or "Traceback" in response.text
            assert not broken, (method, url[:300], {k: v[:80] for k, v in headers.items()}, body and body[:200],
                                response.status_code, response.text[:300])  # fmt: skip
        assert sent > CASES and {200, 201, 400, 401, 403, 404, 405} <= statuses, (sent, statuses)
        for url in (stack.bff_url, stack.auth_url, stack.rs_url):
            metrics = (await client.get(url + "/metrics")).text
            assert 'status="500"' not in metrics, url


async def test_second_factor_and_step_up_inputs_are_never_a_500(stack_factory: Any) -> None:
    """DESIGN §14's new inputs, past their guards: /account's actions with a signed-in session and a valid form token
    (passkey registration with garbage credentials before any factor exists, then a TOTP), the second factor's step
    of /oauth/authorize with a valid form (every troublemaker as otp, recovery_code, passkey), and /bff/login's
    acr_values and max_age. 4xx (429 once the throttle closes) is fine; a 500 never."""
    import pyotp

    from tests.auth_server.helpers import form_of

    stack: Stack = stack_factory()
    browser = stack.browser()
    await stack.login(browser, username="fuzz2fa")
    values = [*ATOMS, *TROUBLE, json.dumps({"response": {"clientDataJSON": _b64('{"challenge":' + "[" * 3000)}})]
    values.append(json.dumps({"id": "x", "response": {"clientDataJSON": _b64(json.dumps({"challenge": "AAAA"}))}}))
    statuses: set[int] = set()
    async with httpx.AsyncClient(timeout=15, base_url=stack.auth_url) as idp:

        async def post(path: str, data: dict[str, str]) -> httpx.Response:
            body = "&".join(f"{k}={Fuzzer.url_safe(v)}" for k, v in data.items())
            response = await idp.post(path, content=body.encode(), headers={"Content-Type": FORM.decode()})
            statuses.add(response.status_code)
            broken = response.status_code >= 500 or "Traceback" in response.text
            assert not broken, (path, {k: v[:80] for k, v in data.items()}, response.status_code, response.text[:300])
            return response

        async def token() -> str:
            return form_of((await idp.get("/account")).text).fields["form_token"]

        signed_in = await post(
            "/account", {"form_token": await token(), "action": "login", "username": "fuzz2fa", "password": "x" * 12}
        )
        assert signed_in.status_code == 400  # a wrong password first; then the right one
        from tests.e2e.conftest import PASSWORD

        assert (
            await post(
                "/account",
                {"form_token": await token(), "action": "login", "username": "fuzz2fa", "password": PASSWORD},
            )
        ).status_code == 303
        form_token = await token()
        for value in values:
            for action, field in (("passkey-add", "credential"), ("totp-confirm", "otp"), ("verify", "passkey")):
                await post("/account", {"form_token": form_token, "action": action, field: value})
            await post("/account", {"form_token": form_token, "action": value})
        started = await post("/account", {"form_token": form_token, "action": "totp-start"})
        secret = started.text.split('id="totp-secret">', 1)[1].split("<", 1)[0]
        on = await post(
            "/account", {"form_token": form_token, "action": "totp-confirm", "otp": pyotp.TOTP(secret).now()}
        )
        assert "Authenticator app turned on" in on.text

        start = await browser.request("GET", "/bff/login?acr_values=mfa", csrf=False)
        page = await idp.get(start.headers["location"])
        fields = form_of(page.text[page.text.index('id="otp-form"') :].join(["<form ", ""])).fields
        for value in values:
            for field in ("otp", "recovery_code", "passkey"):
                await post("/oauth/authorize", {**fields, field: value})
    assert 429 in statuses and 400 in statuses, statuses
    for query in (
        "acr_values=" + "%C2%B2",
        "max_age=" + "9" * 30,
        "acr_values=mfa&max_age=%00",
        "acr_values=" + "a" * 300,
    ):
        response = await browser.request("GET", "/bff/login?" + query, csrf=False)
        assert response.status_code == 400, (query, response.text)
