"""Step-up end to end on real sockets (DESIGN §14, RFC 9470): the sample API's DELETE /notes needs mfa; a password
session gets 401 with a step_up_url; the user, with TOTP enrolled on the auth server's /account, follows it, types a
code (pyotp) and only a code, and the SAME session (same cookie) now passes; the tokens say acr=mfa, amr, auth_time;
a wrong or replayed code is refused."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pyotp
import pytest

from tests.auth_server.helpers import form_of
from tests.bff.doubles import Browser
from tests.e2e.conftest import PASSWORD, Stack, wait_ready

pytestmark = pytest.mark.anyio


async def password_login(stack: Stack, browser: Browser, idp: httpx.AsyncClient, username: str) -> None:
    """Sign up, then log in through the BFF with the password; ``idp`` is the same browser at the auth server."""
    created = await idp.post(stack.auth_url + "/users", json={"username": username, "password": PASSWORD})
    assert created.status_code == 201, created.text
    start = await browser.request("GET", "/bff/login", csrf=False)
    page = await idp.get(start.headers["location"])
    form = form_of(page.text)
    posted = await idp.post(
        urljoin(str(page.url), form.action or ""), data={**form.fields, "username": username, "password": PASSWORD}
    )
    callback = httpx.URL(posted.headers["location"])
    assert (await browser.request("GET", callback.raw_path.decode(), csrf=False)).status_code == 302


async def enrol_totp(stack: Stack, idp: httpx.AsyncClient) -> pyotp.TOTP:
    """On /account (signed in by the SSO cookie of the login above): a new secret, turned on by a code."""
    account = await idp.get(stack.auth_url + "/account")
    token = form_of(account.text).fields["form_token"]
    started = await idp.post(stack.auth_url + "/account", data={"form_token": token, "action": "totp-start"})
    uri = re.search(r'id="totp-uri">(otpauth://[^<]+)<', started.text)
    assert uri is not None, started.text
    secret = parse_qs(urlsplit(uri.group(1).replace("&amp;", "&")).query)["secret"][0]
    totp = pyotp.TOTP(secret)
    token = form_of(started.text).fields["form_token"]
    on = await idp.post(
        stack.auth_url + "/account",
        data={"form_token": token, "action": "totp-confirm", "otp": totp.at(time.time() - 30)},
    )
    assert "Authenticator app turned on" in on.text, on.text
    return totp


def claims_of(token: str) -> dict[str, Any]:
    import base64
    import json

    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def test_step_up_with_totp_upgrades_the_same_session(stack_factory: Any) -> None:
    stack = stack_factory()
    browser = stack.browser()
    async with httpx.AsyncClient(timeout=30) as idp:
        await password_login(stack, browser, idp, "stepper")
        cookie = dict(browser.cookies)
        created = await browser.request("POST", "/api/notes/notes", json={"text": "keep me"})
        assert created.status_code == 201, created.text
        if time.time() % 30 > 25:  # the codes below span three steps: start well inside one
            await asyncio.sleep(30 - time.time() % 30 + 0.1)
        totp = await enrol_totp(stack, idp)

        asked = await browser.request("DELETE", "/api/notes/notes", headers={"Referer": stack.bff_url + "/?notes"})
        assert asked.status_code == 401, asked.text
        body = asked.json()
        assert body["error"] == "insufficient_user_authentication" and body["acr_values"] == "mfa"
        assert body["max_age"] == 300
        assert body["step_up_url"] == "/bff/login?acr_values=mfa&max_age=300&return_to=%2F%3Fnotes"

        start = await browser.request("GET", body["step_up_url"], csrf=False)
        assert start.status_code == 302
        page = await idp.get(start.headers["location"])  # PAR: the level is sealed in the request_uri
        assert page.status_code == 200 and 'name="otp"' in page.text
        assert 'name="password"' not in page.text  # the password is there already: only the second factor is asked
        fields = form_of(page.text[page.text.index('id="otp-form"') :].join(["<form ", ""])).fields
        action = stack.auth_url + "/oauth/authorize"
        wrong = await idp.post(action, data={**fields, "otp": "000000"})
        assert wrong.status_code == 400 and "location" not in wrong.headers
        code = totp.now()
        passed = await idp.post(action, data={**fields, "otp": code})
        assert passed.status_code == 302, passed.text
        callback = httpx.URL(passed.headers["location"])
        done = await browser.request("GET", callback.raw_path.decode(), csrf=False)
        assert done.status_code == 302 and done.headers["location"] == "/?notes", done.text
        assert browser.cookies == cookie  # the same session: no new cookie

        user = (await browser.request("GET", "/bff/user")).json()
        assert user["acr"] == "mfa" and user["amr"] == ["pwd", "otp", "mfa"] and time.time() - user["auth_time"] < 60
        me = (await browser.request("GET", "/api/notes/me")).json()  # what the upstream's token says
        assert me["acr"] == "mfa" and me["amr"] == ["pwd", "otp", "mfa"] and time.time() - me["auth_time"] < 60
        deleted = await browser.request("DELETE", "/api/notes/notes")
        assert deleted.status_code == 204, deleted.text
        assert (await browser.request("GET", "/api/notes/notes")).json() == {"notes": []}

        # the code used above, replayed in a new step-up (max_age=0 asks for a fresh second factor), is refused
        again = await browser.request("GET", "/bff/login?acr_values=mfa&max_age=0&return_to=/", csrf=False)
        page = await idp.get(again.headers["location"])
        fields = form_of(page.text[page.text.index('id="otp-form"') :].join(["<form ", ""])).fields
        replayed = await idp.post(action, data={**fields, "otp": code})
        assert replayed.status_code == 400 and "works once" in replayed.text


async def test_a_websocket_open_before_a_step_up_stays_open(stack_factory: Any, server_factory: Any) -> None:
    """DESIGN §14: a step-up raises the session in place (same cookie, same record), so a WebSocket opened before it
    is not taken for one of an ended session (the record rewritten is no end: a logout's close is 1008)."""
    import aiohttp

    from bff.app import create_app as create_bff
    from bff.settings import Settings as BffSettings
    from tests.e2e.echo import Echo
    from tests.e2e.test_routes import WS, ws_url

    echo = Echo()
    echo_url = server_factory(echo.app(), ws=WS).url
    stack = stack_factory(bff_thread=False, extra_routes={"live": {"url": echo_url, "websocket": True}})
    server_factory(create_bff(BffSettings.from_env(stack.bff_env)), int(stack.bff_url.rsplit(":", 1)[1]), ws=WS)
    wait_ready(stack.bff_url)
    browser = stack.browser()
    async with httpx.AsyncClient(timeout=30) as idp, aiohttp.ClientSession() as sockets:
        await password_login(stack, browser, idp, "talker")
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        if time.time() % 30 > 25:  # the codes below span three steps: start well inside one
            await asyncio.sleep(30 - time.time() % 30 + 0.1)
        totp = await enrol_totp(stack, idp)
        url = ws_url(stack.bff_url, "/api/live/ws/room")
        async with sockets.ws_connect(url, headers={"Cookie": cookie, "Origin": stack.bff_url}) as ws:
            await ws.send_str("before")
            assert (await ws.receive(timeout=5)).data == "echo:before"

            start = await browser.request("GET", "/bff/login?acr_values=mfa&return_to=/", csrf=False)
            page = await idp.get(start.headers["location"])
            fields = form_of(page.text[page.text.index('id="otp-form"') :].join(["<form ", ""])).fields
            passed = await idp.post(stack.auth_url + "/oauth/authorize", data={**fields, "otp": totp.now()})
            assert passed.status_code == 302, passed.text
            callback = httpx.URL(passed.headers["location"])
            assert (await browser.request("GET", callback.raw_path.decode(), csrf=False)).status_code == 302
            assert (await browser.request("GET", "/bff/user")).json()["acr"] == "mfa"  # stepped up, in place

            await asyncio.sleep(1.0)  # longer than an ended session's sockets take to close on any replica
            await ws.send_str("after")
            answer = await ws.receive(timeout=5)
            assert answer.type == aiohttp.WSMsgType.TEXT and answer.data == "echo:after", answer
            assert not ws.closed
        assert len(echo.seen("/ws/room")) == 1  # one handshake: the socket was never reopened
