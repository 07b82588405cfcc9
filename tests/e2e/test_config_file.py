"""DESIGN §11: a TOML file alone (plus REDIS_URL) runs the BFF — `bff serve --config FILE` as a process, its client
secret from a file as compose and Kubernetes mount them — and a browser logs in and calls an API through it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServiceProcess
from tests.e2e.conftest import CLIENT_SECRET, Stack

pytestmark = pytest.mark.anyio


async def test_a_toml_file_alone_runs_the_bff(stack_factory: Any, process_factory: Any, tmp_path: Path) -> None:
    stack: Stack = stack_factory(bff_thread=False)
    secret = tmp_path / "client_secret"
    secret.write_text(CLIENT_SECRET + "\n")  # as `kubectl create secret` or an editor leaves it
    config = tmp_path / "bff.toml"
    config.write_text(
        f"""
issuer = "{stack.auth_url}"
client_id = "bff"
client_secret_file = "{secret}"
public_url = "{stack.bff_url}"
idle_ttl = 900

[routes.notes]
url = "{stack.rs_url}"
methods = ["GET", "POST", "DELETE"]
"""
    )
    port = int(stack.bff_url.rsplit(":", 1)[1])
    bff: ServiceProcess = process_factory(
        ["-m", "bff", "serve", "--config", str(config)], {"REDIS_URL": stack.redis_url}, port=port
    )
    browser = stack.browser()
    callback = await stack.login(browser, "carol")
    assert callback.status_code == 302, callback.text
    user = await browser.request("GET", "/bff/user")
    assert user.status_code == 200 and user.json()["username"] == "carol"
    assert user.json()["idle_expires_at"] <= time.time() + 900  # the file's idle_ttl (the default is 1800)
    created = await browser.request("POST", "/api/notes/notes", json={"text": "configured by a file"})
    assert created.status_code == 201, created.text
    refused = await browser.request("PUT", "/api/notes/notes")  # the file's method list is the route's
    assert refused.status_code == 405
    assert CLIENT_SECRET not in bff.output()
    assert json.loads(bff.output().splitlines()[0])  # its logs are JSON lines, as with the environment
