"""`bff stack`, the README's "run it" command, as a process: three services up, the demo user made, URL printed."""

from __future__ import annotations

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
