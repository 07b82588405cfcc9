"""`bff stack`, the README's "run it" command, as a process: three services up, the demo user made, the URLs
printed once, with one host name, and no log line per request."""

from __future__ import annotations

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
    assert "WARNING" not in before and "ERROR" not in before, before
    for noise in ("access", "HTTP Request", "/readyz"):
        assert noise not in stack.output(), stack.output()
    # One host name in what it prints: the public one, for every service.
    banner = banner_and_after.split("Ctrl-C stops.", 1)[0]
    urls = re.findall(r"http://([^/:\s]+):(\d+)", banner)
    assert {host for host, _ in urls} == {"localhost"}, banner
    assert {int(port) for _, port in urls} == {auth_port, resource_port, live_port, stack.port}
    assert banner_and_after.split("Ctrl-C stops.", 1)[1].strip() == ""
