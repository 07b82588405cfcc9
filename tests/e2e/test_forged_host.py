"""No service builds a redirect from the request's Host header (issue #10 item 9b): every Location comes from the
configured public URLs (BFF_PUBLIC_URL, AUTH_ISSUER, registered redirect URIs), on real sockets with a forged Host."""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from tests.auth_server.helpers import form_of
from tests.e2e.conftest import PASSWORD

pytestmark = pytest.mark.anyio

EVIL = {"Host": "evil.test"}


async def test_a_forged_host_never_becomes_a_redirect(stack_factory: Any) -> None:
    stack = stack_factory()
    probes = {
        # Starlette's trailing-slash redirect was absolute and built from Host: http://evil.test/oauth/authorize
        stack.auth_url: ["/oauth/authorize/", "/register/", "/users/", "/oauth/token/", "/.well-known/jwks.json/"],
        stack.bff_url: ["/bff/login/", "/bff/user/", "/bff/logout/", "/static", "/healthz/"],
        stack.rs_url: ["/notes/", "/me/", "/ping/"],
    }
    async with httpx.AsyncClient(timeout=10) as client:
        for base, paths in probes.items():
            for path in paths:
                response = await client.get(base + path, headers=EVIL)
                assert "evil.test" not in response.headers.get("location", ""), (base, path)
                assert not response.is_redirect, (base, path, response.status_code)
                assert response.status_code < 500

        # A whole login, logout included, with the forged Host on every request: each Location is a configured URL.
        user = {"username": "hosty", "password": PASSWORD}
        assert (await client.post(stack.auth_url + "/users", json=user)).status_code == 201
        browser = stack.browser()  # keeps the BFF's __Host- cookies over plain http, as a browser on localhost does
        start = await browser.request("GET", "/bff/login", csrf=False, headers=EVIL)
        assert start.headers["location"].startswith(stack.auth_url + "/oauth/authorize?")
        page = await client.get(start.headers["location"], headers=EVIL)
        form = form_of(page.text)
        assert form.action is not None and form.action.startswith(stack.auth_url)  # the form posts to the issuer
        posted = await client.post(
            urljoin(str(page.url), form.action),
            data={**form.fields, "username": "hosty", "password": PASSWORD},
            headers=EVIL,
        )
        assert posted.headers["location"].startswith(stack.bff_url + "/bff/callback?")
        callback = await browser.request("GET", posted.headers["location"], csrf=False, headers=EVIL)
        assert callback.status_code == 302 and callback.headers["location"] == "/"  # a path of our own
        user_info = await browser.request("GET", "/bff/user", headers=EVIL)
        ended = await browser.request("GET", user_info.json()["logout_url"], csrf=False, headers=EVIL)
        assert ended.status_code == 302
        assert ended.headers["location"].startswith((stack.auth_url + "/", stack.bff_url + "/"))

        register = await client.get(stack.auth_url + "/register", params={"next": "/oauth/authorize?x=1"}, headers=EVIL)
        signup = form_of(register.text)
        assert signup.action == stack.auth_url + "/register"
        created = await client.post(
            signup.action, data={**signup.fields, "username": "hosty2", "password": PASSWORD}, headers=EVIL
        )
        assert created.status_code == 303
        assert created.headers["location"] == stack.auth_url + "/oauth/authorize?x=1"
