"""Bad input of every kind gets a clean 4xx (JSON), never the catch-all 500."""

from __future__ import annotations

import pytest

from tests.bff.conftest import Rig

pytestmark = pytest.mark.anyio

GARBAGE = ["", "%", "%00", "%ff%fe", "A" * 5000, "é", "\u202e", "../..", "//", "?", "&&&", "a=b=c", "[]", "{}"]


async def test_garbage_everywhere_is_never_a_500(rig: Rig) -> None:
    browser = await rig.logged_in()
    anonymous = rig.browser()
    seen: set[int] = set()
    for junk in GARBAGE:
        requests = [
            ("GET", f"/bff/login?return_to={junk}", False),
            ("GET", f"/bff/callback?state={junk}&code={junk}", False),
            ("GET", f"/bff/callback?error={junk}", False),
            ("GET", f"/bff/user?{junk}", True),
            ("POST", f"/bff/logout?{junk}", True),
            ("GET", f"/api/{junk}", True),
            ("GET", f"/api/notes/{junk}", True),
            ("PATCH", f"/api/notes/x?{junk}", True),
            ("GET", f"/static/{junk}", False),
            ("GET", f"/{junk}", False),
        ]
        for method, path, csrf in requests:
            for who in (browser, anonymous):
                response = await who.request(method, path, csrf=csrf)
                seen.add(response.status_code)
                assert response.status_code < 500, (method, path[:60], response.status_code, response.text[:200])
                if response.status_code >= 400 and response.headers.get("content-type") == "application/json":
                    assert set(response.json()) >= {"error"}
        raw = junk.encode()[:100]
        for who, headers in (
            (browser, {"X-CSRF": raw}),
            (browser, {"Origin": raw or b"x"}),
            (browser, {"Content-Type": raw}),
            (browser, {"X-Request-ID": raw}),
            (anonymous, {"Cookie": b"__Host-session=" + raw}),
            (anonymous, {"Cookie": raw}),
        ):
            response = await who.request("POST", "/api/notes/notes", headers=headers, content=b"{}")
            assert response.status_code < 500, (headers, response.text[:200])
    assert {400, 401, 404} <= seen
