"""Logs and traces across the three services (DESIGN §12), on real sockets: a browser's traceparent reaches the
upstream and the provider and its trace id is in the log lines of every service; a normal logout writes nothing
that reads like a failure."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from bff.metrics import ACCESS
from servicekit.logs import JSONFormatter
from tests.auth_server.helpers import form_of
from tests.e2e.conftest import PASSWORD, Stack

pytestmark = pytest.mark.anyio

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
BROWSER_SPAN = "00f067aa0ba902b7"
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_a_browser_trace_reaches_the_upstream_and_the_provider_and_every_log_line(
    stack_factory: Any, json_log: Any
) -> None:
    stack: Stack = stack_factory()
    bff_lines = json_log(ACCESS, JSONFormatter())
    auth_lines = json_log(logging.getLogger("auth_server.access"), JSONFormatter())
    rs_lines = json_log(logging.getLogger("resource_server.access"), JSONFormatter())
    browser = stack.browser()
    parent = {"traceparent": f"00-{TRACE}-{BROWSER_SPAN}-01"}
    async with httpx.AsyncClient(timeout=30) as idp:
        created = await idp.post(stack.auth_url + "/users", json={"username": "tracy", "password": PASSWORD})
        assert created.status_code in (201, 409)
        start = await browser.request("GET", "/bff/login", csrf=False)
        page = await idp.get(start.headers["location"])
        form = form_of(page.text)
        assert form.action is not None
        posted = await idp.post(
            urljoin(str(page.url), form.action), data={**form.fields, "username": "tracy", "password": PASSWORD}
        )
        callback = httpx.URL(posted.headers["location"])
        # the callback's code exchange is a call to the provider made for this request: it carries its trace
        done = await browser.request("GET", callback.raw_path.decode(), csrf=False, headers=parent)
        assert done.status_code == 302
    response = await browser.request("GET", "/api/notes/notes", headers={**parent, "X-Request-ID": "req-trace-1"})
    assert response.status_code == 200
    await asyncio.sleep(0.2)  # the threads' last access lines
    traced = [line for line in bff_lines + auth_lines + rs_lines if line["trace_id"] == TRACE]
    by_logger = {(line["logger"], line["path"]) for line in traced}
    assert ("bff.access", "/bff/callback") in by_logger and ("bff.access", "/api/notes/notes") in by_logger
    assert ("auth_server.access", "/oauth/token") in by_logger  # the provider saw the browser's trace
    assert ("resource_server.access", "/notes") in by_logger  # and so did the upstream
    upstream = next(line for line in rs_lines if line["path"] == "/notes")
    assert upstream["request_id"] == "req-trace-1"
    for line in traced:
        assert TS.fullmatch(line["ts"]), line["ts"]
        assert {"level", "logger", "message", "request_id", "method", "route", "path", "status", "duration_ms"} <= set(
            line
        )
    untraced = await browser.request("GET", "/api/notes/notes")
    assert untraced.status_code == 200
    await asyncio.sleep(0.1)
    fresh = [line for line in bff_lines if line["path"] == "/api/notes/notes"][-1]
    assert re.fullmatch(r"[0-9a-f]{32}", fresh["trace_id"]) and fresh["trace_id"] != TRACE
    assert any(line["trace_id"] == fresh["trace_id"] for line in rs_lines)  # a new trace, carried on


async def test_a_normal_logout_logs_nothing_alarming(stack_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    stack: Stack = stack_factory()
    browser = stack.browser()
    assert (await stack.login(browser)).status_code == 302
    caplog.set_level(logging.INFO)
    caplog.clear()
    url = (await browser.request("GET", "/bff/user")).json()["logout_url"]
    leaving = await browser.request("GET", url, csrf=False)
    assert leaving.status_code == 302
    async with httpx.AsyncClient(timeout=30) as idp:
        back = await idp.get(leaving.headers["location"])
        assert back.status_code == 302, back.text
    await asyncio.sleep(0.5)  # the provider's back-channel logout reaches the BFF
    alarming = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert alarming == []
    words = " ".join(r.getMessage().lower() for r in caplog.records if r.name.startswith(("bff", "auth_server")))
    for alarming_word in ("fail", "error", "refused", "could not", "unavailable"):
        assert alarming_word not in words, (alarming_word, words)
