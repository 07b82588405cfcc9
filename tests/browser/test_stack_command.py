"""`bff stack`, the README's "run it" command, as a process: three services up, the demo user made, the URLs
printed once, with one host name, and no log line per request."""

from __future__ import annotations

import json
import re
import time

import httpx

from tests.conftest import free_port


def test_bff_stack_command_runs_all_three_services_with_the_demo_user(process_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    auth_port, resource_port, live_port = free_port(), free_port(), free_port()
    env = {"REDIS_URL": "", "AUTH_KEYS_DIR": str(tmp_path / "keys")}  # no REDIS_URL: the embedded store
    stack = process_factory(
        [
            *("-m", "bff", "stack", "--auth-port", str(auth_port)),
            *("--resource-port", str(resource_port), "--live-port", str(live_port)),
        ],
        env,
        health_path="/readyz",
    )
    deadline = time.monotonic() + 20
    while f"Open http://localhost:{stack.port}/" not in stack.output():
        assert time.monotonic() < deadline, stack.output()
        time.sleep(0.1)
    assert "demo / demo-password" in stack.output()
    assert "embedded in-memory store" in stack.output()

    issuer = f"http://localhost:{auth_port}"
    meta = httpx.get(f"http://127.0.0.1:{auth_port}/.well-known/openid-configuration").json()
    assert meta["issuer"] == issuer
    # the demo user exists: signing it up again is a conflict
    taken = httpx.post(f"http://127.0.0.1:{auth_port}/users", json={"username": "demo", "password": "x" * 12})
    assert taken.status_code == 409
    assert httpx.get(f"http://127.0.0.1:{resource_port}/readyz").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{live_port}/readyz").status_code == 200
    anonymous = httpx.get(f"http://127.0.0.1:{stack.port}/bff/user", headers={"X-CSRF": "1"})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "login_required"

    # Quiet: nothing before the banner but a few start-up lines (no line per readiness poll, no warning of a service
    # that started before the auth server), and no line per request after it (the requests above included).
    time.sleep(2.5)  # the resource servers poll the revocation feed every 2 s: those calls must not log either
    before, banner_and_after = stack.output().split("jwt-bff stack is up", 1)
    assert len(before.strip().splitlines()) <= 3, before
    assert '"level": "warning"' not in before and '"level": "error"' not in before, before
    for noise in ("access", "HTTP Request", "/readyz"):
        assert noise not in stack.output(), stack.output()
    # One host name in what it prints: the public one, for every service.
    banner = banner_and_after.split("Ctrl-C stops.", 1)[0]
    urls = re.findall(r"http://([^/:\s]+):(\d+)", banner)
    assert {host for host, _ in urls} == {"localhost"}, banner
    assert {int(port) for _, port in urls} == {auth_port, resource_port, live_port, stack.port}
    assert "frontend: the demo page at /" in banner  # what the BFF serves, said plainly (DESIGN §11)
    assert banner_and_after.split("Ctrl-C stops.", 1)[1].strip() == ""


def test_bff_stack_access_log_lines_are_the_services_json_lines(process_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`bff stack --access-log` (issue #20: its lines had no method, path or status): JSON lines with the fields of
    every service's, the request's id and trace id included."""
    env = {"REDIS_URL": "", "AUTH_KEYS_DIR": str(tmp_path / "keys")}
    stack = process_factory(
        [
            *("-m", "bff", "stack", "--access-log", "--auth-port", str(free_port())),
            *("--resource-port", str(free_port()), "--live-port", str(free_port())),
        ],
        env,
        health_path="/readyz",
    )
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"X-CSRF": "1", "X-Request-ID": "stack-req-1", "traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    headers["X-Forwarded-For"] = "10.0.0.5"  # believed by uvicorn's default from loopback, as if a proxy had said it
    assert httpx.get(f"http://127.0.0.1:{stack.port}/bff/user?q=SECRET", headers=headers).status_code == 401
    deadline = time.monotonic() + 10
    while "stack-req-1" not in stack.output():
        assert time.monotonic() < deadline, stack.output()
        time.sleep(0.1)
    lines = [json.loads(line) for line in stack.output().splitlines() if line.startswith("{")]
    (line,) = [line for line in lines if line.get("request_id") == "stack-req-1"]
    assert (line["logger"], line["method"], line["path"], line["route"], line["status"]) == (
        "bff.access",
        "GET",
        "/bff/user",
        "/bff/user",
        401,
    )
    assert line["trace_id"] == trace and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert isinstance(line["duration_ms"], float) and line["level"] == "info"
    # the peer is who it is (BFF_TRUSTED_PROXIES decides whose X-Forwarded-For counts, and the stack trusts none): a
    # new user found `bff stack` let any local process pose as a trusted proxy to /bff/auth this way
    assert line["client"] == "127.0.0.1" and "forwarded_for" not in line, line
    assert "SECRET" not in stack.output()
