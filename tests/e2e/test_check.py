"""``bff check`` (DESIGN §11) against the real auth server, a real upstream and a real Redis: it passes on a good
configuration and fails, naming the setting, on each mistake issue #19 lists."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from bff.check import run_checks
from bff.settings import Settings
from tests.conftest import free_port
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.anyio


async def checks(stack: Stack, **env: str) -> dict[str, tuple[str, str]]:
    found = await run_checks(Settings.from_env({**stack.bff_env, **env}))
    return {check.name: (check.status, check.message) for check in found}


def failed(result: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {name: message for name, (status, message) in result.items() if status == "FAIL"}


async def test_a_good_configuration_passes(stack_factory: Any) -> None:
    stack = stack_factory(bff_thread=False)
    result = await checks(stack)
    assert failed(result) == {}
    for name in ("discovery", "jwks", "client credentials", "redirect URI", "refresh tokens", "back-channel logout"):
        assert result[name][0] == "PASS", (name, result[name])
    assert result["route notes"][0] == "PASS" and result["redis"][0] == "PASS"
    # the command itself: one line per check, exit 0
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bff", "check"],
        env=_process_env(stack.bff_env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("PASS  discovery:") and lines[-1] == "every check passed"
    assert len(lines) == len(result) + 1 and done.stderr == ""


async def test_a_wrong_client_secret_fails_naming_it(stack_factory: Any) -> None:
    stack = stack_factory(bff_thread=False)
    secret = "not-the-registered-secret-at-all"
    result = await checks(stack, BFF_CLIENT_SECRET=secret)
    assert list(failed(result)) == ["client credentials"]
    assert (
        "BFF_CLIENT_SECRET" in result["client credentials"][1] and "invalid_client" in result["client credentials"][1]
    )
    assert result["redirect URI"][0] == "SKIP"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bff", "check"],
        env=_process_env({**stack.bff_env, "BFF_CLIENT_SECRET": secret}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "FAIL  client credentials:" in done.stdout and "1 check(s) failed" in done.stdout
    assert secret not in done.stdout + done.stderr


async def test_an_unregistered_redirect_uri_fails_naming_the_public_url(stack_factory: Any) -> None:
    stack = stack_factory(bff_thread=False)
    elsewhere = f"http://127.0.0.1:{free_port()}"
    result = await checks(stack, BFF_PUBLIC_URL=elsewhere)
    assert list(failed(result)) == ["redirect URI"]
    message = result["redirect URI"][1]
    assert "BFF_PUBLIC_URL" in message and f"{elsewhere}/bff/callback" in message
    assert result["client credentials"][0] == "PASS"


async def test_a_wrong_issuer_fails_naming_it(stack_factory: Any) -> None:
    stack = stack_factory(bff_thread=False)
    result = await checks(stack, BFF_ISSUER=stack.auth_url.replace("127.0.0.1", "localhost"))
    assert list(failed(result)) == ["discovery"]
    assert "BFF_ISSUER" in result["discovery"][1] and stack.auth_url in result["discovery"][1]


async def test_an_issuer_that_does_not_answer_fails_naming_it(stack_factory: Any) -> None:
    stack = stack_factory(bff_thread=False)
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = await checks(stack, BFF_ISSUER=nowhere)
    assert list(failed(result)) == ["discovery"]
    assert "BFF_ISSUER" in result["discovery"][1] and nowhere in result["discovery"][1]
    assert "does not answer" in result["discovery"][1]


async def test_an_upstream_that_does_not_answer_fails_naming_the_route(stack_factory: Any) -> None:
    stack = stack_factory(bff_thread=False)
    dead = f"http://127.0.0.1:{free_port()}"
    result = await checks(stack, BFF_ROUTES=json.dumps({"notes": stack.rs_url, "orders": dead}))
    assert list(failed(result)) == ["route orders"]
    assert "BFF_ROUTES" in result["route orders"][1] and dead in result["route orders"][1]
    assert result["route notes"][0] == "PASS"


async def test_a_dev_server_that_does_not_answer_fails_naming_bff_frontend(stack_factory: Any) -> None:
    stack = stack_factory(bff_thread=False)
    status, message = (await checks(stack))["frontend"]
    assert status == "PASS" and message.startswith("none; only /bff/*, /api/*")  # what is served, said plainly
    dead = f"http://127.0.0.1:{free_port()}"
    result = await checks(stack, BFF_FRONTEND=dead)
    assert list(failed(result)) == ["frontend"]
    assert "BFF_FRONTEND" in result["frontend"][1] and dead in result["frontend"][1]
    alive = await checks(stack, BFF_FRONTEND=stack.rs_url)
    assert alive["frontend"][0] == "PASS" and stack.rs_url in alive["frontend"][1]


async def test_redis_that_does_not_answer_fails_naming_it(stack_factory: Any) -> None:
    stack = stack_factory(bff_thread=False)
    result = await checks(stack, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert list(failed(result)) == ["redis"] and "REDIS_URL" in result["redis"][1]


def _process_env(env: dict[str, str]) -> dict[str, str]:
    import os

    return {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **env}
