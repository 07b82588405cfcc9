"""`bff config`, `auth-server config`, `resource-server config` as processes: the effective configuration, where
each value came from, never a secret (given directly, by <NAME>_FILE or in the TOML file); bad input is a message
naming the key and exit status 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET = "never-print-this-client-secret-0123"
OTHER = "another-secret-value-from-a-file-987"


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BFF_", "AUTH_", "RS_", "REDIS_", "HTTP_"))}
    return subprocess.run(
        [sys.executable, "-m", *args], env={**clean, **env}, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def rows(out: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in out.splitlines():
        if line.startswith("#"):
            continue
        name, _, rest = line.partition(" = ")
        value, _, source = rest.rpartition("  # ")
        found[name.strip()] = (value, source)
    return found


def test_bff_config_names_sources_and_never_prints_a_secret(tmp_path: Path) -> None:
    secret_file = tmp_path / "client_secret"
    secret_file.write_text(SECRET + "\n")
    config = tmp_path / "bff.toml"
    config.write_text('client_id = "app"\nissuer = "https://id.example"\n[routes.orders]\nurl = "http://orders:8080"\n')
    done = run(
        ["bff", "config", "--config", str(config)],
        {
            "BFF_CLIENT_SECRET_FILE": str(secret_file),
            "BFF_ISSUER": "https://login.example",
            "REDIS_URL": "redis://:redis-password-42@redis:6379/0",
        },
    )
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr and "redis-password-42" not in done.stdout
    found = rows(done.stdout)
    assert found["BFF_CLIENT_SECRET"] == ("<redacted>", "BFF_CLIENT_SECRET_FILE")
    assert found["BFF_ISSUER"] == ("https://login.example", "env")  # the environment wins over the file
    assert found["BFF_CLIENT_ID"] == ("app", "file")
    assert found["BFF_IDLE_TTL"] == ("1800", "default")
    assert json.loads(found["BFF_ROUTES"][0]) == {"orders": {"url": "http://orders:8080"}}
    assert found["REDIS_URL"] == ("redis://:***@redis:6379/0", "env")

    # the secret in the file itself, and in the environment directly
    config.write_text(f'client_secret = "{SECRET}"\n')
    done = run(["bff", "config"], {"BFF_CONFIG": str(config)})
    assert done.returncode == 0 and SECRET not in done.stdout + done.stderr
    assert rows(done.stdout)["BFF_CLIENT_SECRET"] == ("<redacted>", "file")
    done = run(["bff", "config"], {"BFF_CLIENT_SECRET": SECRET})
    assert done.returncode == 0 and SECRET not in done.stdout + done.stderr


def test_auth_and_resource_server_config_redact_their_secrets(tmp_path: Path) -> None:
    clients = [{"client_id": "bff", "client_secret": SECRET, "redirect_uris": ["http://localhost:8000/bff/callback"]}]
    form = tmp_path / "form_secret"
    form.write_text(OTHER + "\n")
    done = run(["auth_server", "config"], {"AUTH_CLIENTS": json.dumps(clients), "AUTH_FORM_SECRET_FILE": str(form)})
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout and OTHER not in done.stdout
    found = rows(done.stdout)
    assert json.loads(found["AUTH_CLIENTS"][0])[0]["client_id"] == "bff"
    assert found["AUTH_FORM_SECRET"] == ("<redacted>", "AUTH_FORM_SECRET_FILE")
    done = run(["resource_server", "config"], {"RS_DPOP_NONCE_SECRET": OTHER, "RS_AUDIENCE": "orders"})
    assert done.returncode == 0, done.stderr
    assert OTHER not in done.stdout and rows(done.stdout)["RS_AUDIENCE"] == ("orders", "env")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("issuer = 'http://x\n", "not valid TOML"),
        ("idle_ttl = '30m'\n", "idle_ttl must be an integer, got '30m'"),
        ("client_secrett = 'x'\n", "unknown setting 'client_secrett'; did you mean 'client_secret'?"),
        ("routes = 'not json'\n", "routes must be a table"),
        ("[routes.a]\nurl = 'http://a'\ntimeout = -1\n", "routes[a].timeout must be a number"),
    ],
)
@pytest.mark.parametrize("command", [["bff", "config"], ["bff", "serve", "--port", "1"]])
def test_bad_files_are_a_message_not_a_traceback(
    tmp_path: Path, content: str, message: str, command: list[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    done = run([*command, "--config", str(config)], {"BFF_CLIENT_SECRET": SECRET})
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and str(config) in done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stderr


def test_unreadable_secret_file_names_the_setting_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    done = run(["bff", "serve", "--port", "1"], {"BFF_CLIENT_SECRET_FILE": str(missing)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "BFF_CLIENT_SECRET" in done.stderr and str(missing) in done.stderr
    present = tmp_path / "secret"
    present.write_text(SECRET)
    done = run(["bff", "config"], {"BFF_CLIENT_SECRET_FILE": str(present), "BFF_CLIENT_SECRET": SECRET})
    assert done.returncode == 2 and "BFF_CLIENT_SECRET and BFF_CLIENT_SECRET_FILE are both set" in done.stderr
    assert SECRET not in done.stderr
