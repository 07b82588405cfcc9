"""DESIGN §9, DPoP end to end: BFF (with BFF_DPOP_KEY_FILE) → real auth server → real resource server. A token a
resource server could steal or log is useless without the BFF's key; a nonce challenge costs the browser nothing;
replicas sharing the key use each other's tokens."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.types import ASGIApp, Receive, Scope, Send

from bff.app import create_app as create_bff
from bff.settings import Settings as BffSettings
from resource_server.app import create_app as create_rs
from resource_server.settings import Settings as RSSettings
from resource_server.verifier.dpop import jwk_thumbprint
from resource_server.verifier.testing import DPoPKey
from tests.conftest import free_port
from tests.e2e.conftest import Stack, wait_ready

pytestmark = pytest.mark.anyio


class Recorder:
    """In front of a resource server: keeps the Authorization and DPoP headers of every request it passes on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in ("/readyz", "/healthz"):
            headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in (b"authorization", b"dpop")}
            self.seen.append({"path": scope["path"], **headers})
        await self.app(scope, receive, send)


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "dpop.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.fixture
def dpop_stack(stack_factory: Any, server_factory: Any, tmp_path: Path) -> tuple[Stack, Recorder, list[str]]:
    """The stack with a recording resource server that demands DPoP nonces, and two BFF replicas sharing one key."""
    stack: Stack = stack_factory(bff_thread=False)
    recorder = Recorder(
        create_rs(
            RSSettings.from_env(
                {
                    "RS_ISSUER": stack.auth_url,
                    "RS_AUDIENCE": "notes",
                    "REDIS_URL": stack.redis_url,
                    "RS_DPOP_NONCE_SECRET": "rs-nonce-secret-0123456789",
                }
            )
        )
    )
    rs = server_factory(recorder)
    wait_ready(rs.url)
    env = {
        **stack.bff_env,
        "BFF_DPOP_KEY_FILE": str(key_file(tmp_path)),
        "BFF_ROUTES": json.dumps({"notes": rs.url}),
        "BFF_TRUSTED_PROXIES": "127.0.0.1/32",  # the test client asks /bff/auth as the proxy would (opt-in)
    }
    urls = []
    for port in (int(stack.bff_url.rsplit(":", 1)[1]), free_port()):
        server_factory(create_bff(BffSettings.from_env(env)), port)
        urls.append(f"http://127.0.0.1:{port}")
        wait_ready(urls[-1])
    stack.rs_url = rs.url
    return stack, recorder, urls


async def test_dpop_round_trip_nonce_challenge_and_two_replicas(dpop_stack: Any) -> None:
    stack, recorder, (first, second) = dpop_stack
    browser = stack.browser(first)
    assert (await stack.login(browser)).status_code == 302  # the auth server's nonce challenge was answered

    me = await browser.request("GET", "/api/notes/me")
    assert me.status_code == 200, me.text
    # the resource server's nonce challenge, answered invisibly: two upstream requests, one browser request
    assert [s["path"] for s in recorder.seen] == ["/me", "/me"]
    challenged, answered = recorder.seen
    token = answered["authorization"].removeprefix("DPoP ")
    assert answered["authorization"].startswith("DPoP ") and "nonce" in claims_of(answered["dpop"])
    assert "nonce" not in claims_of(challenged["dpop"])
    header = json.loads(base64.urlsafe_b64decode(answered["dpop"].split(".")[0] + "=="))
    assert claims_of(token)["cnf"] == {"jkt": jwk_thumbprint(header["jwk"])}  # bound to the BFF's key

    # the nonce is remembered: the next call costs one upstream request
    assert (await browser.request("POST", "/api/notes/notes", json={"text": "bound"})).status_code == 201
    assert len(recorder.seen) == 3

    # the other replica, with the same cookie, sends the very same token (no refresh), signed with the shared key
    other = stack.browser(second)
    other.cookies.update(browser.cookies)
    listed = await other.request("GET", "/api/notes/notes")
    assert listed.status_code == 200 and "bound" in listed.text
    proofs = [s for s in recorder.seen[3:] if s["path"] == "/notes"]
    assert proofs[-1]["authorization"] == f"DPoP {token}"
    assert stack.gate.refreshes == 0


async def test_a_stolen_token_is_useless_at_the_resource_server(dpop_stack: Any) -> None:
    stack, recorder, (first, _) = dpop_stack
    browser = stack.browser(first)
    await stack.login(browser)
    assert (await browser.request("GET", "/api/notes/me")).status_code == 200
    stolen = recorder.seen[-1]
    token, proof = stolen["authorization"].removeprefix("DPoP "), stolen["dpop"]
    me, notes = stack.rs_url + "/me", stack.rs_url + "/notes"
    thief = DPoPKey()
    async with httpx.AsyncClient(timeout=10) as http:
        attempts = {
            "as a bearer token": {"Authorization": f"Bearer {token}"},
            "without a proof": {"Authorization": f"DPoP {token}"},
            "with the replayed proof": {"Authorization": f"DPoP {token}", "DPoP": proof},
            "with its proof at another URL": {"Authorization": f"DPoP {token}", "DPoP": proof},
            "with a proof by another key": {"Authorization": f"DPoP {token}", "DPoP": thief.proof("GET", me, token)},
        }
        for name, headers in attempts.items():
            url = notes if name == "with its proof at another URL" else me
            response = await http.get(url, headers=headers)
            assert response.status_code == 401, (name, response.text)
            expected = "invalid_token" if name == "as a bearer token" else "invalid_dpop_proof"
            if name == "with a proof by another key":
                expected = "use_dpop_nonce"  # its proof has no nonce yet: refused before the key is even compared
            assert response.json()["error"] == expected, (name, response.json())
        # the thief's own proof with the server's nonce: still refused (the key is not the token's)
        nonce = (await http.get(me, headers=attempts["with a proof by another key"])).headers.get("dpop-nonce")
        forged = {"Authorization": f"DPoP {token}", "DPoP": thief.proof("GET", me, token, nonce=nonce)}
        response = await http.get(me, headers=forged)
        assert response.status_code == 401 and response.json()["error"] == "invalid_dpop_proof"
    assert (await browser.request("GET", "/api/notes/me")).status_code == 200  # the rightful owner is unaffected


async def test_forward_auth_answers_with_a_proof_for_the_upstream_request(dpop_stack: Any) -> None:
    stack, recorder, (first, _) = dpop_stack
    browser = stack.browser(first)
    await stack.login(browser)
    assert (await browser.request("GET", "/api/notes/me")).status_code == 200  # the BFF learns the upstream nonce
    answer = await browser.request(
        "GET", "/bff/auth", headers={"X-Original-URI": "/api/notes/me?x=1", "X-Original-Method": "GET"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["authorization"].startswith("DPoP ")
    assert claims_of(answer.headers["dpop"])["htu"] == stack.rs_url + "/me"
    async with httpx.AsyncClient(timeout=10) as http:  # what nginx then sends upstream works there, once
        headers = {"Authorization": answer.headers["authorization"], "DPoP": answer.headers["dpop"]}
        assert (await http.get(stack.rs_url + "/me?x=1", headers=headers)).status_code == 200
        assert (await http.get(stack.rs_url + "/me?x=1", headers=headers)).status_code == 401
